//! One link's relay: the routes it carries both ways, across sessions.
//!
//! A [`LinkActor`] exists per upstream (edge) or per robot (hub) and outlives sessions: its
//! outboxes (store-and-forward), latched caches, inboxes (exactly-once across reconnects) and
//! DDS writers stay while the TCP connection comes and goes. It is one task that owns all that
//! state and `select!`s over:
//!
//! - [`LinkCommand`]s from the DDS side (routes appear and go; a new session is attached),
//! - [`Sample`]s read from DDS for its outgoing routes,
//! - frames from the attached session (ANNOUNCE, WITHDRAW, DATA, ACK),
//! - room in the session's outgoing channel (the [`Scheduler`] picks the next frame: control
//!   first, then by priority, chunks of different routes interleaved),
//! - timers (acks, resume waits, status), and shutdown.
//!
//! What the far side's routes become locally (a DDS writer, a service call) is decided by a
//! [`SinkFactory`] the edge and the hub provide.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use ros2::names::Namespace;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::http::RouteStatus;
use crate::link::chunk::{Chunker, Reassembler, ReassemblyLimits, DEFAULT_CHUNK_SIZE};
use crate::link::compress::{decompress, Compressor};
use crate::link::frame::{
    Ack, Announce, Compression, Data, Frame, Reason, ReasonCode, RouteId, RouteKind, RouteQos,
    Withdraw, DATA_HEADER_LEN, FLAG_COMPRESSED,
};
use crate::link::reliable::{Accept, Inbox, Outbox, OutboxLimits};
use crate::link::scheduler::{Delivery, Pushed, Scheduler, SchedulerLimits};
use crate::metrics::{Direction, DropReason, Metrics, RouteMetrics};
use crate::session::{SessionEvent, SessionParams};

/// Which end of links this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The robot: its routes appear under the namespace the hub grants.
    Edge,
    /// The hub.
    Hub,
}

/// How a route is carried (from config and the publisher's QoS).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    /// 0 = most urgent.
    pub priority: u8,
    /// Acknowledged and resent.
    pub reliable: bool,
    /// The outbox keeps filling during an outage (reliable only).
    pub store_forward: bool,
    /// Per-route compression.
    pub compression: Compression,
    /// Downsampling: at most this many messages per second.
    pub max_rate_hz: Option<f64>,
    /// History depth on the far side (and of the latched cache).
    pub depth: u32,
    /// Outbox bounds.
    pub outbox: OutboxLimits,
    /// Transient local: one route per publisher, its last `depth` samples resent to a peer
    /// that does not have them yet.
    pub latched: bool,
}

/// A route the DDS side wants this link to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRouteSpec {
    /// ROS name as announced (the sender's own name, without the robot namespace).
    pub name: String,
    /// Topic or service half.
    pub kind: RouteKind,
    /// DDS type name.
    pub type_name: String,
    /// For service replies: the request type.
    pub request_type: Option<String>,
    /// QoS for the far side's endpoint.
    pub qos: RouteQos,
    /// How it is carried.
    pub settings: RouteSettings,
    /// The local ROS name (for logs and status; the hub's `/robot1/cmd_vel`).
    pub local_name: String,
}

/// Something the DDS side tells a link.
#[derive(Debug)]
pub enum LinkCommand {
    /// Carry (or update) a route. For latched routes this is a template: one route per
    /// publisher is made when its first sample arrives.
    AddRoute(OutRouteSpec),
    /// Stop carrying a route (all its per-publisher routes too).
    RemoveRoute {
        /// Its name.
        name: String,
        /// Its kind.
        kind: RouteKind,
    },
    /// A publisher of a latched route went away: withdraw its route.
    RemoveSource {
        /// The route name.
        name: String,
        /// The publisher's GUID.
        source: [u8; 16],
    },
    /// A new session to use (replaces the current one).
    Attach(SessionAttach),
}

/// An established session handed to the link.
#[derive(Debug)]
pub struct SessionAttach {
    /// What the handshake settled.
    pub params: SessionParams,
    /// Frames to send.
    pub out: mpsc::Sender<Frame>,
    /// Frames received (the first, `Established`, already taken by whoever attached it).
    pub events: mpsc::Receiver<SessionEvent>,
    /// The peer's address, for status.
    pub peer: Option<String>,
}

/// A sample read from DDS for an outgoing route.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Route name (as in [`OutRouteSpec::name`]).
    pub name: Arc<str>,
    /// Route kind.
    pub kind: RouteKind,
    /// The DDS writer that published it.
    pub source: [u8; 16],
    /// The serialized sample (CDR with its encapsulation header).
    pub payload: Bytes,
    /// When the bridge read it.
    pub received: Instant,
}

/// Senders into a link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    /// The link's name (upstream or robot).
    pub name: Arc<str>,
    /// Route changes and sessions.
    pub commands: mpsc::Sender<LinkCommand>,
    /// Samples.
    pub samples: mpsc::Sender<Sample>,
}

/// The local end of a route announced by the peer.
pub struct Sink {
    /// The local ROS name (for logs and status).
    pub local_name: String,
    /// Delivers one message (e.g. writes it to DDS).
    pub deliver: Box<dyn FnMut(Bytes) -> BoxFuture<'static, Result<(), String>> + Send>,
    /// Whatever must live as long as the sink (reader tasks, DDS writers).
    pub guards: Vec<Box<dyn std::any::Any + Send>>,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("local_name", &self.local_name)
            .finish_non_exhaustive()
    }
}

/// What the link knows when a sink is opened.
#[derive(Debug, Clone)]
pub struct LinkContext {
    /// The link's name.
    pub link: Arc<str>,
    /// The session's namespace (the robot's).
    pub namespace: Namespace,
    /// This link's handle (a sink may feed routes back, e.g. service requests).
    pub handle: LinkHandle,
}

/// Opens sinks for routes the peer announces.
pub trait SinkFactory: Send + Sync + 'static {
    /// The local end of `announce`, or why it is refused (logged, its DATA dropped).
    fn open(&self, ctx: &LinkContext, announce: &Announce) -> Result<Sink, String>;
}

/// Limits of one link.
#[derive(Debug, Clone)]
pub struct LinkLimits {
    /// Routes the peer may announce.
    pub max_routes: usize,
    /// Send queue.
    pub scheduler: SchedulerLimits,
    /// Reassembly.
    pub reassembly: ReassemblyLimits,
}

impl Default for LinkLimits {
    fn default() -> Self {
        Self {
            max_routes: 256,
            scheduler: SchedulerLimits::default(),
            reassembly: ReassemblyLimits::default(),
        }
    }
}

/// The link's state for status pages.
#[derive(Debug, Clone, Default)]
pub struct LinkSnapshot {
    /// The link's name (upstream or robot).
    pub name: String,
    /// Connected now?
    pub connected: bool,
    /// Current or last session id.
    pub session: Option<String>,
    /// Peer address.
    pub peer: Option<String>,
    /// Namespace granted.
    pub namespace: Option<String>,
    /// Routes both ways.
    pub routes: Vec<RouteStatus>,
    /// Sessions attached so far.
    pub sessions: u64,
}

type OutKey = (Arc<str>, RouteKind, Option<[u8; 16]>);
type InKey = (String, RouteKind, Option<String>);

/// Bounded record of when messages were read, for the latency metric.
const LATENCY_TRACK: usize = 1024;
/// Ack after this many deliveries on a route ...
const ACK_EVERY: u64 = 32;
/// ... or this long after a delivery.
const ACK_DELAY: Duration = Duration::from_millis(20);
/// Status snapshot period.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// Consecutive DATA frames for unknown routes tolerated before the session is closed.
const MAX_UNKNOWN_DATA: u32 = 10_000;

struct OutRoute {
    key: OutKey,
    spec: OutRouteSpec,
    stream: u64,
    outbox: Option<Outbox>,
    next_seq: u64,
    latched: VecDeque<(u64, u8, Bytes)>,
    min_interval: Option<Duration>,
    last_accepted: Option<Instant>,
    awaiting_resume: Option<Instant>,
    read_times: VecDeque<(u64, Instant)>,
    metrics: RouteMetrics,
    messages: u64,
    bytes: u64,
    dropped: u64,
}

/// `std_msgs/msg/String` for the DDS type name `std_msgs::msg::dds_::String_` (status only; a
/// name that is not a ROS type is shown as it is).
fn ros_type_name(dds: &str) -> String {
    ros2::names::TypeName::from_dds(dds).map_or_else(|_| dds.to_owned(), |t| t.to_string())
}

impl OutRoute {
    fn announce(&self, id: RouteId) -> Announce {
        Announce {
            route: id,
            name: self.spec.name.clone(),
            type_name: self.spec.type_name.clone(),
            qos: self.spec.qos,
            priority: self.spec.settings.priority,
            reliable: self.spec.settings.reliable,
            store_forward: self.spec.settings.store_forward,
            compression: self.spec.settings.compression,
            stream: self.stream,
            kind: self.spec.kind,
            source: self.key.2.map(|g| hex(&g)),
            request_type: self.spec.request_type.clone(),
        }
    }

    fn drop_count(&mut self, reason: DropReason, n: u64) {
        self.dropped += n;
        self.metrics.dropped(reason, n);
    }
}

struct InRoute {
    key: InKey,
    reliable: bool,
    reassembler: Reassembler,
    delivered_since_ack: u64,
    metrics: RouteMetrics,
    display: String,
}

/// Messages queued towards one sink (a DDS writer task per in-route, so a slow 4 MiB write
/// never holds back a small message of another route).
const SINK_QUEUE: usize = 16;

struct SinkEntry {
    queue: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<()>,
    failed: Arc<std::sync::atomic::AtomicU64>,
    messages: u64,
    bytes: u64,
    dropped: u64,
    metrics: RouteMetrics,
    display: String,
    reliable: bool,
    type_name: String,
}

impl Drop for SinkEntry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SinkEntry {
    /// Starts the sink's writer task.
    fn start(
        sink: Sink,
        metrics: RouteMetrics,
        display: String,
        reliable: bool,
        type_name: String,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<Bytes>(SINK_QUEUE);
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (m, f, shown) = (metrics.clone(), failed.clone(), display.clone());
        let task = tokio::spawn(async move {
            let mut sink = sink;
            while let Some(p) = rx.recv().await {
                if let Err(e) = (sink.deliver)(p).await {
                    tracing::warn!(route = %shown, error = %e, "delivery failed");
                    m.dropped(DropReason::DdsWrite, 1);
                    f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Self {
            queue,
            task,
            failed,
            messages: 0,
            bytes: 0,
            dropped: 0,
            metrics,
            display,
            reliable,
            type_name,
        }
    }
}

struct Session {
    params: SessionParams,
    chunker: Chunker,
    ack_due: Option<Instant>,
    acks_pending: BTreeSet<RouteId>,
    unknown_data: u32,
}

/// One link's relay state and loop (see the module docs).
pub struct LinkActor {
    drain: Duration,
    name: Arc<str>,
    side: Side,
    handle: LinkHandle,
    factory: Arc<dyn SinkFactory>,
    metrics: Arc<Metrics>,
    limits: LinkLimits,
    compressor: Compressor,
    stream_base: u64,
    templates: HashMap<(Arc<str>, RouteKind), OutRouteSpec>,
    out_keys: HashMap<OutKey, RouteId>,
    out: BTreeMap<RouteId, OutRoute>,
    blocked: BTreeSet<RouteId>,
    next_id: u32,
    sinks: HashMap<InKey, SinkEntry>,
    in_routes: HashMap<RouteId, InRoute>,
    inboxes: HashMap<InKey, Inbox>,
    scheduler: Scheduler,
    session: Option<Session>,
    snapshot: watch::Sender<LinkSnapshot>,
    sessions: u64,
    last_session: Option<String>,
    peer: Option<String>,
    namespace: Option<String>,
}

impl fmt::Debug for LinkActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkActor")
            .field("name", &self.name)
            .field("routes_out", &self.out.len())
            .field("routes_in", &self.in_routes.len())
            .finish_non_exhaustive()
    }
}

/// Lower-case hex of a GUID.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<Option<T>> {
    match rx {
        Some(rx) => Some(rx.recv().await),
        None => std::future::pending().await,
    }
}

async fn reserve_opt<T>(tx: &Option<mpsc::Sender<T>>) -> Option<mpsc::Permit<'_, T>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

fn frame_bytes(chunks: &[Data]) -> usize {
    chunks
        .iter()
        .map(|d| 1 + DATA_HEADER_LEN + d.payload.len())
        .sum()
}

/// Channel capacities of a link.
pub const COMMAND_CAPACITY: usize = 256;
/// Samples queued towards one link.
pub const SAMPLE_CAPACITY: usize = 1024;

impl LinkActor {
    /// A link named `name`; returns it with its handle and the receivers its
    /// [`run`](Self::run) needs.
    pub fn new(
        name: &str,
        side: Side,
        factory: Arc<dyn SinkFactory>,
        metrics: Arc<Metrics>,
        limits: LinkLimits,
    ) -> (Self, LinkReceivers, watch::Receiver<LinkSnapshot>) {
        let (ctx, crx) = mpsc::channel(COMMAND_CAPACITY);
        let (stx, srx) = mpsc::channel(SAMPLE_CAPACITY);
        let name: Arc<str> = Arc::from(name);
        let handle = LinkHandle {
            name: name.clone(),
            commands: ctx,
            samples: stx,
        };
        let (snapshot, snap_rx) = watch::channel(LinkSnapshot::default());
        let scheduler = Scheduler::new(limits.scheduler);
        (
            Self {
                drain: Duration::ZERO,
                name,
                side,
                handle,
                factory,
                metrics,
                limits,
                compressor: Compressor::default(),
                stream_base: now_ns(),
                templates: HashMap::new(),
                out_keys: HashMap::new(),
                out: BTreeMap::new(),
                blocked: BTreeSet::new(),
                next_id: 1,
                sinks: HashMap::new(),
                in_routes: HashMap::new(),
                inboxes: HashMap::new(),
                scheduler,
                session: None,
                snapshot,
                sessions: 0,
                last_session: None,
                peer: None,
                namespace: None,
            },
            LinkReceivers {
                commands: crx,
                samples: srx,
            },
            snap_rx,
        )
    }

    /// The link's handle.
    pub fn handle(&self) -> LinkHandle {
        self.handle.clone()
    }

    /// Runs until `shutdown`, or until every handle is gone and `linger` passed without a
    /// session (`None`: forever).
    pub async fn run(
        mut self,
        mut rx: LinkReceivers,
        shutdown: CancellationToken,
        linger: Option<Duration>,
    ) {
        let mut events: Option<mpsc::Receiver<SessionEvent>> = None;
        let mut out_tx: Option<mpsc::Sender<Frame>> = None;
        let mut next_status = Instant::now();
        let mut idle_since = Some(Instant::now());
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_some() && (self.session.is_none() || !self.has_unacked()) {
                tracing::info!(link = %self.name, "drained");
                break;
            }
            let timer = self.next_timer(next_status);
            let linger_at = match (linger, idle_since) {
                (Some(l), Some(t)) => Some(t + l),
                _ => None,
            };
            let want_send = out_tx.is_some() && !self.scheduler.is_empty();
            let send_tx = if want_send { out_tx.clone() } else { None };
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if drain_until.is_none() => {
                    if self.session.is_some() && self.has_unacked() && !self.drain.is_zero() {
                        tracing::info!(link = %self.name, timeout_ms = self.drain.as_millis() as u64,
                            "draining: sending what is still unacknowledged");
                        drain_until = Some(Instant::now() + self.drain);
                    } else {
                        break;
                    }
                }
                _ = sleep_until(drain_until.unwrap_or_else(far_future)), if drain_until.is_some() => {
                    tracing::warn!(link = %self.name, "drain timed out with messages unacknowledged");
                    break;
                }
                cmd = rx.commands.recv(), if drain_until.is_none() => match cmd {
                    Some(LinkCommand::Attach(a)) => {
                        if let Some(old) = out_tx.take() {
                            let reason = Reason {
                                code: ReasonCode::DuplicateSession,
                                message: "a newer session of this robot replaced this one".into(),
                            };
                            let _ = old.try_send(Frame::Close(reason));
                            self.on_disconnect("replaced by a newer session");
                        }
                        out_tx = Some(a.out.clone());
                        events = Some(a.events);
                        idle_since = None;
                        self.on_attach(a.params, a.peer);
                    }
                    Some(cmd) => self.on_command(cmd),
                    // Not while the actor holds its own handle; kept for completeness.
                    None => break,
                },
                ev = recv_opt(&mut events) => match ev {
                    Some(Some(SessionEvent::Frame(f))) => {
                        if let Err(reason) = self.on_frame(f).await {
                            tracing::warn!(link = %self.name, code = ?reason.code,
                                message = %reason.message, "closing the session");
                            if let Some(tx) = out_tx.take() {
                                let _ = tx.try_send(Frame::Close(reason));
                            }
                            events = None;
                            idle_since = Some(Instant::now());
                            self.on_disconnect("protocol error");
                        }
                    }
                    Some(Some(SessionEvent::Established(_))) => {}
                    Some(None) | None => {
                        events = None;
                        out_tx = None;
                        idle_since = Some(Instant::now());
                        self.on_disconnect("session ended");
                    }
                },
                permit = reserve_opt(&send_tx), if want_send => {
                    if let Some(permit) = permit {
                        if let Some(f) = self.next_frame() {
                            permit.send(f);
                        }
                        if let Some(tx) = &send_tx {
                            while !self.scheduler.is_empty() {
                                let Ok(p) = tx.try_reserve() else { break };
                                match self.next_frame() {
                                    Some(f) => p.send(f),
                                    None => break,
                                }
                            }
                        }
                        self.pump_blocked();
                    } else {
                        // The session ended; its event channel tells us too.
                        out_tx = None;
                    }
                },
                s = rx.samples.recv(), if drain_until.is_none() => if let Some(s) = s { self.on_sample(s) },
                _ = sleep_until(timer) => {
                    let now = Instant::now();
                    if now >= next_status {
                        self.publish_snapshot();
                        next_status = now + STATUS_EVERY;
                    }
                    self.on_timer(now);
                },
                _ = sleep_until(linger_at.unwrap_or_else(far_future)), if linger_at.is_some() => {
                    tracing::info!(link = %self.name, "link idle past its linger time, releasing its routes");
                    break;
                }
            }
        }
        if let Some(tx) = out_tx.take() {
            let _ = tx.try_send(Frame::Close(Reason {
                code: ReasonCode::Shutdown,
                message: "bridge shutting down".into(),
            }));
        }
        self.publish_snapshot();
    }

    /// Sets how long a shutdown waits for unacknowledged reliable messages (default 0: no
    /// wait).
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    fn has_unacked(&self) -> bool {
        self.out
            .values()
            .any(|r| r.outbox.as_ref().is_some_and(|o| !o.is_empty()))
    }

    fn next_timer(&self, next_status: Instant) -> Instant {
        let mut t = next_status;
        if let Some(s) = &self.session {
            if let Some(d) = s.ack_due {
                t = t.min(d);
            }
        }
        for r in self.out.values() {
            if let Some(d) = r.awaiting_resume {
                t = t.min(d);
            }
        }
        t
    }

    fn on_timer(&mut self, now: Instant) {
        if let Some(s) = &self.session {
            if s.ack_due.is_some_and(|d| d <= now) {
                self.flush_acks();
            }
        }
        let expired: Vec<RouteId> = self
            .out
            .iter()
            .filter(|(_, r)| r.awaiting_resume.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::debug!(link = %self.name, route = %id, "no resume ACK in time, resending from the last ack");
            self.resume(id, None);
        }
    }

    fn on_command(&mut self, cmd: LinkCommand) {
        match cmd {
            LinkCommand::AddRoute(spec) => self.add_route(spec),
            LinkCommand::RemoveRoute { name, kind } => {
                let name: Arc<str> = Arc::from(name.as_str());
                self.templates.remove(&(name.clone(), kind));
                let ids: Vec<RouteId> = self
                    .out
                    .iter()
                    .filter(|(_, r)| r.key.0 == name && r.key.1 == kind)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.remove_out(id);
                }
            }
            LinkCommand::RemoveSource { name, source } => {
                let key: OutKey = (Arc::from(name.as_str()), RouteKind::Topic, Some(source));
                if let Some(id) = self.out_keys.get(&key).copied() {
                    self.remove_out(id);
                }
            }
            // Handled by the loop, which owns the session channels.
            LinkCommand::Attach(_) => {}
        }
    }

    fn add_route(&mut self, spec: OutRouteSpec) {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let kind = spec.kind;
        let latched = spec.settings.latched;
        self.templates.insert((name.clone(), kind), spec.clone());
        if latched {
            // Per-publisher routes are made by their first sample; update the existing ones.
            let ids: Vec<RouteId> = self
                .out
                .iter()
                .filter(|(_, r)| r.key.0 == name && r.key.1 == kind)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.update_out(id, spec.clone());
            }
            return;
        }
        let key: OutKey = (name, kind, None);
        match self.out_keys.get(&key).copied() {
            Some(id) => self.update_out(id, spec),
            None => {
                self.create_out(key, spec);
            }
        }
    }

    fn update_out(&mut self, id: RouteId, spec: OutRouteSpec) {
        let Some(r) = self.out.get_mut(&id) else {
            return;
        };
        if r.spec == spec {
            return;
        }
        tracing::info!(link = %self.name, route = %spec.name, "route settings changed, re-announcing");
        r.spec = spec;
        r.min_interval = min_interval(r.spec.settings.max_rate_hz);
        let a = r.announce(id);
        if self.session.is_some() {
            let _ = self.scheduler.push_control(Frame::Announce(a));
        }
    }

    fn create_out(&mut self, key: OutKey, spec: OutRouteSpec) -> Option<RouteId> {
        let id = RouteId(self.next_id);
        self.next_id = self.next_id.checked_add(1)?;
        let shown = self.out_display(&spec);
        let metrics = self.metrics.route(&self.name, &spec.name, Direction::Out);
        let outbox = spec.settings.reliable.then(|| {
            Outbox::new(
                self.stream_base.wrapping_add(u64::from(id.0)),
                spec.settings.outbox,
            )
        });
        tracing::info!(link = %self.name, route = %shown, reliable = spec.settings.reliable,
            store_forward = spec.settings.store_forward, priority = spec.settings.priority,
            "route created");
        let r = OutRoute {
            key: key.clone(),
            stream: self.stream_base.wrapping_add(u64::from(id.0)),
            outbox,
            next_seq: 0,
            latched: VecDeque::new(),
            min_interval: min_interval(spec.settings.max_rate_hz),
            last_accepted: None,
            awaiting_resume: None,
            read_times: VecDeque::new(),
            metrics,
            messages: 0,
            bytes: 0,
            dropped: 0,
            spec,
        };
        if self.session.is_some() {
            // A new stream: the receiver's resume ACK (0) needs no wait.
            let _ = self.scheduler.push_control(Frame::Announce(r.announce(id)));
        }
        self.out_keys.insert(key, id);
        self.out.insert(id, r);
        Some(id)
    }

    fn remove_out(&mut self, id: RouteId) {
        let Some(r) = self.out.remove(&id) else {
            return;
        };
        self.out_keys.remove(&r.key);
        self.blocked.remove(&id);
        self.scheduler.remove_route(id);
        tracing::info!(link = %self.name, route = %self.out_display(&r.spec), "route withdrawn");
        if self.session.is_some() {
            let _ = self
                .scheduler
                .push_control(Frame::Withdraw(Withdraw { route: id }));
        }
    }

    fn out_display(&self, spec: &OutRouteSpec) -> String {
        let far = match &self.namespace {
            Some(ns) if self.side == Side::Edge => {
                format!("{ns}{}", spec.name)
            }
            _ => spec.name.clone(),
        };
        format!("ROS:{} -> {}:{}", spec.local_name, self.name, far)
    }

    fn on_sample(&mut self, s: Sample) {
        let template_key = (s.name.clone(), s.kind);
        let Some(template) = self.templates.get(&template_key) else {
            return;
        };
        let key: OutKey = if template.settings.latched {
            (s.name.clone(), s.kind, Some(s.source))
        } else {
            (s.name.clone(), s.kind, None)
        };
        let id = match self.out_keys.get(&key).copied() {
            Some(id) => id,
            None => {
                let spec = template.clone();
                match self.create_out(key, spec) {
                    Some(id) => id,
                    None => return,
                }
            }
        };
        let connected = self.session.is_some();
        let compressor = &self.compressor;
        let Some(r) = self.out.get_mut(&id) else {
            return;
        };
        if let (Some(min), Some(last)) = (r.min_interval, r.last_accepted) {
            if s.received.saturating_duration_since(last) < min {
                r.drop_count(DropReason::RateLimited, 1);
                return;
            }
        }
        r.last_accepted = Some(s.received);
        let len = s.payload.len();
        let (payload, flags) = if r.spec.settings.compression == Compression::Zstd {
            let (p, c) = compressor.compress(&s.payload);
            (p, if c { FLAG_COMPRESSED } else { 0 })
        } else {
            (s.payload, 0)
        };
        let seq;
        if let Some(outbox) = &mut r.outbox {
            if !connected && !r.spec.settings.store_forward {
                r.drop_count(DropReason::NotConnected, 1);
                return;
            }
            let before = outbox.dropped();
            seq = outbox.push_with_flags(payload.clone(), flags);
            let dropped = outbox.dropped() - before;
            let depth = outbox.len() as i64;
            if dropped > 0 {
                r.drop_count(DropReason::OutboxFull, dropped);
            }
            r.metrics.set_queue_depth(depth);
        } else {
            r.next_seq += 1;
            seq = r.next_seq;
        }
        r.messages += 1;
        r.bytes += len as u64;
        r.metrics.message(len);
        if r.read_times.len() >= LATENCY_TRACK {
            r.read_times.pop_front();
        }
        r.read_times.push_back((seq, s.received));
        if r.spec.settings.latched {
            r.latched.push_back((seq, flags, payload.clone()));
            while r.latched.len() > r.spec.settings.depth.max(1) as usize {
                r.latched.pop_front();
            }
        }
        if r.outbox.is_some() {
            self.pump(id);
        } else if connected {
            self.push_best_effort(id, seq, flags, payload);
        } else if let Some(r) = self.out.get_mut(&id) {
            r.drop_count(DropReason::NotConnected, 1);
        }
    }

    fn push_best_effort(&mut self, id: RouteId, seq: u64, flags: u8, payload: Bytes) {
        let Some(s) = &self.session else { return };
        let Some(r) = self.out.get_mut(&id) else {
            return;
        };
        let Ok(chunks) = s.chunker.split(id, seq, flags, payload) else {
            r.drop_count(DropReason::QueueFull, 1);
            return;
        };
        match self
            .scheduler
            .push(id, r.spec.settings.priority, Delivery::BestEffort, chunks)
        {
            Ok(Pushed::Queued) => {}
            Ok(Pushed::Dropped) | Err(_) => r.drop_count(DropReason::QueueFull, 1),
        }
    }

    /// Moves a reliable route's unsent messages into the scheduler while there is room.
    fn pump(&mut self, id: RouteId) {
        let Some(s) = &self.session else { return };
        let Some(r) = self.out.get_mut(&id) else {
            return;
        };
        if r.awaiting_resume.is_some() {
            return;
        }
        let Some(outbox) = &mut r.outbox else { return };
        while let Some(m) = outbox.peek_unsent() {
            let Ok(chunks) = s.chunker.split(id, m.seq, m.flags, m.payload.clone()) else {
                outbox.advance();
                continue;
            };
            if !self.scheduler.would_fit(frame_bytes(&chunks)) {
                self.blocked.insert(id);
                return;
            }
            match self
                .scheduler
                .push(id, r.spec.settings.priority, Delivery::Reliable, chunks)
            {
                Ok(_) => outbox.advance(),
                Err(_) => {
                    self.blocked.insert(id);
                    return;
                }
            }
        }
        self.blocked.remove(&id);
    }

    fn pump_blocked(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        let ids: Vec<RouteId> = self.blocked.iter().copied().collect();
        for id in ids {
            self.pump(id);
        }
    }

    fn next_frame(&mut self) -> Option<Frame> {
        let f = self.scheduler.next()?;
        if let Frame::Data(d) = &f {
            if d.index + 1 == d.count {
                if let Some(r) = self.out.get_mut(&d.route) {
                    let now = Instant::now();
                    while let Some((seq, t)) = r.read_times.front().copied() {
                        if seq > d.seq {
                            break;
                        }
                        r.read_times.pop_front();
                        if seq == d.seq {
                            r.metrics.latency(now.saturating_duration_since(t));
                        }
                    }
                }
            }
        }
        Some(f)
    }

    fn on_attach(&mut self, params: SessionParams, peer: Option<String>) {
        let chunk = DEFAULT_CHUNK_SIZE
            .min(params.limits.max_chunk_payload())
            .max(1);
        let Ok(chunker) = Chunker::new(chunk) else {
            return;
        };
        self.sessions += 1;
        self.last_session = Some(params.session.clone());
        self.peer = peer;
        self.namespace = Some(params.namespace.to_string());
        tracing::info!(link = %self.name, session = %params.session, namespace = %params.namespace,
            routes = self.out.len(), "session attached, announcing routes");
        let resume_wait = params.heartbeat;
        self.session = Some(Session {
            params,
            chunker,
            ack_due: None,
            acks_pending: BTreeSet::new(),
            unknown_data: 0,
        });
        self.scheduler.clear();
        self.in_routes.clear();
        self.blocked.clear();
        let now = Instant::now();
        let ids: Vec<RouteId> = self.out.keys().copied().collect();
        for id in ids {
            let Some(r) = self.out.get_mut(&id) else {
                continue;
            };
            let a = r.announce(id);
            let _ = self.scheduler.push_control(Frame::Announce(a));
            if r.outbox.is_some() {
                r.awaiting_resume = Some(now + resume_wait);
            } else if r.spec.settings.latched {
                let latched: Vec<(u64, u8, Bytes)> = r.latched.iter().cloned().collect();
                for (seq, flags, p) in latched {
                    self.push_best_effort(id, seq, flags, p);
                }
            }
        }
        self.publish_snapshot();
    }

    fn on_disconnect(&mut self, why: &str) {
        if self.session.take().is_some() {
            tracing::info!(link = %self.name, why, "session detached");
        }
        self.scheduler.clear();
        self.in_routes.clear();
        self.blocked.clear();
        for r in self.out.values_mut() {
            r.awaiting_resume = None;
        }
        self.publish_snapshot();
    }

    /// Applies a resume point (`None`: none came in time) and starts (re)sending.
    fn resume(&mut self, id: RouteId, receiver_last: Option<u64>) {
        let Some(r) = self.out.get_mut(&id) else {
            return;
        };
        r.awaiting_resume = None;
        let Some(outbox) = &mut r.outbox else { return };
        if let Some(last) = receiver_last {
            let _ = outbox.ack(last);
        }
        outbox.rewind();
        let acked = outbox.acked();
        r.metrics.set_queue_depth(outbox.len() as i64);
        // Latched samples the receiver does not have and the outbox no longer holds (a
        // receiver that restarted): send them again first, in order.
        if r.spec.settings.latched {
            let from = receiver_last.unwrap_or(acked);
            let resend: Vec<(u64, u8, Bytes)> = r
                .latched
                .iter()
                .filter(|(seq, _, _)| *seq > from && *seq <= acked)
                .cloned()
                .collect();
            let priority = r.spec.settings.priority;
            if let Some(s) = &self.session {
                for (seq, flags, p) in resend {
                    if let Ok(chunks) = s.chunker.split(id, seq, flags, p) {
                        let _ = self
                            .scheduler
                            .push(id, priority, Delivery::BestEffort, chunks);
                    }
                }
            }
        }
        self.pump(id);
    }

    /// One frame from the peer; `Err` closes the session with that reason.
    async fn on_frame(&mut self, f: Frame) -> Result<(), Reason> {
        match f {
            Frame::Announce(a) => self.on_announce(a),
            Frame::Withdraw(w) => {
                if let Some(r) = self.in_routes.remove(&w.route) {
                    if let Some(e) = self.sinks.remove(&r.key) {
                        tracing::info!(link = %self.name, route = %e.display, "route withdrawn by the peer");
                    }
                }
                Ok(())
            }
            Frame::Ack(a) => self.on_ack(a),
            Frame::Data(d) => self.on_data(d).await,
            other => Err(Reason {
                code: ReasonCode::Malformed,
                message: format!("unexpected {:?} frame", other.kind()),
            }),
        }
    }

    fn on_ack(&mut self, a: Ack) -> Result<(), Reason> {
        let Some(r) = self.out.get_mut(&a.route) else {
            // A route we withdrew meanwhile.
            return Ok(());
        };
        if r.awaiting_resume.is_some() {
            if r.outbox.as_ref().is_some_and(|o| a.seq > o.assigned()) {
                return Err(Reason {
                    code: ReasonCode::Malformed,
                    message: format!(
                        "resume ACK {} for {} beyond its last sequence",
                        a.seq, a.route
                    ),
                });
            }
            self.resume(a.route, Some(a.seq));
            return Ok(());
        }
        let Some(outbox) = &mut r.outbox else {
            return Ok(());
        };
        match outbox.ack(a.seq) {
            Ok(_) => {
                r.metrics.set_queue_depth(outbox.len() as i64);
                Ok(())
            }
            Err(e) => Err(Reason {
                code: ReasonCode::Malformed,
                message: format!("{}: {e}", a.route),
            }),
        }
    }

    fn on_announce(&mut self, a: Announce) -> Result<(), Reason> {
        if !self.in_routes.contains_key(&a.route) && self.in_routes.len() >= self.limits.max_routes
        {
            return Err(Reason {
                code: ReasonCode::LimitExceeded,
                message: format!("more than {} routes", self.limits.max_routes),
            });
        }
        let Some(s) = &self.session else {
            return Ok(());
        };
        let key: InKey = (a.name.clone(), a.kind, a.source.clone());
        let ctx = LinkContext {
            link: self.name.clone(),
            namespace: s.params.namespace.clone(),
            handle: self.handle.clone(),
        };
        let reuse = self
            .sinks
            .get(&key)
            .is_some_and(|e| e.type_name == a.type_name && e.reliable == a.reliable);
        if !reuse {
            self.sinks.remove(&key);
            match self.factory.open(&ctx, &a) {
                Ok(sink) => {
                    let shown = format!("{}:{} -> ROS:{}", self.name, a.name, sink.local_name);
                    tracing::info!(link = %self.name, route = %shown, reliable = a.reliable,
                        type_name = %a.type_name, "route accepted");
                    let metrics = self.metrics.route(&self.name, &a.name, Direction::In);
                    self.sinks.insert(
                        key.clone(),
                        SinkEntry::start(sink, metrics, shown, a.reliable, a.type_name.clone()),
                    );
                }
                Err(why) => {
                    tracing::info!(link = %self.name, route = %a.name, kind = ?a.kind, reason = %why,
                        "route refused");
                    self.in_routes.remove(&a.route);
                    // Remember the id so its DATA is dropped quietly.
                    self.in_routes.insert(
                        a.route,
                        InRoute {
                            key: (String::new(), a.kind, Some(String::from("refused"))),
                            reliable: false,
                            reassembler: Reassembler::new(a.route, self.limits.reassembly),
                            delivered_since_ack: 0,
                            metrics: self.metrics.route(&self.name, &a.name, Direction::In),
                            display: format!("{}:{} (refused)", self.name, a.name),
                        },
                    );
                    return Ok(());
                }
            }
        }
        let Some(entry) = self.sinks.get(&key) else {
            return Ok(());
        };
        let inbox = self.inboxes.entry(key.clone()).or_default();
        let resume = inbox.on_announce(a.stream);
        let route = InRoute {
            key,
            reliable: a.reliable,
            reassembler: Reassembler::new(a.route, self.limits.reassembly),
            delivered_since_ack: 0,
            metrics: entry.metrics.clone(),
            display: entry.display.clone(),
        };
        self.in_routes.insert(a.route, route);
        if a.reliable {
            let _ = self.scheduler.push_control(Frame::Ack(Ack {
                route: a.route,
                seq: resume,
            }));
        }
        Ok(())
    }

    async fn on_data(&mut self, d: Data) -> Result<(), Reason> {
        let id = d.route;
        let Some(route) = self.in_routes.get_mut(&id) else {
            if let Some(s) = &mut self.session {
                s.unknown_data += 1;
                if s.unknown_data == 1 || s.unknown_data % 1000 == 0 {
                    tracing::debug!(link = %self.name, route = %id, count = s.unknown_data,
                        "DATA for an unknown route dropped");
                }
                if s.unknown_data > MAX_UNKNOWN_DATA {
                    return Err(Reason {
                        code: ReasonCode::Malformed,
                        message: format!("{MAX_UNKNOWN_DATA} DATA frames for unannounced routes"),
                    });
                }
            }
            return Ok(());
        };
        if let Some(s) = &mut self.session {
            s.unknown_data = 0;
        }
        let msg = match route.reassembler.push(d) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(link = %self.name, route = %route.display, error = %e, "chunk dropped");
                route.metrics.dropped(DropReason::Reassembly, 1);
                return Ok(());
            }
        };
        let Some(entry) = self.sinks.get_mut(&route.key) else {
            return Ok(()); // refused route
        };
        let Some(inbox) = self.inboxes.get_mut(&route.key) else {
            return Ok(());
        };
        match inbox.accept(msg.seq) {
            Ok(Accept::Deliver { gap }) => {
                if gap > 0 {
                    tracing::debug!(link = %self.name, route = %route.display, gap, "messages missing before this one");
                }
            }
            Ok(Accept::Duplicate) => {
                entry.metrics.dropped(DropReason::Duplicate, 1);
                entry.dropped += 1;
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(link = %self.name, route = %route.display, error = %e, "bad sequence");
                return Ok(());
            }
        }
        let reliable = route.reliable;
        if reliable {
            route.delivered_since_ack += 1;
        }
        let payload = if msg.flags & FLAG_COMPRESSED != 0 {
            match decompress(&msg.payload, self.limits.reassembly.max_message_size) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(link = %self.name, route = %route.display, error = %e, "message dropped");
                    entry.metrics.dropped(DropReason::Decompress, 1);
                    entry.dropped += 1;
                    self.note_ack(id);
                    return Ok(());
                }
            }
        } else {
            msg.payload
        };
        let len = payload.len();
        let queued = match entry.queue.try_send(payload) {
            Ok(()) => true,
            // Reliable: wait for room (backpressure on this link); best effort: drop.
            Err(mpsc::error::TrySendError::Full(p)) if reliable => {
                entry.queue.send(p).await.is_ok()
            }
            Err(_) => false,
        };
        if queued {
            entry.messages += 1;
            entry.bytes += len as u64;
            entry.metrics.message(len);
        } else {
            entry.metrics.dropped(DropReason::QueueFull, 1);
            entry.dropped += 1;
        }
        if reliable {
            self.note_ack(id);
        }
        Ok(())
    }

    fn note_ack(&mut self, id: RouteId) {
        let Some(s) = &mut self.session else { return };
        let Some(route) = self.in_routes.get_mut(&id) else {
            return;
        };
        if !route.reliable {
            return;
        }
        s.acks_pending.insert(id);
        if route.delivered_since_ack >= ACK_EVERY {
            self.flush_acks();
        } else if s.ack_due.is_none() {
            s.ack_due = Some(Instant::now() + ACK_DELAY);
        }
    }

    fn flush_acks(&mut self) {
        let Some(s) = &mut self.session else { return };
        s.ack_due = None;
        let pending = std::mem::take(&mut s.acks_pending);
        for id in pending {
            let Some(route) = self.in_routes.get_mut(&id) else {
                continue;
            };
            route.delivered_since_ack = 0;
            if let Some(inbox) = self.inboxes.get(&route.key) {
                let _ = self.scheduler.push_control(Frame::Ack(Ack {
                    route: id,
                    seq: inbox.last_delivered(),
                }));
            }
        }
    }

    fn publish_snapshot(&mut self) {
        let mut routes = Vec::new();
        for r in self.out.values() {
            routes.push(RouteStatus {
                link: self.name.to_string(),
                route: self.out_display(&r.spec),
                direction: Direction::Out,
                type_name: ros_type_name(&r.spec.type_name),
                reliable: r.spec.settings.reliable,
                store_forward: r.spec.settings.store_forward,
                priority: r.spec.settings.priority,
                messages: r.messages,
                bytes: r.bytes,
                dropped: r.dropped,
                queue_depth: r.outbox.as_ref().map_or(0, |o| o.len() as u64),
            });
        }
        for e in self.sinks.values() {
            routes.push(RouteStatus {
                link: self.name.to_string(),
                route: e.display.clone(),
                direction: Direction::In,
                type_name: ros_type_name(&e.type_name),
                reliable: e.reliable,
                store_forward: false,
                priority: 0,
                messages: e.messages,
                bytes: e.bytes,
                dropped: e.dropped + e.failed.load(std::sync::atomic::Ordering::Relaxed),
                queue_depth: (SINK_QUEUE - e.queue.capacity()) as u64,
            });
        }
        let snap = LinkSnapshot {
            name: self.name.to_string(),
            connected: self.session.is_some(),
            session: self.last_session.clone(),
            peer: self.peer.clone(),
            namespace: self.namespace.clone(),
            routes,
            sessions: self.sessions,
        };
        self.snapshot.send_replace(snap);
    }
}

/// The receivers [`LinkActor::run`] reads.
#[derive(Debug)]
pub struct LinkReceivers {
    commands: mpsc::Receiver<LinkCommand>,
    samples: mpsc::Receiver<Sample>,
}

fn min_interval(rate: Option<f64>) -> Option<Duration> {
    rate.filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_shows_ros_type_names() {
        assert_eq!(
            super::ros_type_name("std_msgs::msg::dds_::String_"),
            "std_msgs/msg/String"
        );
        assert_eq!(super::ros_type_name("NotRos"), "NotRos");
    }
}
