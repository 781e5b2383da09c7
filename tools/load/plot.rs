//! `btlog-load plot --dir DIR`: draws the charts of a `scale` run from its CSV files in DIR,
//! as SVG files beside them:
//!
//! - `ingest.svg`: gRPC ingest entries/s per step against the log size, with 85% of the first
//!   step's rate (the issue 18 target) as a reference line;
//! - `ingest_cpu.svg`: the server's CPU time per ingested entry in each step, in all and by
//!   thread (writer, compaction, gRPC, flush) when the CSV has the split;
//! - `monitor.svg`: monitor catch-up from empty, entries/s against the log size;
//! - `reads.svg`: inclusion proofs/s and full tiles/s against the log size;
//! - `rss.svg`: the server's RSS and peak RSS after each step, and the monitor's peak RSS,
//!   against the log size, with the 256 MiB budget.
//!
//! With `--before DIR`, the ingest and monitor rates of an earlier run (another build) in DIR
//! are drawn beside them.
//!
//! Text is left to the SVG viewer's sans-serif font: no font library is built or read.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// A CSV file of numbers (and words): its header and rows, split on commas.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn load(path: &Path) -> Result<Table> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .with_context(|| format!("{} is empty", path.display()))?
            .split(',')
            .map(str::to_owned)
            .collect();
        let rows = lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        Ok(Table { header, rows })
    }

    /// (x, y) of the rows that `keep` accepts, x in millions of entries.
    fn points(&self, x: &str, y: &str, keep: impl Fn(&Table, &[String]) -> bool) -> Result<Pts> {
        let (xi, yi) = (self.col(x)?, self.col(y)?);
        let mut out = Vec::new();
        for row in self.rows.iter().filter(|r| keep(self, r)) {
            let num = |i: usize| -> Result<f64> {
                row.get(i)
                    .and_then(|v| v.trim().parse().ok())
                    .with_context(|| format!("row {row:?}: no number in column {i}"))
            };
            out.push((num(xi)? / 1e6, num(yi)?));
        }
        Ok(out)
    }

    fn col(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no column {name}"))
    }

    fn is(&self, row: &[String], column: &str, value: &str) -> bool {
        self.col(column)
            .ok()
            .and_then(|i| row.get(i))
            .is_some_and(|v| v == value)
    }
}

type Pts = Vec<(f64, f64)>;

struct Series {
    name: String,
    color: RGBColor,
    points: Pts,
    /// A reference level: drawn thin, without markers.
    reference: bool,
}

fn series(name: &str, color: RGBColor, points: Pts) -> Series {
    Series {
        name: name.into(),
        color,
        points,
        reference: false,
    }
}

fn level(name: &str, y: f64, x_max: f64) -> Series {
    Series {
        name: name.into(),
        color: RGBColor(150, 150, 150),
        points: vec![(0.0, y), (x_max, y)],
        reference: true,
    }
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(127, 127, 127);

pub(crate) fn run(dir: &Path, before: Option<&Path>) -> Result<()> {
    let ingest = Table::load(&dir.join("ingest.csv"))?;
    let rate = ingest.points("tree_size", "entries_per_s", |_, _| true)?;
    let x_max = rate.iter().map(|p| p.0).fold(1.0, f64::max);
    let mut ingest_series = vec![series("gRPC ingest, entries/s", BLUE_, rate.clone())];
    if let Some(first) = rate.first() {
        ingest_series.push(level("85% of the first million", 0.85 * first.1, x_max));
    }
    let earlier = before.map(|b| {
        (
            Table::load(&b.join("ingest.csv")),
            Table::load(&b.join("monitor.csv")),
        )
    });
    if let Some((Ok(t), _)) = &earlier {
        ingest_series.push(series(
            "before (previous build), entries/s",
            ORANGE,
            t.points("tree_size", "entries_per_s", |_, _| true)?,
        ));
    }
    draw(
        &dir.join("ingest.svg"),
        "gRPC ingest rate per million entries",
        "entries/s",
        x_max,
        &ingest_series,
    )?;

    if let Ok(entries) = ingest.points("tree_size", "entries", |_, _| true) {
        // CPU seconds of a column, per entry of its step, in microseconds.
        let per_entry = |column: &str| -> Result<Pts> {
            let cpu = ingest.points("tree_size", column, |_, _| true)?;
            Ok(cpu
                .iter()
                .zip(&entries)
                .map(|(c, e)| (c.0, c.1 * 1e6 / e.1.max(1.0)))
                .collect())
        };
        let mut cpu = vec![series(
            "server, all threads",
            BLUE_,
            per_entry("server_cpu_s")?,
        )];
        // Runs before the split by thread have only the total.
        for (column, name, color) in [
            ("writer_cpu_s", "writer (btlog-sequencer)", ORANGE),
            ("compaction_cpu_s", "compaction (rocksdb:low)", GREEN_),
            ("rpc_cpu_s", "gRPC and HTTP (tokio-rt-worker)", PURPLE),
            ("flush_cpu_s", "flush (rocksdb:high)", GREY),
        ] {
            if let Ok(points) = per_entry(column) {
                cpu.push(series(name, color, points));
            }
        }
        draw(
            &dir.join("ingest_cpu.svg"),
            "Server CPU per ingested entry, in all and by thread",
            "CPU microseconds per entry",
            x_max,
            &cpu,
        )?;
    }

    let mut rss = vec![
        series(
            "server RSS after each step, MiB",
            BLUE_,
            ingest.points("tree_size", "server_rss_mib", |_, _| true)?,
        ),
        series(
            "server peak RSS (VmHWM), MiB",
            ORANGE,
            ingest.points("tree_size", "server_hwm_mib", |_, _| true)?,
        ),
    ];

    if let Ok(monitor) = Table::load(&dir.join("monitor.csv")) {
        let full = |t: &Table, r: &[String]| t.is(r, "kind", "full");
        let catch_up = monitor.points("tree_size", "entries_per_s", full)?;
        let mut s = vec![series(
            "monitor catch-up from empty, entries/s",
            BLUE_,
            catch_up.clone(),
        )];
        if let Some(first) = catch_up.first() {
            s.push(level("80% of the first size's rate", 0.8 * first.1, x_max));
        }
        if let Some((_, Ok(t))) = &earlier {
            s.push(series(
                "before (previous build), entries/s",
                ORANGE,
                t.points("tree_size", "entries_per_s", full)?,
            ));
        }
        draw(
            &dir.join("monitor.svg"),
            "Monitor catch-up rate from an empty state",
            "entries/s",
            x_max,
            &s,
        )?;
        rss.push(series(
            "monitor peak RSS, MiB",
            GREEN_,
            monitor.points("tree_size", "peak_rss_mib", full)?,
        ));
    }
    rss.push(level("256 MiB budget", 256.0, x_max));
    draw(
        &dir.join("rss.svg"),
        "Memory against log size",
        "MiB",
        x_max,
        &rss,
    )?;

    if let Ok(reads) = Table::load(&dir.join("reads.csv")) {
        let kind = |k: &'static str| move |t: &Table, r: &[String]| t.is(r, "kind", k);
        let mut s = vec![
            series(
                "inclusion proofs/s, 10 s after the ingest",
                BLUE_,
                reads.points("tree_size", "per_s", kind("proofs"))?,
            ),
            series(
                "full level-0 tiles/s, 10 s after the ingest",
                ORANGE,
                reads.points("tree_size", "per_s", kind("tiles"))?,
            ),
        ];
        // Series before the settled reads were measured have none.
        for (name, k, color) in [
            (
                "inclusion proofs/s, compactions done",
                "proofs_settled",
                GREEN_,
            ),
            (
                "full level-0 tiles/s, compactions done",
                "tiles_settled",
                PURPLE,
            ),
        ] {
            let points = reads.points("tree_size", "per_s", kind(k))?;
            if !points.is_empty() {
                s.push(series(name, color, points));
            }
        }
        draw(
            &dir.join("reads.svg"),
            "Reads over HTTP against log size",
            "requests/s",
            x_max,
            &s,
        )?;
    }
    Ok(())
}

fn draw(path: &Path, title: &str, y_desc: &str, x_max: f64, all: &[Series]) -> Result<()> {
    let y_max = all
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("log size (million entries)")
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_error)?;
    for s in all {
        let color = s.color;
        let width = if s.reference { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(plot_error)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
        if !s.reference {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_error)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}
