//! `Acrobot-v1`: Gymnasium's `gymnasium/envs/classic_control/acrobot.py` (Sutton 1996,
//! "Generalization in Reinforcement Learning: Successful Examples Using Sparse Coarse Coding";
//! Sutton & Barto 1998 §11.3; the dynamics of Spong 1995).
//!
//! - Two links of length 1 and mass 1 (centres of mass at 0.5, moments of inertia 1), joint 1
//!   fixed; a torque of −1, 0 or +1 (actions 0, 1, 2) on joint 2. State `(θ₁, θ₂, θ̇₁, θ̇₂)` in
//!   `f64`; observed as `[cos θ₁, sin θ₁, cos θ₂, sin θ₂, θ̇₁, θ̇₂]` in `f32`.
//! - Equations of motion (Gymnasium's `_dsdt`, g = 9.8):
//!
//!   ```text
//!   d₁ = m₁l꜀₁² + m₂(l₁² + l꜀₂² + 2l₁l꜀₂ cos θ₂) + I₁ + I₂      d₂ = m₂(l꜀₂² + l₁l꜀₂ cos θ₂) + I₂
//!   φ₂ = m₂l꜀₂g cos(θ₁ + θ₂ − π/2)
//!   φ₁ = −m₂l₁l꜀₂θ̇₂² sin θ₂ − 2m₂l₁l꜀₂θ̇₂θ̇₁ sin θ₂ + (m₁l꜀₁ + m₂l₁)g cos(θ₁ − π/2) + φ₂
//!   θ̈₂ = (τ + d₂/d₁ φ₁ − m₂l₁l꜀₂θ̇₁² sin θ₂ − φ₂) / (m₂l꜀₂² + I₂ − d₂²/d₁)   ("book", the default)
//!   θ̈₂ = (τ + d₂/d₁ φ₁ − φ₂) / (m₂l꜀₂² + I₂ − d₂²/d₁)                      ("nips", option book_or_nips)
//!   θ̈₁ = −(d₂θ̈₂ + φ₁) / d₁
//!   ```
//!
//!   integrated over dt = 0.2 s by one classical Runge–Kutta 4 step in `f64` (Gymnasium's `rk4`
//!   with `t = [0, dt]`, the same operations in the same order), then θ₁, θ₂ wrapped into
//!   [−π, π] and θ̇₁, θ̇₂ clipped to ±4π, ±9π.
//! - Terminates when the free end is above the bar: `−cos θ₁ − cos(θ₁ + θ₂) > 1`. Reward −1 a
//!   step, 0 on the terminating one.
//! - Reset: each state variable uniform in `[−0.1, 0.1)`, rounded to `f32` as Gymnasium does
//!   ([`Acrobot::reset_with_bounds`] takes its `options={"low", "high"}`); 500-step time limit
//!   (the registry's [`crate::wrappers::TimeLimit`]). Gymnasium's `torque_noise_max` (0) is not
//!   modelled.
//!
//! [`Acrobot::set_state`] installs any state (the parity check's injected start).

use std::f64::consts::PI;

use wick_core::rng::Rng;
use wick_core::{bail, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Step};
use crate::render::{Rgb, BLACK, WHITE};
use crate::space::Space;

pub const DT: f64 = 0.2;
pub const LINK_LENGTH_1: f64 = 1.0;
pub const LINK_LENGTH_2: f64 = 1.0;
pub const LINK_MASS_1: f64 = 1.0;
pub const LINK_MASS_2: f64 = 1.0;
pub const LINK_COM_POS_1: f64 = 0.5;
pub const LINK_COM_POS_2: f64 = 0.5;
pub const LINK_MOI: f64 = 1.0;
pub const MAX_VEL_1: f64 = 4.0 * PI;
pub const MAX_VEL_2: f64 = 9.0 * PI;
pub const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

/// Which form of θ̈₂: Sutton & Barto's book (Gymnasium's default) or the NIPS paper's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dynamics {
    Book,
    Nips,
}

/// Acrobot-v1.
#[derive(Clone, Debug)]
pub struct Acrobot {
    state: [f64; 4],
    dynamics: Dynamics,
    reset_done: bool,
    rng: Rng,
}

impl Default for Acrobot {
    fn default() -> Self {
        Acrobot::new(Dynamics::Book)
    }
}

/// Gymnasium's `wrap`: shift `x` by multiples of `M − m` into `[m, M]`.
fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    let diff = big_m - m;
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

/// Gymnasium's `bound`: `min(max(x, m), M)`.
fn bound(x: f64, m: f64, big_m: f64) -> f64 {
    let x = if m > x { m } else { x };
    if big_m < x {
        big_m
    } else {
        x
    }
}

impl Acrobot {
    pub fn new(dynamics: Dynamics) -> Acrobot {
        Acrobot { state: [0.0; 4], dynamics, reset_done: false, rng: env_rng(0) }
    }

    /// The full-precision state `(θ₁, θ₂, θ̇₁, θ̇₂)`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Start an episode from `state` (like assigning `env.unwrapped.state` after a reset).
    pub fn set_state(&mut self, state: [f64; 4]) -> [f32; 6] {
        self.state = state;
        self.reset_done = true;
        self.obs()
    }

    /// Reset with each variable uniform in `[low, high)`, rounded to `f32` (Gymnasium's reset
    /// options).
    pub fn reset_with_bounds(&mut self, seed: Option<u64>, low: f64, high: f64) -> Result<([f32; 6], Info)> {
        if low.is_nan() || high.is_nan() || low > high {
            bail!("Acrobot-v1: reset bounds low={low} high={high}: low must not exceed high");
        }
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        let mut st = [0.0; 4];
        for v in st.iter_mut() {
            *v = (low + (high - low) * self.rng.uniform()) as f32 as f64;
        }
        Ok((self.set_state(st), Info::default()))
    }

    #[inline]
    fn obs(&self) -> [f32; 6] {
        let s = self.state;
        [s[0].cos() as f32, s[0].sin() as f32, s[1].cos() as f32, s[1].sin() as f32, s[2] as f32, s[3] as f32]
    }

    /// Gymnasium's `_dsdt`: the time derivative of `(θ₁, θ₂, θ̇₁, θ̇₂, τ)` (τ is constant).
    #[inline]
    fn dsdt(&self, y: &[f64; 5]) -> [f64; 5] {
        let (m1, m2, l1, lc1, lc2, i1, i2, g) =
            (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1, LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI, LINK_MOI, 9.8);
        let a = y[4];
        let (theta1, theta2, dtheta1, dtheta2) = (y[0], y[1], y[2], y[3]);
        // Python's evaluation order, term by term, so the rounding is numpy's.
        let d1 = m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
        let d2 = m2 * (lc2 * lc2 + l1 * lc2 * theta2.cos()) + i2;
        let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
        let phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * theta2.sin() - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
            + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
            + phi2;
        let ddtheta2 = match self.dynamics {
            Dynamics::Nips => (a + d2 / d1 * phi1 - phi2) / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1),
            Dynamics::Book => {
                (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * theta2.sin() - phi2) / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1)
            }
        };
        let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
        [dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0]
    }

    /// Gymnasium's `rk4(derivs, y0, [0, dt])`: one classical Runge–Kutta step.
    #[inline]
    fn rk4(&self, y0: [f64; 5]) -> [f64; 5] {
        let (dt, dt2) = (DT, DT / 2.0);
        let add = |y: &[f64; 5], h: f64, k: &[f64; 5]| std::array::from_fn::<f64, 5, _>(|i| y[i] + h * k[i]);
        let k1 = self.dsdt(&y0);
        let k2 = self.dsdt(&add(&y0, dt2, &k1));
        let k3 = self.dsdt(&add(&y0, dt2, &k2));
        let k4 = self.dsdt(&add(&y0, dt, &k3));
        std::array::from_fn(|i| y0[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
    }
}

impl Env for Acrobot {
    type Obs = [f32; 6];

    fn id(&self) -> &'static str {
        "Acrobot-v1"
    }
    fn observation_space(&self) -> Space {
        let high = [1.0f32, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32];
        Space::box1(high.iter().map(|h| -h).collect(), high.to_vec())
    }
    fn num_actions(&self) -> usize {
        3
    }
    fn obs_dim(&self) -> usize {
        6
    }
    fn reset(&mut self, seed: Option<u64>) -> ([f32; 6], Info) {
        self.reset_with_bounds(seed, -0.1, 0.1).expect("valid bounds")
    }

    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<[f32; 6]>> {
        if action > 2 {
            return Err(bad_action("Acrobot-v1", action, 3));
        }
        if !self.reset_done {
            return Err(no_reset("Acrobot-v1"));
        }
        let s = self.state;
        let ns = self.rk4([s[0], s[1], s[2], s[3], AVAIL_TORQUE[action]]);
        self.state = [wrap(ns[0], -PI, PI), wrap(ns[1], -PI, PI), bound(ns[2], -MAX_VEL_1, MAX_VEL_1), bound(ns[3], -MAX_VEL_2, MAX_VEL_2)];
        let [t1, t2, _, _] = self.state;
        let terminated = -t1.cos() - (t2 + t1).cos() > 1.0;
        let reward = if terminated { 0.0 } else { -1.0 };
        Ok(Step { obs: self.obs(), reward, terminated, truncated: false, info: Info::default() })
    }

    /// Gymnasium's picture: 500×500, white, a black bar at height 1, the links in (0, 204, 204)
    /// with joints in (204, 204, 0).
    fn render_rgb(&self) -> Option<Rgb> {
        let dim = 500usize;
        let mut im = Rgb::new(dim, dim, WHITE);
        let s = self.state;
        let bound = LINK_LENGTH_1 + LINK_LENGTH_2 + 0.2;
        let scale = dim as f64 / (bound * 2.0);
        let offset = dim as f64 / 2.0;
        // Gymnasium draws at whole pixels with y up, then flips the rows: its point (x, y) is
        // (x + 0.5, dim − 0.5 − y) here (see MountainCar's render).
        let at = |x: f64, y: f64| (x + 0.5, dim as f64 - 0.5 - y);
        let (a, b) = (at((-2.2 * scale + offset).trunc(), (scale + offset).trunc()), at((2.2 * scale + offset).trunc(), (scale + offset).trunc()));
        im.draw_line(a.0, a.1, b.0, b.1, BLACK);
        let p1 = (LINK_LENGTH_1 * s[0].sin() * scale, -LINK_LENGTH_1 * s[0].cos() * scale);
        let thetas = [s[0] - PI / 2.0, s[0] + s[1] - PI / 2.0];
        let lens = [LINK_LENGTH_1 * scale, LINK_LENGTH_2 * scale];
        for ((x, y), (th, len)) in [(0.0, 0.0), p1].into_iter().zip(thetas.into_iter().zip(lens)) {
            let (x, y) = (x + offset, y + offset);
            let (l, r, t, b) = (0.0, len, 0.1 * scale, -0.1 * scale);
            let quad: Vec<(f64, f64)> =
                // pygame takes whole-pixel vertices (truncated).
                [(l, b), (l, t), (r, t), (r, b)].into_iter().map(|(cx, cy)| at((cx * th.cos() - cy * th.sin() + x).trunc(), (cx * th.sin() + cy * th.cos() + y).trunc())).collect();
            im.fill_convex(&quad, [0, 204, 204]);
            let (jx, jy) = at(x.trunc(), y.trunc());
            im.fill_circle(jx, jy, (0.1 * scale).trunc(), [204, 204, 0]);
        }
        Some(im)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hanging_still_stays_still_and_energy_needs_torque() {
        let mut env = Acrobot::default();
        env.set_state([0.0; 4]);
        let s = env.step(1).unwrap();
        // Only cos(−π/2) ≈ 6e-17 (not 0) moves it, as in Gymnasium.
        assert!(env.state().iter().all(|v| v.abs() < 1e-14), "{:?}", env.state());
        assert_eq!((s.reward, s.terminated), (-1.0, false));
        assert!(s.obs.iter().zip([1.0, 0.0, 1.0, 0.0, 0.0, 0.0]).all(|(o, w)| (o - w).abs() < 1e-6), "{:?}", s.obs);
        env.step(2).unwrap();
        assert!(env.state()[3] > 0.0, "{:?}", env.state()); // +1 torque on joint 2 turns it
    }

    #[test]
    fn wrap_bound_and_termination() {
        assert_eq!(wrap(3.5 * PI, -PI, PI), 3.5 * PI - 2.0 * (2.0 * PI));
        assert_eq!(wrap(-1.5 * PI, -PI, PI), -1.5 * PI + 2.0 * PI);
        assert_eq!(bound(100.0, -MAX_VEL_1, MAX_VEL_1), MAX_VEL_1);
        let mut env = Acrobot::default();
        // Link 1 pointing up: the tip is at height 2 > 1.
        env.set_state([PI, 0.0, 0.0, 0.0]);
        let s = env.step(1).unwrap();
        assert!(s.terminated);
        assert_eq!(s.reward, 0.0);
    }

    #[test]
    fn book_and_nips_differ_only_with_velocity() {
        let (mut a, mut b) = (Acrobot::new(Dynamics::Book), Acrobot::new(Dynamics::Nips));
        a.set_state([0.3, -0.2, 0.0, 0.0]);
        b.set_state([0.3, -0.2, 0.0, 0.0]);
        let y = [0.3, -0.2, 0.0, 0.0, 1.0];
        assert_eq!(a.dsdt(&y), b.dsdt(&y));
        let y = [0.3, -0.2, 1.5, 0.0, 1.0];
        assert_ne!(a.dsdt(&y), b.dsdt(&y));
    }

    #[test]
    fn reset_seeding_render_and_errors() {
        let mut env = Acrobot::default();
        assert!(env.step(0).unwrap_err().to_string().contains("before reset"));
        env.reset(Some(1));
        let st = env.state();
        assert!(st.iter().all(|v| v.abs() <= 0.1 && *v as f32 as f64 == *v), "{st:?}");
        let mut env2 = Acrobot::default();
        env2.reset(Some(1));
        assert_eq!(env2.state(), st);
        env2.reset(Some(2));
        assert_ne!(env2.state(), st);
        assert!(env.step(3).is_err());
        assert!(env.reset_with_bounds(None, 1.0, 0.0).is_err());
        env.set_state([0.0; 4]);
        let im = env.render_rgb().unwrap();
        assert_eq!((im.height, im.width), (500, 500));
        // Hanging down: link 1 runs from the centre to 1·scale below it.
        assert_eq!(im.pixel(250 + 60, 250), [0, 204, 204]);
        assert_eq!(im.pixel(250, 250), [204, 204, 0]);
        assert_eq!(im.pixel(10, 10), WHITE);
    }
}
