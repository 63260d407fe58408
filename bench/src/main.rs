//! `bench`: the project's benchmarks, each beside its direct-DDS baseline,
//! printed as a table. DDS stays on loopback (LOCALHOST discovery range).
//!
//! ```text
//! cargo run --release -p bench -- mapper     # mapper latency and load
//! cargo run --release -p bench -- all
//! ```
//! Timings are measured here, never asserted in tests: machines are shared
//! and noisy, so compare ratios taken in the same run.

mod mapper;
mod stats;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "kubeedge-ros2 benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every benchmark.
    All(mapper::MapperArgs),
    /// The mapper: DDS sample -> twin report latency, and 1,000 properties at 10 Hz.
    Mapper(mapper::MapperArgs),
    /// (internal) the mapper load benchmark, run as a child process.
    #[command(hide = true)]
    MapperLoad(mapper::MapperArgs),
    /// (internal) the publishers of the mapper load benchmark, run as a child process.
    #[command(hide = true)]
    MapperPublish(mapper::PublishArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rustdds=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match Cli::parse().cmd {
        Cmd::All(a) | Cmd::Mapper(a) => {
            let rows = rt.block_on(mapper::run(a))?;
            stats::print_table("mapper", &rows);
        }
        Cmd::MapperLoad(a) => rt.block_on(mapper::load_main(a))?,
        Cmd::MapperPublish(a) => rt.block_on(mapper::publish(a))?,
    }
    Ok(())
}
