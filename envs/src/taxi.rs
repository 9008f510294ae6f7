//! `Taxi-v4`: Gymnasium's `gymnasium/envs/toy_text/taxi.py` (Dietterich 2000, "Hierarchical
//! Reinforcement Learning with the MAXQ Value Function Decomposition", §3.1 and §7.1).
//!
//! - A 5×5 grid with walls, four pads R (0, 0), G (0, 4), Y (4, 0), B (4, 3). The state is
//!   `((taxi_row * 5 + taxi_col) * 5 + passenger) * 4 + destination` (500 states), `passenger`
//!   0–3 a pad, 4 in the taxi; `destination` 0–3 a pad ([`encode`], [`decode`]).
//! - Actions: 0 south, 1 north, 2 east, 3 west, 4 pickup, 5 dropoff. A move into a wall or off
//!   the grid stays put.
//! - Rewards: −1 a step; +20 for the dropoff at the destination, which terminates; −10 for a
//!   pickup where the passenger is not, or a dropoff with no passenger or away from any pad
//!   (a dropoff on another pad leaves the passenger there, −1).
//! - Start: uniform over the 300 states with the passenger on a pad that is not the
//!   destination. Time limit 200 (the registry's [`crate::wrappers::TimeLimit`]).
//! - `is_rainy` (default false): a move goes as intended with probability `rainy_probability`
//!   (0.8) and to the left or right of the heading with `(1 − rainy_probability) / 2` each
//!   (Gymnasium's order: intended, left, right; left of south is east, of north west, of east
//!   north, of west south); a blocked intended move stays put with no drift. Pickup and dropoff
//!   stay deterministic.
//! - `fickle_passenger` (default false): with probability `fickle_probability` (0.3), drawn at
//!   reset, the passenger changes destination (uniformly among the other three) on the first
//!   step that moves the taxi after it was in the taxi at the start of the step. This is not in
//!   the exact model, as in Gymnasium (its `P` does not have it either): the model and its DP
//!   optimum are those of the task without fickleness.
//! - `info.prob` is the probability of the transition taken; [`Taxi::action_mask`] is
//!   Gymnasium's `info["action_mask"]`.
//!
//! Randomness: the start is Gymnasium's `categorical_sample` over the start distribution (one
//! uniform); at reset one more uniform decides fickleness (only with `fickle_passenger`); a step
//! draws one uniform through `categorical_sample` only where `P[s][a]` has more than one entry
//! (with `is_rainy`), plus the new destination when the passenger turns fickle. So in the default
//! (dry) task the env's generator moves only at resets: two policies run from the same seed meet
//! the same sequence of start states. [`Taxi::reset_with_draws`] and [`Taxi::step_with_draws`]
//! take the draws from the caller (the parity check).

use std::sync::Arc;

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Model, Step, Transition};
use crate::space::Space;

pub const SOUTH: usize = 0;
pub const NORTH: usize = 1;
pub const EAST: usize = 2;
pub const WEST: usize = 3;
pub const PICKUP: usize = 4;
pub const DROPOFF: usize = 5;
pub const NUM_STATES: usize = 500;
pub const NUM_ACTIONS: usize = 6;
/// The passenger index meaning "in the taxi".
pub const IN_TAXI: usize = 4;

/// Gymnasium's `MAP`: walls are `|`, `:` is open.
pub const MAP: [&str; 7] = ["+---------+", "|R: | : :G|", "| : | : : |", "| : : : : |", "| | : | : |", "|Y| : |B: |", "+---------+"];
/// The pads R, G, Y, B as (row, col).
pub const LOCS: [(usize, usize); 4] = [(0, 0), (0, 4), (4, 0), (4, 3)];
const ACTION_NAMES: [&str; 6] = ["South", "North", "East", "West", "Pickup", "Dropoff"];

/// `((row * 5 + col) * 5 + passenger) * 4 + destination`.
pub fn encode(row: usize, col: usize, passenger: usize, destination: usize) -> usize {
    ((row * 5 + col) * 5 + passenger) * 4 + destination
}

/// `(row, col, passenger, destination)` of a state index.
pub fn decode(s: usize) -> (usize, usize, usize, usize) {
    (s / 100, (s / 20) % 5, (s / 4) % 5, s % 4)
}

/// Whether the map has an opening (`:`) at row `1 + row`, column `c` of [`MAP`].
fn open(row: usize, c: usize) -> bool {
    MAP[1 + row].as_bytes()[c] == b':'
}

/// Options of `Taxi-v4`; `Default` is `gym.make("Taxi-v4")`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiConfig {
    pub is_rainy: bool,
    pub fickle_passenger: bool,
    pub rainy_probability: f64,
    pub fickle_probability: f64,
}

impl Default for TaxiConfig {
    fn default() -> Self {
        TaxiConfig { is_rainy: false, fickle_passenger: false, rainy_probability: 0.8, fickle_probability: 0.3 }
    }
}

/// Taxi-v4.
#[derive(Clone, Debug)]
pub struct Taxi {
    cfg: TaxiConfig,
    model: Arc<Model>,
    rng: Rng,
    s: usize,
    /// Gymnasium's `fickle_step`: the passenger will still change their mind.
    fickle_step: bool,
    last_action: Option<usize>,
    reset_done: bool,
}

/// Gymnasium's `_pickup`: the new passenger index and reward.
fn pickup(taxi: (usize, usize), pass: usize, reward: f64) -> (usize, f64) {
    if pass < 4 && taxi == LOCS[pass] {
        (IN_TAXI, reward)
    } else {
        (pass, -10.0)
    }
}

/// Gymnasium's `_dropoff`: the new passenger index, reward and termination.
fn dropoff(taxi: (usize, usize), pass: usize, dest: usize, reward: f64) -> (usize, f64, bool) {
    if taxi == LOCS[dest] && pass == IN_TAXI {
        (dest, 20.0, true)
    } else if pass == IN_TAXI && LOCS.contains(&taxi) {
        (LOCS.iter().position(|&l| l == taxi).unwrap(), reward, false)
    } else {
        (pass, -10.0, false)
    }
}

/// Gymnasium's `_calc_new_position`: a lateral (rainy) move, blocked by walls.
fn lateral(row: usize, col: usize, (dr, dc): (i64, i64)) -> (usize, usize) {
    let nr = (row as i64 + dr).clamp(0, 4) as usize;
    let nc = (col as i64 + dc).clamp(0, 4) as usize;
    if dc == 1 && !open(nr, 2 * nc) {
        return (row, col);
    }
    if dc == -1 && !open(nr, 2 * nc + 2) {
        return (row, col);
    }
    (nr, nc)
}

/// `P[s][a]` of the dry task (`_build_dry_transitions`).
fn dry(s: usize, a: usize, out: &mut Vec<Transition>) {
    let (row, col, pass, dest) = decode(s);
    let (mut nr, mut nc, mut np) = (row, col, pass);
    let (mut reward, mut terminated) = (-1.0, false);
    match a {
        SOUTH => nr = (row + 1).min(4),
        NORTH => nr = row.saturating_sub(1),
        EAST if open(row, 2 * col + 2) => nc = (col + 1).min(4),
        WEST if open(row, 2 * col) => nc = col.saturating_sub(1),
        PICKUP => (np, reward) = pickup((row, col), pass, reward),
        DROPOFF => (np, reward, terminated) = dropoff((row, col), pass, dest, reward),
        _ => {}
    }
    out.push(Transition { prob: 1.0, next: encode(nr, nc, np, dest), reward, terminated });
}

/// `P[s][a]` with `is_rainy` (`_build_rainy_transitions`).
fn rainy(s: usize, a: usize, p: f64, out: &mut Vec<Transition>) {
    let (row, col, pass, dest) = decode(s);
    // (forward, left, right) of each heading.
    const MOVES: [[(i64, i64); 3]; 4] = [
        [(1, 0), (0, 1), (0, -1)],
        [(-1, 0), (0, -1), (0, 1)],
        [(0, 1), (-1, 0), (1, 0)],
        [(0, -1), (1, 0), (-1, 0)],
    ];
    let (mut nr, mut nc, mut np) = (row, col, pass);
    let (mut left, mut right) = ((row, col), (row, col));
    let (mut reward, mut terminated) = (-1.0, false);
    let can_move = (a == SOUTH && row < 4) || (a == NORTH && row > 0) || (a == EAST && open(row, 2 * col + 2)) || (a == WEST && open(row, 2 * col));
    if can_move {
        let (dr, dc) = MOVES[a][0];
        nr = (row as i64 + dr).clamp(0, 4) as usize;
        nc = (col as i64 + dc).clamp(0, 4) as usize;
        left = lateral(row, col, MOVES[a][1]);
        right = lateral(row, col, MOVES[a][2]);
    } else if a == PICKUP {
        (np, reward) = pickup((row, col), pass, reward);
    } else if a == DROPOFF {
        (np, reward, terminated) = dropoff((row, col), pass, dest, reward);
    }
    let intended = encode(nr, nc, np, dest);
    if a <= WEST {
        let lat = (1.0 - p) / 2.0;
        out.push(Transition { prob: p, next: intended, reward: -1.0, terminated });
        out.push(Transition { prob: lat, next: encode(left.0, left.1, np, dest), reward: -1.0, terminated });
        out.push(Transition { prob: lat, next: encode(right.0, right.1, np, dest), reward: -1.0, terminated });
    } else {
        out.push(Transition { prob: 1.0, next: intended, reward, terminated });
    }
}

impl Taxi {
    pub fn new(cfg: &TaxiConfig) -> Result<Taxi> {
        for (name, p) in [("rainy_probability", cfg.rainy_probability), ("fickle_probability", cfg.fickle_probability)] {
            if !(0.0..=1.0).contains(&p) {
                bail!("Taxi-v4: {name} {p} is not in [0, 1]");
            }
        }
        // Start: passenger on a pad, destination another pad; 300 states, 1/300 each, in order.
        let start: Vec<(f64, usize)> = (0..NUM_STATES)
            .filter(|&s| {
                let (_, _, pass, dest) = decode(s);
                pass < 4 && pass != dest
            })
            .map(|s| (1.0 / 300.0, s))
            .collect();
        let model = Model::build(NUM_STATES, NUM_ACTIONS, start, |s, a, out| {
            if cfg.is_rainy {
                rainy(s, a, cfg.rainy_probability, out)
            } else {
                dry(s, a, out)
            }
        });
        Ok(Taxi { cfg: cfg.clone(), model: Arc::new(model), rng: env_rng(0), s: 0, fickle_step: false, last_action: None, reset_done: false })
    }

    pub fn config(&self) -> &TaxiConfig {
        &self.cfg
    }
    pub fn state(&self) -> usize {
        self.s
    }

    /// Gymnasium's `action_mask(s)`: which actions change the state.
    pub fn action_mask(s: usize) -> [bool; 6] {
        let (row, col, pass, dest) = decode(s);
        [
            row < 4,
            row > 0,
            col < 4 && open(row, 2 * col + 2),
            col > 0 && open(row, 2 * col),
            pass < 4 && (row, col) == LOCS[pass],
            pass == IN_TAXI && ((row, col) == LOCS[dest] || LOCS.contains(&(row, col))),
        ]
    }

    /// Reset with the draws given: `u` picks the start state through `categorical_sample`,
    /// `u_fickle` (used only with `fickle_passenger`) decides whether the passenger is fickle.
    pub fn reset_with_draws(&mut self, u: f64, u_fickle: f64) -> (usize, Info) {
        // Gymnasium's categorical_sample over all 500 states: the first whose cumulative
        // probability exceeds u, state 0 (`argmax` of all false) if none does.
        let mut c = 0.0;
        self.s = self.model.start().iter().find(|&&(p, _)| {
            c += p;
            c > u
        }).map_or(0, |&(_, s)| s);
        self.fickle_step = self.cfg.fickle_passenger && u_fickle < self.cfg.fickle_probability;
        self.last_action = None;
        self.reset_done = true;
        (self.s, Info { prob: Some(1.0), episode: None })
    }

    /// `step` with the draws given: `u` for `categorical_sample` (used only where `P[s][a]` has
    /// several entries) and `choice`, the index into the other three destinations in increasing
    /// order (used only when the passenger changes their mind).
    #[inline]
    pub fn step_with_draws(&mut self, action: usize, u: f64, choice: usize) -> Result<Step<usize>> {
        self.advance(action, Some(u), Some(choice))
    }

    #[inline]
    fn advance(&mut self, action: usize, u: Option<f64>, choice: Option<usize>) -> Result<Step<usize>> {
        if action >= NUM_ACTIONS {
            return Err(bad_action("Taxi-v4", action, NUM_ACTIONS));
        }
        if !self.reset_done {
            return Err(no_reset("Taxi-v4"));
        }
        let ts = self.model.transitions(self.s, action);
        let t = if ts.len() == 1 { ts[0] } else { *self.model.sample(self.s, action, u.unwrap_or_else(|| self.rng.uniform())) };
        let (row0, col0, pass0, dest0) = decode(self.s);
        let (row, col, pass, _) = decode(t.next);
        let mut next = t.next;
        if self.fickle_step && pass0 == IN_TAXI && (row, col) != (row0, col0) {
            self.fickle_step = false;
            let k = choice.unwrap_or_else(|| self.rng.below(3) as usize);
            if k >= 3 {
                bail!("Taxi-v4: fickle destination choice {k} is outside 0..3");
            }
            let dest = (0..4).filter(|&d| d != dest0).nth(k).unwrap();
            next = encode(row, col, pass, dest);
        }
        self.s = next;
        self.last_action = Some(action);
        Ok(Step { obs: next, reward: t.reward, terminated: t.terminated, truncated: false, info: Info { prob: Some(t.prob), episode: None } })
    }
}

impl Env for Taxi {
    type Obs = usize;

    fn id(&self) -> &'static str {
        "Taxi-v4"
    }
    fn observation_space(&self) -> Space {
        Space::discrete(NUM_STATES)
    }
    fn num_actions(&self) -> usize {
        NUM_ACTIONS
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn reset(&mut self, seed: Option<u64>) -> (usize, Info) {
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        let u = self.rng.uniform();
        let uf = if self.cfg.fickle_passenger { self.rng.uniform() } else { 1.0 };
        self.reset_with_draws(u, uf)
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<usize>> {
        self.advance(action, None, None)
    }
    fn num_states(&self) -> Option<usize> {
        Some(NUM_STATES)
    }
    fn state_index(&self) -> Option<usize> {
        Some(self.s)
    }
    fn model(&self) -> Option<&Model> {
        Some(&self.model)
    }
    /// Start in any of the 400 states an episode can be in: the passenger in the taxi, or
    /// waiting on a pad that is not their destination. Fickleness is drawn as at a reset.
    fn reset_to_state(&mut self, s: usize) -> Result<(usize, Info)> {
        if s >= NUM_STATES {
            bail!("Taxi-v4: start state {s} is outside 0..{NUM_STATES}");
        }
        let (_, _, pass, dest) = decode(s);
        if pass == dest {
            bail!("Taxi-v4: start state {s} has the passenger waiting at their destination, which no episode is in");
        }
        self.s = s;
        self.fickle_step = self.cfg.fickle_passenger && self.rng.uniform() < self.cfg.fickle_probability;
        self.last_action = None;
        self.reset_done = true;
        Ok((s, Info { prob: Some(1.0), episode: None }))
    }
    /// Gymnasium's `ansi` render: the map with the taxi highlighted (yellow, green with the
    /// passenger aboard), the waiting passenger in bold blue, the destination in magenta; then the
    /// last action.
    fn render_text(&self) -> Option<String> {
        let colorize = |s: &str, code: u8, bold: bool| format!("\x1b[{code}{}m{s}\x1b[0m", if bold { ";1" } else { "" });
        let mut out: Vec<Vec<String>> = MAP.iter().map(|l| l.chars().map(String::from).collect()).collect();
        let (row, col, pass, dest) = decode(self.s);
        let taxi = &mut out[1 + row][2 * col + 1];
        if pass < 4 {
            *taxi = colorize(taxi, 43, false); // yellow, highlighted
            let (pr, pc) = LOCS[pass];
            let p = &mut out[1 + pr][2 * pc + 1];
            *p = colorize(p, 34, true); // blue, bold
        } else {
            let c = if taxi == " " { "_".to_string() } else { taxi.clone() };
            *taxi = colorize(&c, 42, false); // green, highlighted
        }
        let (dr, dc) = LOCS[dest];
        let d = &mut out[1 + dr][2 * dc + 1];
        *d = colorize(d, 35, false); // magenta
        let mut text: String = out.iter().map(|r| r.concat()).collect::<Vec<_>>().join("\n");
        text.push('\n');
        match self.last_action {
            Some(a) => text.push_str(&format!("  ({})\n", ACTION_NAMES[a])),
            None => text.push('\n'),
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_start_distribution() {
        for s in 0..NUM_STATES {
            let (r, c, p, d) = decode(s);
            assert_eq!(encode(r, c, p, d), s);
        }
        let env = Taxi::new(&TaxiConfig::default()).unwrap();
        let m = env.model().unwrap();
        assert_eq!(m.start().len(), 300);
        assert!(m.start().iter().all(|&(_, s)| decode(s).2 < 4 && decode(s).2 != decode(s).3));
        for s in 0..NUM_STATES {
            for a in 0..NUM_ACTIONS {
                let p: f64 = m.transitions(s, a).iter().map(|t| t.prob).sum();
                assert!((p - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn walls_pickup_dropoff_by_hand() {
        let mut env = Taxi::new(&TaxiConfig::default()).unwrap();
        // Taxi at (0, 1), passenger at R (0), destination G (1): east is walled off ("R: |").
        env.reset_to_state(encode(0, 1, 0, 1)).unwrap();
        let s = env.step(EAST).unwrap();
        assert_eq!((s.obs, s.reward), (encode(0, 1, 0, 1), -1.0));
        let s = env.step(PICKUP).unwrap(); // passenger is not here
        assert_eq!((s.obs, s.reward), (encode(0, 1, 0, 1), -10.0));
        let s = env.step(WEST).unwrap();
        assert_eq!(s.obs, encode(0, 0, 0, 1));
        let s = env.step(PICKUP).unwrap();
        assert_eq!((s.obs, s.reward), (encode(0, 0, IN_TAXI, 1), -1.0));
        // Dropping at Y (another pad) leaves the passenger there; at G it ends the episode.
        env.reset_to_state(encode(4, 0, IN_TAXI, 1)).unwrap();
        let s = env.step(DROPOFF).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated), (encode(4, 0, 2, 1), -1.0, false));
        env.reset_to_state(encode(0, 4, IN_TAXI, 1)).unwrap();
        let s = env.step(DROPOFF).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated), (encode(0, 4, 1, 1), 20.0, true));
        env.reset_to_state(encode(2, 2, IN_TAXI, 1)).unwrap();
        assert_eq!(env.step(DROPOFF).unwrap().reward, -10.0);
        assert_eq!(Taxi::action_mask(encode(0, 0, 0, 1)), [true, false, true, false, true, false]);
        assert!(env.reset_to_state(encode(0, 0, 1, 1)).is_err());
        assert!(env.step(6).is_err());
    }

    #[test]
    fn rainy_drifts_left_and_right_of_the_heading() {
        let env = Taxi::new(&TaxiConfig { is_rainy: true, ..Default::default() }).unwrap();
        let m = env.model().unwrap();
        // From (2, 2) heading south: intended (3, 2), left = east (2, 3), right = west (2, 1).
        let ts = m.transitions(encode(2, 2, 0, 1), SOUTH);
        let v: Vec<(f64, usize)> = ts.iter().map(|t| (t.prob, t.next)).collect();
        let lat = (1.0 - 0.8) / 2.0;
        assert_eq!(v, vec![(0.8, encode(3, 2, 0, 1)), (lat, encode(2, 3, 0, 1)), (lat, encode(2, 1, 0, 1))]);
        // Blocked south at the bottom row: no drift (three entries, as Gymnasium's, all staying).
        let ts = m.transitions(encode(4, 2, 0, 1), SOUTH);
        assert_eq!(ts.len(), 3);
        assert!(ts.iter().all(|t| t.next == encode(4, 2, 0, 1)));
        assert_eq!(m.transitions(encode(4, 2, 0, 1), PICKUP).len(), 1);
    }

    #[test]
    fn dry_taxi_draws_only_at_reset_and_fickle_changes_destination_once() {
        let mut a = Taxi::new(&TaxiConfig::default()).unwrap();
        let mut b = a.clone();
        a.reset(Some(3));
        b.reset(Some(3));
        for t in 0..50 {
            a.step(t % 6).unwrap();
        }
        assert_eq!(a.reset(None).0, b.reset(None).0);
        let mut env = Taxi::new(&TaxiConfig { fickle_passenger: true, ..Default::default() }).unwrap();
        let (s0, _) = env.reset_with_draws(0.5, 0.0); // fickle
        let (row, col, _, dest) = decode(s0);
        env.reset_to_state(encode(row, col, IN_TAXI, dest)).unwrap();
        env.fickle_step = true;
        let a = if row > 0 { NORTH } else { SOUTH };
        let s = env.step_with_draws(a, 0.5, 2).unwrap();
        let new_dest = (0..4).filter(|&d| d != dest).nth(2).unwrap();
        assert_eq!(decode(s.obs).3, new_dest);
        let s2 = env.step_with_draws(if a == NORTH { SOUTH } else { NORTH }, 0.5, 0).unwrap();
        assert_eq!(decode(s2.obs).3, new_dest); // once only
    }

    #[test]
    fn dp_optimum_from_the_start_distribution() {
        let env = Taxi::new(&TaxiConfig::default()).unwrap();
        let m = env.model().unwrap();
        let (v, _) = m.value_iteration(1.0, 1e-12);
        let start: f64 = m.start().iter().map(|&(p, s)| p * v[s]).sum();
        assert!((start - 7.93).abs() < 0.01, "{start}");
    }

    #[test]
    fn ansi_render() {
        let mut env = Taxi::new(&TaxiConfig::default()).unwrap();
        env.reset_to_state(encode(0, 0, IN_TAXI, 1)).unwrap();
        env.step(SOUTH).unwrap();
        let t = env.render_text().unwrap();
        let want = "+---------+\n|R: | : :\x1b[35mG\x1b[0m|\n|\x1b[42m_\x1b[0m: | : : |\n| : : : : |\n| | : | : |\n|Y| : |B: |\n+---------+\n  (South)\n";
        assert_eq!(t, want);
    }
}
