//! Sutton & Barto's Blackjack figures (2nd ed., Fig. 5.1: v_π of the "stick on 20 or 21"
//! policy; Fig. 5.2: π* and v* found by Monte Carlo ES).
//!
//! As in the book, the rows are "Usable ace" (top) and "No usable ace" (bottom), the axes are
//! the dealer's showing card A–10 (x) and the player's sum 12–21 (y). The book draws v as 3-D
//! surfaces; here v is a heat map (red −1, white 0, blue +1) with a colour bar and the value
//! written in each cell, which reads the same numbers without perspective. The policy map, left
//! of the values as in Fig. 5.2, colours each hand HIT or STICK with a legend.

use crate::{diverging, fmt_num, Area, DrawResult, Figure};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Cells indexed `[usable_ace as usize][player_sum - 12][dealer_card - 1]` (dealer 1 = ace).
pub type Table<T> = [[[T; 10]; 10]; 2];

/// The figure's data.
pub struct Blackjack {
    /// The title above both rows (the run: algorithm, episodes, …).
    pub title: String,
    /// State values (v, or max_a q) in [−1, 1].
    pub values: Table<f64>,
    /// The policy, `true` = hit; `None` for a prediction run (values only, as Fig. 5.1).
    pub hit: Option<Table<bool>>,
}

const HIT_COLOUR: RGBColor = RGBColor(70, 130, 180);
const STICK_COLOUR: RGBColor = RGBColor(250, 222, 160);
const ROW_H: u32 = 360;
const HEAD: u32 = 44;
const PANEL_W: u32 = 440;
const BAR_W: u32 = 90;

impl Figure for Blackjack {
    fn size(&self) -> (u32, u32) {
        let panels = if self.hit.is_some() { 2 } else { 1 };
        (panels * PANEL_W + BAR_W, HEAD + 2 * ROW_H + 46)
    }

    fn draw<DB: DrawingBackend>(&self, root: &Area<DB>) -> DrawResult<DB> {
        let (w, h) = self.size();
        let (head, rest) = root.split_vertically(HEAD);
        head.draw(&Text::new(self.title.as_str(), ((w / 2) as i32, 12), TextStyle::from(("sans-serif", 22).into_font().style(FontStyle::Bold)).pos(centre())))?;
        let (body, foot) = rest.split_vertically(2 * ROW_H);
        let (panels, bar) = body.split_horizontally(w - BAR_W);
        for (row, area) in panels.split_evenly((2, 1)).into_iter().enumerate() {
            let ace = row == 0; // top row: usable ace, as in the book
            let name = if ace { "Usable ace" } else { "No usable ace" };
            let areas = if self.hit.is_some() { area.split_evenly((1, 2)) } else { vec![area] };
            let mut k = 0;
            if let Some(hit) = &self.hit {
                let t = &hit[ace as usize];
                heat(&areas[0], &format!("{name}: policy"), |s, d| if t[s][d] { HIT_COLOUR } else { STICK_COLOUR }, |s, d| (if t[s][d] { "H" } else { "S" }).to_string(), |s, d| !t[s][d])?;
                k = 1;
            }
            let v = &self.values[ace as usize];
            heat(&areas[k], &format!("{name}: value"), |s, d| diverging(v[s][d], 1.0), |s, d| fmt_num2(v[s][d]), |s, d| v[s][d].abs() < 0.6)?;
        }
        colour_bar(&bar.margin(44, 60, 8, 24))?;
        if self.hit.is_some() {
            legend(&foot, (PANEL_W / 2) as i32)?;
        }
        let _ = h;
        Ok(())
    }
}

fn centre() -> Pos {
    Pos::new(HPos::Center, VPos::Top)
}

/// Two decimals, a real minus sign ("−0.42", "0.07").
fn fmt_num2(v: f64) -> String {
    let s = format!("{:.2}", v.abs());
    let s = s.strip_prefix('0').unwrap_or(&s).to_string();
    if v < -0.005 { format!("\u{2212}{s}") } else { s }
}

/// One 10×10 panel: dealer showing on x, player sum on y, each cell coloured and labelled.
fn heat<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    fill: impl Fn(usize, usize) -> RGBColor,
    label: impl Fn(usize, usize) -> String,
    dark_text: impl Fn(usize, usize) -> bool,
) -> DrawResult<DB> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d((1i32..10).into_segmented(), (12i32..21).into_segmented())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("Dealer showing")
        .y_desc("Player sum")
        .x_labels(10)
        .y_labels(10)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(1) => "A".into(),
            SegmentValue::CenterOf(x) => x.to_string(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(x) => x.to_string(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let cells = (0..10).flat_map(|s| (0..10).map(move |d| (s, d)));
    chart.draw_series(cells.clone().map(|(s, d)| {
        let (x, y) = (d as i32 + 1, s as i32 + 12);
        Rectangle::new([(SegmentValue::Exact(x), SegmentValue::Exact(y + 1)), (SegmentValue::Exact(x + 1), SegmentValue::Exact(y))], fill(s, d).filled())
    }))?;
    chart.draw_series(cells.map(|(s, d)| {
        let colour = if dark_text(s, d) { BLACK } else { WHITE };
        let style = ("sans-serif", 11).into_font().color(&colour).pos(Pos::new(HPos::Center, VPos::Center));
        Text::new(label(s, d), (SegmentValue::CenterOf(d as i32 + 1), SegmentValue::CenterOf(s as i32 + 12)), style)
    }))?;
    Ok(())
}

/// The value colour bar, −1 (bottom) to +1 (top).
fn colour_bar<DB: DrawingBackend>(area: &Area<DB>) -> DrawResult<DB> {
    let mut chart = ChartBuilder::on(area).caption("v(s)", ("sans-serif", 15)).margin_top(2).set_label_area_size(LabelAreaPosition::Top, 10).right_y_label_area_size(44).build_cartesian_2d(0.0..1.0, -1.0..1.0)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style(("sans-serif", 13))
        .draw()?;
    let n = 100;
    chart.draw_series((0..n).map(|i| {
        let (a, b) = (-1.0 + 2.0 * i as f64 / n as f64, -1.0 + 2.0 * (i + 1) as f64 / n as f64);
        Rectangle::new([(0.0, b), (1.0, a)], diverging((a + b) / 2.0, 1.0).filled())
    }))?;
    Ok(())
}

/// "H = HIT  S = STICK" boxes under the policy column.
fn legend<DB: DrawingBackend>(area: &Area<DB>, cx: i32) -> DrawResult<DB> {
    let y = 14;
    let font = ("sans-serif", 15).into_font();
    let mut x = cx - 110;
    for (colour, text) in [(HIT_COLOUR, "H = HIT"), (STICK_COLOUR, "S = STICK")] {
        area.draw(&Rectangle::new([(x, y), (x + 18, y + 18)], colour.filled()))?;
        area.draw(&Rectangle::new([(x, y), (x + 18, y + 18)], BLACK.stroke_width(1)))?;
        area.draw(&Text::new(text, (x + 26, y + 1), font.clone()))?;
        x += 120;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{colours, dark, decode};

    /// Values like Fig. 5.2's v*: rising with the player's sum, lower against a strong dealer.
    fn book_like() -> Blackjack {
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
        Blackjack { title: "MC ES, Blackjack-v1".into(), values, hit: Some(hit) }
    }

    #[test]
    fn renders_a_png_with_axes_text_and_colours() {
        let fig = book_like();
        let bytes = crate::png(&fig).unwrap();
        let (w, h, px) = decode(&bytes);
        assert_eq!((w, h), fig.size());
        let im = crate::Rgb { width: w as usize, height: h as usize, pixels: px };
        // Heat maps, policy colours, the colour bar: many colours.
        assert!(colours(&im, 0..im.width, 0..im.height) > 50);
        // Text in the title band and the y-axis label strip of the first panel.
        assert!(dark(&im, 0..im.width, 0..HEAD as usize) > 100);
        assert!(dark(&im, 0..60, HEAD as usize..(HEAD + ROW_H) as usize) > 100);
        // The HIT colour appears (top-left panel holds hits on the low sums).
        assert!(im.pixels.chunks(3).any(|p| p == [HIT_COLOUR.0, HIT_COLOUR.1, HIT_COLOUR.2]));
    }

    #[test]
    fn prediction_run_has_one_column_and_svg_has_the_labels() {
        let mut fig = book_like();
        fig.hit = None;
        assert_eq!(fig.size().0, PANEL_W + BAR_W);
        let svg = crate::svg(&fig).unwrap();
        for want in ["Dealer showing", "Player sum", "Usable ace: value", "No usable ace: value", "v(s)", "\nA\n"] {
            assert!(svg.contains(want), "{want} missing");
        }
    }
}
