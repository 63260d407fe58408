//! Writes a run's output directory: `table.md`, `results.json` and the SVG plots.

use std::path::{Path, PathBuf};

use crate::plot::{self, PlotError};
use crate::results::Results;
use crate::table;

/// File names of the fixed outputs.
pub const TABLE: &str = "table.md";
pub const JSON: &str = "results.json";
pub const THROUGHPUT_PLOT: &str = "throughput_by_size.svg";
pub const SWEEP_PLOT: &str = "rate_sweep_64b.svg";

/// Why the output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding the results as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plotting {path}: {source}")]
    Plot { path: PathBuf, source: PlotError },
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes everything `r` has into `dir` (created if missing); returns the files written.
/// Plots whose data is missing (e.g. a `mapper`-only run has no throughput) are skipped.
pub fn write(dir: &Path, r: &Results) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let path = dir.join(TABLE);
    write_file(&path, &table::markdown_report(r))?;
    written.push(path);
    let path = dir.join(JSON);
    write_file(&path, &serde_json::to_string_pretty(r)?)?;
    written.push(path);

    let mut plot = |name: String, draw: &dyn Fn(&Path) -> Result<(), PlotError>| {
        let path = dir.join(name);
        match draw(&path) {
            Ok(()) => {
                written.push(path);
                Ok(())
            }
            Err(PlotError::Empty) => Ok(()),
            Err(source) => Err(ReportError::Plot { path, source }),
        }
    };
    for chart in &r.latency {
        plot(format!("{}.svg", chart.name), &|p| plot::latency(p, chart))?;
    }
    plot(THROUGHPUT_PLOT.into(), &|p| {
        plot::throughput(p, &r.throughput)
    })?;
    plot(SWEEP_PLOT.into(), &|p| plot::sweep(p, &r.sweep))?;
    Ok(written)
}
