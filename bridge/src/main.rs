//! `bridge edge|hub`: see the crate docs and `bridge/config/{edge,hub}.yaml`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bridge::transport::{TlsClient, TlsServer};
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
    /// Validate the configuration, read every token and TLS file it names, and exit.
    #[arg(long)]
    check: bool,
    /// Ask the running bridge's `/healthz` (at the config's `http.listen`) and exit 0 when it
    /// answers 200: a container HEALTHCHECK for images without a shell or curl.
    #[arg(long)]
    healthcheck: bool,
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
                for up in &cfg.upstreams {
                    up.resolve_token(|k| std::env::var(k).ok())?;
                    if let Some(t) = &up.tls {
                        let ca = t.ca_file.as_deref().context("tls.ca_file")?;
                        let client = t
                            .client_cert_file
                            .as_deref()
                            .zip(t.client_key_file.as_deref());
                        TlsClient::from_pem_files(ca, client, t.server_name.clone())
                            .with_context(|| format!("upstreams[name={}].tls", up.name))?;
                    }
                }
                println!("configuration OK");
                return Ok(());
            }
            if a.healthcheck {
                return healthcheck(cfg.http.listen);
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
                cfg.token_table(|k| std::env::var(k).ok())?;
                if let Some(t) = &cfg.tls {
                    TlsServer::from_pem_files(
                        &t.cert_file,
                        &t.key_file,
                        t.client_ca_file.as_deref(),
                    )
                    .context("tls")?;
                }
                println!("configuration OK");
                return Ok(());
            }
            if a.healthcheck {
                return healthcheck(cfg.http.listen);
            }
            rt.block_on(bridge::app::run_hub(cfg))
        }
    }
}

/// `GET /healthz` on the running bridge (an unspecified listen address is asked on loopback);
/// `Ok` only for `200`. Blocking, std only.
fn healthcheck(listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let Some(mut addr) = listen else {
        anyhow::bail!("http.listen is null: nothing to ask");
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(3);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
    let mut status = [0u8; 12];
    s.read_exact(&mut status)?;
    match &status[8..12] {
        b" 200" => Ok(()),
        _ => anyhow::bail!("{addr}/healthz: {}", String::from_utf8_lossy(&status)),
    }
}
