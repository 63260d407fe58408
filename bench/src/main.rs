//! `bench`: the project's benchmarks, each beside its direct-DDS baseline,
//! printed as a table. DDS stays on loopback (LOCALHOST discovery range).
//!
//! ```text
//! cargo run --release -p bench -- mapper     # mapper latency and load
//! cargo build --release -p bridge            # the hub binary of the bridge hub-scale run
//! cargo run --release -p bench -- bridge [--quick]
//! cargo run --release -p bench -- all [--quick]
//! ```
//! Timings are measured here, never asserted in tests: machines are shared
//! and noisy, so compare ratios taken in the same run.

mod bridge;
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

/// Arguments of `all`: every benchmark's.
#[derive(clap::Args, Debug, Clone)]
struct AllArgs {
    #[command(flatten)]
    mapper: mapper::MapperArgs,
    #[command(flatten)]
    bridge: bridge::BridgeArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every benchmark.
    All(AllArgs),
    /// The mapper: DDS sample -> twin report latency, and 1,000 properties at 10 Hz.
    Mapper(mapper::MapperArgs),
    /// The bridge: throughput, large messages, latency, priorities, hub scale.
    Bridge(bridge::BridgeArgs),
    /// (internal) the mapper load benchmark, run as a child process.
    #[command(hide = true)]
    MapperLoad(mapper::MapperArgs),
    /// (internal) the publishers of the mapper load benchmark, run as a child process.
    #[command(hide = true)]
    MapperPublish(mapper::PublishArgs),
}

/// Prints the command line that produced this output.
fn print_command() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("$ cargo run --release -p bench -- {}", args.join(" "));
}

fn run_bridge(rt: &tokio::runtime::Runtime, a: bridge::BridgeArgs) -> Result<()> {
    let (rows, notes) = rt.block_on(bridge::run(a))?;
    stats::print_table("bridge", &rows);
    println!();
    for n in notes {
        println!("- {n}");
    }
    Ok(())
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
        Cmd::All(a) => {
            print_command();
            let rows = rt.block_on(mapper::run(a.mapper))?;
            stats::print_table("mapper", &rows);
            run_bridge(&rt, a.bridge)?;
        }
        Cmd::Mapper(a) => {
            let rows = rt.block_on(mapper::run(a))?;
            stats::print_table("mapper", &rows);
        }
        Cmd::Bridge(a) => {
            print_command();
            run_bridge(&rt, a)?;
        }
        Cmd::MapperLoad(a) => rt.block_on(mapper::load_main(a))?,
        Cmd::MapperPublish(a) => rt.block_on(mapper::publish(a))?,
    }
    Ok(())
}
