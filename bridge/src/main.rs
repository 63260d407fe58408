//! `bridge edge|hub`: see the crate docs and `bridge/config/{edge,hub}.yaml`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    about = "Relays chosen ROS 2 topics between robots and a cloud hub over one link"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "BRIDGE_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// On the robot: join its DDS domain, link to one or more hubs.
    Edge(Args),
    /// In the cloud: accept robot links, republish under each robot's namespace.
    Hub(Args),
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Configuration file (YAML).
    #[arg(long, short, env = "BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustdds=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    // tracing-subscriber's `init` also routes the `log` records of rustdds into tracing.
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.mode {
        Mode::Edge(a) => {
            if a.print_default_config {
                print!("{}", bridge::config::EdgeConfig::default_yaml());
                return Ok(());
            }
            let cfg = bridge::app::load_edge(a.config.as_deref())?;
            if a.check {
                println!("configuration OK");
                return Ok(());
            }
            rt.block_on(bridge::app::run_edge(cfg))
        }
        Mode::Hub(a) => {
            if a.print_default_config {
                print!("{}", bridge::config::HubConfig::default_yaml());
                return Ok(());
            }
            let cfg = bridge::app::load_hub(a.config.as_deref())?;
            if a.check {
                println!("configuration OK");
                return Ok(());
            }
            rt.block_on(bridge::app::run_hub(cfg))
        }
    }
}
