//! `ros2-probe`: a ROS 2 peer built on the project's own layer (rustdds,
//! dynamic CDR), driven by the interop tests. The same CLI as
//! `tests/python/ros2peer.py`, so either side can be swapped.
//!
//! ```text
//! ros2-probe pub --topic rt/chatter --type std_msgs/msg/String --values-file v.json [--wait-readers 1] [--start-on-stdin]
//! ros2-probe sub --topic rt/chatter --type std_msgs/msg/String --count 3
//! ```
//! Progress goes to stderr (`READY`, `MATCHED n`, `WROTE i`); received
//! samples go to stdout as one JSON line each.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use ros2::cdr::{self, Endianness};
use ros2::dds::{
    DiscoveryRange, Durability, History, Participant, ParticipantConfig, Qos, Reliability,
};
use ros2::msg::Registry;
use ros2::names::TypeName;
use ros2::value::Value;

#[derive(Parser, Debug)]
#[command(about = "ROS 2 test peer on the project's own DDS layer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// DDS topic name, e.g. rt/chatter.
    #[arg(long)]
    topic: String,
    /// ROS type, e.g. std_msgs/msg/String.
    #[arg(long = "type")]
    type_name: String,
    #[arg(long, value_enum, default_value_t = Rel::Reliable)]
    reliability: Rel,
    #[arg(long, value_enum, default_value_t = Dur::Volatile)]
    durability: Dur,
    #[arg(long, default_value_t = 10)]
    depth: u32,
    /// DDS domain id (default: ROS_DOMAIN_ID or 0).
    #[arg(long, env = "ROS_DOMAIN_ID", default_value_t = 0)]
    domain: u16,
    /// Directories of extra .msg packages.
    #[arg(long = "extra-msg-dir")]
    extra_msg_dir: Vec<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, ValueEnum)]
enum Rel {
    Reliable,
    #[value(name = "best_effort")]
    BestEffort,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Dur {
    Volatile,
    #[value(name = "transient_local")]
    TransientLocal,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish the JSON values of a file (a JSON list).
    Pub(PubArgs),
    /// Print received samples as JSON lines.
    Sub {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
}

#[derive(clap::Args, Debug)]
struct PubArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    values_file: PathBuf,
    /// Wait until this many readers matched before writing.
    #[arg(long, default_value_t = 0)]
    wait_readers: usize,
    #[arg(long, default_value_t = 20.0)]
    match_timeout: f64,
    #[arg(long, default_value_t = 0.0)]
    interval_ms: f64,
    /// Keep running this many seconds after the last write.
    #[arg(long, default_value_t = 2.0)]
    linger: f64,
    /// Encode big-endian instead of little-endian.
    #[arg(long)]
    big_endian: bool,
    /// Wait for a line on stdin before writing.
    #[arg(long)]
    start_on_stdin: bool,
}

fn qos(c: &Common) -> Qos {
    Qos {
        reliability: match c.reliability {
            Rel::Reliable => Reliability::Reliable,
            Rel::BestEffort => Reliability::BestEffort,
        },
        durability: match c.durability {
            Dur::Volatile => Durability::Volatile,
            Dur::TransientLocal => Durability::TransientLocal,
        },
        history: History::KeepLast(c.depth),
        ..Qos::ros_default()
    }
}

fn setup(
    c: &Common,
) -> Result<(
    Participant,
    Registry,
    std::sync::Arc<ros2::msg::Layout>,
    String,
)> {
    let mut reg = Registry::bundled();
    for d in &c.extra_msg_dir {
        reg.load_dir(d)?;
    }
    let ty = TypeName::parse(&c.type_name)?;
    let layout = reg.layout(&ty)?;
    let participant = Participant::new(ParticipantConfig {
        domain_id: c.domain,
        discovery_range: DiscoveryRange::Subnet,
        only_networks: None,
    })?;
    Ok((participant, reg, layout, ty.to_dds()))
}

async fn run_pub(a: PubArgs) -> Result<()> {
    let PubArgs {
        common,
        values_file,
        wait_readers,
        match_timeout,
        interval_ms,
        linger,
        big_endian,
        start_on_stdin,
    } = a;
    let (participant, _reg, layout, dds_type) = setup(&common)?;
    let text = std::fs::read_to_string(&values_file)
        .with_context(|| format!("reading {}", values_file.display()))?;
    let values: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    let endian = if big_endian {
        Endianness::Big
    } else {
        Endianness::Little
    };
    let payloads = values
        .iter()
        .map(|j| {
            let v = Value::from_json(&layout, j)?;
            Ok(cdr::encode(&layout, &v, endian)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let writer = participant.writer(&common.topic, &dds_type, &qos(&common))?;
    if wait_readers > 0 {
        if !writer
            .wait_for_readers(wait_readers, Duration::from_secs_f64(match_timeout))
            .await
        {
            bail!(
                "only {} of {wait_readers} readers matched within {match_timeout}s",
                writer.matched_readers()
            );
        }
        eprintln!("MATCHED {}", writer.matched_readers());
    }
    if start_on_stdin {
        eprintln!("WAITING");
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        })
        .await?;
    }
    for (i, p) in payloads.into_iter().enumerate() {
        writer.write_async(p).await?;
        eprintln!("WROTE {i}");
        if interval_ms > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(interval_ms / 1000.0)).await;
        }
    }
    // A reliable writer stays until every matched reader acknowledged all
    // samples (repairs take heartbeat round trips on a loaded machine).
    if common.reliability == Rel::Reliable {
        match writer
            .wait_for_acknowledgments(Duration::from_secs(30))
            .await
        {
            Ok(true) => eprintln!("ACKED"),
            Ok(false) => eprintln!("NOT ACKED within 30 s"),
            Err(e) => eprintln!("ACK WAIT FAILED: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(linger)).await;
    drop(writer);
    participant.shutdown();
    Ok(())
}

async fn run_sub(common: Common, count: usize, timeout: f64) -> Result<()> {
    let (participant, _reg, layout, dds_type) = setup(&common)?;
    let mut reader = participant.reader(&common.topic, &dds_type, &qos(&common))?;
    eprintln!("READY");
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
    // Samples that arrive meanwhile wait in the reader's history.
    if reader
        .wait_for_writers(1, Duration::from_secs_f64(timeout))
        .await
    {
        eprintln!("MATCHED {}", reader.matched_writers());
    }
    let mut got = 0;
    while got < count {
        let sample = match tokio::time::timeout_at(deadline, reader.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => bail!("reader closed after {got} samples"),
            Err(_) => {
                eprintln!("TIMEOUT after {got} of {count} samples");
                std::process::exit(2);
            }
        };
        match cdr::decode(&layout, &sample.payload) {
            Ok(v) => {
                println!("{}", v.to_json());
                got += 1;
            }
            Err(e) => eprintln!("BAD SAMPLE: {e}"),
        }
    }
    drop(reader);
    participant.shutdown();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Pub(a) => run_pub(a).await,
        Cmd::Sub {
            common,
            count,
            timeout,
        } => run_sub(common, count, timeout).await,
    }
}
