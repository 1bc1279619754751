//! What a bench prints and writes: a table, `results.json`, `results.csv`, and two SVG
//! plots (`throughput.svg`: ops/s against clients; `latency.svg`: p50 and p99 against
//! clients), one line per workload.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::error::{CoreError, io_err};

/// One workload at one client count.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    pub workload: String,
    /// `leader` or `follower`: the node the requests went to.
    pub target: String,
    pub addr: String,
    pub clients: usize,
    pub duration_s: f64,
    /// Successful requests.
    pub ops: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    /// Rows written per second (0 for reads).
    pub rows_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// With a local cluster: CPU milliseconds of all nodes together per 1,000
    /// requests (warm-up included in both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_1k_ops: Option<f64>,
    /// With a local cluster: bytes all nodes handed to the disk per request (raft log,
    /// SQLite WAL and checkpoints, snapshots): the write amplification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes_per_op: Option<f64>,
    /// With a local cluster: the largest node's resident memory after the run, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rss_mib: Option<f64>,
}

/// Everything one bench measured, as `results.json` holds it.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Seconds since the Unix epoch when the bench started.
    pub started_unix: u64,
    pub version: &'static str,
    pub machine: Machine,
    /// `local` (a cluster the bench started) or `given` (`--urls`).
    pub cluster: &'static str,
    pub nodes: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// With a local cluster: each node's resident memory before the first run, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_rss_mib: Option<Vec<f64>>,
    pub runs: Vec<RunResult>,
}

/// The machine the bench ran on.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub hostname: String,
}

impl Machine {
    pub(crate) fn here() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: read("/proc/sys/kernel/osrelease"),
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// The table, as printed after the runs.
pub(crate) fn table(runs: &[RunResult]) -> String {
    let mut out = format!(
        "{:<28} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11} {:>11} {:>8}\n",
        "workload",
        "clients",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "cpu ms/1k",
        "disk B/op",
        "rss MiB"
    );
    let or_dash =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for r in runs {
        out.push_str(&format!(
            "{:<28} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>11} {:>11} {:>8}\n",
            r.workload,
            r.clients,
            r.ops_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            or_dash(r.cpu_ms_per_1k_ops, 0),
            or_dash(r.disk_bytes_per_op, 0),
            or_dash(r.max_rss_mib, 1)
        ));
    }
    out
}

/// `results.csv`: one line per run.
pub(crate) fn csv(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "workload,target,clients,duration_s,ops,errors,ops_per_s,rows_per_s,p50_ms,p90_ms,p99_ms,max_ms,cpu_ms_per_1k_ops,disk_bytes_per_op,max_rss_mib\n",
    );
    for r in runs {
        out.push_str(&format!(
            "{},{},{},{:.3},{},{},{:.1},{:.1},{:.3},{:.3},{:.3},{:.3},{},{},{}\n",
            r.workload,
            r.target,
            r.clients,
            r.duration_s,
            r.ops,
            r.errors,
            r.ops_per_s,
            r.rows_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.cpu_ms_per_1k_ops
                .map_or(String::new(), |v| format!("{v:.1}")),
            r.disk_bytes_per_op
                .map_or(String::new(), |v| format!("{v:.0}")),
            r.max_rss_mib.map_or(String::new(), |v| format!("{v:.1}"))
        ));
    }
    out
}

/// Writes results.json, results.csv, throughput.svg and latency.svg into `dir`.
pub(crate) fn write_all(dir: &Path, report: &Report) -> Result<(), CoreError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| CoreError::Failed(format!("cannot encode the results: {e}")))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| io_err("write", &path, e))
    };
    write("results.json", &json)?;
    write("results.csv", &csv(&report.runs))?;
    let series = series(&report.runs);
    let throughput = dir.join("throughput.svg");
    plot_throughput(&throughput, &series)
        .map_err(|e| CoreError::Failed(format!("cannot plot {}: {e}", throughput.display())))?;
    let latency = dir.join("latency.svg");
    plot_latency(&latency, &series)
        .map_err(|e| CoreError::Failed(format!("cannot plot {}: {e}", latency.display())))?;
    Ok(())
}

/// The runs of each workload, in the order first seen, sorted by clients.
fn series(runs: &[RunResult]) -> Vec<(String, Vec<&RunResult>)> {
    let mut out: Vec<(String, Vec<&RunResult>)> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|(name, _)| *name == r.workload) {
            Some((_, list)) => list.push(r),
            None => out.push((r.workload.clone(), vec![r])),
        }
    }
    for (_, list) in &mut out {
        list.sort_by_key(|r| r.clients);
    }
    out
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// One number of a run, as plotted.
type Metric = fn(&RunResult) -> f64;

/// Clients on a logarithmic axis (counts usually double from one run to the next).
fn x_range(series: &[(String, Vec<&RunResult>)]) -> std::ops::Range<f64> {
    let counts = || {
        series
            .iter()
            .flat_map(|(_, l)| l.iter().map(|r| r.clients as f64))
    };
    let min = counts().fold(f64::MAX, f64::min).max(1.0);
    let max = counts().fold(1.0, f64::max);
    (min / 1.25)..(max * 1.25).max(min * 2.0)
}

fn plot_throughput(path: &Path, series: &[(String, Vec<&RunResult>)]) -> PlotResult {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = "Throughput (successful requests per second)";
    panel(&root, title, "ops/s", series, |r| r.ops_per_s)?;
    root.present()?;
    Ok(())
}

fn plot_latency(path: &Path, series: &[(String, Vec<&RunResult>)]) -> PlotResult {
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let pick: [(&str, Metric); 2] = [
        ("Latency p50 (ms)", |r| r.p50_ms),
        ("Latency p99 (ms)", |r| r.p99_ms),
    ];
    for (area, (title, value)) in panels.iter().zip(pick) {
        panel(area, title, "ms", series, value)?;
    }
    root.present()?;
    Ok(())
}

/// One chart on `area`: `value` of every workload's runs against clients (a
/// logarithmic axis), a line with points per workload, and a legend.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    series: &[(String, Vec<&RunResult>)],
    value: Metric,
) -> PlotResult {
    let top = series
        .iter()
        .flat_map(|(_, l)| l.iter().map(|r| value(r)))
        .fold(0.1f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range(series).log_scale(), 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc(unit)
        .draw()?;
    for (i, (name, runs)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = runs.iter().map(|r| (r.clients as f64, value(r))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(workload: &str, clients: usize, ops_per_s: f64) -> RunResult {
        RunResult {
            workload: workload.into(),
            target: "leader".into(),
            addr: "127.0.0.1:1".into(),
            clients,
            duration_s: 1.0,
            ops: ops_per_s as u64,
            errors: 0,
            ops_per_s,
            rows_per_s: ops_per_s,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 3.0,
            max_ms: 4.0,
            first_error: None,
            cpu_ms_per_1k_ops: Some(12.0),
            disk_bytes_per_op: None,
            max_rss_mib: Some(30.0),
        }
    }

    #[test]
    fn every_file_is_written_and_plots_name_each_workload() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            started_unix: 0,
            version: "test",
            machine: Machine::here(),
            cluster: "local",
            nodes: 3,
            warmup_s: 0.0,
            duration_s: 1.0,
            idle_rss_mib: None,
            runs: vec![
                run("write", 8, 900.0),
                run("write", 1, 100.0),
                run("read-x", 1, 50.0),
            ],
        };
        write_all(dir.path(), &report).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["runs"].as_array().unwrap().len(), 3);
        for plot in ["throughput.svg", "latency.svg"] {
            let svg = std::fs::read_to_string(dir.path().join(plot)).unwrap();
            assert!(
                svg.starts_with("<svg"),
                "{plot}: {}",
                &svg[..40.min(svg.len())]
            );
            assert!(
                svg.contains("write") && svg.contains("read-x"),
                "{plot} has no legend"
            );
        }
        let table = table(&report.runs);
        assert!(table.lines().nth(1).unwrap().starts_with("write "));
    }
}
