//! `MountainCar-v0`: Gymnasium's `gymnasium/envs/classic_control/mountain_car.py` (Moore 1990,
//! "Efficient Memory-based Learning for Robot Control"; Sutton & Barto Example 10.1).
//!
//! - State `(position, velocity)` in `f64`, observed as `[f32; 2]`. Actions: 0 push left,
//!   1 no push, 2 push right.
//! - Dynamics (force 0.001, gravity 0.0025), in Gymnasium's order:
//!   `v ← clip(v + (a − 1)·0.001 − 0.0025·cos(3p), −0.07, 0.07)`, `p ← clip(p + v, −1.2, 0.6)`,
//!   and `v ← 0` when `p` sits on the left wall (−1.2) with `v < 0`.
//! - Terminates when `p ≥ 0.5` and `v ≥ goal_velocity` (option, default 0). Reward −1 on
//!   every step, the terminating one included.
//! - Reset: position uniform in `[−0.6, −0.4)`, velocity 0 ([`MountainCar::reset_with_bounds`]
//!   takes Gymnasium's `options={"low", "high"}`); 200-step time limit (the registry's
//!   [`crate::wrappers::TimeLimit`]).
//!
//! [`MountainCar::set_state`] installs any state (the parity check's injected start).

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Step};
use crate::render::{Rgb, BLACK, WHITE};
use crate::space::Space;

pub const MIN_POSITION: f64 = -1.2;
pub const MAX_POSITION: f64 = 0.6;
pub const MAX_SPEED: f64 = 0.07;
pub const GOAL_POSITION: f64 = 0.5;
pub const FORCE: f64 = 0.001;
pub const GRAVITY: f64 = 0.0025;

/// MountainCar-v0.
#[derive(Clone, Debug)]
pub struct MountainCar {
    state: [f64; 2],
    goal_velocity: f64,
    reset_done: bool,
    rng: Rng,
}

impl Default for MountainCar {
    fn default() -> Self {
        MountainCar::new(0.0)
    }
}

/// The track's height at `x` (Gymnasium's `_height`).
fn height(x: f64) -> f64 {
    (3.0 * x).sin() * 0.45 + 0.55
}

impl MountainCar {
    pub fn new(goal_velocity: f64) -> MountainCar {
        MountainCar { state: [0.0; 2], goal_velocity, reset_done: false, rng: env_rng(0) }
    }

    /// The full-precision state `(position, velocity)`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Start an episode from `state` (like assigning `env.unwrapped.state` after a reset).
    pub fn set_state(&mut self, state: [f64; 2]) -> [f32; 2] {
        self.state = state;
        self.reset_done = true;
        self.obs()
    }

    /// Reset with the position uniform in `[low, high)` (Gymnasium's reset options).
    pub fn reset_with_bounds(&mut self, seed: Option<u64>, low: f64, high: f64) -> Result<([f32; 2], Info)> {
        if low.is_nan() || high.is_nan() || low > high {
            bail!("MountainCar-v0: reset bounds low={low} high={high}: low must not exceed high");
        }
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        let p = low + (high - low) * self.rng.uniform();
        Ok((self.set_state([p, 0.0]), Info::default()))
    }

    #[inline]
    fn obs(&self) -> [f32; 2] {
        [self.state[0] as f32, self.state[1] as f32]
    }
}

impl Env for MountainCar {
    type Obs = [f32; 2];

    fn id(&self) -> &'static str {
        "MountainCar-v0"
    }
    fn observation_space(&self) -> Space {
        Space::box1(vec![MIN_POSITION as f32, -MAX_SPEED as f32], vec![MAX_POSITION as f32, MAX_SPEED as f32])
    }
    fn num_actions(&self) -> usize {
        3
    }
    fn obs_dim(&self) -> usize {
        2
    }
    fn reset(&mut self, seed: Option<u64>) -> ([f32; 2], Info) {
        self.reset_with_bounds(seed, -0.6, -0.4).expect("valid bounds")
    }

    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<[f32; 2]>> {
        if action > 2 {
            return Err(bad_action("MountainCar-v0", action, 3));
        }
        if !self.reset_done {
            return Err(no_reset("MountainCar-v0"));
        }
        let [mut position, mut velocity] = self.state;
        velocity += (action as f64 - 1.0) * FORCE + (3.0 * position).cos() * (-GRAVITY);
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        position += velocity;
        position = position.clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        let terminated = position >= GOAL_POSITION && velocity >= self.goal_velocity;
        self.state = [position, velocity];
        Ok(Step { obs: self.obs(), reward: -1.0, terminated, truncated: false, info: Info::default() })
    }

    /// Gymnasium's picture: 600×400, white, the black track `sin(3x)·0.45 + 0.55`, the black
    /// car tilted with the slope, grey wheels, the flag (pole black, flag (204, 204, 0)).
    /// pygame draws at whole pixels with y up and then flips the rows: the point `(x, y)` of
    /// Gymnasium's drawing is `(x + 0.5, H − 0.5 − y)` here, so that sampling pixel centres
    /// lights the pixels pygame lights (up to rounding at the edges, and without anti-aliasing).
    fn render_rgb(&self) -> Option<Rgb> {
        let (w, h) = (600usize, 400usize);
        let mut im = Rgb::new(h, w, WHITE);
        let scale = w as f64 / (MAX_POSITION - MIN_POSITION);
        let at = |x: f64, y: f64| (x + 0.5, h as f64 - 0.5 - y);
        let xs: Vec<f64> = (0..100).map(|i| MIN_POSITION + (MAX_POSITION - MIN_POSITION) * i as f64 / 99.0).collect();
        for pair in xs.windows(2) {
            let (a, b) = (at((pair[0] - MIN_POSITION) * scale, height(pair[0]) * scale), at((pair[1] - MIN_POSITION) * scale, height(pair[1]) * scale));
            im.draw_line(a.0, a.1, b.0, b.1, BLACK);
        }
        let (carwidth, carheight, clearance) = (40.0, 20.0, 10.0);
        let pos = self.state[0];
        let ang = (3.0 * pos).cos();
        let rot = |(x, y): (f64, f64)| (x * ang.cos() - y * ang.sin(), x * ang.sin() + y * ang.cos());
        let (l, r, t, b) = (-carwidth / 2.0, carwidth / 2.0, carheight, 0.0);
        let car: Vec<(f64, f64)> = [(l, b), (l, t), (r, t), (r, b)]
            .into_iter()
            .map(|c| {
                let (x, y) = rot(c);
                // pygame takes whole-pixel vertices (truncated).
                at((x + (pos - MIN_POSITION) * scale).trunc(), (y + clearance + height(pos) * scale).trunc())
            })
            .collect();
        im.fill_convex(&car, BLACK);
        for c in [(carwidth / 4.0, 0.0), (-carwidth / 4.0, 0.0)] {
            let (x, y) = rot(c);
            // pygame's wheel centres are truncated to whole pixels.
            let (wx, wy) = at((x + (pos - MIN_POSITION) * scale).trunc(), (y + clearance + height(pos) * scale).trunc());
            im.fill_circle(wx, wy, (carheight / 2.5).trunc(), [128, 128, 128]);
        }
        let flagx = ((GOAL_POSITION - MIN_POSITION) * scale).trunc();
        let flagy1 = (height(GOAL_POSITION) * scale).trunc();
        let flagy2 = flagy1 + 50.0;
        let (top, bottom) = (at(flagx, flagy2), at(flagx, flagy1));
        im.fill_rect(flagx as i64, top.1 as i64, flagx as i64 + 1, bottom.1 as i64 + 1, BLACK);
        im.fill_convex(&[at(flagx, flagy2), at(flagx, flagy2 - 10.0), at(flagx + 25.0, flagy2 - 5.0)], [204, 204, 0]);
        Some(im)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_by_hand_and_the_left_wall() {
        let mut env = MountainCar::default();
        env.set_state([-0.5, 0.0]);
        env.step(2).unwrap();
        let v: f64 = 0.0 + (1.0 * 0.001 + (3.0f64 * -0.5).cos() * -0.0025);
        assert_eq!(env.state(), [-0.5 + v, v]);
        // Into the left wall: position clipped, velocity zeroed.
        env.set_state([-1.19, -0.05]);
        let s = env.step(0).unwrap();
        assert_eq!(env.state(), [-1.2, 0.0]);
        assert_eq!((s.reward, s.terminated), (-1.0, false));
        // The goal: position ≥ 0.5 with velocity ≥ 0.
        env.set_state([0.49, 0.02]);
        let s = env.step(2).unwrap();
        assert!(s.terminated);
        assert_eq!(s.reward, -1.0);
        let mut fussy = MountainCar::new(0.05);
        fussy.set_state([0.49, 0.02]);
        assert!(!fussy.step(2).unwrap().terminated);
    }

    #[test]
    fn reset_seeding_bounds_render_and_errors() {
        let mut env = MountainCar::default();
        assert!(env.step(0).unwrap_err().to_string().contains("before reset"));
        let (o, _) = env.reset(Some(5));
        assert!((-0.6..-0.4).contains(&o[0]) && o[1] == 0.0, "{o:?}");
        let mut env2 = MountainCar::default();
        assert_eq!(env2.reset(Some(5)).0, o);
        assert_ne!(env2.reset(Some(6)).0, o);
        assert!(env.reset_with_bounds(None, 0.1, -0.1).is_err());
        assert!(env.step(3).unwrap_err().to_string().contains("Discrete(3)"));
        env.set_state([-0.5, 0.0]);
        let im = env.render_rgb().unwrap();
        assert_eq!((im.height, im.width), (400, 600));
        // The car body sits above the track at x = (−0.5 + 1.2)·scale.
        let x = ((-0.5 - MIN_POSITION) * 600.0 / 1.8) as usize;
        let y = 400 - (height(-0.5) * 600.0 / 1.8 + 10.0 + 10.0) as usize;
        assert_eq!(im.pixel(y, x), BLACK);
        assert_eq!(im.pixel(5, 5), WHITE);
    }
}
