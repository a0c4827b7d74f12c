//! The training-job plot: `training.png` and `training.svg` in the model folder, three panels
//! against elapsed seconds: training loss, the test metric, and the bytes pushed so far.
//!
//! Text is rendered with DejaVu Sans embedded in the binary (`assets/DejaVuSans.ttf`, through
//! plotters' `ab_glyph` feature), so plotting needs no system fonts, fontconfig or freetype and
//! works the same on a bare machine and in CI.
//!
//! ```no_run
//! # fn demo(metrics: &cumulus_trainer::report::JobSummary) -> Result<(), cumulus_trainer::TrainerError> {
//! let written = cumulus_trainer::plot::write_plots(metrics, std::path::Path::new("out/model"))?;
//! for path in &written {
//!     println!("wrote {}", path.display());
//! }
//! # Ok(())
//! # }
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::TrainerError;
use crate::report::{HistoryPoint, JobSummary};

/// Name of the bitmap plot in the output folder.
pub const PLOT_PNG_FILE: &str = "training.png";
/// Name of the vector plot in the output folder.
pub const PLOT_SVG_FILE: &str = "training.svg";

/// Pixel size of both plots; the SVG uses the same units.
const PLOT_SIZE: (u32, u32) = (1000, 1050);

/// DejaVu Sans (Bitstream Vera licence, see `assets/README.md`), embedded so no system font is
/// ever looked up.
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family every plotters default (mesh labels, captions) asks for; registering the embedded
/// font under it covers them all. Bold and italic requests fall back to this regular face.
const FONT_FAMILY: &str = "sans-serif";

const LOSS_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const METRIC_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const BYTES_COLOR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

const MIB: f64 = 1024.0 * 1024.0;

/// Writes `dir/training.png` and `dir/training.svg` and returns their paths.
///
/// An empty history (the job stopped before its first evaluation) has nothing to show: nothing
/// is written and the returned list is empty. Points whose value is not finite (a NaN loss
/// before the first round, say) are left out; a panel left with no points says so instead of
/// drawing axes.
pub fn write_plots(metrics: &JobSummary, dir: &Path) -> Result<Vec<PathBuf>, TrainerError> {
    if metrics.history.is_empty() {
        return Ok(Vec::new());
    }
    ensure_font()?;
    let plot = Plot::of(metrics);

    let png = dir.join(PLOT_PNG_FILE);
    let root = BitMapBackend::new(&png, PLOT_SIZE).into_drawing_area();
    plot.draw(&root)
        .and_then(|()| root.present())
        .map_err(|e| draw_error(&png, e))?;
    drop(root);

    let svg = dir.join(PLOT_SVG_FILE);
    let root = SVGBackend::new(&svg, PLOT_SIZE).into_drawing_area();
    plot.draw(&root)
        .and_then(|()| root.present())
        .map_err(|e| draw_error(&svg, e))?;
    drop(root);

    Ok(vec![png, svg])
}

fn draw_error(path: &Path, e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Data(format!("{}: cannot draw the plot: {e}", path.display()))
}

/// Registers the embedded font once per process; plotters keeps it in a global table.
fn ensure_font() -> Result<(), TrainerError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(TrainerError::Data(
            "the embedded plot font is not a valid TrueType font".to_string(),
        ))
    }
}

/// The series of one panel, finite points only.
struct Panel {
    caption: String,
    y_label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    /// Whether the y axis starts at zero (a cumulative count) or hugs the data.
    from_zero: bool,
}

/// Everything drawn, gathered once and drawn on both backends.
struct Plot {
    title: String,
    x_range: Range<f64>,
    panels: [Panel; 3],
}

impl Plot {
    fn of(metrics: &JobSummary) -> Self {
        let history = &metrics.history;
        let metric = metric_name(metrics);
        let series = |value: &dyn Fn(&HistoryPoint) -> Option<f64>| -> Vec<(f64, f64)> {
            history
                .iter()
                .filter_map(|p| Some((p.elapsed_secs, value(p)?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        };
        let panels = [
            Panel {
                caption: "training loss".to_string(),
                y_label: "loss".to_string(),
                color: LOSS_COLOR,
                points: series(&|p| Some(p.loss)),
                from_zero: false,
            },
            Panel {
                caption: format!("test metric: {metric}"),
                y_label: metric.to_string(),
                color: METRIC_COLOR,
                points: series(&|p| p.metric),
                from_zero: false,
            },
            Panel {
                caption: "bytes pushed (cumulative)".to_string(),
                y_label: "MiB pushed".to_string(),
                color: BYTES_COLOR,
                points: series(&|p| Some(p.bytes_pushed as f64 / MIB)),
                from_zero: true,
            },
        ];
        let last = history
            .iter()
            .map(|p| p.elapsed_secs)
            .filter(|t| t.is_finite())
            .fold(0.0_f64, f64::max);
        Self {
            title: format!(
                "{}: training ({}, {})",
                metrics.job, metrics.arch, metrics.dataset
            ),
            // A small band left of zero so the first marker is not drawn over the y axis.
            x_range: if last > 0.0 {
                -last * 0.01..last * 1.03
            } else {
                -0.05..1.0
            },
            panels,
        }
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let body = root.titled(&self.title, (FONT_FAMILY, 28).into_font())?;
        for (area, panel) in body.split_evenly((3, 1)).iter().zip(&self.panels) {
            self.draw_panel(area, panel)?;
        }
        Ok(())
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: &Panel,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let area = area.margin(4, 8, 8, 16);
        if panel.points.is_empty() {
            let (w, h) = area.dim_in_pixel();
            let note = format!("{}: no finite values recorded", panel.caption);
            let grey = BLACK.mix(0.6);
            let style = TextStyle::from((FONT_FAMILY, 20).into_font())
                .color(&grey)
                .pos(Pos::new(HPos::Center, VPos::Center));
            return area.draw_text(&note, &style, (w as i32 / 2, h as i32 / 2));
        }
        let y_range = y_range(&panel.points, panel.from_zero);
        // plotters picks too few decimals for tiny spans (0.00001 MiB prints as 0.0).
        let decimals = decimals_for(y_range.end - y_range.start);
        let y_format = |v: &f64| format!("{v:.decimals$}");
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.caption, (FONT_FAMILY, 20).into_font())
            .x_label_area_size(40)
            .y_label_area_size(85)
            .build_cartesian_2d(self.x_range.clone(), y_range)?;
        chart
            .configure_mesh()
            .x_desc("elapsed time (s)")
            .y_desc(&panel.y_label)
            .label_style((FONT_FAMILY, 14).into_font())
            .axis_desc_style((FONT_FAMILY, 16).into_font())
            .y_label_formatter(&y_format)
            .bold_line_style(BLACK.mix(0.2))
            .light_line_style(BLACK.mix(0.05))
            .draw()?;
        chart.draw_series(
            LineSeries::new(panel.points.iter().copied(), panel.color.stroke_width(2))
                .point_size(4),
        )?;
        Ok(())
    }
}

/// The metric named by whichever of `test_accuracy`, `test_rmse`, `test_auc` the job reported.
fn metric_name(metrics: &JobSummary) -> &'static str {
    if metrics.test_accuracy.is_some() {
        "test_accuracy"
    } else if metrics.test_rmse.is_some() {
        "test_rmse"
    } else if metrics.test_auc.is_some() {
        "test_auc"
    } else {
        "test metric"
    }
}

/// Decimals that tell apart the roughly ten ticks plotters puts on an axis spanning `span`.
fn decimals_for(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 1;
    }
    let step = span / 10.0;
    (-step.log10().floor()).clamp(1.0, 9.0) as usize
}

/// The data's extent with a margin, never empty: a single point or a flat line gets a band
/// around its value so plotters has a non-degenerate axis.
fn y_range(points: &[(f64, f64)], from_zero: bool) -> Range<f64> {
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    let lo = if from_zero { lo.min(0.0) } else { lo };
    let span = hi - lo;
    if span > 0.0 {
        let pad = span * 0.08;
        let bottom = if from_zero && lo >= 0.0 { lo } else { lo - pad };
        bottom..hi + pad
    } else {
        let pad = (hi.abs() * 0.1).max(1e-3);
        let bottom = if from_zero && lo >= 0.0 { lo } else { lo - pad };
        bottom..hi + pad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(elapsed_secs: f64, loss: f64, metric: Option<f64>, bytes_pushed: u64) -> HistoryPoint {
        HistoryPoint {
            elapsed_secs,
            epoch: elapsed_secs / 10.0,
            steps: (elapsed_secs * 100.0) as u64,
            loss,
            metric,
            bytes_pushed,
            bytes_pulled: 0,
            workers: 4,
            cost_usd: elapsed_secs * 1e-4,
        }
    }

    fn metrics(history: Vec<HistoryPoint>) -> JobSummary {
        JobSummary {
            job: "mnist-mlp-plot".to_string(),
            job_id: "job-0001".to_string(),
            arch: "mlp".to_string(),
            dataset: "mnist".to_string(),
            train_examples: 60_000,
            test_examples: 10_000,
            test_accuracy: Some(0.93),
            test_rmse: None,
            test_auc: None,
            final_loss: 0.21,
            steps: 1_200,
            epochs: 2.0,
            workers_start: 4,
            workers_end: 3,
            sync: "bsp".to_string(),
            significance: 0.7,
            entries_considered: 1_000_000,
            entries_sent: 300_000,
            bytes_pushed: 3_600_000,
            bytes_pulled: 2_400_000,
            bytes_filtered: 5_600_000,
            invocations: 8,
            invocations_started: 8,
            cold_starts: 4,
            failed_invocations: 0,
            gpu_steps: 0,
            billed_cost_usd: 0.002,
            wall_secs: 12.0,
            stop_reason: Some("max_epochs".to_string()),
            history,
        }
    }

    fn synthetic_history() -> Vec<HistoryPoint> {
        let mut history = vec![point(0.0, f64::NAN, None, 0)];
        for i in 1..=12_u32 {
            let t = f64::from(i);
            history.push(point(
                t,
                2.3 / (1.0 + t),
                Some(0.5 + 0.45 * (1.0 - (-t / 3.0).exp())),
                u64::from(i) * 300_000,
            ));
        }
        history
    }

    /// Width and height from the IHDR chunk, after checking the PNG signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(
            bytes.len() > 33,
            "too short for a PNG: {} bytes",
            bytes.len()
        );
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (be(16), be(20))
    }

    #[test]
    fn plot_writes_png_and_svg_with_labels() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = write_plots(&metrics(synthetic_history()), dir.path()).expect("plots");
        assert_eq!(
            written,
            vec![
                dir.path().join(PLOT_PNG_FILE),
                dir.path().join(PLOT_SVG_FILE)
            ]
        );

        let png = std::fs::read(&written[0]).expect("png written");
        assert_eq!(png_size(&png), PLOT_SIZE);

        let svg = std::fs::read_to_string(&written[1]).expect("svg written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "mnist-mlp-plot",
            "test_accuracy",
            "training loss",
            "elapsed time (s)",
        ] {
            assert!(svg.contains(text), "svg lacks {text:?}");
        }
        assert!(svg.contains("<circle"), "a marker per evaluation");
    }

    #[test]
    fn plot_bitmap_renders_text_with_the_embedded_font() {
        // Renders the title alone on a small bitmap: pixels darken only if glyphs were drawn.
        ensure_font().expect("embedded font registers");
        let mut buf = vec![255_u8; 300 * 60 * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (300, 60)).into_drawing_area();
            root.draw_text(
                "mnist-mlp-plot",
                &TextStyle::from((FONT_FAMILY, 24).into_font()).color(&BLACK),
                (10, 20),
            )
            .expect("text draws");
            root.present().expect("present");
        }
        let inked = buf.chunks(3).filter(|px| px[0] < 128).count();
        assert!(
            inked > 100,
            "only {inked} dark pixels: glyphs were not rendered"
        );
    }

    #[test]
    fn plot_names_the_reported_metric() {
        let mut m = metrics(synthetic_history());
        m.test_accuracy = None;
        m.test_rmse = Some(0.8);
        let dir = tempfile::tempdir().expect("temp dir");
        let written = write_plots(&m, dir.path()).expect("plots");
        let svg = std::fs::read_to_string(&written[1]).expect("svg written");
        assert!(svg.contains("test_rmse"));
        assert!(!svg.contains("test_accuracy"));
    }

    #[test]
    fn plot_of_empty_history_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = write_plots(&metrics(Vec::new()), dir.path()).expect("no error");
        assert!(written.is_empty());
        assert!(!dir.path().join(PLOT_PNG_FILE).exists());
        assert!(!dir.path().join(PLOT_SVG_FILE).exists());
    }

    #[test]
    fn plot_of_a_single_point_or_all_nan_loss_draws() {
        let dir = tempfile::tempdir().expect("temp dir");
        let single = metrics(vec![point(0.0, 1.5, Some(0.4), 0)]);
        let written = write_plots(&single, dir.path()).expect("single point");
        let png = std::fs::read(&written[0]).expect("png written");
        assert_eq!(png_size(&png), PLOT_SIZE);

        let nan_only = metrics(vec![
            point(0.0, f64::NAN, None, 0),
            point(2.0, f64::NAN, None, 10),
        ]);
        let written = write_plots(&nan_only, dir.path()).expect("NaN losses");
        let svg = std::fs::read_to_string(&written[1]).expect("svg written");
        assert!(svg.contains("no finite values"), "the empty panels say so");
    }

    #[test]
    fn plot_into_a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no/such/folder");
        let err = write_plots(&metrics(synthetic_history()), &missing).expect_err("no folder");
        assert!(err.to_string().contains(PLOT_PNG_FILE), "{err}");
    }

    #[test]
    fn plot_y_range_is_never_degenerate() {
        let flat = y_range(&[(0.0, 2.0), (1.0, 2.0)], false);
        assert!(flat.start < 2.0 && flat.end > 2.0);
        let zero = y_range(&[(0.0, 0.0)], true);
        assert!(zero.start == 0.0 && zero.end > 0.0);
        let rising = y_range(&[(0.0, 0.0), (1.0, 10.0)], true);
        assert!(rising.start == 0.0 && rising.end > 10.0);
    }

    #[test]
    fn plot_tick_decimals_follow_the_span() {
        assert_eq!(decimals_for(10.0), 1);
        assert_eq!(decimals_for(0.35), 2);
        assert_eq!(decimals_for(1e-5), 6);
        assert_eq!(decimals_for(0.0), 1);
        assert_eq!(decimals_for(f64::NAN), 1);
    }
}
