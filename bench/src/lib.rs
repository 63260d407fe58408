//! `bench`: the project's benchmarks, each beside its direct-DDS baseline measured in the
//! same run, as one table with ratios, goals and verdicts, and as SVG plots. DDS stays on
//! loopback (LOCALHOST discovery range).
//!
//! ```text
//! cargo build --release -p bridge            # the hub binary of the bridge hub-scale run
//! cargo run --release -p bench -- all [--quick] [--out DIR]     # DIR defaults to target/bench
//! cargo run --release -p bench -- mapper|bridge [--quick] [--out DIR]
//! ```
//! Timings are measured here, never asserted in tests: machines are shared and noisy, so
//! compare ratios taken in the same run.
//!
//! # Layout
//!
//! - [`cli`]: the command line and what each subcommand runs;
//! - [`mapper`]: DDS sample -> twin report latency, and 1,000 properties at 10 Hz;
//! - [`bridge`]: the 64 B rate sweep, 1 kHz, 4 MiB clouds, latency, commands under load, the
//!   link alone, throughput by message size, hub scale;
//! - [`results`]: what a run produced (rows with verdicts, latency samples, throughput points);
//! - [`machine`]: the machine and date of a run;
//! - [`table`]: the Markdown table; [`plot`]: the SVG plots; [`report`]: the output directory
//!   (`table.md`, `results.json`, `*.svg`);
//! - [`stats`]: percentiles and process CPU/RSS readings.

#![forbid(unsafe_code)]

pub mod bridge;
pub mod cli;
pub mod machine;
pub mod mapper;
pub mod plot;
pub mod report;
pub mod results;
pub mod stats;
pub mod table;
