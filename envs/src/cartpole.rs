//! `CartPole-v1`: Gymnasium's `gymnasium/envs/classic_control/cartpole.py` (Barto, Sutton &
//! Anderson 1983; equations from Florian 2007, "Correct equations for the dynamics of the
//! cart-pole system").
//!
//! - State `(x, ẋ, θ, θ̇)` in `f64`, observed as `[f32; 4]` (Gymnasium casts to float32).
//! - Constants: g 9.8, cart mass 1.0, pole mass 0.1, half-length 0.5, force ±10 (action 1
//!   pushes right, 0 left), τ 0.02 s, explicit Euler (`x += τ ẋ; ẋ += τ ẍ; θ += τ θ̇; θ̇ += τ θ̈`
//!   with the accelerations of the old state).
//! - Terminates when `|x| > 2.4` or `|θ| > 12° = 12·2π/360` rad.
//! - Reward +1 on every step, the terminating one included; with `sutton_barto_reward`
//!   (default false) 0 per step and −1 on termination.
//! - Reset: each state variable uniform in `[-0.05, 0.05)` ([`CartPole::reset_with_bounds`]
//!   takes Gymnasium's `options={"low", "high"}`); 500-step time limit (the registry's
//!   [`crate::wrappers::TimeLimit`]).
//! - Stepping after termination behaves as Gymnasium: the state keeps integrating, the reward is
//!   0 (−1 with `sutton_barto_reward`) and `terminated` stays true; no warning is printed.
//!
//! [`CartPole::set_state`] installs any state (how the parity check starts Gymnasium and wick
//! from the same one).

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Step};
use crate::render::{Rgb, BLACK, WHITE};
use crate::space::Space;

pub const GRAVITY: f64 = 9.8;
pub const MASS_CART: f64 = 1.0;
pub const MASS_POLE: f64 = 0.1;
pub const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
pub const LENGTH: f64 = 0.5;
pub const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
pub const FORCE_MAG: f64 = 10.0;
pub const TAU: f64 = 0.02;
pub const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
pub const X_THRESHOLD: f64 = 2.4;

/// CartPole-v1.
#[derive(Clone, Debug)]
pub struct CartPole {
    state: [f64; 4],
    sutton_barto_reward: bool,
    /// Gymnasium's `steps_beyond_terminated`: None in play, Some(k) after termination.
    steps_beyond_terminated: Option<u64>,
    reset_done: bool,
    rng: Rng,
}

impl Default for CartPole {
    fn default() -> Self {
        CartPole::new(false)
    }
}

impl CartPole {
    pub fn new(sutton_barto_reward: bool) -> CartPole {
        CartPole { state: [0.0; 4], sutton_barto_reward, steps_beyond_terminated: None, reset_done: false, rng: env_rng(0) }
    }

    /// The full-precision state `(x, ẋ, θ, θ̇)`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Start an episode from `state` (like assigning `env.unwrapped.state` after a reset).
    pub fn set_state(&mut self, state: [f64; 4]) -> [f32; 4] {
        self.state = state;
        self.steps_beyond_terminated = None;
        self.reset_done = true;
        self.obs()
    }

    /// Reset with each variable uniform in `[low, high)` (Gymnasium's reset options).
    pub fn reset_with_bounds(&mut self, seed: Option<u64>, low: f64, high: f64) -> Result<([f32; 4], Info)> {
        if low.is_nan() || high.is_nan() || low > high {
            bail!("CartPole-v1: reset bounds low={low} high={high}: low must not exceed high");
        }
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        let mut st = [0.0; 4];
        for v in st.iter_mut() {
            *v = low + (high - low) * self.rng.uniform();
        }
        Ok((self.set_state(st), Info::default()))
    }

    #[inline]
    fn obs(&self) -> [f32; 4] {
        [self.state[0] as f32, self.state[1] as f32, self.state[2] as f32, self.state[3] as f32]
    }
}

impl Env for CartPole {
    type Obs = [f32; 4];

    fn id(&self) -> &'static str {
        "CartPole-v1"
    }
    fn observation_space(&self) -> Space {
        let high = [(X_THRESHOLD * 2.0) as f32, f32::INFINITY, (THETA_THRESHOLD * 2.0) as f32, f32::INFINITY];
        Space::box1(high.iter().map(|h| -h).collect(), high.to_vec())
    }
    fn num_actions(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        4
    }
    fn reset(&mut self, seed: Option<u64>) -> ([f32; 4], Info) {
        self.reset_with_bounds(seed, -0.05, 0.05).expect("valid bounds")
    }

    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<[f32; 4]>> {
        if action > 1 {
            return Err(bad_action("CartPole-v1", action, 2));
        }
        if !self.reset_done {
            return Err(no_reset("CartPole-v1"));
        }
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
        let (sintheta, costheta) = (theta.sin(), theta.cos());
        let temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
        let thetaacc =
            (GRAVITY * sintheta - costheta * temp) / (LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / TOTAL_MASS));
        let xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
        let x = x + TAU * x_dot;
        let x_dot = x_dot + TAU * xacc;
        let theta = theta + TAU * theta_dot;
        let theta_dot = theta_dot + TAU * thetaacc;
        self.state = [x, x_dot, theta, theta_dot];
        // Gymnasium's comparisons verbatim (a NaN state does not terminate, as there).
        #[allow(clippy::manual_range_contains)]
        let terminated = x < -X_THRESHOLD || x > X_THRESHOLD || theta < -THETA_THRESHOLD || theta > THETA_THRESHOLD;
        let reward = if !terminated {
            if self.sutton_barto_reward {
                0.0
            } else {
                1.0
            }
        } else if self.steps_beyond_terminated.is_none() {
            self.steps_beyond_terminated = Some(0);
            if self.sutton_barto_reward {
                -1.0
            } else {
                1.0
            }
        } else {
            *self.steps_beyond_terminated.as_mut().unwrap() += 1;
            if self.sutton_barto_reward {
                -1.0
            } else {
                0.0
            }
        };
        Ok(Step { obs: self.obs(), reward, terminated, truncated: false, info: Info::default() })
    }

    /// Gymnasium's picture: 600×400, white, black cart and track, brown pole, blue axle.
    fn render_rgb(&self) -> Option<Rgb> {
        let (w, h) = (600usize, 400usize);
        let mut im = Rgb::new(h, w, WHITE);
        let scale = w as f64 / (X_THRESHOLD * 2.0);
        let polewidth = 10.0;
        let polelen = scale * (2.0 * LENGTH);
        let (cartwidth, cartheight) = (50.0, 30.0);
        let cartx = self.state[0] * scale + w as f64 / 2.0;
        let carty = 100.0;
        let axle = cartheight / 4.0;
        // Gymnasium draws with y up, then flips: map y -> h - y.
        let flip = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> { pts.iter().map(|&(x, y)| (x, h as f64 - y)).collect() };
        let (l, r, t, b) = (-cartwidth / 2.0, cartwidth / 2.0, cartheight / 2.0, -cartheight / 2.0);
        let cart = [(l, b), (l, t), (r, t), (r, b)].map(|(x, y)| (x + cartx, y + carty));
        im.fill_convex(&flip(&cart), BLACK);
        let (l, r, t, b) = (-polewidth / 2.0, polewidth / 2.0, polelen - polewidth / 2.0, -polewidth / 2.0);
        let phi = -self.state[2];
        let pole = [(l, b), (l, t), (r, t), (r, b)]
            .map(|(x, y)| (x * phi.cos() - y * phi.sin() + cartx, x * phi.sin() + y * phi.cos() + carty + axle));
        im.fill_convex(&flip(&pole), [202, 152, 101]);
        im.fill_circle(cartx, h as f64 - (carty + axle), polewidth / 2.0, [129, 132, 203]);
        let track = h as i64 - carty as i64;
        im.fill_rect(0, track, w as i64, track + 1, BLACK);
        Some(im)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_thresholds() {
        let mut env = CartPole::default();
        // Just inside: not terminated after a step that stays inside.
        env.set_state([2.39, 0.0, 0.0, 0.0]);
        assert!(!env.step(0).unwrap().terminated);
        env.set_state([2.39, 1.0, 0.0, 0.0]); // x -> 2.41 > 2.4
        let s = env.step(1).unwrap();
        assert!(s.terminated);
        assert_eq!(s.reward, 1.0); // +1 on the terminating step
        let s = env.step(1).unwrap();
        assert!(s.terminated);
        assert_eq!(s.reward, 0.0); // stepping past termination: 0, as Gymnasium
        env.set_state([0.0, 0.0, THETA_THRESHOLD - 1e-9, 1.0]);
        assert!(env.step(0).unwrap().terminated);
        env.set_state([0.0, 0.0, -THETA_THRESHOLD + 0.01, 0.0]);
        assert!(!env.step(1).unwrap().terminated);
        let mut sb = CartPole::new(true);
        sb.set_state([0.0; 4]);
        assert_eq!(sb.step(0).unwrap().reward, 0.0);
        sb.set_state([2.4, 1.0, 0.0, 0.0]);
        assert_eq!(sb.step(0).unwrap().reward, -1.0);
    }

    #[test]
    fn one_euler_step_by_hand() {
        let mut env = CartPole::default();
        env.set_state([0.01, -0.02, 0.03, -0.04]);
        env.step(1).unwrap();
        let (th, thd) = (0.03f64, -0.04f64);
        let temp = (10.0 + 0.05 * (thd * thd) * th.sin()) / 1.1;
        let thacc = (9.8 * th.sin() - th.cos() * temp) / (0.5 * (4.0 / 3.0 - 0.1 * (th.cos() * th.cos()) / 1.1));
        let xacc = temp - 0.05 * thacc * th.cos() / 1.1;
        let want = [0.01 + 0.02 * -0.02, -0.02 + 0.02 * xacc, 0.03 + 0.02 * -0.04, -0.04 + 0.02 * thacc];
        assert_eq!(env.state(), want);
    }

    #[test]
    fn reset_bounds_seeding_and_errors() {
        let mut env = CartPole::default();
        assert!(env.step(0).unwrap_err().to_string().contains("before reset"));
        let (o, _) = env.reset(Some(7));
        assert!(o.iter().all(|v| v.abs() <= 0.05));
        let mut env2 = CartPole::default();
        assert_eq!(env2.reset(Some(7)).0, o);
        assert_ne!(env2.reset(Some(8)).0, o);
        assert_ne!(env2.reset(None).0, env2.reset(None).0);
        assert!(env.step(2).is_err());
        assert!(env.reset_with_bounds(None, 0.1, -0.1).is_err());
        let im = env.render_rgb().unwrap();
        assert_eq!((im.height, im.width, im.data.len()), (400, 600, 400 * 600 * 3));
        assert_eq!(im.pixel(300, 300), BLACK); // the cart
        assert_eq!(im.pixel(220, 300), [202, 152, 101]); // the pole above it
    }
}
