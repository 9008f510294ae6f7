//! On-policy first-visit Monte Carlo control with ε-soft (ε-greedy) policies (Sutton & Barto,
//! 2nd ed., §5.4; Zhao, *Mathematical Foundations of RL*, Algorithm 5.3 "MC ε-Greedy").
//!
//! No exploring starts: episodes start from the env's start distribution (or, optionally, a
//! uniformly drawn state) and follow the ε-greedy policy of the current `Q`,
//! `π(a|s) = 1 − ε + ε/|A|` for the greedy action and `ε/|A|` otherwise. The action values
//! are sample means of returns, `Q(s, a) ← Q(s, a) + (G − Q(s, a)) / N(s, a)`, constant-α
//! means (S&B eq. 6.1), or means that forget in the time of the state ([`Forgetting`]). ε is
//! fixed or decays over the episodes ([`Epsilon`]: linearly, geometrically, or in stages that
//! end at 0 for a greedy final policy, GLIE-style).

use wick_core::checkpoint::Checkpoint;
use wick_core::rng::Rng;
use wick_core::{ensure, Error, Result};

use crate::mc_exploring_starts::ControlResult;
use crate::parallel::{load_q, run, save_q, Collector, McAgent, Returns};
use crate::tabular::{generate_episode, EnvRef, QTable, Start, TabularEnv, Transition, Visit, Visits};

/// ε per episode.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Epsilon {
    Fixed(f64),
    /// From `start` to `end` linearly over the first `fraction` of the episodes, then `end`.
    Linear { start: f64, end: f64, fraction: f64 },
    /// From `start` to `end` geometrically (`start·(end/start)^t`) over the first `fraction`
    /// of the episodes, then `end`: most of the run at small ε, so the returns behind `Q`
    /// come from near-greedy behaviour (`end` > 0).
    Exponential { start: f64, end: f64, fraction: f64 },
    /// The first schedule over its `fraction` of the episodes, then the second, whose own
    /// fraction counts from there: `Exponential 1 → 0.01 over 0.9` then `Linear 0.01 → 0 over
    /// 0.1` decays geometrically and then to ε = 0 by the end of the run.
    Then(Box<Epsilon>, Box<Epsilon>),
}

impl Epsilon {
    /// ε for episode `k` of `total`.
    pub fn at(&self, k: u64, total: u64) -> f64 {
        self.at_position(k as f64, total as f64)
    }

    /// ε at episode position `x` (episodes since this schedule began) of a run of `total`.
    fn at_position(&self, x: f64, total: f64) -> f64 {
        match self {
            Epsilon::Fixed(e) => *e,
            &Epsilon::Linear { start, end, fraction } => {
                let t = (x / (fraction * total).max(1.0)).min(1.0);
                start + (end - start) * t
            }
            &Epsilon::Exponential { start, end, fraction } => {
                let t = (x / (fraction * total).max(1.0)).min(1.0);
                start * (end / start).powf(t)
            }
            Epsilon::Then(first, then) => {
                let span = first.fraction() * total;
                if x < span {
                    first.at_position(x, total)
                } else {
                    then.at_position(x - span, total)
                }
            }
        }
    }

    /// The fraction of the run this schedule spans (a fixed ε holds from where it begins to the
    /// end and spans no set fraction).
    fn fraction(&self) -> f64 {
        match self {
            Epsilon::Fixed(_) => 0.0,
            Epsilon::Linear { fraction, .. } | Epsilon::Exponential { fraction, .. } => *fraction,
            Epsilon::Then(a, b) => a.fraction() + b.fraction(),
        }
    }

    /// The stages in the order they run.
    fn stages(&self) -> Vec<&Epsilon> {
        match self {
            Epsilon::Then(a, b) => [a.stages(), b.stages()].concat(),
            e => vec![e],
        }
    }

    /// Parse `E` (fixed), `linear:START:END:FRACTION`, `exp:START:END:FRACTION`, or stages of
    /// these joined by commas (`exp:1:0.01:0.9,linear:0.01:0:0.1`), and [`Epsilon::validate`] it.
    pub fn parse(s: &str) -> Result<Epsilon> {
        let bad = || Error::new(format!("'{s}': expected a number in [0, 1], linear:START:END:FRACTION, exp:START:END:FRACTION, or stages of these joined by commas"));
        let num = |x: &str| x.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(bad);
        let mut stages = Vec::new();
        for stage in s.split(',') {
            stages.push(match stage.trim().split(':').collect::<Vec<_>>().as_slice() {
                [e] => Epsilon::Fixed(num(e)?),
                ["linear", a, b, f] => Epsilon::Linear { start: num(a)?, end: num(b)?, fraction: num(f)? },
                ["exp", a, b, f] => Epsilon::Exponential { start: num(a)?, end: num(b)?, fraction: num(f)? },
                _ => return Err(bad()),
            });
        }
        let last = stages.pop().ok_or_else(bad)?;
        let e = stages.into_iter().rev().fold(last, |then, first| Epsilon::Then(Box::new(first), Box::new(then)));
        e.validate().map_err(|err| err.context(format!("'{s}'")))?;
        Ok(e)
    }

    /// Check that every ε is in [0, 1] (an exponential's ends above 0), every fraction in
    /// (0, 1], that only the last stage is fixed and that the stages fit in the run.
    pub fn validate(&self) -> Result<()> {
        let stages = self.stages();
        for (i, e) in stages.iter().enumerate() {
            match **e {
                Epsilon::Fixed(e) => {
                    ensure!((0.0..=1.0).contains(&e), "epsilon must be in [0, 1], got {e}");
                    ensure!(i + 1 == stages.len(), "a fixed epsilon holds to the end of the run: only the last stage of a schedule can be fixed");
                }
                Epsilon::Linear { start, end, fraction } | Epsilon::Exponential { start, end, fraction } => {
                    ensure!((0.0..=1.0).contains(&start) && (0.0..=1.0).contains(&end), "epsilon must be in [0, 1], got {start} to {end}");
                    ensure!(fraction > 0.0 && fraction <= 1.0, "an epsilon schedule's fraction must be in (0, 1], got {fraction}");
                    if let Epsilon::Exponential { .. } = e {
                        ensure!(start > 0.0 && end > 0.0, "an exponential epsilon schedule needs start and end above 0 (reach 0 with a linear stage after it)");
                    }
                }
                Epsilon::Then(..) => unreachable!("stages() flattens"),
            }
        }
        let span = self.fraction();
        ensure!(span <= 1.0 + 1e-9, "the stages of the epsilon schedule span {span} of the run, more than all of it");
        Ok(())
    }
}

/// Where episodes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartMode {
    /// The env's start distribution (`reset`).
    Env,
    /// A state drawn uniformly (not a pair: the first action is still ε-greedy).
    UniformState,
}

/// Options of on-policy MC control.
#[derive(Clone, Debug, PartialEq)]
pub struct EpsilonGreedyConfig {
    pub episodes: u64,
    pub gamma: f64,
    pub epsilon: Epsilon,
    pub visit: Visit,
    pub max_len: Option<usize>,
    pub start: StartMode,
    /// The states [`StartMode::UniformState`] draws from; empty = every state.
    pub starts: Vec<usize>,
    /// `None`: sample averages, `q ← q + (g − q)/n`. `Some(α)`: constant-α MC,
    /// `q ← q + α(g − q)`, which forgets the returns of the early, more exploratory policies.
    pub step_size: Option<f64>,
    /// `Some(β)`: estimates that forget in the time of the state ([`Forgetting`]) instead of
    /// `step_size`'s per-update rules.
    pub forget: Option<f64>,
    /// Episodes generated per policy snapshot (1: improve after every episode).
    pub batch: u64,
    pub seed: u64,
}

impl Default for EpsilonGreedyConfig {
    fn default() -> Self {
        EpsilonGreedyConfig {
            episodes: 100_000,
            gamma: 1.0,
            epsilon: Epsilon::Fixed(0.1),
            visit: Visit::First,
            max_len: None,
            start: StartMode::Env,
            starts: Vec::new(),
            step_size: None,
            forget: None,
            batch: 1,
            seed: 0,
        }
    }
}

/// Action values that forget in the **time of their state**: the return `G` of a visit to
/// `(s, a)` weighs `(1 − β)^m`, `m` the later (counted) visits to `s` with any action, and
///
/// ```text
/// Q(s, a) = Σ_i (1 − β)^{m_i} G_i / Σ_i (1 − β)^{m_i},   kept as   W ← W (1 − β)^Δ + 1,  Q ← Q + (G − Q)/W
/// ```
///
/// with `Δ` the visits to `s` since `(s, a)` last had a return. An action taken at every visit
/// is a constant-α mean with α → β (and, like S&B Ex. 2.7's unbiased step size, a sample mean
/// while its weights are few); an action tried rarely — a non-greedy one once ε is small — has
/// old weights that have decayed, so its next return counts nearly alone. Per-update constant-α
/// keeps such an action at the value it had under the far more exploratory policies of its last
/// updates (on Taxi-v4: detours by 2–12 steps from 50–90 of the 300 start states, docs/rl.md);
/// here its estimate is as recent as the state's.
#[derive(Clone, Debug, PartialEq)]
pub struct Forgetting {
    pub beta: f64,
    /// Counted visits per state so far.
    pub clock: Vec<u64>,
    /// Per pair: the state's clock at the pair's last return.
    pub last: Vec<u64>,
    /// Per pair: `Σ_i (1 − β)^{m_i}`.
    pub weight: Vec<f64>,
}

impl Forgetting {
    pub fn new(beta: f64, num_states: usize, num_actions: usize) -> Forgetting {
        Forgetting { beta, clock: vec![0; num_states], last: vec![0; num_states * num_actions], weight: vec![0.0; num_states * num_actions] }
    }

    /// One return `g` for table entry `i = s·|A| + a`; returns `|ΔQ|`.
    pub fn step(&mut self, q: &mut QTable, i: usize, g: f64) -> f64 {
        let s = i / q.num_actions;
        self.clock[s] += 1;
        let elapsed = self.clock[s] - self.last[i];
        self.last[i] = self.clock[s];
        self.weight[i] = self.weight[i] * (1.0 - self.beta).powf(elapsed as f64) + 1.0;
        q.n[i] += 1;
        let d = (g - q.q[i]) / self.weight[i];
        q.q[i] += d;
        d.abs()
    }

    fn save(&self, ck: &mut Checkpoint) {
        let (ns, na) = (self.clock.len(), self.last.len() / self.clock.len().max(1));
        ck.put_u64("forget_clock", &[ns], &self.clock);
        ck.put_u64("forget_last", &[ns, na], &self.last);
        ck.put_f64("forget_weight", &[ns, na], &self.weight);
    }

    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        let (ns, na) = (self.clock.len(), self.last.len() / self.clock.len().max(1));
        self.clock = ck.u64_values("forget_clock", &[ns])?;
        self.last = ck.u64_values("forget_last", &[ns, na])?;
        self.weight = ck.f64_values("forget_weight", &[ns, na])?;
        Ok(())
    }
}

/// On-policy ε-greedy MC control as a [`McAgent`].
pub struct EpsilonGreedyAgent {
    pub q: QTable,
    cfg: EpsilonGreedyConfig,
    visits: Visits,
    forgetting: Option<Forgetting>,
}

impl EpsilonGreedyAgent {
    pub fn new<E: TabularEnv + ?Sized>(env: &E, cfg: &EpsilonGreedyConfig) -> Result<EpsilonGreedyAgent> {
        let (ns, na) = (env.n_states(), env.n_actions());
        ensure!(ns > 0, "MC ε-greedy needs a tabular environment");
        ensure!((0.0..=1.0).contains(&cfg.gamma), "gamma must be in [0, 1], got {}", cfg.gamma);
        ensure!(cfg.starts.iter().all(|&s| s < ns), "a start state is outside 0..{ns}");
        cfg.epsilon.validate()?;
        ensure!(cfg.step_size.is_none_or(|a| a > 0.0 && a <= 1.0), "step size must be in (0, 1]");
        ensure!(cfg.forget.is_none_or(|b| b > 0.0 && b < 1.0), "forgetting rate must be in (0, 1)");
        ensure!(cfg.forget.is_none() || cfg.step_size.is_none(), "a step size and a forgetting rate are two rules for the same estimate: give one");
        let forgetting = cfg.forget.map(|b| Forgetting::new(b, ns, na));
        Ok(EpsilonGreedyAgent { q: QTable::new(ns, na), cfg: cfg.clone(), visits: Visits::new(ns * na), forgetting })
    }
}

impl McAgent for EpsilonGreedyAgent {
    fn episode<E: TabularEnv + ?Sized>(&self, k: u64, env: &mut E, rng: &mut Rng, steps: &mut Vec<Transition>, _probs: &mut Vec<f64>) -> Result<()> {
        let eps = self.cfg.epsilon.at(k, self.cfg.episodes);
        let (ns, na) = (self.q.num_states, self.q.num_actions);
        let start = match self.cfg.start {
            StartMode::Env => Start::Reset,
            StartMode::UniformState if self.cfg.starts.is_empty() => Start::At(rng.below(ns as u64) as usize, None),
            StartMode::UniformState => Start::At(self.cfg.starts[rng.below(self.cfg.starts.len() as u64) as usize], None),
        };
        let q = &self.q;
        // ε-greedy: explore uniformly with probability ε (so the greedy action has 1 − ε + ε/|A|).
        generate_episode(env, start, self.cfg.max_len, rng, steps, |s, r| {
            if eps > 0.0 && r.uniform() < eps {
                r.below(na as u64) as usize
            } else {
                q.greedy(s)
            }
        })
    }

    fn learn(&mut self, _k: u64, ep: &[Transition], _probs: &[f64]) -> f64 {
        if let Some(f) = &mut self.forgetting {
            // Forgetting in the state's time: the returns' order across pairs of one state
            // matters, so these are learned here, in episode order (no split learning).
            let (na, mut max) = (self.q.num_actions, 0.0f64);
            let q = &mut self.q;
            self.visits.for_each_return(ep, self.cfg.gamma, self.cfg.visit, |s, a| s * na + a, |_, i, g| max = max.max(f.step(q, i, g)));
            return max;
        }
        // q ← q + (g − q)/n, or q ← q + α(g − q) with a step size, per counted visit.
        let r = self.returns().expect("MC ε-greedy learns from returns");
        r.learn(&mut self.visits, &mut self.q, ep)
    }

    fn returns(&self) -> Option<Returns> {
        if self.forgetting.is_some() {
            return None;
        }
        Some(Returns { gamma: self.cfg.gamma, visit: self.cfg.visit, num_states: self.q.num_states, cols: self.q.num_actions, alpha: self.cfg.step_size })
    }
    fn table_mut(&mut self) -> &mut QTable {
        &mut self.q
    }

    fn q(&self) -> Option<&QTable> {
        Some(&self.q)
    }
    fn state_values(&self) -> Vec<f64> {
        self.q.state_values()
    }
    fn save(&self, ck: &mut Checkpoint) {
        save_q(ck, "", &self.q);
        if let Some(f) = &self.forgetting {
            f.save(ck);
        }
    }
    fn load(&mut self, ck: &Checkpoint) -> Result<()> {
        load_q(ck, "", &mut self.q)?;
        match &mut self.forgetting {
            Some(f) => f.load(ck),
            None => Ok(()),
        }
    }
}

/// Run on-policy ε-greedy MC control on `env` (one thread).
pub fn mc_epsilon_greedy<E: TabularEnv + Send + ?Sized>(env: &mut E, cfg: &EpsilonGreedyConfig) -> Result<ControlResult> {
    mc_epsilon_greedy_par(vec![EnvRef(env)], cfg)
}

/// Run on-policy ε-greedy MC control with one thread per env; the result does not depend on how many.
pub fn mc_epsilon_greedy_par<E: TabularEnv + Send>(envs: Vec<E>, cfg: &EpsilonGreedyConfig) -> Result<ControlResult> {
    let mut agent = EpsilonGreedyAgent::new(&envs[0], cfg)?;
    let mut col = Collector::new(envs, cfg.seed, "mc-epsilon-greedy")?;
    let returns = run(&mut agent, &mut col, cfg.episodes, cfg.batch)?;
    let policy = agent.q.greedy_policy();
    Ok(ControlResult { q: agent.q, policy, returns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_run_one_after_another_and_reach_zero() {
        let e = Epsilon::parse("exp:1:0.01:0.9,linear:0.01:0:0.1").unwrap();
        assert_eq!(e, Epsilon::Then(Box::new(Epsilon::Exponential { start: 1.0, end: 0.01, fraction: 0.9 }), Box::new(Epsilon::Linear { start: 0.01, end: 0.0, fraction: 0.1 })));
        assert_eq!(e.at(0, 1000), 1.0);
        assert!((e.at(450, 1000) - 0.1).abs() < 1e-12, "{}", e.at(450, 1000));
        assert!((e.at(899, 1000) - 0.01f64.powf(899.0 / 900.0)).abs() < 1e-15);
        assert!((e.at(900, 1000) - 0.01).abs() < 1e-15);
        assert!((e.at(950, 1000) - 0.005).abs() < 1e-15);
        assert_eq!(e.at(1000, 1000), 0.0);
        // Three stages, the last one fixed.
        let e = Epsilon::parse("linear:1:0.5:0.5, linear:0.5:0.2:0.25, 0.2").unwrap();
        assert_eq!((e.at(250, 1000), e.at(900, 1000)), (0.75, 0.2));
        assert!((e.at(625, 1000) - 0.35).abs() < 1e-15);
    }

    #[test]
    fn forgetting_is_the_weighted_mean_in_the_time_of_the_state() {
        let beta = 0.1;
        let mut q = QTable::new(1, 2);
        let mut f = Forgetting::new(beta, 1, 2);
        // Action 0 at visits 1..=5 (returns 1..=5), action 1 at visits 6 and 30.
        for g in 1..=5 {
            f.step(&mut q, 0, g as f64);
        }
        let want: f64 = (1..=5).map(|g| 0.9f64.powi(5 - g) * g as f64).sum::<f64>() / (0..5).map(|m| 0.9f64.powi(m)).sum::<f64>();
        assert!((q.get(0, 0) - want).abs() < 1e-12, "{} vs {want}", q.get(0, 0));
        f.step(&mut q, 1, -100.0);
        assert_eq!(q.get(0, 1), -100.0, "a pair's first return is its estimate");
        f.clock[0] += 23; // 23 visits with other actions
        f.step(&mut q, 1, 10.0);
        // The old return weighs 0.9^24 ≈ 0.08 against 1: the estimate is close to the new one.
        let w = 0.9f64.powi(24);
        assert!((q.get(0, 1) - (w * -100.0 + 10.0) / (w + 1.0)).abs() < 1e-12, "{}", q.get(0, 1));
        assert_eq!(q.n, vec![5, 2]);
    }

    #[test]
    fn one_stage_parses_as_before() {
        assert_eq!(Epsilon::parse("0.1").unwrap(), Epsilon::Fixed(0.1));
        assert_eq!(Epsilon::parse("linear:1:0.05:0.8").unwrap(), Epsilon::Linear { start: 1.0, end: 0.05, fraction: 0.8 });
        assert_eq!(Epsilon::parse("exp:1:0.01:1").unwrap(), Epsilon::Exponential { start: 1.0, end: 0.01, fraction: 1.0 });
    }

    #[test]
    fn bad_schedules_are_refused() {
        for (s, want) in [
            ("1.5", "[0, 1]"),
            ("exp:1:0:1", "above 0"),
            ("linear:1:0:0", "fraction"),
            ("exp:1:0.01:0.9,linear:0.01:0:0.2", "more than all of it"),
            ("0.1,linear:0.1:0:0.5", "only the last stage"),
            ("exp:1:0.01:0.9,", "joined by commas"),
            ("cosine:1:0:1", "joined by commas"),
        ] {
            let err = Epsilon::parse(s).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(s), "{s}: {err}");
        }
    }
}
