//! `CliffWalking-v1` / `CliffWalkingSlippery-v1`: Gymnasium's
//! `gymnasium/envs/toy_text/cliffwalking.py` (Sutton & Barto Example 6.6).
//!
//! - A 4×12 grid; the state is `row * 12 + col`, starting at 36 (row 3, col 0); the cliff is
//!   row 3, columns 1–10; the goal is 47 (row 3, col 11).
//! - Actions: 0 up, 1 right, 2 down, 3 left; a move off the grid stays put.
//! - Every step costs −1; stepping onto the cliff costs −100 and sends the agent back to the
//!   start (not terminal). Reaching the goal terminates.
//! - `is_slippery` (default false; true for `CliffWalkingSlippery-v1`): the move goes in each
//!   of `[(a−1) mod 4, a, (a+1) mod 4]` with probability 1/3.
//! - No time limit (none is registered). `info.prob` is the probability of the transition.
//!
//! The exact model is Gymnasium's `P` verbatim — including rows for the cliff and goal cells,
//! which an episode never occupies. Randomness: one uniform per step through Gymnasium's
//! `categorical_sample`; [`CliffWalking::step_with_uniform`] takes it from the caller.

use std::sync::Arc;

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Model, Step, Transition};
use crate::space::Space;

pub const UP: usize = 0;
pub const RIGHT: usize = 1;
pub const DOWN: usize = 2;
pub const LEFT: usize = 3;
pub const NROW: usize = 4;
pub const NCOL: usize = 12;
pub const START: usize = 36;
pub const GOAL: usize = 47;

/// Whether `(row, col)` is on the cliff.
pub fn is_cliff(row: usize, col: usize) -> bool {
    row == 3 && (1..=10).contains(&col)
}

/// CliffWalking-v1.
#[derive(Clone, Debug)]
pub struct CliffWalking {
    slippery: bool,
    model: Arc<Model>,
    rng: Rng,
    s: usize,
    reset_done: bool,
}

impl CliffWalking {
    pub fn new(is_slippery: bool) -> CliffWalking {
        let moves: [(i64, i64); 4] = [(-1, 0), (0, 1), (1, 0), (0, -1)];
        let model = Model::build(NROW * NCOL, 4, vec![(1.0, START)], |s, a, out| {
            let (row, col) = ((s / NCOL) as i64, (s % NCOL) as i64);
            let dirs: &[usize] = if is_slippery { &[(a + 3) % 4, a, (a + 1) % 4] } else { &[a] };
            let p = 1.0 / dirs.len() as f64;
            for &d in dirs {
                let r = (row + moves[d].0).clamp(0, NROW as i64 - 1) as usize;
                let c = (col + moves[d].1).clamp(0, NCOL as i64 - 1) as usize;
                if is_cliff(r, c) {
                    out.push(Transition { prob: p, next: START, reward: -100.0, terminated: false });
                } else {
                    let ns = r * NCOL + c;
                    out.push(Transition { prob: p, next: ns, reward: -1.0, terminated: ns == GOAL });
                }
            }
        });
        CliffWalking { slippery: is_slippery, model: Arc::new(model), rng: env_rng(0), s: START, reset_done: false }
    }

    pub fn is_slippery(&self) -> bool {
        self.slippery
    }
    pub fn state(&self) -> usize {
        self.s
    }

    /// `step` with the uniform draw `u ∈ [0, 1)` given instead of taken from the generator.
    #[inline]
    pub fn step_with_uniform(&mut self, action: usize, u: f64) -> Result<Step<usize>> {
        if action >= 4 {
            return Err(bad_action("CliffWalking-v1", action, 4));
        }
        if !self.reset_done {
            return Err(no_reset("CliffWalking-v1"));
        }
        let t = *self.model.sample(self.s, action, u);
        self.s = t.next;
        Ok(Step { obs: t.next, reward: t.reward, terminated: t.terminated, truncated: false, info: Info { prob: Some(t.prob), episode: None } })
    }
}

impl Env for CliffWalking {
    type Obs = usize;

    fn id(&self) -> &'static str {
        "CliffWalking-v1"
    }
    fn observation_space(&self) -> Space {
        Space::discrete(NROW * NCOL)
    }
    fn num_actions(&self) -> usize {
        4
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn reset(&mut self, seed: Option<u64>) -> (usize, Info) {
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        self.s = START;
        self.reset_done = true;
        (START, Info { prob: Some(1.0), episode: None })
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<usize>> {
        let u = self.rng.uniform();
        self.step_with_uniform(action, u)
    }
    fn num_states(&self) -> Option<usize> {
        Some(NROW * NCOL)
    }
    fn state_index(&self) -> Option<usize> {
        Some(self.s)
    }
    fn model(&self) -> Option<&Model> {
        Some(&self.model)
    }
    /// Start in any cell that is neither cliff nor goal.
    fn reset_to_state(&mut self, s: usize) -> Result<(usize, Info)> {
        if s >= NROW * NCOL || is_cliff(s / NCOL, s % NCOL) || s == GOAL {
            bail!("CliffWalking-v1: start state {s} is not a cell an episode can be in (0..=36 off the cliff)");
        }
        self.s = s;
        self.reset_done = true;
        Ok((s, Info { prob: Some(1.0), episode: None }))
    }
    /// Gymnasium's `ansi` render: `x` agent, `T` goal, `C` cliff, `o` other.
    fn render_text(&self) -> Option<String> {
        let mut out = String::new();
        for s in 0..NROW * NCOL {
            let (r, c) = (s / NCOL, s % NCOL);
            let mut cell = if s == self.s {
                " x "
            } else if s == GOAL {
                " T "
            } else if is_cliff(r, c) {
                " C "
            } else {
                " o "
            };
            if c == 0 {
                cell = cell.trim_start();
            }
            out.push_str(if c == NCOL - 1 { cell.trim_end() } else { cell });
            if c == NCOL - 1 {
                out.push('\n');
            }
        }
        out.push('\n');
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cliff_sends_back_to_start() {
        let mut env = CliffWalking::new(false);
        assert_eq!(env.reset(Some(0)).0, START);
        let s = env.step(RIGHT).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated), (START, -100.0, false));
        let s = env.step(UP).unwrap();
        assert_eq!((s.obs, s.reward), (24, -1.0));
        for _ in 0..11 {
            env.step(RIGHT).unwrap();
        }
        let s = env.step(DOWN).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated), (GOAL, -1.0, true));
        // Optimal undiscounted return along the cliff edge: -13.
        let (v, _) = env.model().unwrap().value_iteration(1.0, 1e-12);
        assert_eq!(v[START], -13.0);
    }

    #[test]
    fn slippery_model_and_sampling() {
        let mut env = CliffWalking::new(true);
        let m = env.model().unwrap().clone();
        for s in 0..48 {
            for a in 0..4 {
                let p: f64 = m.transitions(s, a).iter().map(|t| t.prob).sum();
                assert!((p - 1.0).abs() < 1e-12);
            }
        }
        env.reset(Some(2));
        let n = 30_000;
        let mut counts = [0usize; 48];
        for _ in 0..n {
            env.reset_to_state(25).unwrap();
            counts[env.step(DOWN).unwrap().obs] += 1;
        }
        // From 25 (row 2, col 1) down: right -> 26, down -> cliff -> 36, left -> 24.
        for k in [24, 26, 36] {
            assert!((counts[k] as f64 / n as f64 - 1.0 / 3.0).abs() < 0.015, "{k}");
        }
    }

    #[test]
    fn render_and_errors() {
        let mut env = CliffWalking::new(false);
        env.reset(None);
        let t = env.render_text().unwrap();
        assert!(t.starts_with("o  o  o"));
        assert!(t.contains("x  C  C"));
        assert!(t.ends_with("C  T\n\n"));
        assert!(env.reset_to_state(40).is_err());
        assert!(env.step(9).is_err());
    }
}
