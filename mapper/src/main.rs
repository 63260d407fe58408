//! `mapper`: the ros2 KubeEdge mapper. See `config/default.yaml` for every key.

use std::path::PathBuf;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use mapper::config::{BackendKind, MapperConfig, DEFAULT_CONFIG};

/// ROS 2 robots as KubeEdge devices: topic fields become device twins,
/// desired twins become published messages.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML).
    #[arg(
        long,
        short,
        env = "MAPPER_CONFIG",
        default_value = "/etc/kubeedge-ros2/mapper.yaml"
    )]
    config: PathBuf,
    /// Override the config's backend.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Ask the running mapper's `/healthz` (at the config's `http.listen`) and exit 0 when it
    /// answers 200: a container HEALTHCHECK for images without a shell or curl.
    #[arg(long)]
    healthcheck: bool,
}

fn init_logging(cfg: &MapperConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mapper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let mut cfg = MapperConfig::load(&args.config)?;
    if let Some(b) = args.backend {
        cfg.backend = b;
    }
    cfg.apply_env(|k| std::env::var(k).ok())?;
    cfg.validate()?;
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    if args.healthcheck {
        anyhow::ensure!(cfg.http.enabled, "http.enabled is false: nothing to ask");
        return mapper::http::healthcheck(cfg.http.listen, std::time::Duration::from_secs(3));
    }
    init_logging(&cfg);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(mapper::app::run(cfg))
}
