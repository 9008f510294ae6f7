//! Write each figure, drawn from the made-up data of its unit test, as PNG and SVG:
//! `cargo run --release -p wick-plot --example gallery -- OUT_DIR`.

use wick_plot::blackjack::Blackjack;
use wick_plot::curves::Curves;
use wick_plot::grid::{Cell, GridPolicy};
use wick_plot::Plot;

fn main() -> wick_core::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "gallery".into()));
    std::fs::create_dir_all(&out)?;
    let mut values = [[[0.0; 10]; 10]; 2];
    let mut hit = [[[false; 10]; 10]; 2];
    for ace in 0..2 {
        for s in 0..10 {
            for d in 0..10 {
                values[ace][s][d] = (-0.6 + 0.15 * s as f64 - 0.05 * d as f64 + 0.2 * ace as f64).clamp(-1.0, 1.0);
                hit[ace][s][d] = s < if ace == 1 { 6 } else { 5 };
            }
        }
    }
    let rows: Vec<_> = (1..=10_000).map(|e| (e as f64, 4.0 / (e as f64).sqrt(), 1.5 / (1.0 + e as f64 / 5.0))).collect();
    let returns: Vec<_> = (0..400).map(|i| (i as f64 * 50.0, 20.0 + i as f64 + 30.0 * ((i * 7919) % 13) as f64 / 13.0)).collect();
    let mut cells = vec![Cell::Plain; 25];
    for (r, c) in [(2, 2), (2, 3), (3, 3), (4, 2), (4, 4), (5, 2)] {
        cells[(r - 1) * 5 + c - 1] = Cell::Bad;
    }
    cells[17] = Cell::Goal;
    cells[0] = Cell::Start;
    let moves = (0..25).map(|s| if s == 17 { (0, 0) } else if s % 5 < 2 { (1, 0) } else { (0, 1) }).collect();
    let figs = [
        ("blackjack", Plot::Blackjack(Blackjack { title: "MC ES, Blackjack-v1 (made-up values)".into(), values, hit: Some(hit) })),
        ("importance_sampling", Plot::Curves(Curves::importance_sampling("Example 5.4 (made-up curves)", &rows))),
        ("learning_curve", Plot::Curves(Curves::learning_curve("REINFORCE (made-up returns)", &returns, 100))),
        ("grid", Plot::Grid(GridPolicy {
            title: "GridWorld (made-up policy)".into(),
            nrow: 5,
            ncol: 5,
            cells,
            bad_name: "forbidden".into(),
            goal_name: "target".into(),
            moves: Some(moves),
            values: Some((0..25).map(|s| s as f64 * 0.37 - 3.0).collect()),
            terminal: false,
        })),
    ];
    for (name, fig) in &figs {
        for ext in ["png", "svg"] {
            let path = out.join(format!("{name}.{ext}"));
            wick_plot::write(fig, &path)?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
