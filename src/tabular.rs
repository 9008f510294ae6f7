//! `wick train mc-*` (the tabular Monte Carlo agents of wick-agents) and `wick eval` of their runs.
//!
//! A run is a sequence of batches of episodes (see `wick_agents::parallel`): `--threads N`
//! generates a batch's episodes on N threads, bit-identically for every N. Every `log`
//! interval (about 100 over the run, at batch boundaries) the trainer logs to TensorBoard and,
//! at most once a second, writes `checkpoint.safetensors` (Q-table `q` f64 [S, A], counts `n`, greedy `policy`, the
//! agent's other tables, the counters in the metadata); Ctrl-C checkpoints at the next batch
//! boundary. Where the env has an exact model, the learned policy and values are compared with
//! dynamic programming (`eval/optimal_action_agreement`, `eval/value_rmse`).

use crate::cli::{configure, finish, CommonFlags, EvalArgs};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::time::Instant;
use wick_agents::parallel::{Collector, McAgent};
use wick_agents::tabular::{generate_episode, Start};
use wick_agents::*;
use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::run::{Outcome, RunDir, Runtime};
use wick_core::tb::TbLogger;
use wick_core::{bail, ensure, Error, Result};
use wick_envs::blackjack::{BlackjackObs, HIT, STICK};

/// The tabular algorithms, for `wick list`.
pub const ALGOS: &[(&str, &str)] = &[
    ("mc-prediction", "first-/every-visit MC prediction of v_pi (S&B 5.1; tabular)"),
    ("mc-basic", "MC Basic: policy iteration with MC estimates from every (s, a) (Zhao Alg. 5.1; tabular)"),
    ("mc-es", "Monte Carlo exploring starts (S&B 5.3, Fig. 5.2; tabular)"),
    ("mc-epsilon-greedy", "on-policy MC control, epsilon-greedy, fixed or decaying epsilon (S&B 5.4; tabular)"),
    ("mc-off-policy-prediction", "off-policy MC prediction, ordinary and weighted importance sampling (S&B 5.5-5.6, Ex. 5.4; tabular)"),
    ("mc-off-policy-control", "off-policy MC control with weighted importance sampling (S&B 5.7; tabular)"),
];

/// Flags of the tabular trainers; unset flags take the --config file's value, then the
/// default for the algorithm and env (the defaults reproduce the results in docs/rl.md).
#[derive(Args, Serialize, Debug, Clone)]
pub struct TabularFlags {
    #[command(flatten)]
    #[serde(skip)]
    pub common: CommonFlags,
    /// Environment id (see `wick list`) [default: Blackjack-v1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Env options as key=value,... (e.g. is_slippery=false)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_options: Option<String>,
    /// Episodes (mc-basic: episodes per state-action pair and iteration)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episodes: Option<u64>,
    /// Discount factor in [0, 1]
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// mc-epsilon-greedy: E (fixed), linear:START:END:FRACTION, exp:START:END:FRACTION, or
    /// stages of these one after another, joined by commas (exp:1:0.01:0.9,linear:0.01:0:0.1
    /// ends at 0); mc-off-policy-control: the behaviour's epsilon (1 = uniformly random)
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<String>,
    /// Cut episodes after this many steps (needed for continuing tasks such as GridWorld)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode_length: Option<usize>,
    /// Policy evaluated by the prediction algorithms: random, optimal (by DP) or stick20
    /// (Blackjack: stick only on 20 or 21)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// first or every (visit rule of the sample averages)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visit: Option<String>,
    /// Episodes generated per policy snapshot (1 = improve after every episode)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// mc-basic: policy iterations
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// mc-off-policy-prediction: start every episode in this state index and record the
    /// mean-squared-error curves there (Blackjack default: sum 13, usable ace, dealer 2)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_state: Option<usize>,
    /// mc-off-policy-prediction: independent runs averaged in the error curves
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<u64>,
    /// Where episodes start (mc-epsilon-greedy, mc-off-policy-control, mc-prediction --target q):
    /// env (the env's start distribution) or uniform (a uniformly drawn state; for q prediction
    /// a uniformly drawn state-action pair)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// mc-epsilon-greedy: constant step size alpha instead of sample averages
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    /// mc-prediction: v (state values, episodes from the env's start) or q (action values,
    /// S&B 5.2; with --start uniform, the default for q, each episode starts from a random
    /// state-action pair so that every pair gets returns) [default: v]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Every hyperparameter of a tabular run; `config.toml` holds the resolved values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TabularConfig {
    pub algo: String,
    pub env: Option<String>,
    pub env_options: Option<String>,
    pub seed: u64,
    pub episodes: Option<u64>,
    pub gamma: Option<f64>,
    pub epsilon: Option<String>,
    pub episode_length: Option<usize>,
    pub policy: Option<String>,
    pub visit: Option<String>,
    pub batch: Option<u64>,
    pub iterations: Option<u64>,
    pub start_state: Option<usize>,
    pub runs: Option<u64>,
    pub start: Option<String>,
    pub step_size: Option<f64>,
    pub target: Option<String>,
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
        if c.episode_length.is_none() && (grid || cliff || c.algo == "mc-basic") {
            c.episode_length = Some(if c.algo == "mc-basic" && grid { 15 } else { 100 });
        }
        // Taxi's exploring starts: a looping greedy policy's episodes are cut at 20 steps rather
        // than at the 200-step limit (an optimal episode, from any state and first action, takes
        // at most 19), so that their returns weigh less on the sample averages.
        if c.episode_length.is_none() && taxi && c.algo == "mc-es" {
            c.episode_length = Some(20);
        }
        let (episodes, batch, visit) = match (c.algo.as_str(), bj, grid) {
            ("mc-prediction", true, _) => (500_000, 10_000, "first"),
            ("mc-prediction", _, _) => (10_000, 100, "first"),
            ("mc-basic", _, true) => (1, 1, "first"),
            ("mc-basic", _, _) => (1000, 1, "first"),
            ("mc-es", true, _) => (5_000_000, 10_000, "first"),
            ("mc-es", _, true) => (100_000, 10, "first"),
            ("mc-es", _, _) if taxi => (10_000_000, 1000, "first"),
            ("mc-es", _, _) => (1_000_000, 1000, "first"),
            ("mc-epsilon-greedy", true, _) => (5_000_000, 10_000, "first"),
            ("mc-epsilon-greedy", _, true) => (2_000_000, 1, "first"),
            ("mc-epsilon-greedy", _, _) if taxi => (2_000_000, 1000, "first"),
            ("mc-epsilon-greedy", _, _) => (1_000_000, 1000, "first"),
            ("mc-off-policy-prediction", true, _) => (10_000, 1000, "every"),
            ("mc-off-policy-prediction", _, _) => (100_000, 1000, "every"),
            ("mc-off-policy-control", true, _) => (5_000_000, 10_000, "every"),
            (_, _, _) => (1_000_000, 1000, "every"),
        };
        c.episodes.get_or_insert(episodes);
        c.batch.get_or_insert(batch);
        c.visit.get_or_insert_with(|| visit.into());
        match c.algo.as_str() {
            "mc-basic" => {
                c.iterations.get_or_insert(if grid || cliff { 50 } else { 10 });
            }
            "mc-epsilon-greedy" => {
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
                c.start.get_or_insert_with(|| if grid { "uniform" } else { "env" }.into());
                if grid && c.step_size.is_none() {
                    c.step_size = Some(0.01);
                }
                // Taxi: sample averages drown in the random policy's early returns (about −700 per
                // 200-step episode); a constant step size forgets them.
                if taxi && c.step_size.is_none() {
                    c.step_size = Some(0.02);
                }
            }
            "mc-off-policy-control" => {
                c.epsilon.get_or_insert_with(|| "1".into());
                c.start.get_or_insert_with(|| if bj || grid { "uniform" } else { "env" }.into());
            }
            "mc-prediction" => {
                c.policy.get_or_insert_with(|| if bj { "stick20" } else { "optimal" }.into());
                if c.target.get_or_insert_with(|| "v".into()) == "q" {
                    c.start.get_or_insert_with(|| "uniform".into());
                }
            }
            "mc-off-policy-prediction" => {
                c.policy.get_or_insert_with(|| if bj { "stick20" } else { "optimal" }.into());
                if bj && c.start_state.is_none() {
                    c.start_state = Some(BlackjackObs { player_sum: 13, dealer_card: 2, usable_ace: true }.index());
                }
                c.runs.get_or_insert(if c.start_state.is_some() { 100 } else { 1 });
            }
            _ => {}
        }
        c
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(ALGOS.iter().any(|a| a.0 == self.algo), "unknown tabular algorithm '{}'", self.algo);
        if let Some(g) = self.gamma {
            ensure!(g.is_finite() && (0.0..=1.0).contains(&g), "--gamma must be in [0, 1], got {g}");
        }
        // Flags of some algorithms only: refused elsewhere rather than ignored.
        let only: [(&str, bool, &[&str]); 7] = [
            ("epsilon", self.epsilon.is_some(), &["mc-epsilon-greedy", "mc-off-policy-control"]),
            ("step-size", self.step_size.is_some(), &["mc-epsilon-greedy"]),
            ("iterations", self.iterations.is_some(), &["mc-basic"]),
            ("runs", self.runs.is_some(), &["mc-off-policy-prediction"]),
            ("start-state", self.start_state.is_some(), &["mc-off-policy-prediction"]),
            ("start", self.start.is_some(), &["mc-epsilon-greedy", "mc-off-policy-control", "mc-prediction"]),
            ("target", self.target.is_some(), &["mc-prediction"]),
        ];
        for (flag, given, algos) in only {
            ensure!(!given || algos.contains(&self.algo.as_str()), "--{flag} does not apply to {} (it is for {})", self.algo, algos.join(", "));
        }
        if let Some(e) = &self.epsilon {
            let e = parse_epsilon(e)?;
            if self.algo == "mc-off-policy-control" {
                let Epsilon::Fixed(x) = e else { bail!("--epsilon of mc-off-policy-control is one number in (0, 1]") };
                ensure!(x > 0.0, "--epsilon of mc-off-policy-control must be above 0: the behaviour policy must be soft");
            }
        }
        if let Some(t) = &self.target {
            ensure!(t == "v" || t == "q", "--target must be v or q, got '{t}'");
        }
        if self.algo == "mc-prediction" && self.start.is_some() {
            ensure!(self.target.as_deref() == Some("q"), "--start applies to mc-prediction only with --target q (v prediction starts where the env does)");
        }
        for (name, v) in [("episodes", self.episodes), ("batch", self.batch), ("iterations", self.iterations), ("runs", self.runs)] {
            ensure!(v != Some(0), "--{name} must be at least 1");
        }
        ensure!(self.episode_length != Some(0), "--episode-length must be at least 1");
        if let Some(v) = &self.visit {
            ensure!(v == "first" || v == "every", "--visit must be first or every, got '{v}'");
        }
        if let Some(s) = &self.start {
            ensure!(s == "env" || s == "uniform", "--start must be env or uniform, got '{s}'");
        }
        if let Some(p) = &self.policy {
            ensure!(matches!(p.as_str(), "random" | "optimal" | "stick20"), "--policy must be random, optimal or stick20, got '{p}'");
            ensure!(self.algo.contains("prediction"), "--policy is for the prediction algorithms (the control algorithms learn their own)");
        }
        if let Some(a) = self.step_size {
            ensure!(a > 0.0 && a <= 1.0, "--step-size must be in (0, 1], got {a}");
        }
        Ok(())
    }

    fn env_id(&self) -> &str {
        self.env.as_deref().unwrap_or("Blackjack-v1")
    }

    fn visit(&self) -> Visit {
        if self.visit.as_deref() == Some("every") {
            Visit::Every
        } else {
            Visit::First
        }
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
pub(crate) fn prediction_policy(cfg: &TabularConfig, env: &DynTabular) -> Result<Policy> {
    let (ns, na) = (env.n_states(), env.n_actions());
    match cfg.policy.as_deref().unwrap_or("random") {
        "random" => Ok(Policy::uniform(ns, na)),
        "stick20" => {
            ensure!(blackjack(cfg.env_id()), "--policy stick20 is a Blackjack policy");
            let a: Vec<usize> = (0..ns).map(|s| if s >= 704 || BlackjackObs::from_index(s).player_sum >= 20 { STICK } else { HIT }).collect();
            Policy::deterministic(&a, na)
        }
        "optimal" => match env.exact_model() {
            Some(m) => Policy::deterministic(&m.value_iteration(cfg.gamma.unwrap_or(1.0), 1e-12).1, na),
            None => bail!("--policy optimal needs an env with an exact model"),
        },
        p => bail!("unknown policy '{p}'"),
    }
}

pub fn train(algo: &str, flags: TabularFlags) -> Result<ExitCode> {
    if wick_core::dist::world().size() > 1 {
        bail!("{algo} is tabular Monte Carlo and runs in one process (it is already thread-parallel and bit-identical for any --threads): run it without mpirun/srun");
    }
    if flags.common.device.trim() != "cpu" {
        bail!("{algo} is a tabular agent and runs on the CPU only; drop --device {} (it is for the neural trainers)", flags.common.device);
    }
    let (cfg, prepared) = configure(algo, &flags, &flags.common, |cfg: TabularConfig| {
        cfg.validate()?;
        let cfg = cfg.with_defaults();
        cfg.validate()?;
        make_env(&cfg)?; // an unknown or non-tabular env fails before a run directory exists
        let (env, seed) = (cfg.env_id().to_string(), cfg.seed);
        Ok((cfg, env, seed))
    })?;
    let threads = flags.common.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let out = run(&cfg, &prepared.runtime, threads);
    finish(&prepared, algo, out)
}

/// Train (or continue) a tabular run.
pub fn run(cfg: &TabularConfig, rt: &Runtime, threads: usize) -> Result<Outcome> {
    cfg.validate()?;
    let envs: Vec<DynTabular> = (0..threads.max(1)).map(|_| make_env(cfg)).collect::<Result<_>>()?;
    let env = &envs[0];
    let gamma = cfg.gamma.unwrap_or(1.0);
    let max_len = cfg.episode_length;
    let visit = cfg.visit();
    let batch = cfg.batch.unwrap_or(1);
    let episodes = cfg.episodes.unwrap_or(1);
    let uniform = cfg.start.as_deref() == Some("uniform");
    let ns = env.n_states();
    // Empty = every state.
    let starts = Some(start_states(cfg)?).filter(|s| s.len() < ns).unwrap_or_default();
    if !rt.resume {
        rt.dir.write_config(&wick_core::config::to_toml(cfg)?)?;
    }
    let seed = cfg.seed;
    match cfg.algo.as_str() {
        "mc-es" => {
            let c = EsConfig { episodes, gamma, visit, max_len, starts, batch, seed };
            drive(EsAgent::new(env, &c)?, cfg, rt, envs, episodes)
        }
        "mc-epsilon-greedy" => {
            let c = EpsilonGreedyConfig {
                episodes,
                gamma,
                epsilon: parse_epsilon(cfg.epsilon.as_deref().unwrap_or("0.1"))?,
                visit,
                max_len,
                start: if uniform { StartMode::UniformState } else { StartMode::Env },
                starts,
                step_size: cfg.step_size,
                batch,
                seed,
            };
            drive(EpsilonGreedyAgent::new(env, &c)?, cfg, rt, envs, episodes)
        }
        "mc-off-policy-control" => {
            let epsilon = parse_epsilon(cfg.epsilon.as_deref().unwrap_or("1")).map(|e| e.at(0, 1))?;
            let start = if uniform { StartMode::UniformState } else { StartMode::Env };
            let c = OffPolicyControlConfig { episodes, gamma, epsilon, max_len, start, starts, batch, seed };
            drive(OffPolicyControlAgent::new(env, &c)?, cfg, rt, envs, episodes)
        }
        "mc-basic" => {
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
            let cfg = TabularConfig { batch: Some(agent.iteration_episodes()), ..cfg.clone() };
            drive(agent, &cfg, rt, envs, total)
        }
        "mc-prediction" => {
            let policy = prediction_policy(cfg, env)?;
            let c = PredictionConfig { episodes, gamma, visit, max_len, batch, seed };
            let target = match cfg.target.as_deref() {
                Some("q") => Target::Q { exploring_starts: uniform },
                _ => Target::V,
            };
            drive(PredictionAgent::new(env, &policy, &c, target, &starts)?, cfg, rt, envs, episodes)
        }
        "mc-off-policy-prediction" => {
            let target = prediction_policy(cfg, env)?;
            let behaviour = Policy::uniform(ns, env.n_actions());
            let c = OffPolicyPredictionConfig { episodes, gamma, max_len, start: cfg.start_state, batch, seed };
            match cfg.start_state {
                Some(s) => error_curves(cfg, rt, envs, &target, &behaviour, &c, s),
                None => drive(OffPolicyPredictionAgent::new(env, &target, &behaviour, &c)?, cfg, rt, envs, episodes),
            }
        }
        other => bail!("unknown tabular algorithm '{other}'"),
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
pub(crate) fn run_policy<A: McAgent>(agent: &A, cfg: &TabularConfig) -> Option<Vec<usize>> {
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

fn save_checkpoint<A: McAgent>(rt: &Runtime, agent: &A, st: &State, cfg: &TabularConfig) -> Result<()> {
    let mut ck = Checkpoint::new();
    agent.save(&mut ck);
    // The policy to play (MC Basic saves its own, the same but for the states `run_policy` fills).
    if let Some(pi) = run_policy(agent, cfg) {
        ck.put_u64("policy", &[pi.len()], &pi.iter().map(|&a| a as u64).collect::<Vec<_>>());
    }
    ck.set_meta("train_state", st);
    ck.set_meta("config", cfg);
    ck.save(&rt.dir.checkpoint())
}

/// The generic training loop: batches, logging, checkpoints, final figures.
fn drive<A: McAgent>(mut agent: A, cfg: &TabularConfig, rt: &Runtime, envs: Vec<DynTabular>, total: u64) -> Result<Outcome> {
    let batch = cfg.batch.unwrap_or(1).max(1);
    let reference = reference(&agent, cfg, &envs[0])?;
    let mut col = Collector::new(envs, cfg.seed, &cfg.algo)?;
    let mut st = State::default();
    let ckpt = rt.dir.checkpoint();
    if rt.resume && ckpt.exists() {
        let ck = Checkpoint::load(&ckpt)?;
        agent.load(&ck).map_err(|e| e.context(format!("resuming from '{}'", ckpt.display())))?;
        st = ck.meta("train_state")?;
    }
    let mut tb = TbLogger::create(rt.dir.path())?;
    if rt.resume {
        tb.resume_at(st.episodes + 1)?;
    } else {
        tb.text("config", 0, &format!("```toml\n{}\n```", wick_core::config::to_toml(cfg)?))?;
    }
    let total_batches = total.div_ceil(batch);
    let log_every = total_batches.div_ceil(100).max(1);
    let mut progress = wick_core::progress::Progress::new(&cfg.algo, total, rt.quiet);
    progress.set_position(st.episodes);
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
        progress.inc(b);
        let last = st.episodes >= total || agent.converged();
        if st.batches % log_every == 0 || last {
            let k = st.episodes;
            tb.scalar("charts/episodic_return", k, st.ret_sum / st.ret_n.max(1) as f64)?;
            tb.scalar("charts/episodes_per_s", k, eps_log as f64 / t_log.elapsed().as_secs_f64().max(1e-9))?;
            tb.scalar("values/max_abs_update", k, st.max_update)?;
            if let Some(pi) = run_policy(&agent, cfg) {
                let changed = st.last_policy.as_ref().map_or(0, |p| p.iter().zip(&pi).filter(|(a, b)| a != b).count());
                tb.scalar("policy/changed_states", k, changed as f64)?;
                st.last_policy = Some(pi);
            }
            if let Some(r) = &reference {
                let (agree, _, rmse) = compare(&agent, r);
                if let Some(a) = agree {
                    tb.scalar("eval/optimal_action_agreement", k, a)?;
                }
                tb.scalar("eval/value_rmse", k, rmse)?;
                if let Some(e) = q_rmse(&agent, r) {
                    tb.scalar("eval/q_value_rmse", k, e)?;
                }
            }
            st.ret_sum = 0.0;
            st.ret_n = 0;
            st.max_update = 0.0;
            if t_ckpt.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0) {
                tb.flush()?;
                wick_core::fault::point("after-log");
                save_checkpoint(rt, &agent, &st, cfg)?;
                t_ckpt = Some(Instant::now());
            } else {
                wick_core::fault::point("after-log");
            }
            t_log = Instant::now();
            eps_log = 0;
        }
        if wick_core::signal::interrupted() && !last {
            save_checkpoint(rt, &agent, &st, cfg)?;
            tb.flush()?;
            progress.finish();
            return Ok(Outcome::Interrupted { step: st.episodes });
        }
    }
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    save_checkpoint(rt, &agent, &st, cfg)?;
    crate::tabular_images::log_images(&mut tb, cfg, &agent, st.episodes, rt.dir.path())?;
    tb.flush()?;
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
    rt.dir.write_metrics(&metrics)?;
    Ok(Outcome::Finished(metrics))
}

/// Example 5.4 / Figure 5.3: error curves of ordinary and weighted IS at one state, averaged
/// over `runs` runs; TensorBoard `eval/mse_ordinary` and `eval/mse_weighted` by episode, and
/// `mse.csv` (episode, mse_ordinary, mse_weighted), the figure `mse.png` (tag `eval/mse_curves`).
/// Checkpointed after every run.
fn error_curves(
    cfg: &TabularConfig,
    rt: &Runtime,
    envs: Vec<DynTabular>,
    target: &Policy,
    behaviour: &Policy,
    c: &OffPolicyPredictionConfig,
    state: usize,
) -> Result<Outcome> {
    let env = &envs[0];
    ensure!(state < env.n_states(), "--start-state {state} is outside 0..{}", env.n_states());
    let Some(model) = env.exact_model() else { bail!("--start-state needs an env with an exact model (the error curves compare with DP)") };
    let truth = model.evaluate(&target.greedy_actions(), c.gamma, 1e-14)[state];
    let runs = cfg.runs.unwrap_or(1);
    let n = c.episodes as usize;
    let (mut ord, mut wei) = (vec![0.0; n], vec![0.0; n]);
    let mut done = 0u64;
    let ckpt = rt.dir.checkpoint();
    if rt.resume && ckpt.exists() {
        let ck = Checkpoint::load(&ckpt)?;
        ord = ck.f64_values("mse_sum_ordinary", &[n])?;
        wei = ck.f64_values("mse_sum_weighted", &[n])?;
        done = ck.meta("runs_done")?;
    }
    let mut tb = TbLogger::create(rt.dir.path())?;
    if !rt.resume {
        tb.text("config", 0, &format!("```toml\n{}\n```", wick_core::config::to_toml(cfg)?))?;
    }
    let t0 = Instant::now();
    let mut col = Collector::new(envs, c.seed, "mc-off-policy-prediction")?;
    let mut progress = wick_core::progress::Progress::new(&cfg.algo, runs, rt.quiet);
    progress.set_position(done);
    let save = |ord: &[f64], wei: &[f64], done: u64| -> Result<()> {
        let mut ck = Checkpoint::new();
        ck.put_f64("mse_sum_ordinary", &[n], ord);
        ck.put_f64("mse_sum_weighted", &[n], wei);
        ck.set_meta("runs_done", &done);
        ck.set_meta("config", cfg);
        ck.save(&ckpt)
    };
    let mut last_agent = None;
    while done < runs {
        let (o, w) = mse_curves_one(&mut col, target, behaviour, c, state, truth, done)?;
        for i in 0..n {
            ord[i] += o.0[i];
            wei[i] += w[i];
        }
        last_agent = Some(o.1);
        done += 1;
        progress.inc(1);
        save(&ord, &wei, done)?;
        if wick_core::signal::interrupted() && done < runs {
            progress.finish();
            return Ok(Outcome::Interrupted { step: done });
        }
    }
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    let r = runs as f64;
    let mut csv = String::from("episode,mse_ordinary,mse_weighted\n");
    for i in 0..n {
        csv.push_str(&format!("{},{},{}\n", i + 1, ord[i] / r, wei[i] / r));
        tb.scalar("eval/mse_ordinary", i as u64 + 1, ord[i] / r)?;
        tb.scalar("eval/mse_weighted", i as u64 + 1, wei[i] / r)?;
    }
    wick_core::checkpoint::write_atomic(&rt.dir.file("mse.csv"), csv.as_bytes())?;
    let rows: Vec<_> = (0..n).map(|i| ((i + 1) as f64, ord[i] / r, wei[i] / r)).collect();
    crate::tabular_images::log_error_curves(&mut tb, cfg, &rows, n as u64, rt.dir.path())?;
    tb.flush()?;
    let at = |v: &[f64], k: usize| v.get(k - 1).map(|x| x / r);
    let mean10 = |v: &[f64]| v.iter().take(10).sum::<f64>() / r / n.min(10) as f64;
    let mut metrics = serde_json::json!({
        "algo": cfg.algo,
        "env": cfg.env_id(),
        "seed": cfg.seed,
        "runs": runs,
        "episodes": c.episodes,
        "state": state,
        "true_value": truth,
        "mse_ordinary_first10": mean10(&ord),
        "mse_weighted_first10": mean10(&wei),
        "mse_ordinary_final": ord[n - 1] / r,
        "mse_weighted_final": wei[n - 1] / r,
        "episodes_per_s": if secs > 0.0 { serde_json::json!(((runs * c.episodes) as f64) / secs) } else { serde_json::Value::Null },
    });
    for k in [1usize, 10, 100, 1000, 10_000] {
        if let (Some(a), Some(b)) = (at(&ord, k), at(&wei, k)) {
            metrics[format!("mse_ordinary_at_{k}")] = a.into();
            metrics[format!("mse_weighted_at_{k}")] = b.into();
        }
    }
    if let Some((vo, vw)) = last_agent {
        metrics["last_run_ordinary_estimate"] = vo.into();
        metrics["last_run_weighted_estimate"] = vw.into();
    }
    rt.dir.write_metrics(&metrics)?;
    Ok(Outcome::Finished(metrics))
}

type Curve = (Vec<f64>, (f64, f64));

/// One run of the Example 5.4 experiment: squared errors after each episode.
fn mse_curves_one(
    col: &mut Collector<DynTabular>,
    target: &Policy,
    behaviour: &Policy,
    c: &OffPolicyPredictionConfig,
    state: usize,
    truth: f64,
    run: u64,
) -> Result<(Curve, Vec<f64>)> {
    let n = c.episodes as usize;
    let (mut ord, mut wei) = (vec![0.0; n], vec![0.0; n]);
    let mut agent = OffPolicyPredictionAgent::new(col.env(), target, behaviour, c)?;
    col.set_stream(&format!("mc-off-policy-prediction/run{run}"));
    let mut k = 0;
    while k < c.episodes {
        let b = c.batch.max(1).min(c.episodes - k);
        col.batch_observed(&mut agent, k, b, |a, k, _| {
            ord[k as usize] = (a.v_ordinary.q[state] - truth).powi(2);
            wei[k as usize] = (a.v_weighted.v[state] - truth).powi(2);
        })?;
        k += b;
    }
    Ok(((ord, (agent.v_ordinary.q[state], agent.v_weighted.v[state])), wei))
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

pub(crate) fn load_run(dir: &std::path::Path) -> Result<(RunDir, TabularConfig)> {
    let run = RunDir::open(dir)?;
    let cfg: TabularConfig = toml::Value::Table(run.read_config()?)
        .try_into()
        .map_err(|e: toml::de::Error| Error::new(format!("{}: config.toml: {}", dir.display(), e.message())))?;
    Ok((run, cfg))
}

/// `wick eval <run-dir>` of a tabular run: the learned greedy policy (the evaluated policy for
/// prediction runs) over `--episodes` episodes; mean return ± standard error.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    if a.data.is_some() || a.per_example.is_some() || a.split != "test" {
        bail!("--data, --split and --per-example are for density-model runs; '{}' is a tabular RL run", a.run_dir.display());
    }
    if a.device.trim() != "cpu" {
        bail!("tabular agents run on the CPU only; drop --device {}", a.device);
    }
    let (run, cfg) = load_run(&a.run_dir)?;
    let env = make_env(&cfg)?;
    let episodes = a.episodes.unwrap_or(100_000);
    ensure!(episodes >= 1, "--episodes must be at least 1");
    let (policy, what) = if cfg.algo.contains("prediction") {
        (prediction_policy(&cfg, &env)?.greedy_actions(), format!("the evaluated policy ({})", cfg.policy.as_deref().unwrap_or("random")))
    } else {
        let ck = Checkpoint::load(&run.checkpoint())?;
        let p = ck.u64_values("policy", &[env.n_states()])?;
        (p.into_iter().map(|a| a as usize).collect(), "the learned greedy policy".to_string())
    };
    let (mean, se) = evaluate_policy(&cfg, &policy, episodes, a.seed)?;
    println!("{} {}: mean return {mean:.4} ± {se:.4} (standard error, {episodes} episodes, {what})", cfg.algo, cfg.env_id());
    Ok(ExitCode::SUCCESS)
}
