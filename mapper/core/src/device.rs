//! The runtime of one device: DDS readers for its read properties (one per
//! topic, shared by every property on that topic), writers for its write
//! properties, and its [`Reporter`]. One task per device; a bad sample or a
//! refused desired value affects that property only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ros2::cdr::{self, Endianness};
use ros2::dds::{Participant, RawReader, RawSample, RawWriter};
use ros2::msg::Layout;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{now_ms, DeviceState, PushSample, Rejection, Report};
use crate::metrics::Metrics;
use crate::report::{PropertyPolicy, Reporter};
use crate::twin::{desired_to_field, infer_type, to_twin, TwinError};
use crate::visitor::{DevicePlan, PropertyPlan};

/// Capacity of the sample channel between a topic's reader and its device.
const SAMPLE_QUEUE: usize = 256;
/// How often write-only liveness (matched subscribers) is checked.
const WRITER_LIVENESS_PERIOD: Duration = Duration::from_secs(1);

/// A command for a running device.
#[derive(Debug, Clone)]
pub enum DeviceCmd {
    /// Apply a desired value (a no-op when it equals the last applied one).
    Desired { property: String, value: String },
    /// Report every twin and the state again.
    Resync,
}

/// The handle of a running device; dropping it does not stop the device,
/// [`DeviceHandle::stop`] does.
#[derive(Debug)]
pub struct DeviceHandle {
    pub cmd: mpsc::Sender<DeviceCmd>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl DeviceHandle {
    /// Stops the device and waits for its DDS entities to be released.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Where a device sends its output.
#[derive(Debug, Clone)]
pub struct DeviceOutputs {
    pub reports: mpsc::Sender<Report>,
    pub pushes: Option<mpsc::Sender<PushSample>>,
    pub metrics: Arc<Metrics>,
}

/// A running device's name and counters (looked up once, not per sample).
struct Dev {
    name: String,
    counters: crate::metrics::DeviceCounters,
}

struct ReadGroup {
    layout: Arc<Layout>,
    /// (property index, plan) of the properties read from this topic.
    props: Vec<usize>,
}

struct WriteSide {
    writer: Arc<RawWriter>,
    last_applied: Option<String>,
    /// The last message published, re-sent to subscribers that match later.
    last_payload: Option<Vec<u8>>,
    matched: usize,
    republish_due: bool,
}

/// Starts a device. DDS entities that cannot be created leave that property
/// unserved (logged); the device runs with the rest.
pub fn spawn_device(
    plan: DevicePlan,
    participant: Participant,
    outputs: DeviceOutputs,
    parent: &CancellationToken,
) -> DeviceHandle {
    let cancel = parent.child_token();
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let task = tokio::spawn(run_device(
        plan,
        participant,
        outputs,
        cmd_rx,
        cancel.clone(),
    ));
    DeviceHandle {
        cmd: cmd_tx,
        cancel,
        task,
    }
}

fn value_type(p: &PropertyPlan) -> crate::model::PropertyType {
    if let Some(m) = &p.model {
        return m.type_;
    }
    if p.transform.is_some() {
        return crate::model::PropertyType::Double;
    }
    let b = p.read.as_ref().or(p.write.as_ref().map(|w| &w.topic));
    b.map(|b| infer_type(&b.leaf, b.is_array))
        .unwrap_or_default()
}

async fn run_device(
    plan: DevicePlan,
    participant: Participant,
    out: DeviceOutputs,
    mut cmds: mpsc::Receiver<DeviceCmd>,
    cancel: CancellationToken,
) {
    let device = plan.id.to_string();
    let dev = Dev {
        name: device.clone(),
        counters: out.metrics.device(&device),
    };
    let policies = plan
        .properties
        .iter()
        .map(|p| PropertyPolicy {
            name: p.name.clone(),
            collect_cycle: p.collect_cycle,
            report_cycle: p.report_cycle,
            report_to_cloud: p.report_to_cloud,
            deadband: p.deadband,
            reads: p.read.is_some(),
            value_type: value_type(p).twin_type(),
        })
        .collect();
    let mut reporter = Reporter::new(policies, plan.liveness_cycles, Instant::now().into_std());

    // Readers: one per (topic, type, QoS), shared by the properties on it.
    let (sample_tx, mut sample_rx) = mpsc::channel::<(usize, RawSample)>(SAMPLE_QUEUE);
    let mut groups: Vec<ReadGroup> = Vec::new();
    let mut group_of: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, p) in plan.properties.iter().enumerate() {
        let Some(b) = &p.read else { continue };
        let key = b.key();
        if let Some(g) = group_of.get(&key) {
            groups[*g].props.push(i);
            continue;
        }
        match participant.reader(&b.dds_topic, &b.layout.dds_type_name(), &b.qos) {
            Ok(reader) => {
                let g = groups.len();
                group_of.insert(key, g);
                groups.push(ReadGroup {
                    layout: b.layout.clone(),
                    props: vec![i],
                });
                tracing::info!(%device, property = %p.name, route = %format!("ROS:{} -> twin:{}", b.ros_name, p.name), "reading");
                tokio::spawn(forward_samples(
                    g,
                    reader,
                    sample_tx.clone(),
                    cancel.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(%device, property = %p.name, error = %e, "cannot create DDS reader; property not served")
            }
        }
    }
    drop(sample_tx);

    // Writers: one per (topic, type, QoS).
    let mut writers: HashMap<(String, String, String), Arc<RawWriter>> = HashMap::new();
    let mut write_sides: HashMap<usize, WriteSide> = HashMap::new();
    for (i, p) in plan.properties.iter().enumerate() {
        let Some(w) = &p.write else { continue };
        let key = w.topic.key();
        let writer = match writers.get(&key) {
            Some(w) => w.clone(),
            None => match participant.writer(
                &w.topic.dds_topic,
                &w.topic.layout.dds_type_name(),
                &w.topic.qos,
            ) {
                Ok(wr) => {
                    let wr = Arc::new(wr);
                    writers.insert(key, wr.clone());
                    wr
                }
                Err(e) => {
                    tracing::error!(%device, property = %p.name, error = %e, "cannot create DDS writer; property not served");
                    continue;
                }
            },
        };
        tracing::info!(%device, property = %p.name, route = %format!("twin:{} -> ROS:{}", p.name, w.topic.ros_name), "writing");
        write_sides.insert(
            i,
            WriteSide {
                writer,
                last_applied: None,
                last_payload: None,
                matched: 0,
                republish_due: false,
            },
        );
    }

    // Desired values already in the spec.
    for (i, p) in plan.properties.iter().enumerate() {
        if let Some(d) = p.desired.clone() {
            apply_desired(&plan, i, &d, &mut write_sides, &mut reporter, &dev).await;
        }
    }

    let mut liveness = tokio::time::interval(WRITER_LIVENESS_PERIOD);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let has_writers = !write_sides.is_empty();
    loop {
        let now = Instant::now();
        let wake = reporter
            .next_deadline(now.into_std())
            .map(Instant::from_std);
        tokio::select! {
            _ = cancel.cancelled() => break,
            s = sample_rx.recv() => {
                let Some((g, sample)) = s else {
                    // Every reader ended: the participant is shutting down.
                    if !cancel.is_cancelled() {
                        tracing::warn!(%device, "all DDS readers closed");
                    }
                    cancel.cancelled().await;
                    break;
                };
                on_sample(&plan, &groups[g], &sample, &mut reporter, &dev);
            }
            c = cmds.recv() => match c {
                Some(DeviceCmd::Desired { property, value }) => {
                    match plan.properties.iter().position(|p| p.name == property) {
                        Some(i) => apply_desired(&plan, i, &value, &mut write_sides, &mut reporter, &dev).await,
                        None => {
                            tracing::warn!(%device, %property, "desired value for a property this device does not have");
                            reporter.on_rejection(Rejection { property, value, reason: "no such property on this device".into() });
                        }
                    }
                }
                Some(DeviceCmd::Resync) => reporter.force_full(),
                None => break,
            },
            _ = liveness.tick(), if has_writers => {
                for (i, w) in write_sides.iter_mut() {
                    let n = w.writer.matched_readers();
                    if plan.properties[*i].read.is_none() {
                        reporter.on_writer_liveness(*i, n > 0);
                    }
                    // A subscriber that joined after the last desired value gets
                    // it again, one tick later (the far side may see the match
                    // after we do, and a volatile reader drops earlier data).
                    if w.republish_due {
                        w.republish_due = false;
                        if let Some(p) = w.last_payload.clone() {
                            match w.writer.write_async(p).await {
                                Ok(()) => tracing::debug!(%device, property = %plan.properties[*i].name, "desired value re-published to a new subscriber"),
                                Err(e) => tracing::warn!(%device, property = %plan.properties[*i].name, error = %e, "re-publish failed"),
                            }
                        }
                    }
                    if n > w.matched {
                        w.republish_due = w.last_payload.is_some();
                    }
                    w.matched = n;
                }
            }
            _ = sleep_until_opt(wake) => {}
        }
        let o = reporter.poll(Instant::now().into_std());
        if let Some(pushes) = &out.pushes {
            for (i, value, ts) in &o.collected {
                let p = &plan.properties[*i];
                if let Some(method) = &p.push_method {
                    let s = PushSample {
                        device: plan.id.clone(),
                        property: p.name.clone(),
                        value: value.clone(),
                        value_type: value_type(p).twin_type(),
                        timestamp_ms: *ts,
                        method: method.clone(),
                    };
                    if pushes.try_send(s).is_err() {
                        out.metrics.push_dropped.inc();
                    }
                }
            }
        }
        if o.has_report() {
            if let Some(st) = o.state {
                tracing::info!(%device, state = %st, "device state");
                out.metrics.set_state(&device, st);
            }
            let report = Report {
                device: plan.id.clone(),
                twins: o.twins,
                state: o.state,
                rejections: o.rejections,
                report_to_cloud: true,
            };
            dev.counters.reports.inc();
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = out.reports.send(report) => if r.is_err() { break },
            }
        }
    }
    out.metrics.set_state(&device, DeviceState::Unknown);
    tracing::debug!(%device, "device stopped");
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn forward_samples(
    g: usize,
    mut reader: RawReader,
    tx: mpsc::Sender<(usize, RawSample)>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            s = reader.recv() => match s {
                Some(s) => if tx.send((g, s)).await.is_err() { break },
                None => break,
            },
        }
    }
}

fn on_sample(
    plan: &DevicePlan,
    group: &ReadGroup,
    sample: &RawSample,
    reporter: &mut Reporter,
    dev: &Dev,
) {
    let device = dev.name.as_str();
    dev.counters.samples.inc();
    let value = match cdr::decode(&group.layout, &sample.payload) {
        Ok(v) => v,
        Err(e) => {
            dev.counters.decode_errors.inc();
            tracing::warn!(%device, type_name = %group.layout.type_name, error = %e, "undecodable sample ignored");
            return;
        }
    };
    let ts = sample
        .source_timestamp
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or_else(now_ms);
    let now = Instant::now().into_std();
    for &i in &group.props {
        let p = &plan.properties[i];
        let Some(b) = &p.read else { continue };
        let Some(field) = value.get_path(&b.path) else {
            tracing::warn!(%device, property = %p.name, path = %b.path, "field missing in sample");
            continue;
        };
        let field = if let Some(t) = p.transform {
            match t.apply(&field) {
                Some(v) => v,
                None => {
                    tracing::warn!(%device, property = %p.name, "transform does not apply to the field value");
                    continue;
                }
            }
        } else if b.is_array {
            ros2::value::Value::String(field.to_string())
        } else {
            field
        };
        match to_twin(&field, &p.conversion, value_type(p)) {
            Ok(twin) => {
                let numeric = field
                    .as_f64()
                    .map(|x| x * p.conversion.scale + p.conversion.offset);
                reporter.on_sample(i, twin, numeric, ts, now);
            }
            Err(e) => {
                dev.counters.decode_errors.inc();
                tracing::warn!(%device, property = %p.name, error = %e, "value cannot become a twin");
            }
        }
    }
}

async fn apply_desired(
    plan: &DevicePlan,
    i: usize,
    value: &str,
    writes: &mut HashMap<usize, WriteSide>,
    reporter: &mut Reporter,
    dev: &Dev,
) {
    let device = dev.name.as_str();
    let p = &plan.properties[i];
    let reject = |reporter: &mut Reporter, reason: String| {
        tracing::warn!(%device, property = %p.name, value, %reason, "desired value rejected, not sent");
        dev.counters.desired_rejected.inc();
        reporter.on_rejection(Rejection {
            property: p.name.clone(),
            value: value.to_owned(),
            reason,
        });
    };
    let (Some(w), Some(side)) = (&p.write, writes.get_mut(&i)) else {
        if p.write.is_none() {
            reject(
                reporter,
                "the property has no write side (visitor direction is read)".into(),
            );
        } else {
            reject(
                reporter,
                "the property's DDS writer could not be created".into(),
            );
        }
        return;
    };
    if side.last_applied.as_deref() == Some(value) {
        return;
    }
    let field = match desired_to_field(value, &p.conversion, p.model.as_ref(), &w.topic.leaf) {
        Ok(f) => f,
        Err(e) => return reject(reporter, e.to_string()),
    };
    let mut msg = w.template.clone();
    if let Err(e) = msg.set_path(&w.topic.path, field.clone()) {
        return reject(reporter, e.to_string());
    }
    let payload = match cdr::encode(&w.topic.layout, &msg, Endianness::Little) {
        Ok(b) => b,
        Err(e) => return reject(reporter, TwinError::Convert(e.to_string()).to_string()),
    };
    if let Err(e) = side.writer.write_async(payload.clone()).await {
        return reject(reporter, format!("publish failed: {e}"));
    }
    side.last_applied = Some(value.to_owned());
    side.last_payload = Some(payload);
    dev.counters.desired_applied.inc();
    tracing::info!(%device, property = %p.name, value, topic = %w.topic.ros_name, "desired value published");
    reporter.on_desired_applied(i, value.to_owned());
    if p.read.is_none() {
        // No read-back: what was written is what is reported.
        if let Ok(twin) = to_twin(&field, &p.conversion, value_type(p)) {
            reporter.on_sample(i, twin, field.as_f64(), now_ms(), Instant::now().into_std());
        }
    }
}
