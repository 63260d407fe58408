//! The command line: `all`, `mapper`, `bridge` (each prints the table and writes the output
//! directory) and the hidden child-process commands of the mapper load run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::machine::Machine;
use crate::results::Results;
use crate::{bridge, mapper, report, table};

#[derive(Parser, Debug)]
#[command(about = "kubeedge-ros2 benchmarks, each beside direct DDS measured in the same run")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Options of every benchmark command.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Shorter runs (a fast smoke run of everything).
    #[arg(long)]
    pub quick: bool,
    /// Where `table.md`, `results.json` and the SVG plots go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// Arguments of `all`: every benchmark's.
#[derive(clap::Args, Debug, Clone)]
pub struct AllArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub mapper: mapper::MapperArgs,
    #[command(flatten)]
    pub bridge: bridge::BridgeArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MapperCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub mapper: mapper::MapperArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BridgeCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub bridge: bridge::BridgeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Every benchmark, one table and every plot.
    All(AllArgs),
    /// The mapper: DDS sample -> twin report latency, and 1,000 properties at 10 Hz.
    Mapper(MapperCmd),
    /// The bridge: rate sweep, 1 kHz, clouds, latency, priorities, throughput by size, hub scale.
    Bridge(BridgeCmd),
    /// (internal) the mapper load benchmark, run as a child process.
    #[command(hide = true)]
    MapperLoad(MapperCmd),
    /// (internal) the publishers of the mapper load benchmark, run as a child process.
    #[command(hide = true)]
    MapperPublish(mapper::PublishArgs),
}

/// The command line that produced this output.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p bench -- {}", args.join(" "))
}

/// Prints the report and writes the output directory.
fn finish(common: &Common, r: &Results) -> Result<()> {
    println!("{}", table::markdown_report(r));
    let files = report::write(&common.out, r)
        .with_context(|| format!("writing the report to {}", common.out.display()))?;
    println!("Written:");
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<()> {
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
    let start = || Results {
        command: command_line(),
        machine: Some(Machine::current()),
        ..Results::default()
    };
    match cli.cmd {
        Cmd::All(a) => {
            let mut r = start();
            let quick = a.common.quick;
            eprintln!("mapper benchmarks ...");
            r.extend(rt.block_on(mapper::run(a.mapper, quick))?);
            eprintln!("bridge benchmarks ...");
            r.extend(rt.block_on(bridge::run(a.bridge, quick))?);
            finish(&a.common, &r)?;
        }
        Cmd::Mapper(a) => {
            let mut r = start();
            r.extend(rt.block_on(mapper::run(a.mapper, a.common.quick))?);
            finish(&a.common, &r)?;
        }
        Cmd::Bridge(a) => {
            let mut r = start();
            r.extend(rt.block_on(bridge::run(a.bridge, a.common.quick))?);
            finish(&a.common, &r)?;
        }
        Cmd::MapperLoad(a) => rt.block_on(mapper::load_main(a.mapper, a.common.quick))?,
        Cmd::MapperPublish(a) => rt.block_on(mapper::publish(a))?,
    }
    Ok(())
}
