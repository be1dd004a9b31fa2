//! Line charts written as PNG and SVG (loss curves, label-efficiency curves, ...).
//!
//! Text is drawn with the DejaVu Sans font read from the system (`fonts-dejavu-core` on Debian;
//! `PLEURA_FONT=/path/to/font.ttf` overrides), registered once per process.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

/// Where the font is looked for, in order.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("PLEURA_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .collect();
        for path in &candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps the font for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| format!("{path} is not a usable TrueType font"));
            }
        }
        Err(format!(
            "no font for plot labels: install fonts-dejavu-core or set PLEURA_FONT (looked in {candidates:?})"
        ))
    });
    result.clone().map_err(anyhow::Error::msg)
}

/// One named series of `(x, y)` points.
pub struct Series<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Axis labels and title of a chart.
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
}

fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let points = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in points {
        any = true;
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !any {
        return None;
    }
    let pad = |a: f64, b: f64| {
        if b > a {
            (b - a) * 0.05
        } else {
            a.abs().max(1.0) * 0.05
        }
    };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    Some(((x0 - px, x1 + px), (y0 - py, y1 + py)))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let Some(((x0, x1), (y0, y1))) = bounds(series) else {
        bail!("nothing to plot: every series is empty or not finite");
    };
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        c.draw_series(LineSeries::new(
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite()),
            color.stroke_width(2),
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .label(s.name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    if series.len() > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Draws `series` as lines into `<stem>.png` and `<stem>.svg`.
pub fn line_chart(stem: &Path, chart: &Chart, series: &[Series]) -> Result<()> {
    register_font()?;
    if let Some(dir) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let png = stem.with_extension("png");
    draw(
        BitMapBackend::new(&png, (900, 540)).into_drawing_area(),
        chart,
        series,
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    let svg = stem.with_extension("svg");
    draw(
        SVGBackend::new(&svg, (900, 540)).into_drawing_area(),
        chart,
        series,
    )
    .with_context(|| format!("drawing {}", svg.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("curves/loss");
        let points: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64, (-(i as f64) / 10.0).exp()))
            .collect();
        let chart = Chart {
            title: "loss",
            x_label: "step",
            y_label: "loss",
        };
        line_chart(
            &stem,
            &chart,
            &[
                Series {
                    name: "train",
                    points: points.clone(),
                },
                Series {
                    name: "other",
                    points,
                },
            ],
        )
        .unwrap();
        let png = std::fs::read(stem.with_extension("png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("loss"));
    }

    #[test]
    fn empty_series_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let chart = Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
        };
        assert!(line_chart(
            &dir.path().join("e"),
            &chart,
            &[Series {
                name: "a",
                points: vec![]
            }]
        )
        .is_err());
    }
}
