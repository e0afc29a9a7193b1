//! PNG charts for the reports: lines with a legend, and labelled bars.
//!
//! 1000 × 600 pixels, drawn with `plotters`' bitmap backend. Text uses the
//! DejaVu Sans font compiled into the binary (`benches/assets/`, with its
//! license) through `ab_glyph`, so drawing needs no system fonts, fontconfig
//! or freetype: it works the same on a bare CI machine.
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The family name the font is registered under.
const FONT: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (1000, 600);

/// Distinct on white and for the common kinds of colour blindness
/// (Okabe & Ito), darkest first.
const COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
];

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok { Ok(()) } else { Err(anyhow!("the embedded font DejaVuSans.ttf is not a valid font")) }
}

/// plotters' errors borrow the backend; keep their text only.
fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

/// The value as printed on a bar: three significant digits, no exponent.
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An axis range around `lo..hi` with some room, starting at 0 when the data
/// does not go below it (so bars and lines are not exaggerated).
fn span(lo: f64, hi: f64, top_room: f64) -> (f64, f64) {
    let lo = lo.min(0.0);
    let hi = if hi > lo { hi } else { lo + 1.0 };
    (lo, hi + (hi - lo) * top_room)
}

/// Tick labels with as many decimals as the axis' span needs (1000 → "1000",
/// 5 → "2.5", 0.5 → "0.25"), not plotters' fixed "1000.0".
fn tick_decimals(lo: f64, hi: f64) -> usize {
    let span = (hi - lo).abs();
    if span > 0.0 { (1.0 - span.log10().floor()).clamp(0.0, 4.0) as usize } else { 2 }
}

/// Lines (x,y) with axis labels and a legend.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    font()?;
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let pts = || series.iter().flat_map(|s| s.points.iter().filter(finite));
    if pts().next().is_none() {
        bail!("line chart {title:?}: no finite points to draw");
    }
    let (xmin, xmax) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (xmin, xmax) = if xmax > xmin { (xmin, xmax) } else { (xmin - 0.5, xmax + 0.5) };
    // Headroom above the data for the legend (about 22 px a line of the
    // ~450 px plot), so that it never hides a line.
    let (ylo, yhi) = span(ymin, ymax, (series.len() as f64 * 22.0 + 30.0) / 450.0);
    let (xd, yd) = (tick_decimals(xmin, xmax), tick_decimals(ylo, yhi));
    let (xfmt, yfmt) = (|v: &f64| format!("{v:.xd$}"), |v: &f64| format!("{v:.yd$}"));

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err("filling the background"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(xmin..xmax, ylo..yhi)
        .map_err(err("laying out the chart"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err("drawing the axes"))?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let points: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
        // Markers only where there are few points: they show where the measurements are.
        let marker = if points.len() <= 30 { 4 } else { 0 };
        chart
            .draw_series(LineSeries::new(points, style).point_size(marker))
            .map_err(err("drawing a line"))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err("drawing the legend"))?;
    root.present().map_err(err("encoding the PNG")).with_context(|| format!("writing {}", path.display()))
}

/// One bar per (label, value), value printed on the bar.
///
/// Bars whose labels begin with the same word share a colour ("walship p50",
/// "walship p99" against "pg_receivewal p50", ...), so paired quantiles
/// read as two groups. A `\n` in a label breaks it into lines.
pub fn bar_chart(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)]) -> Result<()> {
    font()?;
    if bars.is_empty() {
        bail!("bar chart {title:?}: no bars to draw");
    }
    let n = bars.len();
    let finite = bars.iter().map(|b| b.1).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (ylo, yhi) = span(lo, hi, 0.12);
    let yd = tick_decimals(ylo, yhi);
    let yfmt = |v: &f64| format!("{v:.yd$}");
    // Labels shrink so that the longest still fits its bar's slot.
    let slot = f64::from(SIZE.0 - 150) / n as f64;
    let longest = bars.iter().flat_map(|b| b.0.lines()).map(|l| l.chars().count()).max().unwrap_or(1).max(1) as f64;
    let label_lines = bars.iter().map(|b| b.0.lines().count()).max().unwrap_or(1).max(1);
    let mut groups: Vec<&str> = Vec::new();
    let colors: Vec<RGBColor> = bars
        .iter()
        .map(|b| {
            let word = b.0.split_whitespace().next().unwrap_or("");
            let g = groups.iter().position(|g| *g == word).unwrap_or_else(|| {
                groups.push(word);
                groups.len() - 1
            });
            COLORS[g % COLORS.len()]
        })
        .collect();
    let label_size = (slot / (longest * 0.6)).clamp(10.0, 17.0);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err("filling the background"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(20 + 22 * label_lines as u32)
        .y_label_area_size(90)
        // Bar i is centred on x = i; its label is drawn under it by hand
        // (plotters' own x labels fall on "nice" numbers, not on the bars).
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), ylo..yhi)
        .map_err(err("laying out the chart"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .y_label_formatter(&yfmt)
        .y_label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err("drawing the axes"))?;
    chart
        .draw_series(bars.iter().enumerate().filter(|(_, b)| b.1.is_finite()).map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, b.1)], colors[i].mix(0.85).filled())
        }))
        .map_err(err("drawing the bars"))?;
    let above = Pos::new(HPos::Center, VPos::Bottom);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let (text, y) = if b.1.is_finite() { (fmt_value(b.1), b.1.max(0.0)) } else { ("not measured".into(), 0.0) };
            Text::new(text, (i as f64, y), (FONT, 18).into_font().color(&BLACK).pos(above))
        }))
        .map_err(err("drawing the values"))?;
    let below = Pos::new(HPos::Center, VPos::Top);
    for (i, b) in bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, ylo));
        for (k, line) in b.0.lines().enumerate() {
            let style = (FONT, label_size).into_font().color(&BLACK).pos(below);
            let y = y + 10 + (k as f64 * label_size * 1.2) as i32;
            root.draw(&Text::new(line, (x, y), style)).map_err(err("drawing a bar's label"))?;
        }
    }
    root.present().map_err(err("encoding the PNG")).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

    fn line(k: f64) -> Vec<Series> {
        vec![
            Series { name: "walship".into(), points: (0..20).map(|i| (f64::from(i), k * f64::from(i))).collect() },
            Series { name: "pg_receivewal".into(), points: vec![(0.0, 3.0), (10.0, 7.5), (19.0, 2.0)] },
        ]
    }

    fn bars(k: f64) -> Vec<(String, f64)> {
        vec![("a walship tmpfs".into(), 812.5 * k), ("b bare quinn".into(), 1003.0), ("d fdatasync".into(), 0.42)]
    }

    #[test]
    fn draws_both_kinds() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("walship-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = |name: &str| dir.join(name);
        line_chart(&p("l1.png"), "Lag over time", "time (s)", "lag (ms)", &line(1.0))?;
        line_chart(&p("l2.png"), "Lag over time", "time (s)", "lag (ms)", &line(2.0))?;
        bar_chart(&p("b1.png"), "Throughput", "MB/s", &bars(1.0))?;
        bar_chart(&p("b2.png"), "Throughput", "MB/s", &bars(0.5))?;
        bar_chart(&p("b3.png"), "One bar", "ms", &[("only\none label, two lines".into(), 0.25)])?;
        let read = |name: &str| std::fs::read(p(name));
        for name in ["l1.png", "l2.png", "b1.png", "b2.png", "b3.png"] {
            assert!(read(name)?.starts_with(PNG), "{name} is not a PNG");
        }
        assert_ne!(read("l1.png")?, read("l2.png")?);
        assert_ne!(read("b1.png")?, read("b2.png")?);
        assert!(bar_chart(&p("none.png"), "x", "y", &[]).is_err());
        assert!(line_chart(&p("none.png"), "x", "x", "y", &[]).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn values() {
        assert_eq!(fmt_value(1234.56), "1235");
        assert_eq!(fmt_value(12.345), "12.3");
        assert_eq!(fmt_value(0.4567), "0.457");
        assert_eq!(fmt_value(0.0), "0");
    }
}
