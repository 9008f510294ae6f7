//! The tabular Monte Carlo trainer (`wick train mc-*`): typed config with per-algorithm × env
//! defaults, dispatch to the agents of this crate, the training loop, comparison with dynamic
//! programming, and evaluation of a learned policy.
//!
//! A run is a sequence of batches of episodes (see [`crate::parallel`]): `threads` threads
//! generate a batch's episodes, bit-identically for every thread count. Every `log`
//! interval (about 100 over the run, at batch boundaries) the trainer logs to TensorBoard and,
//! at most once a second, writes `checkpoint.safetensors` (Q-table `q` f64 [S, A], counts `n`, greedy `policy`, the
//! agent's other tables, the counters in the metadata); Ctrl-C checkpoints at the next batch
//! boundary. Where the env has an exact model, the learned policy and values are compared with
//! dynamic programming (`eval/optimal_action_agreement`, `eval/value_rmse`).
//! Off-policy prediction from one start state runs S&B Example 5.4 instead ([`crate::example_5_4`]).

use crate::parallel::{Collector, McAgent};
use crate::tabular::{generate_episode, Start};
use crate::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::run::{Outcome, Runtime};
use wick_core::session::{Opening, Session};
use wick_core::{bail, ensure, Error, Result};
use wick_envs::blackjack::{BlackjackObs, HIT, STICK};
use TabularAlgo::*;

wick_core::choice! {
    /// The tabular Monte Carlo algorithms.
    pub enum TabularAlgo("tabular algorithm") {
        /// First-/every-visit MC prediction of v_pi (or q_pi with --target q) (S&B 5.1-5.2; tabular)
        McPrediction = "mc-prediction",
        /// MC Basic: policy iteration with MC estimates from every (s, a) (Zhao Alg. 5.1; tabular)
        McBasic = "mc-basic",
        /// Monte Carlo exploring starts (S&B 5.3, Fig. 5.2; tabular)
        McEs = "mc-es",
        /// On-policy MC control, epsilon-greedy, fixed or decaying epsilon (S&B 5.4; tabular)
        McEpsilonGreedy = "mc-epsilon-greedy",
        /// Off-policy MC prediction, ordinary and weighted importance sampling (S&B 5.5-5.6, Ex. 5.4; tabular)
        McOffPolicyPrediction = "mc-off-policy-prediction",
        /// Off-policy MC control with weighted importance sampling (S&B 5.7; tabular)
        McOffPolicyControl = "mc-off-policy-control",
    }
}

impl TabularAlgo {
    /// Whether the option `field` (a config field, a flag's id) is one of this algorithm's:
    /// the algorithm-only ones are refused elsewhere, and hidden from other algorithms' `--help`.
    pub fn takes(self, field: &str) -> bool {
        match field {
            "epsilon" => matches!(self, McEpsilonGreedy | McOffPolicyControl),
            "step_size" | "forget" => self == McEpsilonGreedy,
            "iterations" => self == McBasic,
            "runs" | "start_state" => self == McOffPolicyPrediction,
            "start" => matches!(self, McEpsilonGreedy | McOffPolicyControl | McPrediction),
            "target" => self == McPrediction,
            "policy" => self.is_prediction(),
            _ => true,
        }
    }

    /// Prediction (of a given policy's values) rather than control.
    pub fn is_prediction(self) -> bool {
        matches!(self, McPrediction | McOffPolicyPrediction)
    }
}

/// (Only so that [`TabularConfig`] has a `Default` for config layering: every run names its algorithm.)
impl Default for TabularAlgo {
    fn default() -> Self {
        McPrediction
    }
}

wick_core::choice! {
    /// Where episodes start.
    pub enum StartFrom("start") {
        /// The env's start distribution
        Env = "env",
        /// A uniformly drawn state (for q prediction a uniformly drawn state-action pair)
        Uniform = "uniform",
    }
}

wick_core::choice! {
    /// What MC prediction estimates.
    pub enum PredictionTarget("target") {
        /// State values v_pi, episodes from the env's start
        V = "v",
        /// Action values q_pi (S&B 5.2)
        Q = "q",
    }
}

wick_core::choice! {
    /// The policy the prediction algorithms evaluate.
    pub enum EvalPolicy("policy") {
        /// Uniformly random
        Random = "random",
        /// Optimal, by dynamic programming on the env's exact model
        Optimal = "optimal",
        /// Blackjack: stick only on 20 or 21 (S&B Example 5.1)
        Stick20 = "stick20",
    }
}

/// Every hyperparameter of a tabular run; `config.toml` holds the resolved values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TabularConfig {
    pub algo: TabularAlgo,
    pub env: Option<String>,
    pub env_options: Option<String>,
    pub seed: u64,
    pub episodes: Option<u64>,
    pub gamma: Option<f64>,
    pub epsilon: Option<String>,
    pub episode_length: Option<usize>,
    pub policy: Option<EvalPolicy>,
    pub visit: Option<Visit>,
    pub batch: Option<u64>,
    pub iterations: Option<u64>,
    pub start_state: Option<usize>,
    pub runs: Option<u64>,
    pub start: Option<StartFrom>,
    pub step_size: Option<f64>,
    pub forget: Option<f64>,
    pub target: Option<PredictionTarget>,
}

fn blackjack(id: &str) -> bool {
    id == "Blackjack-v1"
}

fn parse_epsilon(s: &str) -> Result<Epsilon> {
    Epsilon::parse(s).map_err(|e| e.context("--epsilon"))
}

impl TabularConfig {
    /// Fill every unset value with the default for this algorithm and env, so that the saved
    /// config states everything.
    pub fn with_defaults(&self) -> TabularConfig {
        let mut c = self.clone();
        let env = c.env.get_or_insert_with(|| "Blackjack-v1".into()).clone();
        let bj = blackjack(&env);
        let grid = env == "GridWorld";
        let taxi = env == "Taxi-v4";
        c.env_options.get_or_insert_with(String::new);
        c.gamma.get_or_insert(if grid { 0.9 } else { 1.0 });
        // Cut episodes where a policy can loop forever (GridWorld is continuing; CliffWalking ends
        // only at the goal) and, for MC Basic, everywhere: its episodes have a fixed length.
        let cliff = env.starts_with("CliffWalking");
        if c.episode_length.is_none() && (grid || cliff || c.algo == McBasic) {
            c.episode_length = Some(if c.algo == McBasic && grid { 15 } else { 100 });
        }
        // Taxi's exploring starts: a looping greedy policy's episodes are cut at 20 steps rather
        // than at the 200-step limit (an optimal episode, from any state and first action, takes
        // at most 19), so that their returns weigh less on the sample averages.
        if c.episode_length.is_none() && taxi && c.algo == McEs {
            c.episode_length = Some(20);
        }
        let (episodes, batch, visit) = match (c.algo, bj, grid) {
            (McPrediction, true, _) => (500_000, 10_000, Visit::First),
            (McPrediction, _, _) => (10_000, 100, Visit::First),
            (McBasic, _, true) => (1, 1, Visit::First),
            (McBasic, _, _) => (1000, 1, Visit::First),
            (McEs, true, _) => (5_000_000, 10_000, Visit::First),
            (McEs, _, true) => (100_000, 10, Visit::First),
            (McEs, _, _) if taxi => (10_000_000, 1000, Visit::First),
            (McEs, _, _) => (1_000_000, 1000, Visit::First),
            (McEpsilonGreedy, true, _) => (5_000_000, 10_000, Visit::First),
            (McEpsilonGreedy, _, true) => (2_000_000, 1, Visit::First),
            (McEpsilonGreedy, _, _) if taxi => (5_000_000, 1000, Visit::First),
            (McEpsilonGreedy, _, _) => (1_000_000, 1000, Visit::First),
            (McOffPolicyPrediction, true, _) => (10_000, 1000, Visit::Every),
            (McOffPolicyPrediction, _, _) => (100_000, 1000, Visit::Every),
            (McOffPolicyControl, true, _) => (5_000_000, 10_000, Visit::Every),
            (McOffPolicyControl, _, _) => (1_000_000, 1000, Visit::Every),
        };
        c.episodes.get_or_insert(episodes);
        c.batch.get_or_insert(batch);
        c.visit.get_or_insert(visit);
        match c.algo {
            McBasic => {
                c.iterations.get_or_insert(if grid || cliff { 50 } else { 10 });
            }
            McEpsilonGreedy => {
                let e = if bj {
                    "0.1"
                } else if grid {
                    "exp:1:0.01:0.9,linear:0.01:0:0.1"
                } else if taxi {
                    "linear:1:0:0.5"
                } else {
                    "linear:1:0.05:0.8"
                };
                c.epsilon.get_or_insert_with(|| e.into());
                c.start.get_or_insert(if grid { StartFrom::Uniform } else { StartFrom::Env });
                if grid && c.step_size.is_none() {
                    c.step_size = Some(0.01);
                }
                // Taxi: sample averages drown in the random policy's early returns (about −700 per
                // 200-step episode), and constant-α leaves the rarely tried actions at the values
                // of those policies; forgetting in the time of the state forgets them both.
                if taxi && c.step_size.is_none() && c.forget.is_none() {
                    c.forget = Some(2e-4);
                }
            }
            McOffPolicyControl => {
                c.epsilon.get_or_insert_with(|| "1".into());
                c.start.get_or_insert(if bj || grid { StartFrom::Uniform } else { StartFrom::Env });
            }
            McPrediction => {
                c.policy.get_or_insert(if bj { EvalPolicy::Stick20 } else { EvalPolicy::Optimal });
                if *c.target.get_or_insert(PredictionTarget::V) == PredictionTarget::Q {
                    c.start.get_or_insert(StartFrom::Uniform);
                }
            }
            McOffPolicyPrediction => {
                c.policy.get_or_insert(if bj { EvalPolicy::Stick20 } else { EvalPolicy::Optimal });
                if bj && c.start_state.is_none() {
                    c.start_state = Some(BlackjackObs { player_sum: 13, dealer_card: 2, usable_ace: true }.index());
                }
                c.runs.get_or_insert(if c.start_state.is_some() { 100 } else { 1 });
            }
            McEs => {}
        }
        c
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(g) = self.gamma {
            ensure!(g.is_finite() && (0.0..=1.0).contains(&g), "--gamma must be in [0, 1], got {g}");
        }
        // Flags of some algorithms only: refused elsewhere rather than ignored.
        let set = [
            ("epsilon", self.epsilon.is_some()),
            ("step_size", self.step_size.is_some()),
            ("forget", self.forget.is_some()),
            ("iterations", self.iterations.is_some()),
            ("runs", self.runs.is_some()),
            ("start_state", self.start_state.is_some()),
            ("start", self.start.is_some()),
            ("target", self.target.is_some()),
        ];
        for (field, given) in set {
            let users: Vec<&str> = TabularAlgo::ALL.iter().filter(|a| a.takes(field)).map(|a| a.name()).collect();
            ensure!(!given || self.algo.takes(field), "--{} does not apply to {} (it is for {})", field.replace('_', "-"), self.algo, users.join(", "));
        }
        if let Some(e) = &self.epsilon {
            let e = parse_epsilon(e)?;
            if self.algo == McOffPolicyControl {
                let Epsilon::Fixed(x) = e else { bail!("--epsilon of mc-off-policy-control is one number in (0, 1]") };
                ensure!(x > 0.0, "--epsilon of mc-off-policy-control must be above 0: the behaviour policy must be soft");
            }
        }
        if self.algo == McPrediction && self.start.is_some() {
            ensure!(self.target == Some(PredictionTarget::Q), "--start applies to mc-prediction only with --target q (v prediction starts where the env does)");
        }
        for (name, v) in [("episodes", self.episodes), ("batch", self.batch), ("iterations", self.iterations), ("runs", self.runs)] {
            ensure!(v != Some(0), "--{name} must be at least 1");
        }
        ensure!(self.episode_length != Some(0), "--episode-length must be at least 1");
        if self.policy.is_some() {
            ensure!(self.algo.is_prediction(), "--policy is for the prediction algorithms (the control algorithms learn their own)");
        }
        if let Some(a) = self.step_size {
            ensure!(a > 0.0 && a <= 1.0, "--step-size must be in (0, 1], got {a}");
        }
        if let Some(b) = self.forget {
            ensure!(b > 0.0 && b < 1.0, "--forget must be in (0, 1), got {b}");
            ensure!(self.step_size.is_none(), "--forget and --step-size are two rules for the same estimate: give one");
        }
        Ok(())
    }

    pub fn env_id(&self) -> &str {
        self.env.as_deref().unwrap_or("Blackjack-v1")
    }
}

/// A fresh copy of the run's env.
pub fn make_env(cfg: &TabularConfig) -> Result<DynTabular> {
    let env = wick_envs::registry::make_str(cfg.env_id(), cfg.env_options.as_deref().unwrap_or(""))?;
    let id = env.id();
    let t = DynTabular::new(env).map_err(|_| Error::new(format!("{id} is not a tabular environment (no state index): {} needs one", cfg.algo)))?;
    Ok(t)
}

/// The states exploring (and uniform) starts draw from and the comparisons with DP range
/// over: Blackjack's 200 decision states, elsewhere every state an episode can be in (the ones
/// the env accepts as a start: CliffWalking refuses its cliff and goal cells).
fn start_states(cfg: &TabularConfig) -> Result<Vec<usize>> {
    if blackjack(cfg.env_id()) {
        return Ok(BlackjackObs::decision_states());
    }
    let mut env = make_env(cfg)?;
    Ok((0..env.n_states()).filter(|&s| env.start_at(s).is_ok()).collect())
}

/// The policy a prediction run evaluates.
pub fn prediction_policy(cfg: &TabularConfig, env: &DynTabular) -> Result<Policy> {
    let (ns, na) = (env.n_states(), env.n_actions());
    match cfg.policy.unwrap_or(EvalPolicy::Random) {
        EvalPolicy::Random => Ok(Policy::uniform(ns, na)),
        EvalPolicy::Stick20 => {
            ensure!(blackjack(cfg.env_id()), "--policy stick20 is a Blackjack policy");
            let a: Vec<usize> = (0..ns).map(|s| if s >= 704 || BlackjackObs::from_index(s).player_sum >= 20 { STICK } else { HIT }).collect();
            Policy::deterministic(&a, na)
        }
        EvalPolicy::Optimal => match env.exact_model() {
            Some(m) => Policy::deterministic(&m.value_iteration(cfg.gamma.unwrap_or(1.0), 1e-12).1, na),
            None => bail!("--policy optimal needs an env with an exact model"),
        },
    }
}

/// Train (or continue) a tabular run, generating episodes on `threads` threads (the results do
/// not depend on how many).
pub fn train(cfg: &TabularConfig, rt: &Runtime, threads: usize) -> Result<Outcome> {
    cfg.validate()?;
    let envs: Vec<DynTabular> = (0..threads.max(1)).map(|_| make_env(cfg)).collect::<Result<_>>()?;
    let env = &envs[0];
    let gamma = cfg.gamma.unwrap_or(1.0);
    let max_len = cfg.episode_length;
    let visit = cfg.visit.unwrap_or(Visit::First);
    let batch = cfg.batch.unwrap_or(1);
    let episodes = cfg.episodes.unwrap_or(1);
    let uniform = cfg.start == Some(StartFrom::Uniform);
    let ns = env.n_states();
    // Empty = every state.
    let starts = Some(start_states(cfg)?).filter(|s| s.len() < ns).unwrap_or_default();
    let mut run = Session::open(rt, cfg)?;
    let seed = cfg.seed;
    match cfg.algo {
        McEs => {
            let c = EsConfig { episodes, gamma, visit, max_len, starts, batch, seed };
            drive(EsAgent::new(env, &c)?, cfg, run, envs, episodes)
        }
        McEpsilonGreedy => {
            let c = EpsilonGreedyConfig {
                episodes,
                gamma,
                epsilon: parse_epsilon(cfg.epsilon.as_deref().unwrap_or("0.1"))?,
                visit,
                max_len,
                start: if uniform { StartMode::UniformState } else { StartMode::Env },
                starts,
                step_size: cfg.step_size,
                forget: cfg.forget,
                batch,
                seed,
            };
            drive(EpsilonGreedyAgent::new(env, &c)?, cfg, run, envs, episodes)
        }
        McOffPolicyControl => {
            let epsilon = parse_epsilon(cfg.epsilon.as_deref().unwrap_or("1")).map(|e| e.at(0, 1))?;
            let start = if uniform { StartMode::UniformState } else { StartMode::Env };
            let c = OffPolicyControlConfig { episodes, gamma, epsilon, max_len, start, starts, batch, seed };
            drive(OffPolicyControlAgent::new(env, &c)?, cfg, run, envs, episodes)
        }
        McBasic => {
            let c = McBasicConfig {
                iterations: cfg.iterations.unwrap_or(1) as usize,
                episodes_per_pair: episodes,
                episode_length: max_len.unwrap_or(100),
                gamma,
                starts,
                seed,
            };
            let agent = McBasicAgent::new(env, &c)?;
            let total = agent.iteration_episodes() * c.iterations as u64;
            // One batch is one iteration; checkpoints and TensorBoard say so (config.toml does not).
            let cfg = TabularConfig { batch: Some(agent.iteration_episodes()), ..cfg.clone() };
            run.describe(&cfg)?;
            drive(agent, &cfg, run, envs, total)
        }
        McPrediction => {
            let policy = prediction_policy(cfg, env)?;
            let c = PredictionConfig { episodes, gamma, visit, max_len, batch, seed };
            let target = match cfg.target {
                Some(PredictionTarget::Q) => Target::Q { exploring_starts: uniform },
                Some(PredictionTarget::V) | None => Target::V,
            };
            drive(PredictionAgent::new(env, &policy, &c, target, &starts)?, cfg, run, envs, episodes)
        }
        McOffPolicyPrediction => {
            let target = prediction_policy(cfg, env)?;
            let behaviour = Policy::uniform(ns, env.n_actions());
            let c = OffPolicyPredictionConfig { episodes, gamma, max_len, start: cfg.start_state, batch, seed };
            match cfg.start_state {
                Some(s) => crate::example_5_4::error_curves(cfg, run, envs, &target, &behaviour, &c, s),
                None => drive(OffPolicyPredictionAgent::new(env, &target, &behaviour, &c)?, cfg, run, envs, episodes),
            }
        }
    }
}

/// Where a run stands; saved in the checkpoint's metadata as `train_state`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct State {
    /// Episodes learned from.
    episodes: u64,
    /// Batches done.
    batches: u64,
    /// Sums over the current logging interval.
    ret_sum: f64,
    ret_n: u64,
    max_update: f64,
    /// Greedy policy at the last log (for policy/changed_states).
    last_policy: Option<Vec<usize>>,
}

/// The DP reference of a run: v* (control) or v_π (prediction) on the eval states.
struct Reference {
    states: Vec<usize>,
    v: Vec<f64>,
    model_q: Option<Box<dyn Fn(usize, usize) -> f64>>,
}

fn reference<A: McAgent>(agent: &A, cfg: &TabularConfig, env: &DynTabular) -> Result<Option<Reference>> {
    let Some(m) = env.exact_model() else { return Ok(None) };
    let gamma = cfg.gamma.unwrap_or(1.0);
    let states = start_states(cfg)?;
    let m = m.clone();
    if agent.greedy_policy().is_some() {
        let (v, _) = m.value_iteration(gamma, 1e-12);
        let vv = v.clone();
        let q = move |s: usize, a: usize| m.q(&vv, s, a, gamma);
        Ok(Some(Reference { states, v, model_q: Some(Box::new(q)) }))
    } else {
        let pol = prediction_policy(cfg, env)?;
        // Exact v_π of a stochastic policy: iterate v ← Σ_a π(a|s) q(s, a).
        let mut v = vec![0.0; m.num_states()];
        loop {
            let mut d: f64 = 0.0;
            for s in 0..m.num_states() {
                let x: f64 = (0..m.num_actions()).map(|a| pol.prob(s, a) * m.q(&v, s, a, gamma)).sum();
                d = d.max((x - v[s]).abs());
                v[s] = x;
            }
            if d < 1e-12 {
                break;
            }
        }
        let vv = v.clone();
        let q = move |s: usize, a: usize| m.q(&vv, s, a, gamma);
        Ok(Some(Reference { states, v, model_q: Some(Box::new(q)) }))
    }
}

/// q prediction's error: the RMSE of `Q(s, a)` against the exact `q_π` over the eval states and
/// every action (None for control and for v prediction).
fn q_rmse<A: McAgent>(agent: &A, r: &Reference) -> Option<f64> {
    let (q, exact) = (agent.q()?, r.model_q.as_ref()?);
    if agent.greedy_policy().is_some() {
        return None;
    }
    let sq: f64 = r.states.iter().flat_map(|&s| (0..q.num_actions).map(move |a| (s, a))).map(|(s, a)| (q.get(s, a) - exact(s, a)).powi(2)).sum();
    Some((sq / (r.states.len() * q.num_actions).max(1) as f64).sqrt())
}

/// `(optimal_action_agreement, largest q* gap where the greedy action is not optimal, value_rmse)`.
fn compare<A: McAgent>(agent: &A, r: &Reference) -> (Option<f64>, Option<f64>, f64) {
    let values = agent.state_values();
    let rmse = (r.states.iter().map(|&s| (values[s] - r.v[s]).powi(2)).sum::<f64>() / r.states.len().max(1) as f64).sqrt();
    match (agent.greedy_policy(), &r.model_q) {
        (Some(pi), Some(q)) => {
            let mut good = 0;
            let mut gap: f64 = 0.0;
            for &s in &r.states {
                let g = r.v[s] - q(s, pi[s]);
                if g <= 1e-9 {
                    good += 1;
                } else {
                    gap = gap.max(g);
                }
            }
            (Some(good as f64 / r.states.len().max(1) as f64), Some(gap), rmse)
        }
        _ => (None, None, rmse),
    }
}

/// The greedy policy a run saves, evaluates and draws. Blackjack's hands below 12 are no
/// decision (S&B Example 5.1: a card cannot bust them, so the player always hits); runs whose
/// starts are the 200 decision states never see them, and the argmax of their all-zero rows
/// would stick. Where the run never tried an action in such a state, the rule fills it in.
pub fn run_policy<A: McAgent>(agent: &A, cfg: &TabularConfig) -> Option<Vec<usize>> {
    let mut pi = agent.greedy_policy()?;
    if blackjack(cfg.env_id()) {
        let unseen = |s: usize| agent.q().is_none_or(|q| (0..q.num_actions).all(|a| q.count(s, a) == 0));
        for (s, a) in pi.iter_mut().enumerate().take(704) {
            // (704.. are the natural hands, which end the game at once)
            if BlackjackObs::from_index(s).player_sum < 12 && unseen(s) {
                *a = HIT;
            }
        }
    }
    Some(pi)
}

/// The full state of a run: the agent's tables, the greedy policy, the counters.
fn checkpoint<A: McAgent>(agent: &A, st: &State, cfg: &TabularConfig) -> Checkpoint {
    let mut ck = Checkpoint::new();
    agent.save(&mut ck);
    // The policy to play (MC Basic saves its own, the same but for the states `run_policy` fills).
    if let Some(pi) = run_policy(agent, cfg) {
        ck.put_u64("policy", &[pi.len()], &pi.iter().map(|&a| a as u64).collect::<Vec<_>>());
    }
    ck.set_meta("train_state", st);
    ck
}

/// The generic training loop: batches, logging, checkpoints, final figures.
fn drive<A: McAgent>(mut agent: A, cfg: &TabularConfig, run: Opening, envs: Vec<DynTabular>, total: u64) -> Result<Outcome> {
    let batch = cfg.batch.unwrap_or(1).max(1);
    let reference = reference(&agent, cfg, &envs[0])?;
    let mut col = Collector::new(envs, cfg.seed, cfg.algo.name())?;
    let mut st = State::default();
    if let Some(ck) = run.checkpoint()? {
        agent.load(&ck).map_err(|e| run.resume_error(e))?;
        st = ck.meta("train_state")?;
    }
    // A resumed run drops whatever the interrupted process logged after its checkpoint.
    let mut run = run.start(cfg.algo.name(), Some(st.episodes + 1), total, st.episodes)?;
    let total_batches = total.div_ceil(batch);
    let log_every = total_batches.div_ceil(100).max(1);
    let t0 = Instant::now();
    let (mut t_log, mut eps_log) = (Instant::now(), 0u64);
    // Checkpoints and event-file flushes (both fsynced) at the first logging point, then at most
    // once a second: which points get one
    // does not matter, a resumed run continues exactly from any of them.
    let mut t_ckpt: Option<Instant> = None;
    let start_episodes = st.episodes;
    if st.last_policy.is_none() {
        st.last_policy = run_policy(&agent, cfg);
    }
    while st.episodes < total && !agent.converged() {
        let b = batch.min(total - st.episodes);
        let (mut rs, mut rn) = (0.0, 0u64);
        let upd = col.batch(&mut agent, st.episodes, b, |_, rets| {
            for &g in rets {
                rs += g;
            }
            rn += rets.len() as u64;
        })?;
        st.episodes += b;
        st.batches += 1;
        st.ret_sum += rs;
        st.ret_n += rn;
        st.max_update = st.max_update.max(upd);
        eps_log += b;
        run.progress.inc(b);
        let last = st.episodes >= total || agent.converged();
        if st.batches % log_every == 0 || last {
            let k = st.episodes;
            run.tb.scalar("charts/episodic_return", k, st.ret_sum / st.ret_n.max(1) as f64)?;
            run.tb.scalar("charts/episodes_per_s", k, eps_log as f64 / t_log.elapsed().as_secs_f64().max(1e-9))?;
            run.tb.scalar("values/max_abs_update", k, st.max_update)?;
            if let Some(pi) = run_policy(&agent, cfg) {
                let changed = st.last_policy.as_ref().map_or(0, |p| p.iter().zip(&pi).filter(|(a, b)| a != b).count());
                run.tb.scalar("policy/changed_states", k, changed as f64)?;
                st.last_policy = Some(pi);
            }
            if let Some(r) = &reference {
                let (agree, _, rmse) = compare(&agent, r);
                if let Some(a) = agree {
                    run.tb.scalar("eval/optimal_action_agreement", k, a)?;
                }
                run.tb.scalar("eval/value_rmse", k, rmse)?;
                if let Some(e) = q_rmse(&agent, r) {
                    run.tb.scalar("eval/q_value_rmse", k, e)?;
                }
            }
            st.ret_sum = 0.0;
            st.ret_n = 0;
            st.max_update = 0.0;
            if t_ckpt.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0) {
                run.tb.flush()?;
                run.fault_after_log();
                run.save(checkpoint(&agent, &st, cfg))?;
                t_ckpt = Some(Instant::now());
            } else {
                run.fault_after_log();
            }
            t_log = Instant::now();
            eps_log = 0;
        }
        if run.interrupted() && !last {
            run.tb.flush()?; // everything logged so far is on disk before the checkpoint that covers it
            run.save(checkpoint(&agent, &st, cfg))?;
            return run.interrupt(st.episodes);
        }
    }
    run.progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    // The scalars of the last logging steps reach the disk before the final checkpoint: a run
    // killed between the two and resumed would otherwise start from the end and never write them.
    run.tb.flush()?;
    run.save(checkpoint(&agent, &st, cfg))?;
    let dir = run.dir().path().to_path_buf();
    crate::tabular_images::log_images(&mut run.tb, cfg, &agent, st.episodes, &dir)?;
    run.tb.flush()?;
    let mut metrics = serde_json::json!({
        "algo": cfg.algo,
        "env": cfg.env_id(),
        "seed": cfg.seed,
        "episodes": st.episodes,
        "batches": st.batches,
        "episodes_per_s": if st.episodes > start_episodes { serde_json::json!((st.episodes - start_episodes) as f64 / secs.max(1e-9)) } else { serde_json::Value::Null },
    });
    let m = metrics.as_object_mut().unwrap();
    if let Some(r) = &reference {
        let (agree, gap, rmse) = compare(&agent, r);
        m.insert("value_rmse".into(), rmse.into());
        m.insert("eval_states".into(), r.states.len().into());
        if let Some(e) = q_rmse(&agent, r) {
            m.insert("q_value_rmse".into(), e.into());
        }
        if let (Some(a), Some(g)) = (agree, gap) {
            m.insert("optimal_action_agreement".into(), a.into());
            m.insert("max_gap_where_not_optimal".into(), g.into());
        }
    }
    if let Some(pi) = run_policy(&agent, cfg) {
        let ret = evaluate_policy(cfg, &pi, 10_000, cfg.seed)?;
        m.insert("eval_mean_return".into(), ret.0.into());
        m.insert("eval_return_stderr".into(), ret.1.into());
        m.insert("eval_episodes".into(), 10_000.into());
        // The DP-optimal policy on the same evaluation episodes (same seed: where the env draws
        // only at resets, as dry Taxi, the very same start states), and its exact expected return
        // from the start distribution.
        let env = make_env(cfg)?;
        if let Some(model) = env.exact_model() {
            let (v, pi_star) = model.value_iteration(cfg.gamma.unwrap_or(1.0), 1e-12);
            let opt = evaluate_policy(cfg, &pi_star, 10_000, cfg.seed)?;
            m.insert("optimal_eval_mean_return".into(), opt.0.into());
            m.insert("optimal_start_value".into(), model.start().iter().map(|&(p, s)| p * v[s]).sum::<f64>().into());
        }
    }
    run.finish(metrics)
}

/// Mean undiscounted return of the deterministic `policy` over `episodes` episodes from the
/// env's start distribution, and its standard error.
pub fn evaluate_policy(cfg: &TabularConfig, policy: &[usize], episodes: u64, seed: u64) -> Result<(f64, f64)> {
    let mut env = make_env(cfg)?;
    env.start(Some(seed))?;
    let mut rng = Rng::stream(seed, "eval");
    let mut ep = Vec::new();
    let (mut s1, mut s2) = (0.0, 0.0);
    // Episodes end as the env's own do (its time limit, as Gymnasium's); envs without one are cut
    // at the run's episode length (continuing tasks: or 100 steps).
    let max_len = match env.env.max_episode_steps() {
        Some(_) => None,
        None => cfg.episode_length.or(if cfg.env_id() == "GridWorld" { Some(100) } else { None }),
    };
    for _ in 0..episodes {
        generate_episode(&mut env, Start::Reset, max_len, &mut rng, &mut ep, |s, _| policy[s])?;
        let g: f64 = ep.iter().map(|t| t.r).sum();
        s1 += g;
        s2 += g * g;
    }
    let n = episodes as f64;
    let mean = s1 / n;
    let var = if episodes > 1 { (s2 - n * mean * mean) / (n - 1.0) } else { 0.0 };
    Ok((mean, (var.max(0.0) / n).sqrt()))
}

