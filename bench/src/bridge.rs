//! Bridge benchmarks, each beside direct rustdds in the same run.
//!
//! Items 1-4 run an edge (robot domain A) and a hub (cloud domain B) in this process, through
//! the library (`bridge::edge::start`, `bridge::hub::start`) on a tokio runtime of their own,
//! linked over TCP on 127.0.0.1. Publishers live in domain A; the "direct" subscribers in domain
//! A, the "via bridge" subscribers in domain B on `/robot1/<topic>`. Every participant uses the
//! LOCALHOST discovery range (unicast to 127.0.0.1 ports), like the mapper benchmark.
//!
//! 1. 64 B reliable messages published as fast as the reliable writer allows, then a 1 kHz topic.
//! 2. 4 MiB `sensor_msgs/msg/PointCloud2` samples at 30 Hz.
//! 3. End-to-end latency at 100 Hz, 64 B (send time inside the payload, one clock).
//! 4. p99 latency of a 100 Hz priority-0 command topic while 4 MiB clouds at 30 Hz
//!    (priority 7) share the link; and the same through the link alone (no DDS).
//! 5. Reliable throughput by message size (64 B to 4 MiB), direct then via the bridge: a
//!    closed loop keeps a window of messages in flight (about 4 MiB, 2..=200 messages).
//! 6. Hub scale: the `bridge hub` binary as a child process with 200 robot tokens, fed by 200
//!    simulated robot links from this process (the session driver plus ANNOUNCE/DATA frames).
//!
//! Every payload starts its data with `[seq u64 LE][send time u64 LE, ns since BASE]`; seq 0
//! marks warm-up samples, which are published until each subscriber got one (so the
//! measurement starts with every path matched end to end) and are not counted.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use ros2::cdr::{self, Endianness};
use ros2::dds::{Participant, ParticipantConfig, Qos, RawReader, RawWriter};
use ros2::msg::Registry;
use ros2::value::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::results::{
    LatencyChart, Results, Row, Section, Series, SweepPoint, ThroughputPoint, Via,
};
use crate::stats::{fmt_dur, percentile};

/// Arguments of `bench bridge`.
#[derive(clap::Args, Debug, Clone)]
pub struct BridgeArgs {
    /// Simulated robot links in the hub-scale run.
    #[arg(long, default_value_t = 200)]
    pub links: usize,
    /// The `bridge` binary for the hub-scale run. Default: `bridge` beside this executable
    /// (`target/release/bridge`; build it with `cargo build --release -p bridge`).
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
}

/// Durations of the runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    burst: Duration,
    khz: Duration,
    cloud: Duration,
    latency_samples: u64,
    mixed: Duration,
    scale: Duration,
    /// Per message size and path in the throughput run.
    size_step: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                burst: Duration::from_secs(2),
                khz: Duration::from_secs(2),
                cloud: Duration::from_secs(2),
                latency_samples: 300,
                mixed: Duration::from_secs(3),
                scale: Duration::from_secs(8),
                size_step: Duration::from_secs(1),
            }
        } else {
            Self {
                burst: Duration::from_secs(5),
                khz: Duration::from_secs(5),
                cloud: Duration::from_secs(5),
                latency_samples: 1000,
                mixed: Duration::from_secs(5),
                scale: Duration::from_secs(20),
                size_step: Duration::from_secs(3),
            }
        }
    }
}

/// The clock every payload's send time is taken on.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// DDS domains of this run: robot side, cloud side, hub-scale. Kept below the mapper
/// benchmark's range (130..), and varied by pid so parallel runs rarely meet.
fn domains() -> (u16, u16, u16) {
    let b = (std::process::id() % 39) as u16 * 3 + 10;
    (b, b + 1, b + 2)
}

const ROBOT: &str = "robot1";
const TOKEN: &str = "bench-robot1-token-0123456789";
/// DDS type of the small messages.
const SMALL_TYPE: &str = "std_msgs::msg::dds_::UInt8MultiArray_";
/// Offset of the data bytes in a small message: encapsulation header, empty `layout.dim`,
/// `layout.data_offset`, the data length.
const SMALL_DATA_AT: usize = 16;

/// A `std_msgs/msg/UInt8MultiArray` of exactly `size` bytes (at least 32) whose data starts
/// with `seq` and the send time.
fn small_payload(seq: u64, size: usize) -> Bytes {
    let size = size.max(SMALL_DATA_AT + 16);
    let n = (size - SMALL_DATA_AT) as u32;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(&[0, 1, 0, 0]); // CDR little endian
    b.extend_from_slice(&0u32.to_le_bytes()); // layout.dim: empty
    b.extend_from_slice(&0u32.to_le_bytes()); // layout.data_offset
    b.extend_from_slice(&n.to_le_bytes()); // data length
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&now_ns().to_le_bytes());
    b.resize(size, 0xa5);
    Bytes::from(b)
}

/// `(seq, send time)` from a payload whose stamp is at `at`.
fn stamp_at(payload: &[u8], at: usize) -> Option<(u64, u64)> {
    let seq = payload.get(at..at + 8)?;
    let t = payload.get(at + 8..at + 16)?;
    Some((
        u64::from_le_bytes(seq.try_into().ok()?),
        u64::from_le_bytes(t.try_into().ok()?),
    ))
}

/// A 4 MiB `sensor_msgs/msg/PointCloud2` (x, y, z, intensity float32 points), encoded once;
/// [`CloudTemplate::sample`] patches the stamp into the first 16 bytes of `data`.
#[derive(Debug, Clone)]
struct CloudTemplate {
    bytes: Vec<u8>,
    data_at: usize,
    type_name: String,
}

impl CloudTemplate {
    fn new(total: usize) -> Result<Self> {
        let reg = Registry::bundled();
        let layout = reg.layout_of("sensor_msgs/msg/PointCloud2")?;
        let point_step = 16u32;
        let field = |name: &str, offset: u32| {
            Value::Struct(vec![
                ("name".into(), Value::String(name.into())),
                ("offset".into(), Value::U32(offset)),
                ("datatype".into(), Value::U8(7)), // FLOAT32
                ("count".into(), Value::U32(1)),
            ])
        };
        let build = |points: u32| -> Result<Vec<u8>> {
            let mut v = layout.default_value();
            let set = |v: &mut Value, p: &str, x: Value| -> Result<()> {
                v.set_path(&p.parse::<ros2::value::FieldPath>()?, x)?;
                Ok(())
            };
            set(&mut v, "header.frame_id", Value::String("lidar".into()))?;
            set(&mut v, "height", Value::U32(1))?;
            set(&mut v, "width", Value::U32(points))?;
            set(
                &mut v,
                "fields",
                Value::Array(vec![
                    field("x", 0),
                    field("y", 4),
                    field("z", 8),
                    field("intensity", 12),
                ]),
            )?;
            set(&mut v, "point_step", Value::U32(point_step))?;
            set(&mut v, "row_step", Value::U32(points * point_step))?;
            set(
                &mut v,
                "data",
                Value::Bytes(vec![0x3c; (points * point_step) as usize]),
            )?;
            set(&mut v, "is_dense", Value::Bool(true))?;
            Ok(cdr::encode(&layout, &v, Endianness::Little)?)
        };
        let overhead = build(0)?.len();
        let points = (total.saturating_sub(overhead) / point_step as usize).max(1) as u32;
        let bytes = build(points)?;
        // `data` is followed only by `is_dense` (one byte).
        let data_at = bytes.len() - 1 - (points * point_step) as usize;
        Ok(Self {
            bytes,
            data_at,
            type_name: layout.dds_type_name(),
        })
    }

    fn sample(&self, seq: u64) -> Bytes {
        let mut b = self.bytes.clone();
        b[self.data_at..self.data_at + 8].copy_from_slice(&seq.to_le_bytes());
        b[self.data_at + 8..self.data_at + 16].copy_from_slice(&now_ns().to_le_bytes());
        Bytes::from(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Receivers and publishers.

/// What one subscriber got.
#[derive(Debug, Default)]
struct Received {
    /// Samples counted (seq > 0).
    count: u64,
    /// Latencies of counted samples.
    lat: Vec<Duration>,
    /// When the first and last counted samples arrived.
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Received {
    /// Counted samples per second, from the first send to the last arrival.
    fn rate(&self, started: Instant) -> f64 {
        match self.last {
            Some(l) if l > started => self.count as f64 / (l - started).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// How a publisher tells its receivers it is done.
#[derive(Debug, Clone, Default)]
struct Progress {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

/// Receives on `reader` (stamp at `at`): signals `ready` at the first warm-up sample, then
/// counts samples until the publisher is done and either everything sent arrived or nothing
/// came for `idle`.
fn receive(
    mut reader: RawReader,
    at: usize,
    progress: Progress,
    idle: Duration,
) -> (oneshot::Receiver<()>, JoinHandle<Received>) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut r = Received::default();
        loop {
            if progress.done.load(Ordering::Acquire)
                && r.count >= progress.sent.load(Ordering::Acquire)
            {
                break;
            }
            match tokio::time::timeout(idle, reader.recv()).await {
                Ok(Some(s)) => {
                    let arrived = Instant::now();
                    let t = now_ns();
                    let Some((seq, sent)) = stamp_at(&s.payload, at) else {
                        continue;
                    };
                    if seq == 0 {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    r.count += 1;
                    r.lat.push(Duration::from_nanos(t.saturating_sub(sent)));
                    r.first.get_or_insert(arrived);
                    r.last = Some(arrived);
                }
                Ok(None) => break,
                Err(_) if progress.done.load(Ordering::Acquire) => break,
                Err(_) => {}
            }
        }
        r
    });
    (ready_rx, task)
}

/// Publishes warm-up samples (seq 0) every 20 ms until every receiver got one.
async fn warm_up(
    w: &RawWriter,
    make: &(dyn Fn(u64) -> Bytes + Sync),
    ready: Vec<oneshot::Receiver<()>>,
) -> Result<()> {
    let all = futures_join(ready);
    tokio::pin!(all);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = &mut all => return Ok(()),
            _ = tokio::time::sleep_until(deadline) => {
                bail!("{}: the subscribers got no warm-up sample within 30 s", w.topic())
            }
            _ = tick.tick() => {
                let _ = w.write_async(make(0)).await;
            }
        }
    }
}

/// Waits for every oneshot (a dropped sender counts as done).
async fn futures_join(rx: Vec<oneshot::Receiver<()>>) {
    for r in rx {
        let _ = r.await;
    }
}

/// How a publisher paces its samples.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// At `hz` for this long.
    Rate(f64, Duration),
}

/// Publishes seq 1.. per `pace`; returns (written, write errors, start).
async fn publish(
    w: &RawWriter,
    make: &(dyn Fn(u64) -> Bytes + Sync),
    pace: Pace,
    progress: &Progress,
) -> (u64, u64, Instant) {
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    match pace {
        Pace::Rate(hz, d) => {
            let n = (hz * d.as_secs_f64()).round() as u64;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
            for _ in 0..n {
                tick.tick().await;
                match w.write_async(make(sent + 1)).await {
                    Ok(()) => {
                        sent += 1;
                        progress.sent.store(sent, Ordering::Release);
                    }
                    Err(_) => errors += 1,
                }
            }
        }
    }
    progress.done.store(true, Ordering::Release);
    (sent, errors, start)
}

/// One publisher and its subscribers, run to the end.
struct Run {
    sent: u64,
    errors: u64,
    start: Instant,
    elapsed: Duration,
    got: Vec<Received>,
}

async fn run_one(
    w: &RawWriter,
    readers: Vec<RawReader>,
    at: usize,
    make: &(dyn Fn(u64) -> Bytes + Sync),
    pace: Pace,
    idle: Duration,
) -> Result<Run> {
    let progress = Progress::default();
    let mut ready = Vec::new();
    let mut tasks = Vec::new();
    for r in readers {
        let (rx, t) = receive(r, at, progress.clone(), idle);
        ready.push(rx);
        tasks.push(t);
    }
    warm_up(w, make, ready).await?;
    let (sent, errors, start) = publish(w, make, pace, &progress).await;
    let elapsed = start.elapsed();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await?);
    }
    Ok(Run {
        sent,
        errors,
        start,
        elapsed,
        got,
    })
}

// ---------------------------------------------------------------------------------------------
// The in-process bridge.

/// An edge and a hub on a runtime of their own.
struct InProcess {
    rt: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    edge: Option<bridge::edge::EdgeRuntime>,
    hub: Option<bridge::hub::HubRuntime>,
}

fn hub_yaml_one(domain: u16) -> String {
    format!(
        "listen: 127.0.0.1:0\n\
         dds: {{ domain_id: {domain}, discovery_range: localhost, only_networks: [127.0.0.1] }}\n\
         robots:\n  - robot: {ROBOT}\n    namespace: /{ROBOT}\n    token: {TOKEN}\n\
         shared: []\n\
         http: {{ listen: null }}\n"
    )
}

fn edge_yaml(domain: u16, hub: SocketAddr) -> String {
    format!(
        "robot: {ROBOT}\n\
         dds: {{ domain_id: {domain}, discovery_range: localhost, only_networks: [127.0.0.1] }}\n\
         upstreams:\n\
         \x20 - name: cloud\n\
         \x20   address: {hub}\n\
         \x20   token: {TOKEN}\n\
         \x20   reconnect: {{ initial_ms: 200, max_ms: 2000 }}\n\
         \x20   up:\n\
         \x20     allow: ['re:^/bench/b/.*$']\n\
         \x20     topics:\n\
         \x20       - match: /bench/b/cmd\n\
         \x20         priority: 0\n\
         \x20       - match: 're:^/bench/b/cloud.*$'\n\
         \x20         priority: 7\n\
         http: {{ listen: null }}\n"
    )
}

impl InProcess {
    async fn start(robot_domain: u16, cloud_domain: u16) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bridge")
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let hub_cfg = bridge::config::HubConfig::from_yaml_str(&hub_yaml_one(cloud_domain))?;
        hub_cfg.validate()?;
        let s = shutdown.clone();
        let hub = rt
            .spawn(async move {
                bridge::hub::start(hub_cfg, bridge::metrics::Metrics::new("hub"), s).await
            })
            .await??;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, hub.local_addr.port()));
        let edge_cfg = bridge::config::EdgeConfig::from_yaml_str(&edge_yaml(robot_domain, addr))?;
        edge_cfg.validate()?;
        let s = shutdown.clone();
        let edge = rt
            .spawn(async move {
                bridge::edge::start(edge_cfg, bridge::metrics::Metrics::new("edge"), s).await
            })
            .await??;
        let mut me = Self {
            rt: Some(rt),
            shutdown,
            edge: Some(edge),
            hub: Some(hub),
        };
        let mut conn = me
            .edge
            .as_ref()
            .and_then(|e| e.connectors.first())
            .map(|(_, c)| c.clone())
            .ok_or_else(|| anyhow!("the edge has no connector"))?;
        let up = tokio::time::timeout(
            Duration::from_secs(20),
            conn.wait_for(|c| c.state == "connected"),
        )
        .await;
        if !matches!(up, Ok(Ok(_))) {
            me.stop();
            bail!("the edge did not connect to the hub within 20 s");
        }
        Ok(me)
    }

    fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(e) = self.edge.take() {
            e.participant.shutdown();
        }
        self.hub.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Participants of the measurement side (publishers and subscribers).
struct Peers {
    robot: Participant,
    /// Direct subscribers: a participant of their own (rustdds does not deliver within one).
    robot_sub: Participant,
    cloud: Participant,
}

impl Peers {
    fn new(robot_domain: u16, cloud_domain: u16) -> Result<Self> {
        Ok(Self {
            robot: Participant::new(ParticipantConfig::localhost(robot_domain))?,
            robot_sub: Participant::new(ParticipantConfig::localhost(robot_domain))?,
            cloud: Participant::new(ParticipantConfig::localhost(cloud_domain))?,
        })
    }

    /// Writer in the robot domain on ROS topic `name`.
    fn writer(&self, name: &str, ty: &str, qos: &Qos) -> Result<RawWriter> {
        Ok(self.robot.writer(&format!("rt{name}"), ty, qos)?)
    }

    /// Reader in the robot domain on `name` (direct DDS).
    fn direct(&self, name: &str, ty: &str, qos: &Qos) -> Result<RawReader> {
        Ok(self.robot_sub.reader(&format!("rt{name}"), ty, qos)?)
    }

    /// Reader in the cloud domain on the hub's `/robot1<name>` (via the bridge).
    fn via(&self, name: &str, ty: &str, qos: &Qos) -> Result<RawReader> {
        Ok(self.cloud.reader(&format!("rt/{ROBOT}{name}"), ty, qos)?)
    }

    fn shutdown(self) {
        self.robot.shutdown();
        self.robot_sub.shutdown();
        self.cloud.shutdown();
    }
}

fn ratio(x: f64, y: f64) -> String {
    if y <= 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", x / y)
    }
}

fn lost(r: &Received, sent: u64) -> String {
    format!("lost {}", sent.saturating_sub(r.count))
}

// ---------------------------------------------------------------------------------------------
// The runs.

/// Runs every bridge benchmark: one section of rows, the notes, the latency charts, the
/// throughput points and the 64 B sweep.
pub async fn run(a: BridgeArgs, quick: bool) -> Result<Results> {
    let plan = Plan::new(quick);
    let _ = base();
    let (da, db, dc) = domains();
    let mut out = Results::default();
    let mut rows = Vec::new();
    out.notes = vec![
        format!(
            "Bridge items 1-5: edge (domain {da}) and hub (domain {db}) in the bench process via the library, \
             on their own 2-thread tokio runtime, linked over TCP on 127.0.0.1; publishers and \
             subscribers are rustdds participants in the same process (LOCALHOST discovery)."
        ),
        "msg/s = samples received / (last arrival - first send); direct and bridged runs of the 4 MiB clouds and of the throughput by size are sequential, the 64 B sweep, 1 kHz, latency and command runs measure the same samples both ways at once.".into(),
    ];
    let mut bridge = InProcess::start(da, db)
        .await
        .context("starting the edge and hub")?;
    let peers = Peers::new(da, db)?;
    let r = async {
        let (r, sweep) = burst(&peers, plan).await.context("64 B burst")?;
        rows.extend(r);
        out.sweep = sweep;
        rows.extend(khz(&peers, plan).await.context("1 kHz")?);
        // Where a loss at 1 kHz happened: the hub's count of messages it wrote to DDS.
        if let Some(h) = &bridge.hub {
            let written: u64 = h
                .links()
                .into_iter()
                .flat_map(|(_, s)| s.routes)
                .filter(|r| r.route.contains("/bench/b/khz"))
                .map(|r| r.messages)
                .sum();
            rows.push(Row::new(
                "  1 kHz: messages the hub wrote to its DDS writer (incl. warm-up samples)",
                written.to_string(),
                String::new(),
                String::new(),
                "",
            ));
        }
        rows.extend(clouds(&peers, plan).await.context("4 MiB clouds")?);
        let (r, chart) = latency(&peers, plan).await.context("latency")?;
        rows.extend(r);
        out.latency.push(chart);
        let (r, mut commands) = mixed(&peers, plan)
            .await
            .context("commands under cloud load")?;
        rows.extend(r);
        let (r, link) = link_only(plan).await.context("link only")?;
        rows.extend(r);
        commands.series.push(link);
        out.latency.push(commands);
        let (r, points) = by_size(&peers, plan).await.context("throughput by size")?;
        rows.extend(r);
        out.throughput = points;
        anyhow::Ok(())
    }
    .await;
    peers.shutdown();
    bridge.stop();
    r?;
    match hub_scale(&a, plan, dc).await {
        Ok((r, n)) => {
            rows.extend(r);
            out.notes.extend(n);
        }
        Err(e) => {
            rows.push(Row::new(
                "hub scale",
                format!("FAILED: {e:#}"),
                String::new(),
                String::new(),
                "",
            ));
        }
    }
    out.sections.push(Section {
        title: "bridge".into(),
        rows,
    });
    Ok(out)
}

fn small(seq: u64) -> Bytes {
    small_payload(seq, 64)
}

/// Offered rates of the 64 B sweep, msg/s.
const SWEEP: [f64; 5] = [2_000.0, 5_000.0, 10_000.0, 20_000.0, 40_000.0];

/// 1a. 64 B reliable message rate: the same samples offered at rising rates to a direct
/// subscriber and through the bridge at once; the rate of each is the highest offered rate it
/// delivered (>= 99 %). A publisher writing flat out (no pacing) only measures how fast the
/// writer can overwrite its own keep-last history, so the load is paced.
async fn burst(p: &Peers, plan: Plan) -> Result<(Vec<Row>, Vec<SweepPoint>)> {
    let qos = Qos::ros_default().with_history(ros2::dds::History::KeepLast(1000));
    let mut rows = Vec::new();
    let mut sweep = Vec::new();
    let (mut best_b, mut best_d) = (0.0f64, 0.0f64);
    for (i, hz) in SWEEP.iter().copied().enumerate() {
        let name = format!("/bench/b/rate{i}");
        let w = p.writer(&name, SMALL_TYPE, &qos)?;
        let readers = vec![
            p.via(&name, SMALL_TYPE, &qos)?,
            p.direct(&name, SMALL_TYPE, &qos)?,
        ];
        let run = run_one(
            &w,
            readers,
            SMALL_DATA_AT,
            &small,
            Pace::Rate(hz, plan.burst),
            Duration::from_secs(2),
        )
        .await?;
        drop(w);
        let (b, d) = (&run.got[0], &run.got[1]);
        let frac = |r: &Received| r.count as f64 / run.sent.max(1) as f64;
        if frac(b) >= 0.99 {
            best_b = best_b.max(hz);
        }
        if frac(d) >= 0.99 {
            best_d = best_d.max(hz);
        }
        let offered = run.sent as f64 / run.elapsed.as_secs_f64();
        for (via, r) in [(Via::Bridge, b), (Via::Direct, d)] {
            sweep.push(SweepPoint {
                offered_hz: hz,
                via,
                delivered_pct: 100.0 * frac(r),
            });
        }
        rows.push(Row::new(
            &format!("  64 B reliable offered at {hz:.0} msg/s ({offered:.0} achieved): delivered"),
            format!("{:.1} % (p99 {})", 100.0 * frac(b), p99_of(b)),
            format!("{:.1} % (p99 {})", 100.0 * frac(d), p99_of(d)),
            ratio(frac(b), frac(d)),
            "",
        ));
        if frac(b) < 0.5 && frac(d) < 0.5 {
            break;
        }
    }
    rows.insert(
        0,
        Row::new(
            &format!(
                "64 B reliable message rate: highest offered rate delivered >= 99 % ({} s per step)",
                plan.burst.as_secs()
            ),
            format!("{best_b:.0} msg/s"),
            format!("{best_d:.0} msg/s"),
            ratio(best_b, best_d),
            "≥ 0.9x",
        )
        .met(best_d > 0.0 && best_b >= 0.9 * best_d),
    );
    Ok((rows, sweep))
}

fn p99_of(r: &Received) -> String {
    let mut l = r.lat.clone();
    if l.is_empty() {
        return "-".into();
    }
    l.sort_unstable();
    let d = l[(l.len() * 99 / 100).min(l.len() - 1)];
    if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// 1b. 64 B reliable at 1 kHz, the same samples direct and via the bridge.
async fn khz(p: &Peers, plan: Plan) -> Result<Vec<Row>> {
    let qos = Qos::ros_default();
    let w = p.writer("/bench/b/khz", SMALL_TYPE, &qos)?;
    let readers = vec![
        p.via("/bench/b/khz", SMALL_TYPE, &qos)?,
        p.direct("/bench/b/khz", SMALL_TYPE, &qos)?,
    ];
    let run = run_one(
        &w,
        readers,
        SMALL_DATA_AT,
        &small,
        Pace::Rate(1000.0, plan.khz),
        Duration::from_secs(2),
    )
    .await?;
    let rate = |r: &Received| match (r.first, r.last) {
        (Some(f), Some(l)) if l > f && r.count > 1 => (r.count - 1) as f64 / (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let (b, d) = (&run.got[0], &run.got[1]);
    Ok(vec![Row::new(
        &format!(
            "64 B reliable at 1 kHz for {} s: received Hz ({} sent, {} write errors)",
            plan.khz.as_secs(),
            run.sent,
            run.errors
        ),
        format!("{:.0} Hz, {}", rate(b), lost(b, run.sent)),
        format!("{:.0} Hz, {}", rate(d), lost(d, run.sent)),
        ratio(rate(b), rate(d)),
        "1 kHz, nothing lost",
    )
    .met(b.count >= run.sent && run.sent > 0 && rate(b) >= 990.0)])
}

/// 2. 4 MiB PointCloud2 at 30 Hz: direct, then via the bridge.
async fn clouds(p: &Peers, plan: Plan) -> Result<Vec<Row>> {
    let tpl = CloudTemplate::new(4 << 20)?;
    let at = tpl.data_at;
    let make = |seq: u64| tpl.sample(seq);
    let qos = Qos::ros_default();
    let idle = Duration::from_secs(3);
    let pace = Pace::Rate(30.0, plan.cloud);
    let w = p.writer("/bench/d/cloud", &tpl.type_name, &qos)?;
    let r = p.direct("/bench/d/cloud", &tpl.type_name, &qos)?;
    let d = run_one(&w, vec![r], at, &make, pace, idle).await?;
    drop(w);
    let w = p.writer("/bench/b/cloud", &tpl.type_name, &qos)?;
    let r = p.via("/bench/b/cloud", &tpl.type_name, &qos)?;
    let b = run_one(&w, vec![r], at, &make, pace, idle).await?;
    drop(w);
    let (dr, br) = (d.got[0].rate(d.start), b.got[0].rate(b.start));
    let cell = |r: &Run| {
        let mut lat = r.got[0].lat.clone();
        format!(
            "{}/{} ({:.1} Hz, p50 {})",
            r.got[0].count,
            r.sent,
            r.got[0].rate(r.start),
            fmt_dur(percentile(&mut lat, 50.0))
        )
    };
    Ok(vec![Row::new(
        &format!(
            "4 MiB PointCloud2 reliable at 30 Hz for {} s: delivered/sent (rate, latency p50)",
            plan.cloud.as_secs()
        ),
        cell(&b),
        cell(&d),
        ratio(br, dr),
        "sustained, ≥ 0.8x",
    )
    .met(
        b.got[0].count as f64 >= 0.99 * b.sent as f64 && b.sent > 0 && br >= 0.8 * dr,
    )])
}

/// 3. Latency at 100 Hz, 64 B, the same samples direct and via the bridge.
async fn latency(p: &Peers, plan: Plan) -> Result<(Vec<Row>, LatencyChart)> {
    let qos = Qos::ros_default();
    let w = p.writer("/bench/b/lat", SMALL_TYPE, &qos)?;
    let readers = vec![
        p.via("/bench/b/lat", SMALL_TYPE, &qos)?,
        p.direct("/bench/b/lat", SMALL_TYPE, &qos)?,
    ];
    let secs = plan.latency_samples as f64 / 100.0;
    let run = run_one(
        &w,
        readers,
        SMALL_DATA_AT,
        &small,
        Pace::Rate(100.0, Duration::from_secs_f64(secs)),
        Duration::from_secs(2),
    )
    .await?;
    let mut b = run.got[0].lat.clone();
    let mut d = run.got[1].lat.clone();
    let (b50, b99, d50, d99) = (
        percentile(&mut b, 50.0),
        percentile(&mut b, 99.0),
        percentile(&mut d, 50.0),
        percentile(&mut d, 99.0),
    );
    let r = |x: Duration, y: Duration| ratio(x.as_secs_f64(), y.as_secs_f64());
    let chart = LatencyChart {
        name: "latency_bridge".into(),
        title: "64 B reliable at 100 Hz: per-message latency, bridged vs direct (same samples)"
            .into(),
        series: vec![
            Series::new("bridge (robot DDS -> edge -> TCP -> hub -> cloud DDS)", &b),
            Series::new("direct DDS", &d),
        ],
    };
    let rows = vec![
        Row::new(
            &format!(
                "64 B at 100 Hz: latency p50 ({} / {} of {} samples via bridge / direct)",
                b.len(),
                d.len(),
                run.sent
            ),
            fmt_dur(b50),
            fmt_dur(d50),
            r(b50, d50),
            "",
        ),
        Row::new(
            "64 B at 100 Hz: latency p99",
            fmt_dur(b99),
            fmt_dur(d99),
            r(b99, d99),
            "",
        ),
        Row::new(
            "64 B at 100 Hz: added latency p50 / p99 (bridge - direct)",
            format!(
                "+{} / +{}",
                fmt_dur(b50.saturating_sub(d50)),
                fmt_dur(b99.saturating_sub(d99))
            ),
            String::new(),
            String::new(),
            "≤ +150 µs / ≤ +1 ms",
        )
        .met(
            !b.is_empty()
                && b50.saturating_sub(d50) <= Duration::from_micros(150)
                && b99.saturating_sub(d99) <= Duration::from_millis(1),
        ),
    ];
    Ok((rows, chart))
}

/// 4. A 100 Hz priority-0 command topic while 4 MiB clouds at 30 Hz (priority 7) share the link.
async fn mixed(p: &Peers, plan: Plan) -> Result<(Vec<Row>, LatencyChart)> {
    let tpl = CloudTemplate::new(4 << 20)?;
    let at = tpl.data_at;
    let qos = Qos::ros_default();
    let cw = p.writer("/bench/b/cloud_load", &tpl.type_name, &qos)?;
    let cr = p.via("/bench/b/cloud_load", &tpl.type_name, &qos)?;
    let w = p.writer("/bench/b/cmd", SMALL_TYPE, &qos)?;
    let readers = vec![
        p.via("/bench/b/cmd", SMALL_TYPE, &qos)?,
        p.direct("/bench/b/cmd", SMALL_TYPE, &qos)?,
    ];
    let make_cloud = |seq: u64| tpl.sample(seq);
    // Clouds for the whole command run plus a second on each side.
    let cloud_time = plan.mixed + Duration::from_secs(2);
    let cloud_progress = Progress::default();
    let (cready, ctask) = receive(cr, at, cloud_progress.clone(), Duration::from_secs(3));
    warm_up(&cw, &make_cloud, vec![cready]).await?;
    let clouds = publish(
        &cw,
        &make_cloud,
        Pace::Rate(30.0, cloud_time),
        &cloud_progress,
    );
    let cmds = async {
        // The clouds fill the link for a second before the commands start.
        tokio::time::sleep(Duration::from_secs(1)).await;
        run_one(
            &w,
            readers,
            SMALL_DATA_AT,
            &small,
            Pace::Rate(100.0, plan.mixed),
            Duration::from_secs(2),
        )
        .await
    };
    let ((csent, _, cstart), cmd) = tokio::join!(clouds, cmds);
    let cmd = cmd?;
    let cgot = ctask.await?;
    let mut b = cmd.got[0].lat.clone();
    let mut d = cmd.got[1].lat.clone();
    let (b50, b99, d99) = (
        percentile(&mut b, 50.0),
        percentile(&mut b, 99.0),
        percentile(&mut d, 99.0),
    );
    let chart = LatencyChart {
        name: "latency_commands".into(),
        title: "100 Hz priority-0 commands while 4 MiB clouds at 30 Hz share the link".into(),
        series: vec![
            Series::new("commands via the bridge", &b),
            Series::new("commands direct DDS", &d),
        ],
    };
    let rows = vec![
        Row::new(
            &format!(
                "priority-0 commands at 100 Hz under 4 MiB clouds at 30 Hz (priority 7): command latency p99 (p50; {} / {} of {} commands)",
                b.len(),
                d.len(),
                cmd.sent
            ),
            format!("{} ({})", fmt_dur(b99), fmt_dur(b50)),
            fmt_dur(d99),
            ratio(b99.as_secs_f64(), d99.as_secs_f64()),
            "≤ 5 ms",
        )
        .met(!b.is_empty() && b99 <= Duration::from_millis(5)),
        Row::new(
            "  clouds delivered via the bridge during that run",
            format!(
                "{}/{} ({:.1} Hz)",
                cgot.count,
                csent,
                cgot.rate(cstart)
            ),
            String::new(),
            String::new(),
            "",
        ),
    ];
    Ok((rows, chart))
}

// ---------------------------------------------------------------------------------------------
// 5. Reliable throughput by message size.

/// Message sizes of the throughput run (serialized, CDR header included).
const SIZES: [usize; 6] = [64, 1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20];

/// No sample arriving for this long ends a throughput step (a stalled reliable stream).
const STALL: Duration = Duration::from_secs(3);

/// Messages in flight at most for a size: about 4 MiB, 2..=200 messages. (More large
/// messages in flight overflow loopback socket buffers, and rustdds repairs lost fragments
/// slowly: the stream stalls instead of going faster.)
fn window(size: usize) -> u64 {
    ((4usize << 20) / size.max(1)).clamp(2, 200) as u64
}

/// One throughput step on one path.
#[derive(Debug)]
struct Pumped {
    sent: u64,
    lat: Vec<Duration>,
    /// First send to last arrival.
    secs: f64,
    stalled: bool,
}

impl Pumped {
    fn msgs_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.lat.len() as f64 / self.secs
        } else {
            0.0
        }
    }

    fn point(&self, size: usize, via: Via) -> ThroughputPoint {
        let mut lat = self.lat.clone();
        let msgs = self.msgs_per_s();
        ThroughputPoint {
            size: size as u64,
            via,
            sent: self.sent,
            delivered: self.lat.len() as u64,
            msgs_per_s: msgs,
            mib_per_s: msgs * size as f64 / f64::from(1u32 << 20),
            p50_us: percentile(&mut lat, 50.0).as_secs_f64() * 1e6,
        }
    }
}

/// Writes `size`-byte samples on `w` for `dur`, never more than [`window`] ahead of what
/// `reader` received, then waits for the rest (at most [`STALL`] without progress).
async fn pump(w: &RawWriter, mut reader: RawReader, size: usize, dur: Duration) -> Result<Pumped> {
    let got = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = {
        let (got, wake, stop) = (got.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lat = Vec::new();
            let mut last = None;
            loop {
                let s = tokio::select! {
                    _ = stop.cancelled() => break,
                    s = reader.recv() => match s { Some(s) => s, None => break },
                };
                let t = now_ns();
                let arrived = Instant::now();
                let Some((seq, sent)) = stamp_at(&s.payload, SMALL_DATA_AT) else {
                    continue;
                };
                if seq == 0 {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                lat.push(Duration::from_nanos(t.saturating_sub(sent)));
                last = Some(arrived);
                got.fetch_add(1, Ordering::AcqRel);
                wake.notify_one();
            }
            (lat, last)
        })
    };
    let make = move |seq: u64| small_payload(seq, size);
    warm_up(w, &make, vec![ready_rx]).await?;
    let limit = window(size);
    let start = Instant::now();
    let (mut sent, mut stalled) = (0u64, false);
    while start.elapsed() < dur {
        if sent.saturating_sub(got.load(Ordering::Acquire)) >= limit {
            if tokio::time::timeout(STALL, wake.notified()).await.is_err() {
                stalled = true;
                break;
            }
            continue;
        }
        match w.write_async(make(sent + 1)).await {
            Ok(()) => sent += 1,
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    while got.load(Ordering::Acquire) < sent {
        if tokio::time::timeout(STALL, wake.notified()).await.is_err() {
            stalled = true;
            break;
        }
    }
    stop.cancel();
    let (lat, last) = task.await?;
    Ok(Pumped {
        sent,
        lat,
        secs: last.map_or(0.0, |l| (l - start).as_secs_f64()),
        stalled,
    })
}

/// 5. Reliable throughput of each size in [`SIZES`]: direct, then via the bridge.
async fn by_size(p: &Peers, plan: Plan) -> Result<(Vec<Row>, Vec<ThroughputPoint>)> {
    let mut rows = vec![Row::new(
        &format!(
            "reliable throughput by message size, {} s per size and path, at most ~4 MiB (2-200 messages) in flight: msg/s (MiB/s)",
            plan.size_step.as_secs()
        ),
        String::new(),
        String::new(),
        String::new(),
        "",
    )];
    let mut points = Vec::new();
    for (i, size) in SIZES.iter().copied().enumerate() {
        let depth = (2 * window(size)).max(10) as u32;
        let qos = Qos::ros_default().with_history(ros2::dds::History::KeepLast(depth));
        let step = |via: Via| async move {
            let (name, reader) = match via {
                Via::Direct => {
                    let n = format!("/bench/d/size{i}");
                    let r = p.direct(&n, SMALL_TYPE, &qos)?;
                    (n, r)
                }
                Via::Bridge => {
                    let n = format!("/bench/b/size{i}");
                    let r = p.via(&n, SMALL_TYPE, &qos)?;
                    (n, r)
                }
            };
            let w = p.writer(&name, SMALL_TYPE, &qos)?;
            let r = pump(&w, reader, size, plan.size_step).await;
            drop(w);
            r
        };
        let d = step(Via::Direct).await?;
        let b = step(Via::Bridge).await?;
        let cell = |r: &Pumped| {
            let pt = r.point(size, Via::Direct);
            format!(
                "{} msg/s ({:.1} MiB/s){}",
                fmt_rate(pt.msgs_per_s),
                pt.mib_per_s,
                if r.stalled {
                    format!(", stalled after {} of {}", r.lat.len(), r.sent)
                } else {
                    String::new()
                }
            )
        };
        rows.push(Row::new(
            &format!("  {}", crate::plot::fmt_bytes(size as f64)),
            cell(&b),
            cell(&d),
            ratio(b.msgs_per_s(), d.msgs_per_s()),
            "",
        ));
        points.push(d.point(size, Via::Direct));
        points.push(b.point(size, Via::Bridge));
    }
    Ok((rows, points))
}

/// `12,345` for rates, `12.3` below 100.
fn fmt_rate(v: f64) -> String {
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let s = format!("{v:.0}");
    let mut out = String::new();
    for (k, c) in s.chars().enumerate() {
        if k > 0 && (s.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 6. Hub scale.

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn sim_robot(i: usize) -> (String, String) {
    (format!("sim{i}"), format!("bench-sim{i}-token-0123456789"))
}

/// The hub config of the scale run: `links` robots.
fn scale_hub_yaml(domain: u16, listen: u16, http: u16, links: usize) -> String {
    let mut s = format!(
        "listen: 127.0.0.1:{listen}\n\
         dds: {{ domain_id: {domain}, discovery_range: localhost, only_networks: [127.0.0.1] }}\n\
         shared: []\n\
         http: {{ listen: 127.0.0.1:{http} }}\n\
         robots:\n"
    );
    for i in 0..links {
        let (robot, token) = sim_robot(i);
        s.push_str(&format!(
            "  - robot: {robot}\n    namespace: /{robot}\n    token: {token}\n"
        ));
    }
    s
}

/// (utime + stime, VmHWM in MiB) of process `pid`.
fn proc_usage(pid: u32) -> Option<(Duration, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    let cpu = Duration::from_secs_f64((ticks(11)? + ticks(12)?) as f64 / 100.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())?;
    Some((cpu, hwm / 1024.0))
}

/// GET `path` from a local HTTP server; the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// Sum of `bridge_route_messages_total` with `direction="in"` (link -> DDS) in a metrics text.
fn messages_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("bridge_route_messages_total{") && l.contains("direction=\"in\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

const SIM_TOPICS: u32 = 10;

/// One simulated robot: connects, handshakes, announces 10 best-effort topics and publishes
/// each at 10 Hz until `stop`. Sends `()` on `up` once established.
async fn sim_link(
    hub: SocketAddr,
    i: usize,
    up: mpsc::Sender<()>,
    stop: CancellationToken,
) -> Result<u64> {
    use bridge::link::frame::{
        Announce, Compression, Data, Durability, Frame, Reliability, RouteId, RouteKind, RouteQos,
        Token,
    };
    use bridge::session::{
        run_edge_session, EdgeConfig, EdgeHandshakeConfig, SessionChannels, SessionEvent,
    };
    let (robot, token) = sim_robot(i);
    let io = tokio::net::TcpStream::connect(hub).await?;
    io.set_nodelay(true)?;
    let cfg = EdgeConfig::new(EdgeHandshakeConfig::new(robot, Token::new(token)));
    let (mut ch, out, mut events) = SessionChannels::bounded(64);
    let cancel = stop.clone();
    let session = tokio::spawn(async move { run_edge_session(io, &cfg, &mut ch, &cancel).await });
    match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
        Ok(Some(SessionEvent::Established(_))) => {}
        other => {
            let end = if session.is_finished() {
                format!("{:?}", session.await)
            } else {
                format!("{other:?}")
            };
            bail!("sim{i}: no session: {end}");
        }
    }
    // Whatever the hub sends after the handshake (nothing expected for these routes).
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    for t in 0..SIM_TOPICS {
        out.send(Frame::Announce(Announce {
            route: RouteId(t + 1),
            name: format!("/bench/t{t}"),
            type_name: SMALL_TYPE.into(),
            qos: RouteQos {
                reliability: Reliability::BestEffort,
                durability: Durability::Volatile,
                depth: 5,
            },
            priority: 4,
            reliable: false,
            store_forward: false,
            compression: Compression::None,
            stream: 1,
            kind: RouteKind::Topic,
            source: None,
            request_type: None,
        }))
        .await?;
    }
    let _ = up.send(()).await;
    // Spread the links over the 100 ms period.
    tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 100)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        for t in 0..SIM_TOPICS {
            let size = 64 + (t as usize * 21) % 193; // 64..=256 B
            let f = Frame::Data(Data {
                route: RouteId(t + 1),
                seq,
                index: 0,
                count: 1,
                flags: 0,
                payload: small_payload(seq, size),
            });
            if out.send(f).await.is_err() {
                bail!("sim{i}: session ended: {:?}", session.await);
            }
            sent += 1;
        }
    }
    drop(out);
    let _ = session.await;
    Ok(sent)
}

fn bridge_binary(a: &BridgeArgs) -> Result<PathBuf> {
    if let Some(p) = &a.bridge_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .map(|d| d.join("bridge"))
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    if !p.exists() {
        bail!(
            "SKIPPED: needs {} (cargo build --release -p bridge)",
            p.display()
        );
    }
    Ok(p)
}

async fn hub_scale(a: &BridgeArgs, plan: Plan, domain: u16) -> Result<(Vec<Row>, Vec<String>)> {
    let bin = bridge_binary(a)?;
    let links = a.links;
    let (listen, http) = (free_port()?, free_port()?);
    let dir = tempfile::tempdir()?;
    let cfg_path = dir.path().join("hub.yaml");
    std::fs::write(&cfg_path, scale_hub_yaml(domain, listen, http, links))?;
    let mut child = tokio::process::Command::new(&bin)
        .args(["hub", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "warn,rustdds=off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("hub exited at once"))?;
    let r = scale_measure(pid, links, listen, http, domain, plan, &bin).await;
    let _ = child.kill().await;
    drop(dir);
    r
}

#[allow(clippy::too_many_arguments)]
async fn scale_measure(
    pid: u32,
    links: usize,
    listen: u16,
    http: u16,
    domain: u16,
    plan: Plan,
    bin: &Path,
) -> Result<(Vec<Row>, Vec<String>)> {
    let hub = SocketAddr::from((Ipv4Addr::LOCALHOST, listen));
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, http));
    // The hub is up when its HTTP endpoint answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(http, "/healthz").await.is_err() {
        if Instant::now() > deadline {
            bail!("the hub did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A DDS subscriber on the topics of the first three robots.
    let part = Participant::new(ParticipantConfig::localhost(domain))?;
    let counted = Arc::new(AtomicU64::new(0));
    let watched = 3.min(links);
    let mut readers = Vec::new();
    for i in 0..watched {
        let (robot, _) = sim_robot(i);
        readers.push(part.reader(
            &format!("rt/{robot}/bench/t0"),
            SMALL_TYPE,
            &Qos::sensor_data(),
        )?);
    }
    let stop = CancellationToken::new();
    let (up_tx, mut up_rx) = mpsc::channel(links.max(1));
    let mut sims = Vec::new();
    for i in 0..links {
        sims.push(tokio::spawn(sim_link(hub, i, up_tx.clone(), stop.clone())));
    }
    drop(up_tx);
    let mut established = 0;
    let wait = tokio::time::timeout(Duration::from_secs(60), async {
        while established < links && up_rx.recv().await.is_some() {
            established += 1;
        }
    })
    .await;
    let result = async {
        if wait.is_err() || established < links {
            bail!("only {established} of {links} simulated links came up");
        }
        // Every watched topic matched and flowing before measuring.
        for r in &readers {
            if !r.wait_for_writers(1, Duration::from_secs(30)).await {
                bail!("{}: the hub's writer never matched", r.topic());
            }
        }
        let mut tasks = Vec::new();
        for mut r in readers.drain(..) {
            let c = counted.clone();
            tasks.push(tokio::spawn(async move {
                while r.recv().await.is_some() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // warm-up: steady state
        // The counters are read when a request starts: time the message rate between the
        // two requests' starts (a /metrics of 2000 routes takes a while under load).
        let tm0 = Instant::now();
        let m0 = messages_in(&http_get(http, "/metrics").await?);
        let (cpu0, _) = proc_usage(pid).ok_or_else(|| anyhow!("hub process gone"))?;
        let c0 = counted.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(plan.scale).await; // the measurement window
        let wall = t0.elapsed();
        let msg_secs = tm0.elapsed().as_secs_f64();
        let m1 = messages_in(&http_get(http, "/metrics").await?);
        let (cpu1, hwm) = proc_usage(pid).ok_or_else(|| anyhow!("hub process gone"))?;
        let c1 = counted.load(Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        let secs = wall.as_secs_f64();
        let cpu_pct = 100.0 * (cpu1.saturating_sub(cpu0)).as_secs_f64() / secs;
        let offered = links as f64 * f64::from(SIM_TOPICS) * 10.0;
        let rows = vec![
            Row::new(
                &format!(
                    "hub, {links} robot links x {SIM_TOPICS} best-effort topics at 10 Hz (64-256 B), {} s: hub CPU (% of one core)",
                    plan.scale.as_secs()
                ),
                format!("{cpu_pct:.1} %"),
                String::new(),
                String::new(),
                "≤ 100 % (1 core)",
            )
            .met(cpu_pct <= 100.0),
            Row::new(
                "  hub peak RSS (VmHWM)",
                format!("{hwm:.1} MiB"),
                String::new(),
                String::new(),
                "≤ 256 MB",
            )
            .met(hwm * 1024.0 * 1024.0 <= 256e6),
            Row::new(
                "  messages/s the hub published to DDS (its /metrics)",
                format!("{:.0} of {offered:.0} offered", (m1.saturating_sub(m0)) as f64 / msg_secs),
                String::new(),
                String::new(),
                "",
            ),
            Row::new(
                &format!("  received by a DDS subscriber on {watched} of those topics"),
                format!(
                    "{:.1} msg/s (expected {:.0})",
                    (c1.saturating_sub(c0)) as f64 / secs,
                    watched as f64 * 10.0
                ),
                String::new(),
                String::new(),
                "",
            ),
        ];
        Ok(rows)
    }
    .await;
    stop.cancel();
    for s in sims {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    part.shutdown();
    let notes = vec![format!(
        "Bridge item 6: hub = `{} hub` as a child process (CPU from /proc/<pid>/stat utime+stime over the window, peak RSS = VmHWM); the {links} simulated links (the library's session driver over TCP) run in the bench process and share the host's CPUs with it.",
        bin.display()
    )];
    result.map(|r| (r, notes))
}

// ---------------------------------------------------------------------------------------------
// 4b. The link alone: what the bridge's scheduling controls, without DDS on either side.

struct Stamped {
    lat: Arc<std::sync::Mutex<Vec<(String, Duration)>>>,
}

impl bridge::relay::SinkFactory for Stamped {
    fn open(
        &self,
        _ctx: &bridge::relay::LinkContext,
        a: &bridge::link::frame::Announce,
    ) -> Result<bridge::relay::Sink, String> {
        use futures::FutureExt;
        let lat = self.lat.clone();
        let name = a.name.clone();
        Ok(bridge::relay::Sink {
            local_name: name.clone(),
            deliver: Box::new(move |p: Bytes| {
                let t = now_ns();
                if let Some(sent) = p
                    .get(4..12)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                {
                    if let Ok(mut l) = lat.lock() {
                        l.push((name.clone(), Duration::from_nanos(t.saturating_sub(sent))));
                    }
                }
                async { Ok(()) }.boxed()
            }),
            guards: Vec::new(),
        })
    }
}

struct Nothing;
impl bridge::relay::SinkFactory for Nothing {
    fn open(
        &self,
        _: &bridge::relay::LinkContext,
        _: &bridge::link::frame::Announce,
    ) -> Result<bridge::relay::Sink, String> {
        Err("edge takes nothing here".into())
    }
}

/// Commands (priority 0, 100 Hz) and 4 MiB clouds (priority 7, 30 Hz) through an edge link
/// and a hub link joined by TCP on 127.0.0.1, as in the bridge, with the DDS ends replaced by
/// a timestamping sink: the latency the link itself adds under load.
async fn link_only(plan: Plan) -> Result<(Vec<Row>, Series)> {
    use bridge::link::frame::{Compression, Durability, Reliability, RouteKind, RouteQos, Token};
    use bridge::relay::{
        LinkActor, LinkCommand, LinkLimits, OutRouteSpec, RouteSettings, Sample, SessionAttach,
        Side,
    };
    use bridge::session::{
        run_edge_session, run_hub_session, EdgeConfig, EdgeHandshakeConfig, Grant, HubConfig,
        HubHandshakeConfig, SessionChannels, SessionEvent, TokenTable,
    };
    let metrics = bridge::metrics::Metrics::new("bench");
    let stop = CancellationToken::new();
    let lat: Arc<std::sync::Mutex<Vec<(String, Duration)>>> = Arc::default();
    let (edge, erx, _) = LinkActor::new(
        "cloud",
        Side::Edge,
        Arc::new(Nothing),
        metrics.clone(),
        LinkLimits::default(),
    );
    let eh = edge.handle();
    tokio::spawn(edge.run(erx, stop.clone(), None));
    let (hub, hrx, _) = LinkActor::new(
        "robot1",
        Side::Hub,
        Arc::new(Stamped { lat: lat.clone() }),
        metrics,
        LinkLimits::default(),
    );
    let hh = hub.handle();
    tokio::spawn(hub.run(hrx, stop.clone(), None));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let mut tokens = TokenTable::new();
    tokens.insert(
        Token::new("bench"),
        Grant {
            namespace: ros2::names::Namespace::parse("/robot1")?,
            robot: Some("robot1".into()),
        },
    )?;
    let hub_cfg = HubConfig::new(HubHandshakeConfig::default(), tokens);
    let (mut hch, hout, mut hin) = SessionChannels::bounded(8);
    let c1 = stop.clone();
    tokio::spawn(async move {
        if let Ok((io, _)) = listener.accept().await {
            let _ = io.set_nodelay(true);
            let _ = run_hub_session(io, &hub_cfg, &mut hch, &c1).await;
        }
    });
    let io = tokio::net::TcpStream::connect(addr).await?;
    io.set_nodelay(true)?;
    let edge_cfg = EdgeConfig::new(EdgeHandshakeConfig::new("robot1", Token::new("bench")));
    let (mut ech, eout, mut ein) = SessionChannels::bounded(8);
    let c2 = stop.clone();
    tokio::spawn(async move { run_edge_session(io, &edge_cfg, &mut ech, &c2).await });
    for (events, out, link) in [(&mut hin, hout, &hh), (&mut ein, eout, &eh)] {
        let Some(SessionEvent::Established(params)) = events.recv().await else {
            bail!("link-only: no session");
        };
        let rx = std::mem::replace(events, mpsc::channel(1).1);
        link.commands
            .send(LinkCommand::Attach(SessionAttach {
                params,
                out,
                events: rx,
                peer: None,
            }))
            .await
            .map_err(|_| anyhow!("link gone"))?;
    }
    let route = |name: &str, priority: u8| OutRouteSpec {
        name: name.into(),
        kind: RouteKind::Topic,
        type_name: SMALL_TYPE.into(),
        request_type: None,
        qos: RouteQos {
            reliability: Reliability::Reliable,
            durability: Durability::Volatile,
            depth: 10,
        },
        settings: RouteSettings {
            priority,
            reliable: true,
            store_forward: false,
            compression: Compression::None,
            max_rate_hz: None,
            depth: 10,
            outbox: Default::default(),
            latched: false,
        },
        local_name: name.into(),
    };
    for (n, p) in [("/cmd", 0), ("/cloud", 7)] {
        eh.commands
            .send(LinkCommand::AddRoute(route(n, p)))
            .await
            .map_err(|_| anyhow!("link gone"))?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stamped = |size: usize| {
        let mut v = vec![0u8, 1, 0, 0];
        v.extend_from_slice(&now_ns().to_le_bytes());
        v.resize(size, 0x5a);
        Bytes::from(v)
    };
    let sample = |name: &str, payload: Bytes| Sample {
        name: Arc::from(name),
        kind: RouteKind::Topic,
        source: [0; 16],
        payload,
        received: tokio::time::Instant::now(),
    };
    let start = Instant::now();
    let mut cmd_tick = tokio::time::interval(Duration::from_millis(10));
    let mut cloud_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / 30.0));
    let (mut cmds, mut clouds) = (0u64, 0u64);
    while start.elapsed() < plan.mixed {
        tokio::select! {
            _ = cmd_tick.tick() => {
                cmds += 1;
                eh.samples.send(sample("/cmd", stamped(64))).await.map_err(|_| anyhow!("link gone"))?;
            }
            _ = cloud_tick.tick() => {
                clouds += 1;
                eh.samples.send(sample("/cloud", stamped(4 << 20))).await.map_err(|_| anyhow!("link gone"))?;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let got = lat.lock().map(|l| l.clone()).unwrap_or_default();
    let mut cmd: Vec<Duration> = got
        .iter()
        .filter(|(n, _)| n == "/cmd")
        .map(|(_, d)| *d)
        .collect();
    let cloud_n = got.iter().filter(|(n, _)| n == "/cloud").count();
    cmd.sort_unstable();
    let series = Series::new("commands through the link alone (no DDS)", &cmd);
    let rows = vec![
        Row::new(
            &format!(
                "  link only (edge relay -> TCP -> hub relay, no DDS): command latency p99 (p50; {} / {cmds} commands)",
                cmd.len()
            ),
            format!("{} ({})", fmt_dur(percentile(&mut cmd, 99.0)), fmt_dur(percentile(&mut cmd, 50.0))),
            String::new(),
            String::new(),
            "≤ 5 ms",
        )
        .met(!cmd.is_empty() && percentile(&mut cmd, 99.0) <= Duration::from_millis(5)),
        Row::new(
            "  link only: clouds delivered (at 30 Hz)",
            format!("{cloud_n}/{clouds}"),
            String::new(),
            String::new(),
            "",
        ),
    ];
    Ok((rows, series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payload_is_a_valid_uint8_multi_array_with_its_stamp() {
        let reg = Registry::bundled();
        let layout = reg.layout_of("std_msgs/msg/UInt8MultiArray").unwrap();
        assert_eq!(layout.dds_type_name(), SMALL_TYPE);
        for size in [64, 100, 256] {
            let p = small_payload(42, size);
            assert_eq!(p.len(), size);
            let Value::Struct(f) = cdr::decode(&layout, &p).unwrap() else {
                panic!("not a struct")
            };
            let Value::Bytes(data) = &f[1].1 else {
                panic!("data is {:?}", f[1].1)
            };
            assert_eq!(data.len(), size - SMALL_DATA_AT);
            assert_eq!(&data[..8], &42u64.to_le_bytes());
            let (seq, t) = stamp_at(&p, SMALL_DATA_AT).unwrap();
            assert_eq!(seq, 42);
            assert!(t <= now_ns());
        }
    }

    #[test]
    fn cloud_template_is_a_valid_point_cloud_with_its_stamp_in_data() {
        let tpl = CloudTemplate::new(1 << 20).unwrap();
        assert_eq!(tpl.type_name, "sensor_msgs::msg::dds_::PointCloud2_");
        assert!(tpl.bytes.len() <= 1 << 20 && tpl.bytes.len() > (1 << 20) - 64);
        let s = tpl.sample(7);
        let reg = Registry::bundled();
        let layout = reg.layout_of("sensor_msgs/msg/PointCloud2").unwrap();
        let v = cdr::decode(&layout, &s).unwrap();
        let Value::Struct(f) = v else { panic!() };
        let data = f.iter().find(|(n, _)| &**n == "data").unwrap();
        let Value::Bytes(d) = &data.1 else { panic!() };
        assert_eq!(&d[..8], &7u64.to_le_bytes());
        assert_eq!(stamp_at(&s, tpl.data_at).unwrap().0, 7);
        let width = f.iter().find(|(n, _)| &**n == "width").unwrap();
        assert_eq!(width.1, Value::U32((d.len() / 16) as u32));
    }

    #[test]
    fn generated_configs_validate() {
        let h = bridge::config::HubConfig::from_yaml_str(&scale_hub_yaml(12, 17447, 19181, 200))
            .unwrap();
        h.validate().unwrap();
        assert_eq!(h.token_table(|_| None).unwrap().len(), 200);
        let h = bridge::config::HubConfig::from_yaml_str(&hub_yaml_one(11)).unwrap();
        h.validate().unwrap();
        let e = bridge::config::EdgeConfig::from_yaml_str(&edge_yaml(
            10,
            "127.0.0.1:17447".parse().unwrap(),
        ))
        .unwrap();
        e.validate().unwrap();
    }

    #[test]
    fn throughput_window_and_rates() {
        assert_eq!(window(64), 200);
        assert_eq!(window(256 << 10), 16);
        assert_eq!(window(1 << 20), 4);
        assert_eq!(window(4 << 20), 2);
        assert_eq!(window(64 << 20), 2);
        assert_eq!(fmt_rate(12.34), "12.3");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_rate(1234567.0), "1,234,567");
    }

    #[test]
    fn metrics_sum_counts_only_link_to_dds_messages() {
        let text = "# HELP x\n\
            bridge_route_messages_total{link=\"sim0\",route=\"/sim0/a\",direction=\"in\"} 10\n\
            bridge_route_messages_total{link=\"sim1\",route=\"/sim1/a\",direction=\"in\"} 5\n\
            bridge_route_messages_total{link=\"sim1\",route=\"/x\",direction=\"out\"} 100\n\
            bridge_route_bytes_total{link=\"sim1\",route=\"/sim1/a\",direction=\"in\"} 7\n";
        assert_eq!(messages_in(text), 15);
    }
}
