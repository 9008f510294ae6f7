//! A grid world's greedy policy and state values, drawn as in Zhao's *Mathematical Foundations
//! of Reinforcement Learning* (Ch. 2–5 figures): white plain cells, orange forbidden cells, a
//! cyan target, an arrow per cell for the greedy move (a circle for "stay"), and the state value
//! written under it. FrozenLake's holes and CliffWalking's cliff are the "bad" cells, their
//! goals the targets.

use crate::{fmt_num, Area, DrawResult, Figure};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// What a cell is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Plain,
    Start,
    /// Forbidden (GridWorld), hole (FrozenLake), cliff (CliffWalking).
    Bad,
    /// Target (GridWorld), goal (FrozenLake, CliffWalking).
    Goal,
}

/// The figure's data; cells row by row, row 0 at the top.
#[derive(Clone, Debug)]
pub struct GridPolicy {
    pub title: String,
    pub nrow: usize,
    pub ncol: usize,
    pub cells: Vec<Cell>,
    /// Legend names of the bad and goal cells ("forbidden", "target").
    pub bad_name: String,
    pub goal_name: String,
    /// The greedy move of each cell as (row step, column step): (−1, 0) up, (0, 1) right,
    /// (0, 0) stay; `None` for a prediction run.
    pub moves: Option<Vec<(i32, i32)>>,
    /// State values, written in each cell.
    pub values: Option<Vec<f64>>,
    /// Bad and goal cells end the episode (FrozenLake, CliffWalking): no decision is made
    /// there, so they get no arrow and no value. GridWorld's are ordinary states.
    pub terminal: bool,
}

const BAD: RGBColor = RGBColor(245, 166, 35);
const GOAL: RGBColor = RGBColor(80, 200, 230);
const START: RGBColor = RGBColor(225, 235, 250);
const HEAD: u32 = 40;
const FOOT: u32 = 40;

impl GridPolicy {
    fn cell_px(&self) -> u32 {
        // 64-pixel cells, smaller for wide maps (CliffWalking's 12 columns), at least 40.
        (900 / self.ncol.max(1) as u32).clamp(40, 64)
    }
}

impl Figure for GridPolicy {
    fn size(&self) -> (u32, u32) {
        let k = self.cell_px();
        ((self.ncol as u32 * k + 40).max(560), self.nrow as u32 * k + HEAD + FOOT + 20)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> DrawResult<DB> {
        let (w, _) = self.size();
        let k = self.cell_px() as i32;
        let centre = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(self.title.as_str(), (w as i32 / 2, 20), TextStyle::from(("sans-serif", 20).into_font().style(FontStyle::Bold)).pos(centre)))?;
        let x0 = (w as i32 - self.ncol as i32 * k) / 2;
        let y0 = HEAD as i32 + 10;
        for (s, cell) in self.cells.iter().enumerate().take(self.nrow * self.ncol) {
            let (r, c) = ((s / self.ncol) as i32, (s % self.ncol) as i32);
            let (x, y) = (x0 + c * k, y0 + r * k);
            let fill = match cell {
                Cell::Plain => WHITE,
                Cell::Start => START,
                Cell::Bad => BAD,
                Cell::Goal => GOAL,
            };
            root.draw(&Rectangle::new([(x, y), (x + k, y + k)], fill.filled()))?;
            root.draw(&Rectangle::new([(x, y), (x + k, y + k)], RGBColor(128, 128, 128).stroke_width(1)))?;
            if self.terminal && matches!(cell, Cell::Bad | Cell::Goal) {
                continue;
            }
            let (cx, cy) = (x + k / 2, y + k / 2 - if self.values.is_some() { k / 8 } else { 0 });
            if let Some(m) = self.moves.as_ref().and_then(|m| m.get(s)) {
                arrow(root, (cx, cy), *m, k)?;
            }
            if let Some(v) = self.values.as_ref().and_then(|v| v.get(s)) {
                let style = TextStyle::from(("sans-serif", (k / 5).max(10))).pos(centre);
                root.draw(&Text::new(fmt_num(*v), (x + k / 2, y + k - k / 6), style))?;
            }
        }
        // Legend under the grid.
        let ly = y0 + self.nrow as i32 * k + 14;
        let mut lx = 14;
        let mut keys = vec![(BAD, self.bad_name.as_str()), (GOAL, self.goal_name.as_str())];
        if self.cells.contains(&Cell::Start) {
            keys.push((START, "start"));
        }
        for (colour, name) in keys {
            root.draw(&Rectangle::new([(lx, ly), (lx + 18, ly + 18)], colour.filled()))?;
            root.draw(&Rectangle::new([(lx, ly), (lx + 18, ly + 18)], BLACK.stroke_width(1)))?;
            root.draw(&Text::new(name, (lx + 24, ly + 1), ("sans-serif", 15)))?;
            lx += 36 + 9 * name.len() as i32;
        }
        if let Some(m) = &self.moves {
            let key = if m.contains(&(0, 0)) { "arrow: greedy action, circle: stay" } else { "arrow: greedy action" };
            root.draw(&Text::new(key, (lx, ly + 1), ("sans-serif", 15)))?;
        }
        Ok(())
    }
}

/// An arrow from the cell centre in direction (dy, dx), or a circle for (0, 0).
fn arrow<DB: DrawingBackend>(root: &Area<DB>, (cx, cy): (i32, i32), (dy, dx): (i32, i32), k: i32) -> DrawResult<DB> {
    let style = BLACK.stroke_width(2);
    if (dy, dx) == (0, 0) {
        return root.draw(&Circle::new((cx, cy), k / 7, style));
    }
    let len = k * 3 / 10;
    let (tx, ty) = (cx + dx * len, cy + dy * len);
    let (bx, by) = (cx - dx * len, cy - dy * len);
    root.draw(&PathElement::new(vec![(bx, by), (tx, ty)], style))?;
    // Head: a filled triangle at the tip.
    let h = k / 7;
    let (px, py) = (-dy, dx); // perpendicular
    let base = (tx - dx * h, ty - dy * h);
    root.draw(&Polygon::new(vec![(tx, ty), (base.0 + px * h / 2, base.1 + py * h / 2), (base.0 - px * h / 2, base.1 - py * h / 2)], BLACK.filled()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{colours, dark, decode};

    /// Zhao's 5×5: forbidden (2,2) (2,3) (3,3) (4,2) (4,4) (5,2), target (4,3) (1-indexed).
    pub fn zhao() -> GridPolicy {
        let mut cells = vec![Cell::Plain; 25];
        for (r, c) in [(2, 2), (2, 3), (3, 3), (4, 2), (4, 4), (5, 2)] {
            cells[(r - 1) * 5 + c - 1] = Cell::Bad;
        }
        cells[3 * 5 + 2] = Cell::Goal;
        cells[0] = Cell::Start;
        let moves = (0..25).map(|s| if s == 17 { (0, 0) } else if s % 5 < 2 { (1, 0) } else { (0, 1) }).collect();
        let values = (0..25).map(|s| s as f64 * 0.37 - 3.0).collect();
        GridPolicy { title: "MC ε-greedy, GridWorld".into(), nrow: 5, ncol: 5, cells, bad_name: "forbidden".into(), goal_name: "target".into(), moves: Some(moves), values: Some(values), terminal: false }
    }

    #[test]
    fn renders_cells_arrows_values_and_legend() {
        let fig = zhao();
        let (w, h, px) = decode(&crate::png(&fig).unwrap());
        assert_eq!((w, h), fig.size());
        let im = crate::Rgb { width: w as usize, height: h as usize, pixels: px };
        assert!(colours(&im, 0..im.width, 0..im.height) > 10);
        let has = |c: RGBColor| im.pixels.chunks(3).any(|p| p == [c.0, c.1, c.2]);
        assert!(has(BAD) && has(GOAL));
        // Arrows and numbers inside the grid, text in the legend strip.
        assert!(dark(&im, 0..im.width, HEAD as usize..(h - FOOT) as usize) > 500);
        assert!(dark(&im, 0..im.width, (h - FOOT) as usize..h as usize) > 100);
        let svg = crate::svg(&fig).unwrap();
        for want in ["forbidden", "target", "\u{2212}3\n", "\n5.88\n", "\n3.29\n"] {
            assert!(svg.contains(want), "{want:?} missing");
        }
        // As FrozenLake's holes and goal: terminal, no value written there.
        let fig = GridPolicy { terminal: true, ..zhao() };
        let svg = crate::svg(&fig).unwrap();
        assert!(svg.contains("\n5.88\n") && !svg.contains("\n3.29\n"));
    }
}
