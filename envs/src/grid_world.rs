//! `GridWorld`: the grid world of Shiyu Zhao, *Mathematical Foundations of Reinforcement
//! Learning* (2025), ch. 1–5 (the examples of MC Basic, MC Exploring Starts and MC ε-greedy
//! in ch. 5).
//!
//! - A rectangular grid; the state is `row * ncol + col` (0-based; the book numbers cells
//!   1-based, row by row). The default is the book's 5×5: forbidden cells at (row, col)
//!   1-indexed (2,2) (2,3) (3,3) (4,2) (4,4) (5,2), target (4,3), start (1,1).
//! - Actions (the book's a1–a5): 0 up, 1 right, 2 down, 3 left, 4 stay. Deterministic.
//! - Rewards: a move that would leave the grid keeps the agent in place and gets
//!   `r_boundary` (−1); otherwise the cell entered (or stayed on) decides: the target
//!   `r_target` (+1), a forbidden cell `r_forbidden` (−10 by default; the book also uses −1),
//!   any other `r_other` (0). Forbidden cells can be entered.
//! - The target is not terminal and there is no time limit: an episode is as long as the agent
//!   decides (pass `max_episode_steps` to the registry for a [`crate::wrappers::TimeLimit`]).
//!
//! Maps as text ([`GridWorldConfig::parse_map`], [`GridWorldConfig::from_file`]): one row a
//! line, `.` plain, `#` forbidden, `T` target, `S` the start (a plain cell; at most one;
//! default the top-left cell); at least one target; blank lines and lines starting with `;`
//! are ignored.

use std::path::Path;
use std::sync::Arc;

use wick_core::rng::Rng;
use wick_core::{bail, Error, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Model, Step, Transition};
use crate::render::{Rgb, WHITE};
use crate::space::Space;

pub const UP: usize = 0;
pub const RIGHT: usize = 1;
pub const DOWN: usize = 2;
pub const LEFT: usize = 3;
pub const STAY: usize = 4;

/// Zhao's 5×5 map.
pub const ZHAO_5X5: &str = "S....\n.##..\n..#..\n.#T#.\n.#...\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Plain,
    Forbidden,
    Target,
}

/// Map and rewards of a grid world; `Default` is Zhao's 5×5 with −1/−10/+1/0.
#[derive(Clone, Debug, PartialEq)]
pub struct GridWorldConfig {
    pub nrow: usize,
    pub ncol: usize,
    pub cells: Vec<Cell>,
    pub start: usize,
    pub r_boundary: f64,
    pub r_forbidden: f64,
    pub r_target: f64,
    pub r_other: f64,
}

impl Default for GridWorldConfig {
    fn default() -> Self {
        GridWorldConfig::parse_map(ZHAO_5X5).expect("the built-in map is valid")
    }
}

impl GridWorldConfig {
    /// Parse a text map (see the module doc) with the default rewards.
    pub fn parse_map(text: &str) -> Result<GridWorldConfig> {
        let mut cells = Vec::new();
        let (mut nrow, mut ncol, mut start, mut targets) = (0, 0, None, 0);
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            let n = line.chars().count();
            if nrow == 0 {
                ncol = n;
            } else if n != ncol {
                bail!("grid world map line {}: {n} columns, the first row has {ncol}: the map must be rectangular", lineno + 1);
            }
            for (c, ch) in line.chars().enumerate() {
                cells.push(match ch {
                    '.' => Cell::Plain,
                    '#' => Cell::Forbidden,
                    'T' => {
                        targets += 1;
                        Cell::Target
                    }
                    'S' => {
                        if start.is_some() {
                            bail!("grid world map line {} column {}: a second start 'S'", lineno + 1, c + 1);
                        }
                        start = Some(nrow * ncol + c);
                        Cell::Plain
                    }
                    _ => bail!("grid world map line {} column {}: '{ch}' is not one of . # T S", lineno + 1, c + 1),
                });
            }
            nrow += 1;
        }
        if nrow == 0 {
            bail!("grid world map is empty");
        }
        if targets == 0 {
            bail!("grid world map has no target 'T'");
        }
        Ok(GridWorldConfig {
            nrow,
            ncol,
            cells,
            start: start.unwrap_or(0),
            r_boundary: -1.0,
            r_forbidden: -10.0,
            r_target: 1.0,
            r_other: 0.0,
        })
    }

    /// Read a map file; errors name the file.
    pub fn from_file(path: &Path) -> Result<GridWorldConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::new(format!("cannot read grid world map '{}': {e}", path.display())))?;
        GridWorldConfig::parse_map(&text).map_err(|e| e.context(format!("'{}'", path.display())))
    }

    /// The map back as text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in 0..self.nrow {
            for c in 0..self.ncol {
                let i = r * self.ncol + c;
                s.push(match self.cells[i] {
                    Cell::Forbidden => '#',
                    Cell::Target => 'T',
                    Cell::Plain if i == self.start => 'S',
                    Cell::Plain => '.',
                });
            }
            s.push('\n');
        }
        s
    }
}

/// Zhao's grid world.
#[derive(Clone, Debug)]
pub struct GridWorld {
    cfg: Arc<GridWorldConfig>,
    model: Arc<Model>,
    /// Next state and reward per (state, action), for the hot path.
    table: Arc<Vec<(u32, f64)>>,
    s: usize,
    reset_done: bool,
    rng: Rng,
}

impl GridWorld {
    pub fn new(cfg: GridWorldConfig) -> GridWorld {
        let (nrow, ncol) = (cfg.nrow, cfg.ncol);
        let moves: [(i64, i64); 5] = [(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0)];
        let mut table = Vec::with_capacity(nrow * ncol * 5);
        for s in 0..nrow * ncol {
            for m in moves {
                let (r, c) = ((s / ncol) as i64 + m.0, (s % ncol) as i64 + m.1);
                if r < 0 || c < 0 || r >= nrow as i64 || c >= ncol as i64 {
                    table.push((s as u32, cfg.r_boundary));
                } else {
                    let ns = r as usize * ncol + c as usize;
                    let rew = match cfg.cells[ns] {
                        Cell::Target => cfg.r_target,
                        Cell::Forbidden => cfg.r_forbidden,
                        Cell::Plain => cfg.r_other,
                    };
                    table.push((ns as u32, rew));
                }
            }
        }
        let model = Model::build(nrow * ncol, 5, vec![(1.0, cfg.start)], |s, a, out| {
            let (next, reward) = table[s * 5 + a];
            out.push(Transition { prob: 1.0, next: next as usize, reward, terminated: false });
        });
        let start = cfg.start;
        GridWorld { cfg: Arc::new(cfg), model: Arc::new(model), table: Arc::new(table), s: start, reset_done: false, rng: env_rng(0) }
    }

    pub fn config(&self) -> &GridWorldConfig {
        &self.cfg
    }
    pub fn state(&self) -> usize {
        self.s
    }
    /// The env's generator (the grid world itself is deterministic; agents may share it).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

impl Env for GridWorld {
    type Obs = usize;

    fn id(&self) -> &'static str {
        "GridWorld"
    }
    fn observation_space(&self) -> Space {
        Space::discrete(self.cfg.nrow * self.cfg.ncol)
    }
    fn num_actions(&self) -> usize {
        5
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn reset(&mut self, seed: Option<u64>) -> (usize, Info) {
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        self.s = self.cfg.start;
        self.reset_done = true;
        (self.s, Info::default())
    }
    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<usize>> {
        if action >= 5 {
            return Err(bad_action("GridWorld", action, 5));
        }
        if !self.reset_done {
            return Err(no_reset("GridWorld"));
        }
        let (ns, reward) = self.table[self.s * 5 + action];
        self.s = ns as usize;
        Ok(Step { obs: self.s, reward, terminated: false, truncated: false, info: Info::default() })
    }
    fn num_states(&self) -> Option<usize> {
        Some(self.cfg.nrow * self.cfg.ncol)
    }
    fn state_index(&self) -> Option<usize> {
        Some(self.s)
    }
    fn model(&self) -> Option<&Model> {
        Some(&self.model)
    }
    /// Start in any cell.
    fn reset_to_state(&mut self, s: usize) -> Result<(usize, Info)> {
        let n = self.cfg.nrow * self.cfg.ncol;
        if s >= n {
            bail!("GridWorld: start state {s} is outside 0..{n}");
        }
        self.s = s;
        self.reset_done = true;
        Ok((s, Info::default()))
    }
    /// The map with the agent as `@`.
    fn render_text(&self) -> Option<String> {
        let mut t: Vec<char> = self.cfg.to_text().replace('S', ".").chars().collect();
        let i = self.s / self.cfg.ncol * (self.cfg.ncol + 1) + self.s % self.cfg.ncol;
        t[i] = '@';
        Some(t.into_iter().collect())
    }
    /// 40-pixel cells as in the book's figures: white plain, orange forbidden, cyan target,
    /// grey grid lines, the agent a blue disc.
    fn render_rgb(&self) -> Option<Rgb> {
        let k = 40i64;
        let (nr, nc) = (self.cfg.nrow as i64, self.cfg.ncol as i64);
        let mut im = Rgb::new((nr * k + 1) as usize, (nc * k + 1) as usize, WHITE);
        for s in 0..(nr * nc) as usize {
            let (r, c) = (s as i64 / nc, s as i64 % nc);
            let col = match self.cfg.cells[s] {
                Cell::Plain => WHITE,
                Cell::Forbidden => [245, 166, 35],
                Cell::Target => [80, 200, 230],
            };
            im.fill_rect(c * k, r * k, c * k + k, r * k + k, col);
        }
        for i in 0..=nr {
            im.fill_rect(0, i * k, nc * k + 1, i * k + 1, [128, 128, 128]);
        }
        for j in 0..=nc {
            im.fill_rect(j * k, 0, j * k + 1, nr * k + 1, [128, 128, 128]);
        }
        let (r, c) = ((self.s as i64 / nc) as f64, (self.s as i64 % nc) as f64);
        im.fill_circle(c * k as f64 + k as f64 / 2.0, r * k as f64 + k as f64 / 2.0, k as f64 * 0.3, [40, 90, 200]);
        Some(im)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(r: usize, c: usize) -> usize {
        (r - 1) * 5 + (c - 1) // 1-indexed (row, col) of the book
    }

    #[test]
    fn zhao_rewards() {
        let mut env = GridWorld::new(GridWorldConfig::default());
        assert_eq!(env.reset(Some(0)).0, 0);
        // Boundary: up from (1,1) stays, −1.
        let s = env.step(UP).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated, s.truncated), (0, -1.0, false, false));
        // Right to (1,2): 0; down into forbidden (2,2): −10, allowed.
        assert_eq!(env.step(RIGHT).unwrap().reward, 0.0);
        let s = env.step(DOWN).unwrap();
        assert_eq!((s.obs, s.reward), (at(2, 2), -10.0));
        // Staying in a forbidden cell costs again.
        assert_eq!(env.step(STAY).unwrap().reward, -10.0);
        // Target: entering and staying give +1, not terminal.
        env.reset_to_state(at(5, 3)).unwrap();
        let s = env.step(UP).unwrap();
        assert_eq!((s.obs, s.reward, s.terminated), (at(4, 3), 1.0, false));
        assert_eq!(env.step(STAY).unwrap().reward, 1.0);
        // Boundary from the bottom row.
        env.reset_to_state(at(5, 5)).unwrap();
        assert_eq!(env.step(DOWN).unwrap().reward, -1.0);
        assert_eq!(env.step(RIGHT).unwrap().reward, -1.0);
        let cfg = GridWorldConfig { r_forbidden: -1.0, ..Default::default() };
        let mut env = GridWorld::new(cfg);
        env.reset_to_state(at(1, 2)).unwrap();
        assert_eq!(env.step(DOWN).unwrap().reward, -1.0);
    }

    #[test]
    fn optimal_policy_of_the_book() {
        // γ = 0.9, r_forbidden −10: the target is worth 1/(1−0.9) = 10 (stay there forever).
        let env = GridWorld::new(GridWorldConfig::default());
        let (v, pi) = env.model().unwrap().value_iteration(0.9, 1e-12);
        assert!((v[at(4, 3)] - 10.0).abs() < 1e-9);
        assert_eq!(pi[at(4, 3)], STAY);
        assert_eq!(pi[at(5, 3)], UP);
        assert_eq!(pi[at(3, 3)], DOWN); // from a forbidden cell straight into the target
        // The safe way round from (1,1) enters the target on move 11: γ^10 / (1 − γ).
        assert!(v[at(1, 1)] >= 0.9f64.powi(10) / 0.1 - 1e-9, "{}", v[at(1, 1)]);
    }

    #[test]
    fn maps_from_text_and_files() {
        let cfg = GridWorldConfig::parse_map("; comment\n.#T\nS..\n").unwrap();
        assert_eq!((cfg.nrow, cfg.ncol, cfg.start), (2, 3, 3));
        assert_eq!(cfg.to_text(), ".#T\nS..\n");
        let e = GridWorldConfig::parse_map("...\n.x.\n..T").unwrap_err().to_string();
        assert_eq!(e, "grid world map line 2 column 2: 'x' is not one of . # T S");
        assert!(GridWorldConfig::parse_map("...\n..\n").unwrap_err().to_string().contains("rectangular"));
        assert!(GridWorldConfig::parse_map("...\n").unwrap_err().to_string().contains("no target"));
        let dir = std::env::temp_dir().join(format!("wick-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("map.txt");
        std::fs::write(&p, "S.\n#T\n").unwrap();
        assert_eq!(GridWorldConfig::from_file(&p).unwrap().cells[2], Cell::Forbidden);
        std::fs::write(&p, "S.\n#Q\n").unwrap();
        let e = GridWorldConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("map.txt'") && e.contains("'Q'"), "{e}");
        assert!(GridWorldConfig::from_file(&dir.join("none.txt")).unwrap_err().to_string().starts_with("cannot read grid world map"));
        let mut env = GridWorld::new(GridWorldConfig::default());
        env.reset(None);
        assert_eq!(env.render_text().unwrap(), "@....\n.##..\n..#..\n.#T#.\n.#...\n");
        let im = env.render_rgb().unwrap();
        assert_eq!((im.height, im.width), (201, 201));
        assert_eq!(im.pixel(60, 60), [245, 166, 35]);
        assert_eq!(im.pixel(20, 20), [40, 90, 200]);
    }
}
