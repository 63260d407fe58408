//! The results of a benchmark run: table rows with their verdicts, latency samples and the
//! throughput points behind the plots, and the machine they ran on. Serialized as
//! `results.json`; the table and the plots are drawn from this alone.

use serde::{Deserialize, Serialize};

use crate::machine::Machine;

/// One row of the result table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// The measured value through the mapper or the bridge.
    pub value: String,
    /// The direct-DDS baseline measured in the same run (empty where there is none).
    pub baseline: String,
    /// `value / baseline` where meaningful (empty otherwise).
    pub ratio: String,
    /// The goal from the issue (empty for supporting rows).
    pub goal: String,
    /// Whether the goal was met; `None` for rows without a goal.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(name: &str, value: String, baseline: String, ratio: String, goal: &str) -> Self {
        Self {
            name: name.into(),
            value,
            baseline,
            ratio,
            goal: goal.into(),
            met: None,
        }
    }

    /// The same row with its verdict.
    #[must_use]
    pub fn met(mut self, met: bool) -> Self {
        self.met = Some(met);
        self
    }

    /// The verdict as the table shows it.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        }
    }
}

/// A titled group of rows (one per benchmark: mapper, bridge).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
}

/// Per-message latencies of one path, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend label, e.g. `bridge` or `direct DDS`.
    pub label: String,
    pub micros: Vec<f64>,
}

impl Series {
    pub fn new(label: &str, samples: &[std::time::Duration]) -> Self {
        Self {
            label: label.into(),
            micros: samples.iter().map(|d| d.as_secs_f64() * 1e6).collect(),
        }
    }
}

/// One latency-distribution plot: several paths measured in the same run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyChart {
    /// File stem of the plot (`latency_bridge` -> `latency_bridge.svg`).
    pub name: String,
    pub title: String,
    pub series: Vec<Series>,
}

/// Which way a sample went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Bridge,
    Direct,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::Bridge => "bridge",
            Via::Direct => "direct DDS",
        }
    }
}

/// Sustained reliable throughput of one message size on one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputPoint {
    /// Serialized message size in bytes (CDR header included).
    pub size: u64,
    pub via: Via,
    pub sent: u64,
    pub delivered: u64,
    pub msgs_per_s: f64,
    pub mib_per_s: f64,
    /// Median latency of the delivered samples, µs.
    pub p50_us: f64,
}

/// One step of the 64 B offered-rate sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub offered_hz: f64,
    pub via: Via,
    /// Delivered samples as a percentage of those written.
    pub delivered_pct: f64,
}

/// Everything one run produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The command line that produced them.
    pub command: String,
    pub machine: Option<Machine>,
    pub sections: Vec<Section>,
    pub notes: Vec<String>,
    pub latency: Vec<LatencyChart>,
    pub throughput: Vec<ThroughputPoint>,
    pub sweep: Vec<SweepPoint>,
}

impl Results {
    /// Appends `other`'s sections, notes and series.
    pub fn extend(&mut self, other: Results) {
        self.sections.extend(other.sections);
        self.notes.extend(other.notes);
        self.latency.extend(other.latency);
        self.throughput.extend(other.throughput);
        self.sweep.extend(other.sweep);
    }

    /// Rows with a goal: (met, missed).
    pub fn goal_counts(&self) -> (usize, usize) {
        let rows = self.sections.iter().flat_map(|s| &s.rows);
        rows.fold((0, 0), |(m, x), r| match r.met {
            Some(true) => (m + 1, x),
            Some(false) => (m, x + 1),
            None => (m, x),
        })
    }
}
