//! Pictures of a tabular run, drawn by [`wick_plot`], logged to TensorBoard and written as PNG
//! into the run directory (and by `wick plot`).
//!
//! - Blackjack (S&B Figs. 5.1–5.2): "Usable ace" above "No usable ace"; the policy as a
//!   HIT/STICK map beside the state values as a heat map with a colour bar; x = dealer showing
//!   A..10, y = player sum 12..21. Tag `blackjack/values_and_policy`, file `values_and_policy.png`.
//! - Grid worlds (GridWorld, FrozenLake, CliffWalking): the greedy action of each cell as an
//!   arrow (a circle for GridWorld's stay), forbidden/hole/cliff cells orange, targets cyan, the
//!   state value in each cell (none in FrozenLake's and CliffWalking's terminal cells). Tag `grid/values_and_policy`, file `values_and_policy.png`.
//! - Off-policy prediction (S&B Ex. 5.4, Fig. 5.3): ordinary vs weighted importance-sampling
//!   error against episodes, log scale. Tag `eval/mse_curves`, file `mse.png`.

use crate::parallel::McAgent;
use crate::tabular_train::{run_policy, TabularConfig};
use std::path::Path;
use wick_core::tb::TbLogger;
use wick_core::Result;
use wick_envs::blackjack::{BlackjackObs, HIT};
use wick_plot::blackjack::Blackjack;
use wick_plot::curves::Curves;
use wick_plot::grid::{Cell, GridPolicy};
use wick_plot::Plot;

/// Log (and write) the run's picture, where there is one for its env.
pub fn log_images<A: McAgent>(tb: &mut TbLogger, cfg: &TabularConfig, agent: &A, step: u64, dir: &Path) -> Result<()> {
    let values = agent.state_values();
    let policy = run_policy(agent, cfg);
    if let Some((tag, fig)) = values_and_policy(cfg, &values, policy.as_deref(), step)? {
        log(tb, tag, step, &fig, &dir.join("values_and_policy.png"))?;
    }
    Ok(())
}

/// Log (and write as `mse.png`) Example 5.4's error curves: `(episode, ordinary, weighted)`.
pub fn log_error_curves(tb: &mut TbLogger, cfg: &TabularConfig, rows: &[(f64, f64, f64)], step: u64, dir: &Path) -> Result<()> {
    log(tb, "eval/mse_curves", step, &error_curves(cfg, rows), &dir.join("mse.png"))
}

fn log(tb: &mut TbLogger, tag: &str, step: u64, fig: &Plot, path: &Path) -> Result<()> {
    let im = wick_plot::rgb(fig)?;
    tb.image(tag, step, &im.pixels, im.height, im.width, 3)?;
    wick_core::image::write_png(path, &im.pixels, im.height, im.width, 3)
}

/// The title of a run's figures: "mc-es, Blackjack-v1, 500000 episodes, seed 0".
fn title(cfg: &TabularConfig, episodes: u64) -> String {
    format!("{}, {}, {episodes} episodes, seed {}", cfg.algo, cfg.env.as_deref().unwrap_or("Blackjack-v1"), cfg.seed)
}

/// Example 5.4's figure of a run.
pub fn error_curves(cfg: &TabularConfig, rows: &[(f64, f64, f64)]) -> Plot {
    let t = format!("{}, {} runs, seed {}: error of v(s) at the start state", cfg.algo, cfg.runs.unwrap_or(0), cfg.seed);
    Plot::Curves(Curves::importance_sampling(&t, rows))
}

/// The values-and-policy figure of a run and its TensorBoard tag; `None` for envs without one.
pub fn values_and_policy(cfg: &TabularConfig, values: &[f64], policy: Option<&[usize]>, episodes: u64) -> Result<Option<(&'static str, Plot)>> {
    let env = cfg.env.as_deref().unwrap_or("Blackjack-v1");
    if env == "Blackjack-v1" {
        return Ok(Some(("blackjack/values_and_policy", blackjack(values, policy, title(cfg, episodes)))));
    }
    Ok(grid(cfg, env, values, policy, title(cfg, episodes))?.map(|g| ("grid/values_and_policy", g)))
}

fn blackjack(values: &[f64], policy: Option<&[usize]>, title: String) -> Plot {
    let mut v = [[[0.0; 10]; 10]; 2];
    let mut hit = [[[false; 10]; 10]; 2];
    for ace in [false, true] {
        for sum in 12..=21u8 {
            for dealer in 1..=10u8 {
                let s = BlackjackObs { player_sum: sum, dealer_card: dealer, usable_ace: ace }.index();
                let (a, i, j) = (ace as usize, sum as usize - 12, dealer as usize - 1);
                v[a][i][j] = values[s];
                hit[a][i][j] = policy.is_some_and(|p| p[s] == HIT);
            }
        }
    }
    Plot::Blackjack(Blackjack { title, values: v, hit: policy.map(|_| hit) })
}

/// The (row, column) step of each action of a grid env, and the names of its bad and goal
/// cells; None for other envs.
fn moves(env: &str) -> Option<(Vec<(i32, i32)>, &'static str, &'static str)> {
    match env {
        "GridWorld" => Some((vec![(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)], "forbidden", "target")),
        "FrozenLake-v1" | "FrozenLake8x8-v1" => Some((vec![(0, -1), (1, 0), (0, 1), (-1, 0)], "hole", "goal")),
        "CliffWalking-v1" | "CliffWalkingSlippery-v1" => Some((vec![(-1, 0), (0, 1), (1, 0), (0, -1)], "cliff", "goal")),
        _ => None,
    }
}

fn grid(cfg: &TabularConfig, env: &str, values: &[f64], policy: Option<&[usize]>, title: String) -> Result<Option<Plot>> {
    let Some((moves, bad_name, goal_name)) = moves(env) else { return Ok(None) };
    // The map as the env renders it after a reset: GridWorld `.#T` and `@` for the agent,
    // FrozenLake `SFHG`, CliffWalking `o C T` and `x` for the agent.
    let mut e = crate::tabular_train::make_env(cfg)?.env;
    let mut obs = vec![0f32; e.obs_dim()];
    e.reset(Some(cfg.seed), &mut obs)?;
    let text = e.render_text().unwrap_or_default().replace("\x1b[41m", "").replace("\x1b[0m", "");
    let rows: Vec<Vec<char>> = text.lines().map(|l| l.chars().filter(|c| !c.is_whitespace()).collect::<Vec<_>>()).filter(|r| !r.is_empty() && !r.contains(&'(')).collect();
    let (nrow, ncol) = (rows.len(), rows.first().map_or(0, Vec::len));
    if nrow * ncol != values.len() || rows.iter().any(|r| r.len() != ncol) {
        return Ok(None);
    }
    let cells = rows
        .iter()
        .flatten()
        .map(|ch| match ch {
            '#' | 'H' | 'C' => Cell::Bad,
            'T' | 'G' => Cell::Goal,
            'S' | '@' | 'x' => Cell::Start,
            _ => Cell::Plain,
        })
        .collect();
    let moves = policy.map(|p| p.iter().map(|&a| moves.get(a).copied().unwrap_or((0, 0))).collect());
    Ok(Some(Plot::Grid(GridPolicy { title, nrow, ncol, cells, bad_name: bad_name.into(), goal_name: goal_name.into(), moves, values: Some(values.to_vec()), terminal: env != "GridWorld" })))
}
