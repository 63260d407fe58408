//! Mapper benchmarks.
//!
//! 1. **Latency**: a rustdds publisher sends `std_msgs/msg/Float64` at 100 Hz;
//!    the mapper core (collectCycle 0, on change) turns each sample into a
//!    twin report handed to the backend channel. Baseline in the same run: a
//!    plain rustdds subscriber of the same topic that decodes the sample.
//! 2. **Load**: 100 robots x 1 `BatteryState` topic x 10 properties = 1,000
//!    properties at 10 Hz, published by a child process; CPU and RSS of the
//!    mapper process, reports per second, and sample -> report latency taken
//!    from the message's header stamp.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use mapper_core::backend::{BackendEvent, DeviceBinding, Report};
use mapper_core::mapper::{Manager, ManagerConfig};
use mapper_core::metrics::Metrics;
use mapper_core::model::Device;
use mapper_core::visitor::PlanDefaults;
use ros2::cdr::{self, Endianness};
use ros2::dds::{DiscoveryRange, Participant, ParticipantConfig, Qos};
use ros2::msg::Registry;
use ros2::value::Value;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::results::{LatencyChart, Results, Row, Section, Series};
use crate::stats::{cpu_time, fmt_dur, percentile, rss_mib};

#[derive(clap::Args, Debug, Clone)]
pub struct MapperArgs {
    /// Samples in the latency run (sent at 100 Hz) [default: 1000, 300 with --quick].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Robots in the load run (10 properties each).
    #[arg(long, default_value_t = 100)]
    pub robots: usize,
    /// Seconds of measurement in the load run [default: 20, 5 with --quick].
    #[arg(long)]
    pub seconds: Option<u64>,
}

impl MapperArgs {
    fn samples(&self, quick: bool) -> usize {
        self.samples.unwrap_or(if quick { 300 } else { 1000 })
    }

    fn seconds(&self, quick: bool) -> u64 {
        self.seconds.unwrap_or(if quick { 5 } else { 20 })
    }
}

/// What the load process prints (one JSON line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LoadOutput {
    rows: Vec<Row>,
    /// Header stamp -> report latencies under load.
    latency: Series,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    #[arg(long)]
    pub domain: u16,
    #[arg(long)]
    pub robots: usize,
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    #[arg(long)]
    pub seconds: u64,
}

fn domain(offset: u16) -> u16 {
    (std::process::id() % 90) as u16 + 130 + offset
}

fn manager(
    domain_reg: Arc<Registry>,
    reports: mpsc::Sender<Report>,
    shutdown: &CancellationToken,
) -> Manager {
    Manager::new(
        ManagerConfig {
            defaults: PlanDefaults::default(),
            discovery_range: DiscoveryRange::Localhost,
            only_networks: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        },
        domain_reg,
        reports,
        None,
        Arc::new(Metrics::default()),
        shutdown.clone(),
    )
}

fn device(name: &str, domain: u16, props: &[(&str, &str, &str, &str)]) -> Result<DeviceBinding> {
    let properties: Vec<serde_json::Value> = props
        .iter()
        .map(|(name, topic, ty, field)| {
            json!({"name": name, "collectCycle": 0, "reportCycle": 3_600_000,
                   "visitors": {"protocolName": "ros2", "configData": {"topic": topic, "type": ty, "field": field}}})
        })
        .collect();
    let d: Device = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"protocol": {"protocolName": "ros2", "configData": {"domainId": domain}}, "properties": properties}
    }))?;
    Ok(DeviceBinding {
        device: d,
        model: None,
    })
}

/// The mapper benchmarks: one section of rows and the latency chart.
pub async fn run(a: MapperArgs, quick: bool) -> Result<Results> {
    let (mut rows, mut series) = latency(a.samples(quick)).await?;
    // The load run gets a process of its own, so its RSS is the mapper's alone.
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "mapper-load",
            "--robots",
            &a.robots.to_string(),
            "--seconds",
            &a.seconds(quick).to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running the load benchmark process")?;
    if !out.status.success() {
        bail!("load benchmark failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| l.starts_with('{'))
        .context("the load benchmark printed no result")?;
    let load: LoadOutput = serde_json::from_str(line).context("load benchmark result")?;
    rows.extend(load.rows);
    series.push(load.latency);
    Ok(Results {
        sections: vec![Section {
            title: "mapper".into(),
            rows,
        }],
        latency: vec![LatencyChart {
            name: "latency_mapper".into(),
            title: "Mapper: DDS sample -> twin report, beside a direct DDS subscriber".into(),
            series,
        }],
        ..Results::default()
    })
}

/// The load run, in its own process: prints its result as one JSON line.
pub async fn load_main(a: MapperArgs, quick: bool) -> Result<()> {
    let out = load(a.robots, a.seconds(quick)).await?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

async fn latency(samples: usize) -> Result<(Vec<Row>, Vec<Series>)> {
    let d = domain(0);
    let reg = Arc::new(Registry::bundled());
    let layout = reg.layout_of("std_msgs/msg/Float64")?;
    let shutdown = CancellationToken::new();
    let (rep_tx, mut rep_rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(16);
    let mgr = manager(reg.clone(), rep_tx, &shutdown);
    let mgr_task = tokio::spawn(mgr.run(ev_rx));
    ev_tx
        .send(BackendEvent::Sync(vec![device(
            "lat",
            d,
            &[("v", "/bench/lat", "std_msgs/msg/Float64", "data")],
        )?]))
        .await?;

    let sub_p = Participant::new(ParticipantConfig::localhost(d))?;
    let pub_p = Participant::new(ParticipantConfig::localhost(d))?;
    let mut direct = sub_p.reader("rt/bench/lat", &layout.dds_type_name(), &Qos::ros_default())?;
    let writer = pub_p.writer("rt/bench/lat", &layout.dds_type_name(), &Qos::ros_default())?;
    if !writer.wait_for_readers(2, Duration::from_secs(20)).await {
        bail!(
            "mapper and direct reader did not both match ({} matched)",
            writer.matched_readers()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the far side match us too
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();

    // Ends the collectors that did not get every sample (the mapper may coalesce two samples
    // into one report when it falls behind): what they got is still measured.
    let give_up = CancellationToken::new();
    let s2 = sent.clone();
    let g2 = give_up.clone();
    let via_mapper = tokio::spawn(async move {
        let mut lat = Vec::new();
        loop {
            let r = tokio::select! {
                _ = g2.cancelled() => break,
                r = rep_rx.recv() => match r { Some(r) => r, None => break },
            };
            let at = Instant::now();
            for t in r.twins {
                if let Ok(i) = t.reported.parse::<f64>() {
                    if let Some(s) = s2.lock().ok().and_then(|m| m.get(&(i as u64)).copied()) {
                        lat.push(at - s);
                    }
                }
            }
            if lat.len() >= samples {
                break;
            }
        }
        lat
    });
    let s3 = sent.clone();
    let l2 = layout.clone();
    let g3 = give_up.clone();
    let via_dds = tokio::spawn(async move {
        let mut lat = Vec::new();
        loop {
            let s = tokio::select! {
                _ = g3.cancelled() => break,
                s = direct.recv() => match s { Some(s) => s, None => break },
            };
            let at = Instant::now();
            if let Ok(Value::Struct(f)) = cdr::decode(&l2, &s.payload) {
                if let Some((_, Value::F64(i))) = f.first() {
                    if let Some(t) = s3.lock().ok().and_then(|m| m.get(&(*i as u64)).copied()) {
                        lat.push(at - t);
                    }
                }
            }
            if lat.len() >= samples {
                break;
            }
        }
        lat
    });
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 1..=samples as u64 {
        tick.tick().await;
        let v = Value::Struct(vec![("data".into(), Value::F64(i as f64))]);
        let bytes = cdr::encode(&layout, &v, Endianness::Little)?;
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(i, Instant::now());
        writer.write_async(bytes).await?;
    }
    let cancel = give_up.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        cancel.cancel();
    });
    let mut m = via_mapper.await.context("mapper reports")?;
    let mut b = via_dds.await.context("direct reader")?;
    give_up.cancel();
    shutdown.cancel();
    let _ = mgr_task.await;
    drop(writer);
    pub_p.shutdown();
    sub_p.shutdown();
    let (m50, m99, b50, b99) = (
        percentile(&mut m, 50.0),
        percentile(&mut m, 99.0),
        percentile(&mut b, 50.0),
        percentile(&mut b, 99.0),
    );
    let ratio =
        |x: Duration, y: Duration| format!("{:.2}x", x.as_secs_f64() / y.as_secs_f64().max(1e-9));
    let series = vec![
        Series::new("mapper: sample -> twin report (100 Hz)", &m),
        Series::new("direct DDS subscriber (same samples)", &b),
    ];
    let rows = vec![
        Row::new(
            &format!(
                "sample -> twin report latency p50 ({} of {samples} samples at 100 Hz)",
                m.len()
            ),
            fmt_dur(m50),
            fmt_dur(b50),
            ratio(m50, b50),
            "",
        ),
        Row::new(
            "sample -> twin report latency p99",
            fmt_dur(m99),
            fmt_dur(b99),
            ratio(m99, b99),
            "≤ 5 ms",
        )
        .met(m99 <= Duration::from_millis(5) && !m.is_empty()),
    ];
    Ok((rows, series))
}

async fn load(robots: usize, seconds: u64) -> Result<LoadOutput> {
    let d = domain(1);
    let reg = Arc::new(Registry::bundled());
    let shutdown = CancellationToken::new();
    let (rep_tx, mut rep_rx) = mpsc::channel(4096);
    let (ev_tx, ev_rx) = mpsc::channel(16);
    let mgr = manager(reg.clone(), rep_tx, &shutdown);
    let mut status = mgr.status();
    let mgr_task = tokio::spawn(mgr.run(ev_rx));
    let fields = [
        ("percentage", "percentage"),
        ("voltage", "voltage"),
        ("current", "current"),
        ("charge", "charge"),
        ("capacity", "capacity"),
        ("temperature", "temperature"),
        ("present", "present"),
        ("status", "power_supply_status"),
        ("stamp_sec", "header.stamp.sec"),
        ("stamp_nsec", "header.stamp.nanosec"),
    ];
    let mut devices = Vec::new();
    for r in 0..robots {
        let topic = format!("/load/robot{r}/battery_state");
        let props: Vec<(&str, &str, &str, &str)> = fields
            .iter()
            .map(|(n, f)| (*n, topic.as_str(), "sensor_msgs/msg/BatteryState", *f))
            .collect();
        devices.push(device(&format!("robot{r}"), d, &props)?);
    }
    ev_tx.send(BackendEvent::Sync(devices)).await?;
    status.wait_for(|s| s.devices.len() == robots).await?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "mapper-publish",
            "--domain",
            &d.to_string(),
            "--robots",
            &robots.to_string(),
            "--seconds",
            &(seconds + 15).to_string(),
        ])
        .kill_on_drop(true)
        .spawn()
        .context("spawning the publisher process")?;

    // Warm up: every robot reported at least once.
    let mut seen = std::collections::HashSet::new();
    let warm = tokio::time::timeout(Duration::from_secs(30), async {
        while seen.len() < robots {
            match rep_rx.recv().await {
                Some(r) if !r.twins.is_empty() => {
                    seen.insert(r.device);
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    if warm.is_err() {
        bail!(
            "only {} of {robots} robots reported within 30 s",
            seen.len()
        );
    }
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let (mut reports, mut twins) = (0u64, 0u64);
    let mut lat = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let r = tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            r = rep_rx.recv() => match r { Some(r) => r, None => break },
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        reports += 1;
        twins += r.twins.len() as u64;
        let get = |n: &str| {
            r.twins
                .iter()
                .find(|t| t.property == n)
                .and_then(|t| t.reported.parse::<u64>().ok())
        };
        if let (Some(s), Some(ns)) = (get("stamp_sec"), get("stamp_nsec")) {
            let sent = Duration::new(s, ns as u32);
            lat.push(now.saturating_sub(sent));
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let (rss, hwm) = rss_mib();
    let _ = child.kill().await;
    shutdown.cancel();
    let _ = mgr_task.await;
    let pct = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    let props = robots * fields.len();
    let series = Series::new(
        &format!("mapper under load: {props} properties at 10 Hz (header stamp -> report)"),
        &lat,
    );
    let rows = vec![
        Row::new(
            &format!("{props} properties at 10 Hz: mapper CPU (% of one core)"),
            format!("{pct:.1} %"),
            String::new(),
            String::new(),
            "≤ 10 %",
        )
        .met(pct <= 10.0),
        Row::new(
            &format!("{props} properties at 10 Hz: mapper RSS (peak)"),
            format!("{rss:.1} MiB ({hwm:.1} MiB)"),
            String::new(),
            String::new(),
            "≤ 30 MB",
        )
        .met(hwm * 1024.0 * 1024.0 <= 30e6),
        Row::new(
            &format!("{props} properties at 10 Hz: reports/s (twins/s)"),
            format!(
                "{:.0} ({:.0})",
                reports as f64 / wall.as_secs_f64(),
                twins as f64 / wall.as_secs_f64()
            ),
            String::new(),
            String::new(),
            "",
        ),
        Row::new(
            "latency under load p50 / p99 (header stamp -> report)",
            format!(
                "{} / {}",
                fmt_dur(percentile(&mut lat, 50.0)),
                fmt_dur(percentile(&mut lat, 99.0))
            ),
            String::new(),
            String::new(),
            "",
        ),
    ];
    Ok(LoadOutput {
        rows,
        latency: series,
    })
}

/// The child process of the load run: `robots` BatteryState publishers.
pub async fn publish(a: PublishArgs) -> Result<()> {
    let reg = Registry::bundled();
    let layout = reg.layout_of("sensor_msgs/msg/BatteryState")?;
    let p = Participant::new(ParticipantConfig::localhost(a.domain))?;
    let mut writers = Vec::new();
    for r in 0..a.robots {
        writers.push(p.writer(
            &format!("rt/load/robot{r}/battery_state"),
            &layout.dds_type_name(),
            &Qos::sensor_data(),
        )?);
    }
    let mut msg = layout.default_value();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut n = 0u64;
    let path = |s: &str| s.parse::<ros2::value::FieldPath>();
    let (sec, nsec, pct, volt) = (
        path("header.stamp.sec")?,
        path("header.stamp.nanosec")?,
        path("percentage")?,
        path("voltage")?,
    );
    while Instant::now() < end {
        tick.tick().await;
        n += 1;
        for w in &writers {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            msg.set_path(&sec, Value::I32(now.as_secs() as i32))?;
            msg.set_path(&nsec, Value::U32(now.subsec_nanos()))?;
            msg.set_path(&pct, Value::F32(((n % 100) as f32) / 100.0))?;
            msg.set_path(&volt, Value::F32(24.0 - (n % 10) as f32 * 0.01))?;
            w.write(cdr::encode(&layout, &msg, Endianness::Little)?)?;
        }
    }
    drop(writers);
    p.shutdown();
    Ok(())
}
