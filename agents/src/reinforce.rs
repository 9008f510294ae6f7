//! REINFORCE: Monte Carlo policy gradient (Sutton & Barto §13.3), optionally with a learned
//! state-value baseline (§13.4).
//!
//! A categorical policy `π(a|s,θ) = softmax(f_θ(s))_a`, `f_θ` an MLP `obs → hidden → ReLU →
//! actions`, plays whole episodes (an episode ends when the env says `terminated` or
//! `truncated`). Each step `t` gets its reward-to-go
//!
//! ```text
//! G_t = R_{t+1} + γ R_{t+2} + … + γ^{T−t−1} R_T        (never across an episode boundary)
//! ```
//!
//! and after `episodes_per_update` episodes one gradient step is taken on
//!
//! ```text
//! L(θ, w) = −(1/N) Σ_t A_t log π(A_t|S_t,θ)  −  β · (1/N) Σ_t H(π(·|S_t,θ))  +  c · ½ (1/N) Σ_t (G_t − v̂(S_t,w))²
//! A_t = G_t                       (REINFORCE, §13.3)
//! A_t = G_t − v̂(S_t,w)            (with baseline, §13.4; v̂ is a second MLP, not differentiated through A_t)
//! ```
//!
//! over the `N` steps of the batch; with `standardize`, `A_t` is replaced by
//! `(A_t − mean A)/(std A + 1e-8)` over the batch. As in most implementations (and unlike the
//! boxed algorithm in S&B) the `γ^t` factor in front of the gradient is dropped: every step of
//! an episode counts alike. `v̂` is fitted to the (unstandardised) returns.
//!
//! Speed: a 4-128-2 network is so small that per-op overhead dominates. Acting uses
//! [`HostMlp`], a plain-Rust copy of the policy's weights refreshed after every update
//! (whatever the [`Device`]), so a step costs ~1 µs and allocates nothing; the update is one
//! batched Candle forward+backward over all the steps of the batch (on any device). The two
//! forwards agree (a test checks it).

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use wick_core::optim::{clip_grad_norm, OptimConfig, OptimKind, Optimizer};
use wick_core::params::Params;
use wick_core::rng::Rng;
use wick_core::schedule::Schedule;
use wick_core::{bail, ensure, Result};
use wick_envs::wrappers::DynOneHot;
use wick_envs::DynEnv;

wick_core::choice! {
    /// The policy-gradient algorithms.
    pub enum PolicyGradientAlgo("policy-gradient algorithm") {
        /// REINFORCE, Monte Carlo policy gradient (S&B 13.3), --baseline: with a learned v(s) (13.4); discrete-action envs
        Reinforce = "reinforce",
    }
}

/// Every hyperparameter of a REINFORCE run; `config.toml` holds the resolved values.
///
/// Each one is declared once, here: its doc comment is the help of its `wick train reinforce`
/// flag and its `default_value_t` the default (of the flag, of a `--config` file's missing keys,
/// and of [`Default`]). The optimizer's flags are the shared [`wick_core::optim::OptimConfig`]
/// ones; `algo`, `seed` and `optim` are set elsewhere (the subcommand, `--seed`, those flags).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct ReinforceConfig {
    #[arg(skip = PolicyGradientAlgo::Reinforce)]
    pub algo: PolicyGradientAlgo,
    /// Environment id with a discrete action space (see `wick list`)
    #[arg(long, default_value = "CartPole-v1")]
    pub env: String,
    /// Env options as key=value,key=value (e.g. is_slippery=false)
    #[arg(long, default_value = "")]
    pub env_options: String,
    #[arg(skip)]
    pub seed: u64,
    /// Env steps to train for at most (the run stops at the end of the update that reaches them)
    #[arg(long, default_value_t = 300_000)]
    pub total_steps: u64,
    /// Learn a state-value baseline v̂(s, w) (REINFORCE with baseline, S&B §13.4)
    #[arg(long)]
    pub baseline: bool,
    /// Hidden units of the one-hidden-layer policy (and value) MLP
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Discount γ in [0, 1]
    #[arg(long, default_value_t = 0.99, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Whole episodes per gradient step
    #[arg(long, default_value_t = 1)]
    pub episodes_per_update: usize,
    /// Cut each update's episodes into this many contiguous shares and sum their gradients in
    /// order (under mpirun the ranks play them, a multiple of the rank count; it must divide
    /// --episodes-per-update) [default: the number of ranks, 1 without mpirun]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    /// Combine the ranks' gradients in a fixed order (`ordered`: bit-identical for any rank count)
    /// or by MPI's `ring` all-reduce (MPI's summation order: NOT bit-identical across rank counts) [default: ordered]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce: Option<wick_core::dist::Allreduce>,
    /// Standardise the advantages over each update's batch: true or false
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub standardize: bool,
    /// Entropy bonus β
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub entropy_coef: f64,
    /// Weight c of the value loss (with --baseline)
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub value_coef: f64,
    /// Clip gradients to this global L2 norm; 0 disables
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub clip_grad: f64,
    /// "Solved": the mean of the last 100 episodic returns reaches this (CartPole-v1: 475)
    #[arg(long, default_value_t = 475.0, allow_negative_numbers = true)]
    pub solve_return: f64,
    /// Stop once solved, keeping the policy that solved: true or false
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub stop_on_solve: bool,
    /// Updates between checkpoints (also written at the end and on Ctrl-C)
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Updates between weight histograms in TensorBoard; 0 never
    #[arg(long, default_value_t = 100)]
    pub log_every: u64,
    #[arg(skip = OptimConfig { kind: OptimKind::Adam, lr: 1e-2, ..OptimConfig::default() })]
    pub optim: OptimConfig,
    /// Learning-rate schedule over updates: constant, warmup:STEPS, cosine:TOTAL[:WARMUP], step:EVERY:GAMMA
    #[arg(long, default_value_t = Schedule::Constant)]
    pub schedule: Schedule,
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        wick_core::config::flag_defaults()
    }
}

impl ReinforceConfig {
    /// Check every value; the error is one line naming the bad one.
    pub fn validate(&self) -> Result<()> {
        ensure!((0.0..=1.0).contains(&self.gamma), "gamma must be in [0, 1], got {}", self.gamma);
        ensure!(self.hidden >= 1, "hidden must be at least 1, got 0");
        ensure!(self.total_steps >= 1, "total-steps must be at least 1, got 0");
        ensure!(self.episodes_per_update >= 1, "episodes-per-update must be at least 1, got 0");
        ensure!(self.micro_batches != Some(0), "micro-batches must be at least 1, got 0");
        if let Some(m) = self.micro_batches {
            ensure!(
                self.episodes_per_update % m == 0,
                "--episodes-per-update {} does not split into {m} equal shares (--micro-batches or the number of ranks): choose a multiple of {m}",
                self.episodes_per_update
            );
        }
        ensure!(self.entropy_coef.is_finite() && self.entropy_coef >= 0.0, "entropy-coef must be a non-negative number, got {}", self.entropy_coef);
        ensure!(self.value_coef.is_finite() && self.value_coef >= 0.0, "value-coef must be a non-negative number, got {}", self.value_coef);
        ensure!(self.clip_grad.is_finite() && self.clip_grad >= 0.0, "clip-grad must be a non-negative number, got {}", self.clip_grad);
        ensure!(self.solve_return.is_finite(), "solve-return must be a finite number, got {}", self.solve_return);
        ensure!(self.checkpoint_every >= 1, "checkpoint-every must be at least 1, got 0");
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }
}

/// Make the run's env: one-hot observations for tabular envs; a discrete action space is required.
pub fn make_env(id: &str, options: &str) -> Result<Box<dyn DynEnv>> {
    let env = wick_envs::make_str(id, options)?;
    check_discrete(id, &env.action_space())?;
    Ok(if env.num_states().is_some() { Box::new(DynOneHot::new(env)?) } else { env })
}

/// REINFORCE's categorical policy needs `Discrete` actions.
pub fn check_discrete(id: &str, space: &wick_envs::Space) -> Result<()> {
    match space.n() {
        Some(n) if n >= 1 => Ok(()),
        _ => bail!("{id} has action space {space}; REINFORCE's categorical policy needs a discrete action space"),
    }
}

/// One-hidden-layer MLP `x → W2 relu(W1 x + b1) + b2` as named Candle parameters
/// (`{prefix}.0.weight` `[hidden, in]`, `{prefix}.0.bias`, `{prefix}.2.weight` `[out, hidden]`,
/// `{prefix}.2.bias`: PyTorch's `nn.Sequential(Linear, ReLU, Linear)` names and layouts),
/// initialised like `nn.Linear`: uniform in ±1/√fan_in, drawn from `rng`.
pub struct Mlp {
    pub w1: Tensor,
    pub b1: Tensor,
    pub w2: Tensor,
    pub b2: Tensor,
}

impl Mlp {
    pub fn new(params: &mut Params, prefix: &str, sizes: [usize; 3], rng: &mut Rng, dev: &Device) -> Result<Mlp> {
        let [i, h, o] = sizes;
        let (k1, k2) = (1.0 / (i as f64).sqrt(), 1.0 / (h as f64).sqrt());
        Ok(Mlp {
            w1: params.uniform(&format!("{prefix}.0.weight"), &[h, i], k1, rng, dev)?,
            b1: params.uniform(&format!("{prefix}.0.bias"), &[h], k1, rng, dev)?,
            w2: params.uniform(&format!("{prefix}.2.weight"), &[o, h], k2, rng, dev)?,
            b2: params.uniform(&format!("{prefix}.2.bias"), &[o], k2, rng, dev)?,
        })
    }

    /// `[N, in] → [N, out]`, differentiable.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.matmul(&self.w1.t()?)?.broadcast_add(&self.b1)?.relu()?;
        Ok(h.matmul(&self.w2.t()?)?.broadcast_add(&self.b2)?)
    }
}

/// The same MLP on the host, for acting one observation at a time without allocating.
#[derive(Clone, Debug, PartialEq)]
pub struct HostMlp {
    pub sizes: [usize; 3],
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    h: Vec<f32>,
}

impl HostMlp {
    /// Copy `mlp`'s current weights from its device.
    pub fn from_mlp(mlp: &Mlp) -> Result<HostMlp> {
        let v = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?) };
        let (h, i) = mlp.w1.dims2()?;
        let o = mlp.w2.dims2()?.0;
        Ok(HostMlp { sizes: [i, h, o], w1: v(&mlp.w1)?, b1: v(&mlp.b1)?, w2: v(&mlp.w2)?, b2: v(&mlp.b2)?, h: vec![0.0; h] })
    }

    /// Re-read the weights after an update (reuses the buffers).
    pub fn refresh(&mut self, mlp: &Mlp) -> Result<()> {
        for (dst, t) in [(&mut self.w1, &mlp.w1), (&mut self.b1, &mlp.b1), (&mut self.w2, &mlp.w2), (&mut self.b2, &mlp.b2)] {
            let src = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            dst.copy_from_slice(&src);
        }
        Ok(())
    }

    /// Outputs (logits) for one observation, written into `out`.
    pub fn forward(&mut self, x: &[f32], out: &mut [f32]) {
        let [i, h, o] = self.sizes;
        debug_assert!(x.len() == i && out.len() == o);
        for j in 0..h {
            let w = &self.w1[j * i..(j + 1) * i];
            let s = w.iter().zip(x).fold(self.b1[j], |s, (w, x)| s + w * x);
            self.h[j] = s.max(0.0);
        }
        for (a, out_a) in out.iter_mut().enumerate() {
            let w = &self.w2[a * h..(a + 1) * h];
            *out_a = w.iter().zip(&self.h).fold(0.0f32, |s, (w, h)| s + w * h) + self.b2[a];
        }
    }
}

/// Draw an action from `softmax(logits)` with one uniform from `rng` (inverse CDF, in f64);
/// `greedy` takes the argmax (lowest index on ties) and draws nothing.
pub fn sample_action(logits: &[f32], greedy: bool, rng: &mut Rng) -> usize {
    let mut best = 0;
    for (a, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = a;
        }
    }
    if greedy {
        return best;
    }
    let m = logits[best] as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
    let u = rng.uniform() * z;
    let mut c = 0.0;
    for (a, &l) in logits.iter().enumerate() {
        c += (l as f64 - m).exp();
        if u < c {
            return a;
        }
    }
    logits.len() - 1
}

/// Reward-to-go `G_t = r_t + γ G_{t+1}` for steps stored back to back; `done[t]` marks the last
/// step of an episode (terminated or truncated), where the sum restarts: no return leaks from
/// one episode into the one before it.
pub fn returns_to_go(rewards: &[f64], done: &[bool], gamma: f64) -> Vec<f64> {
    assert_eq!(rewards.len(), done.len());
    let mut g = vec![0.0; rewards.len()];
    let mut acc = 0.0;
    for t in (0..rewards.len()).rev() {
        if done[t] {
            acc = 0.0;
        }
        acc = rewards[t] + gamma * acc;
        g[t] = acc;
    }
    g
}

/// `(x − mean)/(std + 1e-8)` with the population std, in place.
pub fn standardize(x: &mut [f64]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let sd = var.sqrt() + 1e-8;
    for v in x.iter_mut() {
        *v = (*v - mean) / sd;
    }
}

/// The steps of one update's episodes, stored back to back (buffers reused across updates).
#[derive(Default, Debug)]
pub struct Batch {
    pub obs: Vec<f32>,
    pub actions: Vec<u32>,
    pub rewards: Vec<f64>,
    pub done: Vec<bool>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.actions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
    pub fn clear(&mut self) {
        self.obs.clear();
        self.actions.clear();
        self.rewards.clear();
        self.done.clear();
    }
}

/// The agent: policy (and value) networks, their optimizer, and the host copy used to act.
pub struct Reinforce {
    pub params: Params,
    pub policy: Mlp,
    pub value: Option<Mlp>,
    pub host: HostMlp,
    pub opt: Optimizer,
    pub obs_dim: usize,
    pub num_actions: usize,
    logits: Vec<f32>,
}

/// What one update reports (TensorBoard's `losses/…`).
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub grad_norm: f64,
}

impl Reinforce {
    /// Networks initialised from the run's `init` stream.
    pub fn new(cfg: &ReinforceConfig, obs_dim: usize, num_actions: usize, dev: &Device) -> Result<Reinforce> {
        let layer = wick_core::mem::product(&[obs_dim.max(num_actions) + 1, cfg.hidden]);
        let need = wick_core::mem::training_bytes(layer.saturating_mul(4), wick_core::mem::product(&[cfg.hidden, 4]));
        wick_core::mem::ensure_fits(&format!("reinforce with --hidden {}", cfg.hidden), need, "use a smaller --hidden")?;
        let mut rng = Rng::stream(cfg.seed, "init");
        let mut params = Params::new();
        let policy = Mlp::new(&mut params, "policy", [obs_dim, cfg.hidden, num_actions], &mut rng, dev)?;
        let value = if cfg.baseline { Some(Mlp::new(&mut params, "value", [obs_dim, cfg.hidden, 1], &mut rng, dev)?) } else { None };
        let host = HostMlp::from_mlp(&policy)?;
        let opt = Optimizer::new(cfg.optim.clone(), &params)?;
        Ok(Reinforce { params, policy, value, host, opt, obs_dim, num_actions, logits: vec![0.0; num_actions] })
    }

    /// Sample (or, `greedy`, pick) an action for one observation with the host copy of the policy.
    #[inline]
    pub fn act(&mut self, obs: &[f32], greedy: bool, rng: &mut Rng) -> usize {
        self.host.forward(obs, &mut self.logits);
        sample_action(&self.logits, greedy, rng)
    }

    /// Re-read the host copy of the policy (after loading a checkpoint).
    pub fn sync_host(&mut self) -> Result<()> {
        self.host.refresh(&self.policy)
    }

    /// The differentiable loss of a batch, its gradients, and the figures to log.
    /// One forward and one backward pass over all `N` steps.
    pub fn loss_and_grads(&self, cfg: &ReinforceConfig, b: &Batch) -> Result<(candle_core::backprop::GradStore, UpdateStats)> {
        let mut adv = self.raw_advantages(cfg, b)?;
        if cfg.standardize {
            standardize(&mut adv);
        }
        self.loss_and_grads_with(cfg, b, &adv)
    }

    /// The unstandardised advantages `A_t` of a batch's steps: `G_t`, or `G_t − v̂(S_t, w)`
    /// with the baseline. A data-parallel update gathers every share's before standardising.
    pub fn raw_advantages(&self, cfg: &ReinforceConfig, b: &Batch) -> Result<Vec<f64>> {
        let g = returns_to_go(&b.rewards, &b.done, cfg.gamma);
        let Some(v) = &self.value else { return Ok(g) };
        ensure!(!b.is_empty(), "an update needs at least one step");
        let obs = Tensor::from_slice(&b.obs, (b.len(), self.obs_dim), self.policy.w1.device())?;
        let vh = v.forward(&obs)?.squeeze(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(g.iter().zip(&vh).map(|(g, v)| g - v).collect())
    }

    /// [`Reinforce::loss_and_grads`] with the advantages given (one per step of `b`, already
    /// standardised when `cfg.standardize`): the loss is the mean over `b`'s steps.
    pub fn loss_and_grads_with(&self, cfg: &ReinforceConfig, b: &Batch, adv: &[f64]) -> Result<(candle_core::backprop::GradStore, UpdateStats)> {
        let dev = self.policy.w1.device();
        let n = b.len();
        ensure!(n > 0, "an update needs at least one step");
        ensure!(adv.len() == n, "{} advantages for {n} steps", adv.len());
        let obs = Tensor::from_slice(&b.obs, (n, self.obs_dim), dev)?;
        let g = returns_to_go(&b.rewards, &b.done, cfg.gamma);
        let mut onehot = vec![0f32; n * self.num_actions];
        for (t, &a) in b.actions.iter().enumerate() {
            onehot[t * self.num_actions + a as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (n, self.num_actions), dev)?;

        let logits = self.policy.forward(&obs)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let logp_a = (&logp * &onehot)?.sum(1)?;
        let probs = logp.exp()?;
        let entropy = (&probs * &logp)?.sum(1)?.neg()?.mean_all()?;

        let value_loss = match &self.value {
            None => None,
            Some(v) => {
                let vhat = v.forward(&obs)?.squeeze(1)?;
                let gt = Tensor::from_vec(g.iter().map(|&x| x as f32).collect::<Vec<_>>(), n, dev)?;
                Some(((gt - &vhat)?.sqr()?.mean_all()? * 0.5)?)
            }
        };
        let adv = Tensor::from_vec(adv.iter().map(|&x| x as f32).collect::<Vec<_>>(), n, dev)?;
        let policy_loss = (&logp_a * &adv)?.mean_all()?.neg()?;
        let mut loss = policy_loss.clone();
        if cfg.entropy_coef > 0.0 {
            loss = (loss - (&entropy * cfg.entropy_coef)?)?;
        }
        if let Some(vl) = &value_loss {
            loss = (loss + (vl * cfg.value_coef)?)?;
        }
        let grads = loss.backward()?;
        let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let stats = UpdateStats {
            policy_loss: scalar(&policy_loss)?,
            value_loss: match &value_loss {
                Some(v) => scalar(v)?,
                None => 0.0,
            },
            entropy: scalar(&entropy)?,
            grad_norm: 0.0,
        };
        Ok((grads, stats))
    }

    /// One gradient step on a batch of whole episodes (`lr` from the schedule).
    pub fn update(&mut self, cfg: &ReinforceConfig, b: &Batch, lr: f64) -> Result<UpdateStats> {
        let (grads, stats) = self.loss_and_grads(cfg, b)?;
        self.apply(cfg, grads, stats, lr)
    }

    /// The step itself, from gradients and the figures they go with: refuse a diverged loss,
    /// clip (`--clip-grad`, recording the norm), take the optimizer step, refresh the host copy.
    pub fn apply(&mut self, cfg: &ReinforceConfig, mut grads: candle_core::backprop::GradStore, mut stats: UpdateStats, lr: f64) -> Result<UpdateStats> {
        ensure!(
            stats.policy_loss.is_finite() && stats.value_loss.is_finite(),
            "training diverged at optimizer step {} (policy loss {}, value loss {}); try a lower --lr or --clip-grad",
            self.opt.steps(),
            stats.policy_loss,
            stats.value_loss
        );
        if cfg.clip_grad > 0.0 {
            stats.grad_norm = clip_grad_norm(&self.params, &mut grads, cfg.clip_grad)?;
        }
        self.opt.step(&self.params, &grads, lr)?;
        self.sync_host()?;
        Ok(stats)
    }
}

/// Play one whole episode with `agent`'s current policy, appending its steps to `batch`.
/// `obs` is a scratch buffer of the env's observation size. Returns (return, length).
pub fn play_episode(
    env: &mut dyn DynEnv,
    agent: &mut Reinforce,
    reset_seed: u64,
    greedy: bool,
    rng: &mut Rng,
    obs: &mut [f32],
    mut batch: Option<&mut Batch>,
) -> Result<(f64, u64)> {
    env.reset(Some(reset_seed), obs)?;
    let (mut ret, mut len) = (0.0, 0u64);
    loop {
        let a = agent.act(obs, greedy, rng);
        if let Some(b) = batch.as_deref_mut() {
            b.obs.extend_from_slice(obs);
            b.actions.push(a as u32);
        }
        let st = env.step(a, obs)?;
        ret += st.reward;
        len += 1;
        if let Some(b) = batch.as_deref_mut() {
            b.rewards.push(st.reward);
            b.done.push(st.done());
        }
        if st.done() {
            return Ok((ret, len));
        }
        if len >= 100_000_000 {
            bail!("{}: an episode ran past 100,000,000 steps; give the env a time limit (max_episode_steps)", env.id());
        }
    }
}

/// The seed that resets the env for episode `k` of the stream `name` (`train-env`, `eval-env`):
/// resets are seeded per episode, so nothing of the env needs checkpointing between episodes.
pub fn episode_seed(seed: u64, name: &str, k: u64) -> u64 {
    use rand::RngCore;
    Rng::stream_indexed(seed, name, k).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_restart_at_every_episode_end_terminated_or_truncated() {
        // Episode 1: 3 steps (truncated), episode 2: 2 steps (terminated).
        let r = [1.0, 1.0, 1.0, 1.0, 1.0];
        let d = [false, false, true, false, true];
        let g = returns_to_go(&r, &d, 0.5);
        assert_eq!(g, vec![1.75, 1.5, 1.0, 1.5, 1.0]);
        // Changing a reward of episode 2 leaves episode 1's returns alone.
        let g2 = returns_to_go(&[1.0, 1.0, 1.0, 100.0, 1.0], &d, 0.5);
        assert_eq!(&g2[..3], &g[..3]);
        assert_eq!(returns_to_go(&[2.0, 3.0], &[false, true], 1.0), vec![5.0, 3.0]);
        assert_eq!(returns_to_go(&[2.0, 3.0], &[false, true], 0.0), vec![2.0, 3.0]);
    }

    #[test]
    fn truncated_episodes_from_a_real_env_do_not_leak_returns() {
        // CartPole cut at 4 steps: a balancing start survives, so every episode is truncated
        // (or terminated) within 4 steps and its undiscounted returns count down to 1.
        let c = cfg(false, 0.0);
        let mut agent = Reinforce::new(&c, 4, 2, &Device::Cpu).unwrap();
        let mut env = make_env("CartPole-v1", "max_episode_steps=4").unwrap();
        let (mut b, mut rng, mut obs) = (Batch::default(), Rng::stream(0, "p"), vec![0.0; 4]);
        let mut lens = Vec::new();
        for k in 0..5 {
            lens.push(play_episode(&mut *env, &mut agent, k, false, &mut rng, &mut obs, Some(&mut b)).unwrap().1 as usize);
        }
        assert!(lens.iter().all(|&l| l == 4), "{lens:?}");
        let g = returns_to_go(&b.rewards, &b.done, 1.0);
        assert_eq!(g, [4.0, 3.0, 2.0, 1.0].repeat(5));
        assert_eq!(b.done.iter().filter(|&&d| d).count(), 5);
    }

    #[test]
    fn standardize_gives_zero_mean_unit_std() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        standardize(&mut x);
        let m: f64 = x.iter().sum::<f64>() / 4.0;
        let v: f64 = x.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 4.0;
        assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-6, "{x:?}");
        let mut one = vec![5.0];
        standardize(&mut one);
        assert_eq!(one, vec![0.0]);
    }

    fn cfg(baseline: bool, entropy: f64) -> ReinforceConfig {
        ReinforceConfig { baseline, entropy_coef: entropy, hidden: 16, seed: 3, ..Default::default() }
    }

    fn batch(agent: &mut Reinforce, episodes: u64) -> Batch {
        let mut env = make_env("CartPole-v1", "").unwrap();
        let mut b = Batch::default();
        let mut rng = Rng::stream(1, "policy");
        let mut obs = vec![0.0; env.obs_dim()];
        for k in 0..episodes {
            play_episode(&mut *env, agent, k, false, &mut rng, &mut obs, Some(&mut b)).unwrap();
        }
        b
    }

    #[test]
    fn every_parameter_gets_a_nonzero_gradient() {
        for (baseline, entropy) in [(false, 0.0), (true, 0.01)] {
            let c = cfg(baseline, entropy);
            let mut agent = Reinforce::new(&c, 4, 2, &Device::Cpu).unwrap();
            let b = batch(&mut agent, 3);
            let (grads, st) = agent.loss_and_grads(&c, &b).unwrap();
            assert!(st.entropy > 0.0 && st.entropy <= 2f64.ln() + 1e-6);
            assert_eq!(agent.params.len(), if baseline { 8 } else { 4 });
            for (name, v) in agent.params.names().iter().zip(agent.params.vars()) {
                let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
                let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(s > 0.0 && s.is_finite(), "{name}: |grad| sum {s}");
            }
        }
    }

    #[test]
    fn host_forward_equals_candle_forward() {
        let c = ReinforceConfig { hidden: 128, ..cfg(false, 0.0) };
        let mut agent = Reinforce::new(&c, 4, 2, &Device::Cpu).unwrap();
        let b = batch(&mut agent, 2);
        let n = b.len();
        let obs = Tensor::from_slice(&b.obs, (n, 4), &Device::Cpu).unwrap();
        let want = agent.policy.forward(&obs).unwrap().to_vec2::<f32>().unwrap();
        let mut out = [0f32; 2];
        for (t, want_t) in want.iter().enumerate() {
            agent.host.forward(&b.obs[t * 4..(t + 1) * 4], &mut out);
            for a in 0..2 {
                assert!((out[a] - want_t[a]).abs() <= 1e-5 * (1.0 + want_t[a].abs()), "step {t}: host {out:?} candle {want_t:?}");
            }
        }
        // After an update the host copy follows the new weights.
        agent.update(&c, &b, 1e-2).unwrap();
        let want = agent.policy.forward(&obs).unwrap().to_vec2::<f32>().unwrap();
        agent.host.forward(&b.obs[..4], &mut out);
        assert!((out[0] - want[0][0]).abs() < 1e-5 && (out[1] - want[0][1]).abs() < 1e-5);
    }

    #[test]
    fn sampling_follows_the_softmax() {
        let mut rng = Rng::stream(0, "t");
        let logits = [0.0f32, (3.0f32).ln()]; // p = (0.25, 0.75)
        let n = 200_000;
        let ones = (0..n).filter(|_| sample_action(&logits, false, &mut rng) == 1).count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.005, "{p}");
        assert_eq!(sample_action(&[0.1, 0.3, 0.2], true, &mut rng), 1);
    }

    #[test]
    fn only_discrete_action_spaces() {
        assert!(check_discrete("X", &wick_envs::Space::discrete(2)).is_ok());
        let e = check_discrete("Pendulum-v1", &wick_envs::Space::box1(vec![-2.0], vec![2.0])).unwrap_err().to_string();
        assert!(e.contains("needs a discrete action space"), "{e}");
        // Tabular envs get one-hot observations.
        let env = make_env("FrozenLake-v1", "").unwrap();
        assert_eq!(env.obs_dim(), 16);
    }

    #[test]
    fn a_few_hundred_updates_improve_cartpole() {
        let c = ReinforceConfig { seed: 0, ..Default::default() };
        let mut agent = Reinforce::new(&c, 4, 2, &Device::Cpu).unwrap();
        let mut env = make_env("CartPole-v1", "").unwrap();
        let mut rng = Rng::stream(0, "policy");
        let mut obs = vec![0.0; 4];
        let mut b = Batch::default();
        let mut first = 0.0;
        let mut last = 0.0;
        for k in 0..300u64 {
            b.clear();
            let (ret, _) = play_episode(&mut *env, &mut agent, k, false, &mut rng, &mut obs, Some(&mut b)).unwrap();
            if k < 20 {
                first += ret / 20.0;
            }
            if k >= 280 {
                last += ret / 20.0;
            }
            agent.update(&c, &b, c.optim.lr).unwrap();
        }
        assert!(last > 2.0 * first && last > 60.0, "first 20 episodes {first}, last 20 {last}");
    }
}
