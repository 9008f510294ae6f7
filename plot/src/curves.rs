//! Line charts with a legend: Sutton & Barto's Example 5.4 (Fig. 5.3: mean squared error of
//! ordinary and weighted importance sampling against episodes, log scale) and learning curves
//! (CleanRL's `charts/episodic_return` against env steps, each episode faint, the mean of the
//! last 100 bold).

use crate::{fmt_num, Area, DrawResult, Figure, PALETTE};
use plotters::prelude::*;

/// One line.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Index into [`PALETTE`].
    pub colour: usize,
    /// Drawn thin and pale (e.g. the raw returns under their mean).
    pub faint: bool,
}

/// The figure's data.
#[derive(Clone, Debug)]
pub struct Curves {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// Log-scale x axis (points at x ≤ 0 are left out).
    pub log_x: bool,
    /// The legend in the lower right corner (rising curves) instead of the upper right.
    pub legend_low: bool,
    pub series: Vec<Series>,
}

impl Curves {
    /// S&B Example 5.4 / Fig. 5.3: `(episode, mse_ordinary, mse_weighted)` rows, episodes on a
    /// log scale.
    pub fn importance_sampling(title: &str, rows: &[(f64, f64, f64)]) -> Curves {
        let line = |label: &str, colour, f: fn(&(f64, f64, f64)) -> f64| Series {
            label: label.into(),
            points: rows.iter().map(|r| (r.0, f(r))).collect(),
            colour,
            faint: false,
        };
        Curves {
            title: title.into(),
            x_desc: "Episodes (log scale)".into(),
            y_desc: "Mean square error (average over runs)".into(),
            log_x: true,
            legend_low: false,
            series: vec![line("Ordinary importance sampling", 1, |r| r.1), line("Weighted importance sampling", 2, |r| r.2)],
        }
    }

    /// A learning curve: each episode's return at the env step it ended (faint) and the mean of
    /// the last `window` episodes (bold).
    pub fn learning_curve(title: &str, returns: &[(f64, f64)], window: usize) -> Curves {
        let window = window.max(1);
        let mut mean = Vec::with_capacity(returns.len());
        let mut sum = 0.0;
        for (i, &(x, r)) in returns.iter().enumerate() {
            sum += r;
            if i >= window {
                sum -= returns[i - window].1;
            }
            mean.push((x, sum / (i + 1).min(window) as f64));
        }
        Curves {
            title: title.into(),
            x_desc: "Environment steps".into(),
            y_desc: "Episodic return".into(),
            log_x: false,
            legend_low: true,
            series: vec![
                Series { label: "each episode".into(), points: returns.to_vec(), colour: 0, faint: true },
                Series { label: format!("mean of the last {window} episodes"), points: mean, colour: 0, faint: false },
            ],
        }
    }

    /// (x range, y range) over all finite points, padded; `None` without points.
    fn bounds(&self) -> Option<((f64, f64), (f64, f64))> {
        let pts = || self.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0));
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            return None;
        }
        if x1 <= x0 {
            x1 = if self.log_x { x0 * 10.0 } else { x0 + 1.0 };
        }
        if y1 <= y0 {
            (y0, y1) = (y0 - 0.5, y1 + 0.5);
        }
        let pad = 0.05 * (y1 - y0);
        // Errors and non-negative returns start at 0, as in the book's Fig. 5.3.
        let y0 = if y0 >= 0.0 && y0 - pad < 0.0 { 0.0 } else { y0 - pad };
        Some(((x0, x1), (y0, y1 + pad)))
    }
}

impl Figure for Curves {
    fn size(&self) -> (u32, u32) {
        (760, 480)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> DrawResult<DB> {
        let Some(((x0, x1), (y0, y1))) = self.bounds() else {
            let style = TextStyle::from(("sans-serif", 18)).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ));
            root.draw(&Text::new(format!("{}: no data yet", self.title), (380, 240), style))?;
            return Ok(());
        };
        let mut b = ChartBuilder::on(root);
        b.caption(self.title.as_str(), ("sans-serif", 20).into_font().style(FontStyle::Bold))
            .margin(14)
            .margin_right(36)
            .x_label_area_size(48)
            .y_label_area_size(64);
        if self.log_x {
            let mut chart = b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .x_desc(self.x_desc.as_str())
                .y_desc(self.y_desc.as_str())
                .x_label_formatter(&|v| fmt_num(*v))
                .y_label_formatter(&|v| fmt_num(*v))
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .draw()?;
            self.lines(&mut chart)
        } else {
            let mut chart = b.build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .x_desc(self.x_desc.as_str())
                .y_desc(self.y_desc.as_str())
                .x_label_formatter(&|v| fmt_num(*v))
                .y_label_formatter(&|v| fmt_num(*v))
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .draw()?;
            self.lines(&mut chart)
        }
    }
}

impl Curves {
    fn lines<'a, DB: DrawingBackend + 'a, X, Y>(&self, chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> DrawResult<DB>
    where
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        let mut labelled = false;
        for s in &self.series {
            let c = PALETTE[s.colour % PALETTE.len()];
            let pts = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0));
            if s.faint {
                let style = c.mix(0.3).stroke_width(1);
                chart.draw_series(LineSeries::new(pts, style))?.label(s.label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            } else {
                let style = c.stroke_width(2);
                chart.draw_series(LineSeries::new(pts, style))?.label(s.label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
                labelled = true;
            }
        }
        if labelled {
            chart
                .configure_series_labels()
                .position(if self.legend_low { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{colours, dark, decode};

    #[test]
    fn importance_sampling_figure_renders_with_legend_and_log_axis() {
        // Shaped like Fig. 5.3: ordinary starts high and falls, weighted starts lower.
        let rows: Vec<_> = (1..=1000).map(|e| (e as f64, 4.0 / (e as f64).sqrt(), 1.5 / (1.0 + e as f64 / 5.0))).collect();
        let fig = Curves::importance_sampling("Example 5.4", &rows);
        let (w, h, px) = decode(&crate::png(&fig).unwrap());
        assert_eq!((w, h), fig.size());
        let im = crate::Rgb { width: w as usize, height: h as usize, pixels: px };
        assert!(colours(&im, 0..im.width, 0..im.height) > 20);
        // Tick labels and the axis description left of the plot, and under it.
        assert!(dark(&im, 0..70, 60..400) > 150);
        assert!(dark(&im, 80..im.width, 420..im.height) > 150);
        let svg = crate::svg(&fig).unwrap();
        for want in ["Ordinary importance sampling", "Weighted importance sampling", "Episodes (log scale)", "\n1000\n", "\n100\n", "\n10\n"] {
            assert!(svg.contains(want), "{want:?} missing");
        }
    }

    #[test]
    fn learning_curve_mean_is_the_trailing_mean() {
        let ret: Vec<_> = (0..10).map(|i| (10.0 * i as f64, i as f64)).collect();
        let c = Curves::learning_curve("REINFORCE", &ret, 4);
        let mean = &c.series[1].points;
        assert_eq!(mean[0], (0.0, 0.0));
        assert_eq!(mean[2], (20.0, 1.0)); // (0+1+2)/3
        assert_eq!(mean[9], (90.0, 7.5)); // (6+7+8+9)/4
        let svg = crate::svg(&c).unwrap();
        assert!(svg.contains("mean of the last 4 episodes") && svg.contains("Environment steps"));
    }

    #[test]
    fn no_points_draws_a_note_not_a_panic() {
        let c = Curves { title: "empty".into(), x_desc: "x".into(), y_desc: "y".into(), log_x: true, legend_low: false, series: vec![] };
        assert!(crate::svg(&c).unwrap().contains("no data yet"));
    }
}
