//! Pictures of a tabular run's values and policy, logged to TensorBoard and written as PNG.
//!
//! - Blackjack (S&B Figs. 5.1–5.2): four panels, left column without a usable ace, right
//!   column with one; top the state values as a heatmap (red −1, white 0, blue +1), bottom the
//!   policy (dark = hit, light = stick); x = dealer showing A..10, y = player sum 12 (bottom)
//!   to 21 (top). Tag `blackjack/values_and_policy`, file `values_and_policy.png`.
//! - Grid worlds (GridWorld, FrozenLake, CliffWalking): each cell coloured by its value and an
//!   arrow of the greedy action (a dot for GridWorld's stay). Tag `grid/values_and_policy`.

use crate::parallel::McAgent;
use crate::tabular_train::{run_policy, TabularConfig};
use std::path::Path;
use wick_core::tb::TbLogger;
use wick_core::Result;
use wick_envs::blackjack::{BlackjackObs, HIT};

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, px: vec![255; w * h * 3] }
    }
    fn rect(&mut self, x0: usize, y0: usize, w: usize, h: usize, c: [u8; 3]) {
        for y in y0..(y0 + h).min(self.h) {
            for x in x0..(x0 + w).min(self.w) {
                self.px[(y * self.w + x) * 3..(y * self.w + x) * 3 + 3].copy_from_slice(&c);
            }
        }
    }
}

/// Diverging colour map: red at −`scale`, white at 0, blue at +`scale`.
fn colour(v: f64, scale: f64) -> [u8; 3] {
    let t = (v / scale.max(1e-12)).clamp(-1.0, 1.0);
    let f = |x: f64| (255.0 * (1.0 - x)).round() as u8;
    if t < 0.0 {
        [255, f(-t), f(-t)]
    } else {
        [f(t), f(t), 255]
    }
}

/// Log (and write) the run's picture, where there is one for its env.
pub fn log_images<A: McAgent>(tb: &mut TbLogger, cfg: &TabularConfig, agent: &A, step: u64, dir: &Path) -> Result<()> {
    let values = agent.state_values();
    let policy = run_policy(agent, cfg);
    let env = cfg.env.as_deref().unwrap_or("Blackjack-v1");
    let pic = if env == "Blackjack-v1" {
        Some(blackjack(&values, policy.as_deref()))
    } else {
        grid(cfg, env, &values, policy.as_deref())
    };
    if let Some((c, tag)) = pic {
        tb.image(tag, step, &c.px, c.h, c.w, 3)?;
        wick_core::image::write_png(&dir.join("values_and_policy.png"), &c.px, c.h, c.w, 3)?;
    }
    Ok(())
}

fn blackjack(values: &[f64], policy: Option<&[usize]>) -> (Canvas, &'static str) {
    const CELL: usize = 16;
    const GAP: usize = 12;
    let (pw, ph) = (10 * CELL, 10 * CELL);
    let rows = if policy.is_some() { 2 } else { 1 };
    let mut c = Canvas::new(2 * pw + 3 * GAP, rows * ph + (rows + 1) * GAP);
    for (col, ace) in [false, true].into_iter().enumerate() {
        for sum in 12..=21u8 {
            for dealer in 1..=10u8 {
                let s = BlackjackObs { player_sum: sum, dealer_card: dealer, usable_ace: ace }.index();
                let x = GAP + col * (pw + GAP) + (dealer as usize - 1) * CELL;
                let y = GAP + (21 - sum as usize) * CELL;
                c.rect(x, y, CELL - 1, CELL - 1, colour(values[s], 1.0));
                if let Some(p) = policy {
                    let shade = if p[s] == HIT { [60, 60, 60] } else { [220, 220, 170] };
                    c.rect(x, y + ph + GAP, CELL - 1, CELL - 1, shade);
                }
            }
        }
    }
    (c, "blackjack/values_and_policy")
}

/// (rows, cols) of a grid env and the (dy, dx) of each action; None for other envs.
fn layout(cfg: &TabularConfig, env: &str, n: usize) -> Option<(usize, usize, Vec<(i32, i32)>)> {
    let opts = cfg.env_options.clone().unwrap_or_default();
    let rows_of = |key: &str| -> Option<usize> {
        opts.split(',').find_map(|kv| kv.trim().strip_prefix(key).map(|v| v.split('/').count()))
    };
    let sq = (n as f64).sqrt().round() as usize;
    match env {
        "GridWorld" => {
            let r = rows_of("map=").unwrap_or(sq);
            Some((r, n / r, vec![(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)]))
        }
        "FrozenLake-v1" | "FrozenLake8x8-v1" => {
            let r = rows_of("desc=").unwrap_or(sq);
            Some((r, n / r, vec![(0, -1), (1, 0), (0, 1), (-1, 0)]))
        }
        "CliffWalking-v1" | "CliffWalkingSlippery-v1" => Some((4, 12, vec![(-1, 0), (0, 1), (1, 0), (0, -1)])),
        _ => None,
    }
}

fn grid(cfg: &TabularConfig, env: &str, values: &[f64], policy: Option<&[usize]>) -> Option<(Canvas, &'static str)> {
    const CELL: usize = 40;
    let (rows, cols, moves) = layout(cfg, env, values.len())?;
    if rows * cols != values.len() {
        return None;
    }
    let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut c = Canvas::new(cols * CELL + 1, rows * CELL + 1);
    for s in 0..values.len() {
        let (r, q) = (s / cols, s % cols);
        c.rect(q * CELL + 1, r * CELL + 1, CELL - 1, CELL - 1, colour(values[s], scale));
        if let Some(p) = policy {
            let (dy, dx) = moves[p[s]];
            let (cx, cy) = (q * CELL + CELL / 2, r * CELL + CELL / 2);
            if (dy, dx) == (0, 0) {
                c.rect(cx - 3, cy - 3, 7, 7, [0, 0, 0]);
                continue;
            }
            // Shaft from the centre towards the edge, and a square head at its end.
            for i in 0..(CELL * 2 / 5) {
                let (x, y) = ((cx as i32 + dx * i as i32) as usize, (cy as i32 + dy * i as i32) as usize);
                c.rect(x - dy.unsigned_abs() as usize, y - dx.unsigned_abs() as usize, 1 + 2 * dy.unsigned_abs() as usize, 1 + 2 * dx.unsigned_abs() as usize, [0, 0, 0]);
            }
            let (hx, hy) = ((cx as i32 + dx * (CELL as i32 * 2 / 5)) as usize, (cy as i32 + dy * (CELL as i32 * 2 / 5)) as usize);
            c.rect(hx - 3, hy - 3, 7, 7, [0, 0, 0]);
        }
    }
    Some((c, "grid/values_and_policy"))
}
