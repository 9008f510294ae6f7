//! `FrozenLake-v1` / `FrozenLake8x8-v1`: Gymnasium's `gymnasium/envs/toy_text/frozen_lake.py`.
//!
//! - A grid of `S` (start), `F` (frozen), `H` (hole) and `G` (goal) tiles; the state is
//!   `row * ncol + col`, starting on `S`. Actions: 0 left, 1 down, 2 right, 3 up; a move off
//!   the grid stays put.
//! - `is_slippery` (default true): the move goes in the intended direction with probability
//!   `success_rate` (default 1/3) and in each perpendicular direction with
//!   `(1 − success_rate) / 2` — Gymnasium's list `[(a−1) mod 4, a, (a+1) mod 4]`, in that order.
//! - Entering `G` or `H` terminates. Rewards are `reward_schedule = (goal, hole, frozen)`,
//!   default `(1, 0, 0)`, by the tile entered (`S` counts as frozen). In `G`/`H` every action
//!   is `(1.0, s, 0, terminated)` (absorbing), as in Gymnasium's `P`.
//! - `info.prob` is the probability of the transition taken.
//! - Time limit (the registry's [`crate::wrappers::TimeLimit`]): 100 steps for `FrozenLake-v1`
//!   (whatever the map, as `gym.make` does), 200 for `FrozenLake8x8-v1`.
//!
//! Randomness: one uniform draw per step, mapped through Gymnasium's `categorical_sample`
//! (the first transition whose cumulative probability exceeds it);
//! [`FrozenLake::step_with_uniform`] takes that draw from the caller (parity checks).
//! Custom maps: rectangular, only `SFHG`, exactly one `S`, at least one `G`.

use std::sync::Arc;

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Model, Step, Transition};
use crate::space::Space;

pub const LEFT: usize = 0;
pub const DOWN: usize = 1;
pub const RIGHT: usize = 2;
pub const UP: usize = 3;

pub const MAP_4X4: [&str; 4] = ["SFFF", "FHFH", "FFFH", "HFFG"];
pub const MAP_8X8: [&str; 8] =
    ["SFFFFFFF", "FFFFFFFF", "FFFHFFFF", "FFFFFHFF", "FFFHFFFF", "FHHFFFHF", "FHFFHFHF", "FFFHFFFG"];

/// Options of `FrozenLake-v1`; `Default` is `gym.make("FrozenLake-v1")`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct FrozenLakeConfig {
    /// The rows of the map (`desc`).
    pub map: Vec<String>,
    pub is_slippery: bool,
    pub success_rate: f64,
    /// Rewards for entering (goal, hole, frozen).
    pub reward_schedule: (f64, f64, f64),
}

impl Default for FrozenLakeConfig {
    fn default() -> Self {
        FrozenLakeConfig {
            map: MAP_4X4.iter().map(|s| s.to_string()).collect(),
            is_slippery: true,
            success_rate: 1.0 / 3.0,
            reward_schedule: (1.0, 0.0, 0.0),
        }
    }
}

impl FrozenLakeConfig {
    /// A named map: `4x4` or `8x8`.
    pub fn named_map(name: &str) -> Result<Vec<String>> {
        match name {
            "4x4" => Ok(MAP_4X4.iter().map(|s| s.to_string()).collect()),
            "8x8" => Ok(MAP_8X8.iter().map(|s| s.to_string()).collect()),
            _ => bail!("FrozenLake-v1: unknown map_name '{name}'; valid: 4x4, 8x8"),
        }
    }
}

/// Parse and check a map given as text: rows on lines (or separated by `/`), blank lines ignored.
pub fn parse_map(text: &str) -> Result<Vec<String>> {
    let rows: Vec<String> =
        text.split(['\n', '/']).map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    validate_map(&rows)?;
    Ok(rows)
}

/// Check a FrozenLake map; errors name the row and column (1-based).
pub fn validate_map(rows: &[String]) -> Result<()> {
    if rows.is_empty() {
        bail!("FrozenLake map is empty");
    }
    let w = rows[0].chars().count();
    let (mut starts, mut goals) = (Vec::new(), 0);
    for (r, row) in rows.iter().enumerate() {
        if row.chars().count() != w {
            bail!("FrozenLake map row {} has {} columns, row 1 has {w}: the map must be rectangular", r + 1, row.chars().count());
        }
        for (c, ch) in row.chars().enumerate() {
            match ch {
                'S' => starts.push((r + 1, c + 1)),
                'G' => goals += 1,
                'F' | 'H' => {}
                _ => bail!("FrozenLake map row {} column {}: '{ch}' is not one of S, F, H, G", r + 1, c + 1),
            }
        }
    }
    if starts.len() != 1 {
        let at: Vec<String> = starts.iter().map(|(r, c)| format!("row {r} column {c}")).collect();
        bail!("FrozenLake map needs exactly one S, found {}{}", starts.len(), if at.is_empty() { String::new() } else { format!(" ({})", at.join(", ")) });
    }
    if goals == 0 {
        bail!("FrozenLake map has no G");
    }
    Ok(())
}

/// FrozenLake-v1.
#[derive(Clone, Debug)]
pub struct FrozenLake {
    tiles: Vec<u8>,
    nrow: usize,
    ncol: usize,
    start: usize,
    model: Arc<Model>,
    rng: Rng,
    s: usize,
    last_action: Option<usize>,
    reset_done: bool,
}

impl FrozenLake {
    pub fn new(cfg: &FrozenLakeConfig) -> Result<FrozenLake> {
        validate_map(&cfg.map)?;
        if !(0.0..=1.0).contains(&cfg.success_rate) {
            bail!("FrozenLake-v1: success_rate {} is not in [0, 1]", cfg.success_rate);
        }
        let nrow = cfg.map.len();
        let ncol = cfg.map[0].len();
        let tiles: Vec<u8> = cfg.map.iter().flat_map(|r| r.bytes()).collect();
        let start = tiles.iter().position(|&t| t == b'S').unwrap();
        let (rg, rh, rf) = cfg.reward_schedule;
        let fail = (1.0 - cfg.success_rate) / 2.0;
        let inc = |row: usize, col: usize, a: usize| match a {
            LEFT => (row, col.saturating_sub(1)),
            DOWN => ((row + 1).min(nrow - 1), col),
            RIGHT => (row, (col + 1).min(ncol - 1)),
            _ => (row.saturating_sub(1), col),
        };
        let outcome = |row, col, a| {
            let (r, c) = inc(row, col, a);
            let ns = r * ncol + c;
            let t = tiles[ns];
            let reward = match t {
                b'G' => rg,
                b'H' => rh,
                _ => rf,
            };
            (ns, reward, t == b'G' || t == b'H')
        };
        let model = Model::build(nrow * ncol, 4, vec![(1.0, start)], |s, a, out| {
            let (row, col) = (s / ncol, s % ncol);
            if matches!(tiles[s], b'G' | b'H') {
                out.push(Transition { prob: 1.0, next: s, reward: 0.0, terminated: true });
            } else if cfg.is_slippery {
                for b in [(a + 3) % 4, a, (a + 1) % 4] {
                    let (next, reward, terminated) = outcome(row, col, b);
                    out.push(Transition { prob: if b == a { cfg.success_rate } else { fail }, next, reward, terminated });
                }
            } else {
                let (next, reward, terminated) = outcome(row, col, a);
                out.push(Transition { prob: 1.0, next, reward, terminated });
            }
        });
        Ok(FrozenLake { tiles, nrow, ncol, start, model: Arc::new(model), rng: env_rng(0), s: start, last_action: None, reset_done: false })
    }

    pub fn nrow(&self) -> usize {
        self.nrow
    }
    pub fn ncol(&self) -> usize {
        self.ncol
    }
    /// The tile letter of state `s`.
    pub fn tile(&self, s: usize) -> char {
        self.tiles[s] as char
    }
    pub fn state(&self) -> usize {
        self.s
    }

    /// `step` with the uniform draw `u ∈ [0, 1)` given instead of taken from the generator.
    #[inline]
    pub fn step_with_uniform(&mut self, action: usize, u: f64) -> Result<Step<usize>> {
        if action >= 4 {
            return Err(bad_action("FrozenLake-v1", action, 4));
        }
        if !self.reset_done {
            return Err(no_reset("FrozenLake-v1"));
        }
        let t = *self.model.sample(self.s, action, u);
        self.s = t.next;
        self.last_action = Some(action);
        Ok(Step { obs: t.next, reward: t.reward, terminated: t.terminated, truncated: false, info: Info { prob: Some(t.prob), episode: None } })
    }
}

impl Env for FrozenLake {
    type Obs = usize;

    fn id(&self) -> &'static str {
        "FrozenLake-v1"
    }
    fn observation_space(&self) -> Space {
        Space::discrete(self.nrow * self.ncol)
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
        self.s = self.start;
        self.last_action = None;
        self.reset_done = true;
        (self.s, Info { prob: Some(1.0), episode: None })
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<usize>> {
        let u = self.rng.uniform();
        self.step_with_uniform(action, u)
    }
    fn num_states(&self) -> Option<usize> {
        Some(self.nrow * self.ncol)
    }
    fn state_index(&self) -> Option<usize> {
        Some(self.s)
    }
    fn model(&self) -> Option<&Model> {
        Some(&self.model)
    }
    /// Start in any cell (holes and goals included: their actions are absorbing).
    fn reset_to_state(&mut self, s: usize) -> Result<(usize, Info)> {
        if s >= self.tiles.len() {
            bail!("FrozenLake-v1: start state {s} is outside 0..{}", self.tiles.len());
        }
        self.s = s;
        self.last_action = None;
        self.reset_done = true;
        Ok((s, Info { prob: Some(1.0), episode: None }))
    }
    /// Gymnasium's `ansi` render: the last action, then the map with the agent's tile on red.
    fn render_text(&self) -> Option<String> {
        let mut out = match self.last_action {
            Some(a) => format!("  ({})\n", ["Left", "Down", "Right", "Up"][a]),
            None => "\n".to_string(),
        };
        for r in 0..self.nrow {
            for c in 0..self.ncol {
                let i = r * self.ncol + c;
                let ch = self.tiles[i] as char;
                if i == self.s {
                    out.push_str(&format!("\x1b[41m{ch}\x1b[0m"));
                } else {
                    out.push(ch);
                }
            }
            out.push('\n');
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slip_probabilities_sum_to_one_and_follow_success_rate() {
        for sr in [1.0 / 3.0, 0.75, 1.0] {
            let env = FrozenLake::new(&FrozenLakeConfig { success_rate: sr, ..Default::default() }).unwrap();
            let m = env.model().unwrap();
            for s in 0..16 {
                for a in 0..4 {
                    let ts = m.transitions(s, a);
                    let p: f64 = ts.iter().map(|t| t.prob).sum();
                    assert!((p - 1.0).abs() < 1e-12);
                    if !matches!(env.tile(s), 'G' | 'H') {
                        assert_eq!(ts.len(), 3);
                        assert_eq!(ts[1].prob, sr);
                        assert_eq!(ts[0].prob, (1.0 - sr) / 2.0);
                    }
                }
            }
        }
        // State 6 (row 1, col 2), action down: [left -> 5 (hole), down -> 10, right -> 7 (hole)].
        let env = FrozenLake::new(&FrozenLakeConfig::default()).unwrap();
        let ts = env.model().unwrap().transitions(6, DOWN);
        let v: Vec<(usize, bool)> = ts.iter().map(|t| (t.next, t.terminated)).collect();
        assert_eq!(v, vec![(5, true), (10, false), (7, true)]);
        // Goal is reached with reward 1 from 14 moving right (not slippery).
        let mut env = FrozenLake::new(&FrozenLakeConfig { is_slippery: false, ..Default::default() }).unwrap();
        env.reset_to_state(14).unwrap();
        let s = env.step(RIGHT).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated, s.info.prob), (15, 1.0, true, Some(1.0)));
    }

    #[test]
    fn sampling_matches_model() {
        let mut env = FrozenLake::new(&FrozenLakeConfig::default()).unwrap();
        env.reset(Some(0));
        let m = env.model().unwrap().clone();
        let n = 60_000;
        for (s, a) in [(0, LEFT), (6, DOWN), (14, RIGHT)] {
            let mut counts = [0usize; 16];
            for _ in 0..n {
                env.reset_to_state(s).unwrap();
                counts[env.step(a).unwrap().obs] += 1;
            }
            let mut exact = [0.0; 16];
            for t in m.transitions(s, a) {
                exact[t.next] += t.prob;
            }
            for k in 0..16 {
                assert!((counts[k] as f64 / n as f64 - exact[k]).abs() < 0.01, "s {s} a {a} -> {k}");
            }
        }
    }

    #[test]
    fn optimum_is_about_074() {
        let env = FrozenLake::new(&FrozenLakeConfig::default()).unwrap();
        let (v, _) = env.model().unwrap().value_iteration(1.0, 1e-12);
        assert!((v[0] - 0.8235).abs() < 0.001, "{}", v[0]); // undiscounted, no time limit
    }

    #[test]
    fn map_errors_name_the_place() {
        let e = parse_map("SFF\nFHFF\nFFG").unwrap_err().to_string();
        assert!(e.contains("row 2 has 4 columns"), "{e}");
        let e = parse_map("SFF\nFXF\nFFG").unwrap_err().to_string();
        assert_eq!(e, "FrozenLake map row 2 column 2: 'X' is not one of S, F, H, G");
        let e = parse_map("SFF\nFSF\nFFG").unwrap_err().to_string();
        assert!(e.contains("exactly one S, found 2 (row 1 column 1, row 2 column 2)"), "{e}");
        assert!(parse_map("SFF/FFF").unwrap_err().to_string().contains("no G"));
        assert_eq!(parse_map("SF/HG").unwrap(), vec!["SF", "HG"]);
        let mut env = FrozenLake::new(&FrozenLakeConfig::default()).unwrap();
        assert!(env.step(0).is_err());
        env.reset(None);
        assert!(env.step(4).unwrap_err().to_string().contains("Discrete(4)"));
    }

    #[test]
    fn ansi_render() {
        let mut env = FrozenLake::new(&FrozenLakeConfig { is_slippery: false, ..Default::default() }).unwrap();
        env.reset(None);
        env.step(RIGHT).unwrap();
        assert_eq!(env.render_text().unwrap(), "  (Right)\nS\x1b[41mF\x1b[0mFF\nFHFH\nFFFH\nHFFG\n");
    }
}
