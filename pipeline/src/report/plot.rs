//! Charts of a metric over time, one line per site, drawn in memory with plotters and encoded as PNG.
//!
//! Text goes through ab_glyph with a font file read at run time ([`load_font`], DejaVu Sans by default), so the
//! charts look the same on every machine and no system font lookup is involved. The time axis is UTC clock time
//! with ticks on round steps (1 s … 1 day); windows that failed the quality check are shaded.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::model::{rfc3339, Metric};

/// The font capflow looks for by default (Debian package `fonts-dejavu-core`).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Chart size in pixels (width, height).
pub const CHART_SIZE: (u32, u32) = (1000, 420);

/// Colours of the site lines: the Okabe–Ito palette, distinguishable with the common colour-vision deficiencies.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// Fill of the windows that failed the quality check.
pub const BAD_FILL: RGBColor = RGBColor(250, 205, 205);

/// What can go wrong while drawing a chart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The font file could not be read.
    #[error(
        "cannot read the report font {}: install the Debian package fonts-dejavu-core \
         (`apt-get install fonts-dejavu-core`; tools/setup.sh does it) or pass --font with another TrueType font",
        path.display()
    )]
    FontMissing {
        /// The font file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The file is not a TrueType/OpenType font.
    #[error("{} is not a TrueType/OpenType font: pass --font with a .ttf file, e.g. {DEFAULT_FONT} from fonts-dejavu-core", path.display())]
    BadFont {
        /// The font file.
        path: PathBuf,
    },
    /// Another font was loaded before in this process (plotters keeps one font table per process).
    #[error("the report font is already {}, not {}", loaded.display(), requested.display())]
    OtherFontLoaded {
        /// The font loaded first.
        loaded: PathBuf,
        /// The font asked for now.
        requested: PathBuf,
    },
    /// Drawing failed.
    #[error("drawing the {chart} chart: {reason}")]
    Draw {
        /// Which chart.
        chart: String,
        /// What went wrong.
        reason: String,
    },
    /// PNG encoding failed.
    #[error("encoding the {chart} chart as PNG: {reason}")]
    Encode {
        /// Which chart.
        chart: String,
        /// What went wrong.
        reason: String,
    },
}

static FONT: OnceLock<PathBuf> = OnceLock::new();

/// Reads the font at `path` and makes it the charts' `sans-serif` font. Call once per process before
/// [`render_png`]; calling again with the same path does nothing, with another path is an error.
pub fn load_font(path: &Path) -> Result<(), PlotError> {
    if FONT.get().is_some_and(|loaded| loaded == path) {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|source| PlotError::FontMissing {
        path: path.to_owned(),
        source,
    })?;
    if let Some(loaded) = FONT.get() {
        return Err(PlotError::OtherFontLoaded {
            loaded: loaded.clone(),
            requested: path.to_owned(),
        });
    }
    // plotters' font table holds `&'static [u8]`: the font lives as long as the process (loaded once).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
        PlotError::BadFont {
            path: path.to_owned(),
        }
    })?;
    let _ = FONT.set(path.to_owned());
    Ok(())
}

/// One point of a site's line: a window's midpoint and its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Window midpoint, ms since the Unix epoch.
    pub t_ms: i64,
    /// The value (`None`: not measurable in this window; the line breaks there).
    pub value: Option<f64>,
    /// Whether the window passed the quality check (failed windows are drawn as crosses).
    pub ok: bool,
}

/// One site's line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text (the site).
    pub label: String,
    /// Points in time order.
    pub points: Vec<Point>,
}

/// Everything one chart shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The metric on the y axis.
    pub metric: Metric,
    /// Title line above the chart.
    pub title: String,
    /// One line per site.
    pub series: Vec<Series>,
    /// Time ranges `[start, end)` shaded as failed quality, ms.
    pub bad: Vec<(i64, i64)>,
    /// The time axis, ms: from the first window start to the last window end.
    pub x_range: (i64, i64),
}

/// Round tick steps for a UTC time axis, ms.
const STEPS_MS: [i64; 19] = [
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
];

/// Tick positions on round UTC clock times within `[start, end]`, at most about `max_ticks` of them (at least one
/// step of 1 s; spans longer than that get whole multiples of two days).
pub fn time_ticks(start: i64, end: i64, max_ticks: usize) -> Vec<i64> {
    let span = (end - start).max(1);
    let max_ticks = max_ticks.max(2) as i64;
    let step = STEPS_MS
        .iter()
        .copied()
        .find(|s| span / s < max_ticks)
        .unwrap_or_else(|| {
            let day = 86_400_000;
            (span / (max_ticks - 1) / day + 1) * day
        });
    let first = start.div_euclid(step) * step + if start.rem_euclid(step) == 0 { 0 } else { step };
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= end)
        .collect()
}

/// A tick's label: `hh:mm:ss`, or `hh:mm` when every tick is on a whole minute; `mm-dd hh:mm` when the axis spans
/// more than a day, and at midnight (so a night's axis shows where the date changes).
pub fn tick_label(t_ms: i64, span_ms: i64, whole_minutes: bool) -> String {
    match rfc3339(t_ms) {
        Some(text) if span_ms > 86_400_000 || &text[11..19] == "00:00:00" => {
            format!("{} {}", &text[5..10], &text[11..16])
        }
        Some(text) if whole_minutes => text[11..16].to_string(),
        Some(text) => text[11..19].to_string(),
        None => t_ms.to_string(),
    }
}

/// The y axis: the metric's natural bounds (plus 5 % headroom), or 0 to a bit above the largest value (negatives
/// included if any).
pub fn y_range(chart: &Chart) -> (f64, f64) {
    let values = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.value));
    let (lo, hi) = values.fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if let Some((fixed_lo, fixed_hi)) = chart.metric.fixed_range() {
        // A little headroom, so points at the top of the scale (MFI 3, PPV 100 %) are not cut.
        return (lo.min(fixed_lo), hi.max(fixed_hi) * 1.05);
    }
    let top = if hi > 0.0 { hi * 1.15 } else { 1.0 };
    (if lo < 0.0 { lo * 1.15 } else { 0.0 }, top)
}

/// Draws `chart` into an RGB buffer of `size` and returns it as PNG bytes. [`load_font`] must have been called.
pub fn render_png(chart: &Chart, size: (u32, u32)) -> Result<Vec<u8>, PlotError> {
    let (w, h) = size;
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    draw(chart, &mut rgb, size).map_err(|reason| PlotError::Draw {
        chart: chart.metric.short().into(),
        reason,
    })?;
    crate::imageio::encode_rgb_png(w as usize, h as usize, &rgb).map_err(|e| PlotError::Encode {
        chart: chart.metric.short().into(),
        reason: format!("{e:#}"),
    })
}

/// Width of the legend column right of the plot, px.
const LEGEND_WIDTH: u32 = 200;

fn draw(chart: &Chart, rgb: &mut [u8], size: (u32, u32)) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot_area, legend_area) = root.split_horizontally(size.0.saturating_sub(LEGEND_WIDTH));
    let (x0, mut x1) = chart.x_range;
    if x1 <= x0 {
        x1 = x0 + 1_000;
    }
    let (y0, y1) = y_range(chart);
    let span = x1 - x0;
    let ticks = time_ticks(x0, x1, 8);
    let whole_minutes_ticks = ticks.clone();
    let mut ctx = ChartBuilder::on(&plot_area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x0..x1).with_key_points(ticks), y0..y1)
        .map_err(|e| err(&e))?;
    // Shading first, so the grid stays visible over it.
    ctx.draw_series(
        chart
            .bad
            .iter()
            .map(|&(a, b)| Rectangle::new([(a.max(x0), y0), (b.min(x1), y1)], BAD_FILL.filled())),
    )
    .map_err(|e| err(&e))?;
    let day = |t: i64| rfc3339(t).map(|t| t[..10].to_string()).unwrap_or_default();
    let x_desc = if span > 86_400_000 {
        "window time (UTC, month-day hour:minute)".to_string()
    } else if day(x0) != day(x1 - 1) {
        format!("window time (UTC clock, {} to {})", day(x0), day(x1 - 1))
    } else {
        format!("window time (UTC clock, {})", day(x0))
    };
    let whole_minutes =
        whole_minutes_ticks.len() > 1 && whole_minutes_ticks.iter().all(|t| t % 60_000 == 0);
    let label = |t: &i64| tick_label(*t, span, whole_minutes);
    ctx.configure_mesh()
        .x_desc(x_desc)
        .y_desc(format!(
            "{} ({})",
            chart.metric.short(),
            chart.metric.unit()
        ))
        .x_label_formatter(&label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(|e| err(&e))?;

    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        // The line breaks where a window has no value.
        let mut runs: Vec<Vec<(i64, f64)>> = vec![Vec::new()];
        for p in &series.points {
            match p.value {
                Some(v) => runs.last_mut().expect("never empty").push((p.t_ms, v)),
                None if !runs.last().expect("never empty").is_empty() => runs.push(Vec::new()),
                None => {}
            }
        }
        for run in runs.iter().filter(|r| r.len() > 1) {
            ctx.draw_series(LineSeries::new(run.iter().copied(), colour.stroke_width(2)))
                .map_err(|e| err(&e))?;
        }
        let good = series
            .points
            .iter()
            .filter(|p| p.ok)
            .filter_map(|p| Some((p.t_ms, p.value?)));
        ctx.draw_series(good.map(|xy| Circle::new(xy, 4, colour.filled())))
            .map_err(|e| err(&e))?;
        let failed = series
            .points
            .iter()
            .filter(|p| !p.ok)
            .filter_map(|p| Some((p.t_ms, p.value?)));
        ctx.draw_series(failed.map(|xy| Cross::new(xy, 5, colour.stroke_width(2))))
            .map_err(|e| err(&e))?;
    }
    draw_legend(chart, &legend_area).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The legend, in its own column so it never hides a point: one entry per site, then the markers' meaning.
fn draw_legend<DB: DrawingBackend>(
    chart: &Chart,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = ("sans-serif", 14).into_font().color(&BLACK);
    let mut y = 56;
    area.draw(&Text::new(
        "Site",
        (8, y - 22),
        ("sans-serif", 15).into_font(),
    ))?;
    for (i, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            colour.stroke_width(2),
        ))?;
        area.draw(&Circle::new((19, y), 4, colour.filled()))?;
        let mut label = series.label.clone();
        if label.chars().count() > 20 {
            label = label.chars().take(19).collect::<String>() + "…";
        }
        area.draw(&Text::new(label, (38, y - 8), font.clone()))?;
        y += 22;
    }
    y += 10;
    area.draw(&Cross::new((19, y), 5, BLACK.stroke_width(2)))?;
    area.draw(&Text::new(
        "window failed quality",
        (38, y - 8),
        font.clone(),
    ))?;
    y += 22;
    area.draw(&Rectangle::new(
        [(8, y - 7), (30, y + 7)],
        BAD_FILL.filled(),
    ))?;
    area.draw(&Text::new("time with a failed", (38, y - 8), font.clone()))?;
    area.draw(&Text::new("site window", (38, y + 8), font))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_round_clock_times_inside_the_axis() {
        // 08:00:03 to 08:00:47: 10 s steps from 08:00:10.
        let base = 1_772_352_000_000;
        let ticks = time_ticks(base + 3_000, base + 47_000, 8);
        assert_eq!(
            ticks,
            vec![base + 10_000, base + 20_000, base + 30_000, base + 40_000]
        );
        // A night: hourly or coarser, every tick on a whole hour.
        let night = time_ticks(base, base + 14 * 3_600_000, 8);
        assert!(night.len() >= 4 && night.len() <= 8, "{night:?}");
        assert!(night.iter().all(|t| t % 3_600_000 == 0));
        assert_eq!(tick_label(base + 10_000, 44_000, false), "08:00:10");
        assert_eq!(tick_label(base + 3_600_000, 4 * 3_600_000, true), "09:00");
        assert_eq!(tick_label(base, 3 * 86_400_000, true), "03-01 08:00");
        // Midnight shows the new date.
        assert_eq!(
            tick_label(base + 16 * 3_600_000, 12 * 3_600_000, true),
            "03-02 00:00"
        );
    }

    #[test]
    fn y_range_keeps_natural_bounds_and_headroom() {
        let chart = |metric, values: &[f64]| Chart {
            metric,
            title: String::new(),
            series: vec![Series {
                label: "a".into(),
                points: values
                    .iter()
                    .map(|&v| Point {
                        t_ms: 0,
                        value: Some(v),
                        ok: true,
                    })
                    .collect(),
            }],
            bad: vec![],
            x_range: (0, 1),
        };
        assert_eq!(y_range(&chart(Metric::Mfi, &[1.0, 3.0])), (0.0, 3.0 * 1.05));
        assert_eq!(y_range(&chart(Metric::Ppv, &[40.0])), (0.0, 100.0 * 1.05));
        let (lo, hi) = y_range(&chart(Metric::Tvd, &[2.0, 10.0]));
        assert_eq!(lo, 0.0);
        assert!(hi > 10.0 && hi < 12.0);
        assert_eq!(y_range(&chart(Metric::Tvd, &[])), (0.0, 1.0));
    }

    #[test]
    fn a_missing_font_names_the_package_to_install() {
        let e = load_font(Path::new("/nonexistent/DejaVuSans.ttf")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("fonts-dejavu-core"), "{text}");
        assert!(text.contains("/nonexistent/DejaVuSans.ttf"), "{text}");
    }

    #[test]
    fn a_chart_shades_only_the_failed_windows_and_draws_each_site_in_its_colour() {
        load_font(Path::new(DEFAULT_FONT))
            .expect("fonts-dejavu-core is installed (tools/setup.sh)");
        let base = 1_772_352_000_000_i64;
        let points = |values: [f64; 4]| {
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| Point {
                    t_ms: base + i as i64 * 10_000 + 5_000,
                    value: Some(v),
                    ok: i != 3,
                })
                .collect()
        };
        let chart = Chart {
            metric: Metric::Tvd,
            title: "TVD: patient p".into(),
            series: vec![
                Series {
                    label: "sub-1".into(),
                    points: points([10.0, 11.0, 12.0, 13.0]),
                },
                Series {
                    label: "sub-2".into(),
                    points: points([5.0, 6.0, 5.5, 6.5]),
                },
            ],
            // The last of four 10 s windows failed.
            bad: vec![(base + 30_000, base + 40_000)],
            x_range: (base, base + 40_000),
        };
        let png = render_png(&chart, CHART_SIZE).unwrap();
        let mut reader = png::Decoder::new(png.as_slice()).read_info().unwrap();
        let mut data = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut data).unwrap();
        assert_eq!((info.width, info.height), CHART_SIZE);
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let (w, h) = (info.width as usize, info.height as usize);
        let at = |x: usize, y: usize| {
            let i = (y * w + x) * 3;
            [data[i], data[i + 1], data[i + 2]]
        };
        let count = |colour: [u8; 3], xs: std::ops::Range<usize>| {
            (0..h)
                .flat_map(|y| xs.clone().map(move |x| (x, y)))
                .filter(|&(x, y)| at(x, y) == colour)
                .count()
        };
        let shade = [BAD_FILL.0, BAD_FILL.1, BAD_FILL.2];
        let plot_width = w - LEGEND_WIDTH as usize;
        // The shaded columns: the right quarter of the plot, nothing in its left half.
        let shaded: Vec<usize> = (0..plot_width)
            .filter(|&x| count(shade, x..x + 1) > 100)
            .collect();
        assert!(!shaded.is_empty(), "no shading drawn");
        let (first, last) = (shaded[0], *shaded.last().unwrap());
        assert!(
            first > plot_width / 2 && last > plot_width * 3 / 4,
            "shaded columns {first}..{last}"
        );
        assert_eq!(count(shade, 0..plot_width / 2), 0);
        // Both sites' lines are drawn, in the palette's first two colours.
        for colour in &PALETTE[..2] {
            assert!(
                count([colour.0, colour.1, colour.2], 0..plot_width) > 100,
                "{colour:?}"
            );
        }
        // And the legend column has text (dark pixels).
        let dark = (plot_width..w)
            .flat_map(|x| (0..h).map(move |y| (x, y)))
            .filter(|&(x, y)| at(x, y).iter().all(|&c| c < 80))
            .count();
        assert!(dark > 200, "legend text: {dark} dark pixels");
    }
}
