//! `bridge hub`: the cloud's side.
//!
//! - accepts robot links (TCP or TLS), runs the handshake: the token decides the robot's
//!   namespace (what the robot claims is only logged);
//! - one [`LinkActor`] per robot namespace, kept for `link_linger_s` after its connection
//!   drops, so its DDS writers (and their transient-local history) and its inboxes
//!   (exactly-once across reconnects) survive link cuts; a newer connection of the same robot
//!   replaces the older one;
//! - up routes (announced by the robot) are republished under the robot's namespace by
//!   [`HubSinks`]: `/odom` of robot1 becomes `/robot1/odom`, whatever name the robot uses;
//! - down routes: a cloud publisher on `/robot1/<name>` is offered to robot1 only, as `<name>`;
//!   a publisher on a topic of the hub's `shared` list is offered to every robot; the robot's
//!   own `down` rules (sent in HELLO) must allow it too. Every decision is logged.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ros2::dds::{DdsError, DiscoveryEvent, Endpoint, Participant, Qos};
use ros2::names::{DdsTopic, Namespace, RosName};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::HubConfig;
use crate::edge::{session_error_code, writer_sink};
use crate::filter::{Decision, Filter, Pattern};
use crate::link::chunk::ReassemblyLimits;
use crate::link::frame::{Announce, RouteKind, Subscribe};
use crate::link::scheduler::SchedulerLimits;
use crate::metrics::Metrics;
use crate::reader::{announce_presence, PeerBridges, Target, TopicReader};
use crate::relay::{
    LinkActor, LinkCommand, LinkContext, LinkHandle, LinkLimits, LinkSnapshot, OutRouteSpec,
    SessionAttach, Side, Sink, SinkFactory,
};
use crate::routing::{far_qos, reader_qos, route_settings, writer_qos};
use crate::service_route::{expire_all, proxy_sink, ServedService, ServedServices};
use crate::session::{
    run_hub_session, HubConfig as SessionHubConfig, HubHandshakeConfig, SessionChannels,
    SessionEvent,
};
use crate::transport::{LinkStream, TlsServer};

/// Errors starting the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// DDS.
    #[error("DDS: {0}")]
    Dds(#[from] DdsError),
    /// Configuration that fails when used (token files, TLS files, the listen address).
    #[error("{0}")]
    Config(String),
}

/// Opens the cloud end of routes a robot announces.
struct HubSinks {
    participant: Participant,
    bridges: PeerBridges,
    services: ServedServices,
    shared: Vec<Pattern>,
}

impl SinkFactory for HubSinks {
    fn open(&self, ctx: &LinkContext, a: &Announce) -> Result<Sink, String> {
        let name = RosName::parse(&a.name).map_err(|e| format!("bad name: {e}"))?;
        let full = name.prefixed(&ctx.namespace);
        match a.kind {
            RouteKind::Topic => {
                let topic = full.to_dds_topic().map_err(|e| e.to_string())?;
                let writer = self
                    .participant
                    .writer(&topic, &a.type_name, &writer_qos(&a.qos))
                    .map_err(|e| e.to_string())?;
                Ok(writer_sink(full.as_str().to_owned(), Arc::new(writer)))
            }
            RouteKind::ServiceReply => proxy_sink(&self.participant, &self.bridges, ctx, a, &full),
            RouteKind::ServiceRequest => {
                // A call from the robot's clients: to a service under its namespace, or a
                // shared one; never to another robot's.
                let services = self.services.lock().map_err(|_| "poisoned".to_string())?;
                let svc = services
                    .get(full.as_str())
                    .or_else(|| {
                        self.shared
                            .iter()
                            .any(|p| p.matches(name.as_str()))
                            .then(|| services.get(name.as_str()))
                            .flatten()
                    })
                    .cloned()
                    .ok_or_else(|| "no such cloud service offered to this robot".to_string())?;
                Ok(svc.request_sink(ctx.link.clone()))
            }
        }
    }
}

struct HubLink {
    handle: LinkHandle,
    snapshot: watch::Receiver<LinkSnapshot>,
}

/// What the hub shares between connections.
struct HubShared {
    services: ServedServices,
    shared_topics: Vec<Pattern>,
    participant: Participant,
    bridges: PeerBridges,
    metrics: Arc<Metrics>,
    links: Mutex<HashMap<String, HubLink>>,
    linger: Duration,
    limits: LinkLimits,
    shutdown: CancellationToken,
    connections: AtomicUsize,
    max_links: usize,
}

impl HubShared {
    /// The link of a robot namespace (made if needed).
    fn link_for(self: &Arc<Self>, robot: &str, ns: &Namespace) -> LinkHandle {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = links.get(ns.as_str()) {
            if !l.handle.commands.is_closed() {
                return l.handle.clone();
            }
        }
        let factory = Arc::new(HubSinks {
            participant: self.participant.clone(),
            bridges: self.bridges.clone(),
            services: self.services.clone(),
            shared: self.shared_topics.clone(),
        });
        let (actor, rx, snapshot) = LinkActor::new(
            robot,
            Side::Hub,
            factory,
            self.metrics.clone(),
            self.limits.clone(),
        );
        let handle = actor.handle();
        tokio::spawn(actor.run(rx, self.shutdown.clone(), Some(self.linger)));
        links.insert(
            ns.as_str().to_owned(),
            HubLink {
                handle: handle.clone(),
                snapshot,
            },
        );
        handle
    }
}

/// A robot that (re)connected.
struct Attached {
    namespace: Namespace,
    robot: String,
    subscribe: Filter,
    calls: Filter,
    handle: LinkHandle,
}

/// A running hub.
#[allow(missing_debug_implementations)]
pub struct HubRuntime {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// Tasks (end after shutdown).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<HubShared>,
}

impl HubRuntime {
    /// Snapshots of every robot link.
    pub fn links(&self) -> Vec<(String, LinkSnapshot)> {
        let links = self.shared.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .iter()
            .map(|(ns, l)| (ns.clone(), l.snapshot.borrow().clone()))
            .collect()
    }

    /// The participant.
    pub fn participant(&self) -> &Participant {
        &self.shared.participant
    }
}

/// Starts the hub: DDS, the listener, the discovery loop.
pub async fn start(
    cfg: HubConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<HubRuntime, HubError> {
    let env = |k: &str| std::env::var(k).ok();
    let tokens = cfg
        .token_table(env)
        .map_err(|e| HubError::Config(e.to_string()))?;
    let tls = match &cfg.tls {
        None => None,
        Some(t) => Some(Arc::new(
            TlsServer::from_pem_files(&t.cert_file, &t.key_file, t.client_ca_file.as_deref())
                .map_err(|e| HubError::Config(e.to_string()))?,
        )),
    };
    let pcfg = cfg
        .dds
        .participant_config(env)
        .map_err(|e| HubError::Config(e.to_string()))?;
    let participant = tokio::task::spawn_blocking(move || Participant::new(pcfg))
        .await
        .map_err(|e| HubError::Config(format!("DDS start: {e}")))??;
    let bridges = PeerBridges::default();
    bridges.insert(participant.guid_prefix());
    let presence = announce_presence(&participant)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| HubError::Config(format!("listen: cannot bind {}: {e}", cfg.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| HubError::Config(format!("listen: {e}")))?;
    tracing::info!(addr = %local_addr, tls = tls.is_some(), robots = tokens.len(), "hub listening");
    let limits = LinkLimits {
        max_routes: cfg.limits.max_routes_per_link,
        scheduler: SchedulerLimits {
            max_bytes: cfg.limits.queue_bytes,
            ..SchedulerLimits::default()
        },
        reassembly: ReassemblyLimits {
            max_message_size: cfg.limits.max_message_size,
            ..ReassemblyLimits::default()
        },
    };
    let services: ServedServices = Arc::default();
    let shared = Arc::new(HubShared {
        services: services.clone(),
        shared_topics: cfg.shared.clone(),
        participant: participant.clone(),
        bridges: bridges.clone(),
        metrics: metrics.clone(),
        links: Mutex::new(HashMap::new()),
        linger: Duration::from_secs(cfg.link_linger_s),
        limits,
        shutdown: shutdown.clone(),
        connections: AtomicUsize::new(0),
        max_links: cfg.limits.max_links,
    });
    let mut hs = HubHandshakeConfig {
        heartbeat: Duration::from_millis(u64::from(cfg.limits.heartbeat_ms)),
        max_frame_size: cfg.limits.max_frame_size,
        features: vec!["zstd".into()],
    };
    hs.heartbeat = hs.heartbeat.max(Duration::from_millis(100));
    let mut session_cfg = SessionHubConfig::new(hs, tokens);
    session_cfg.handshake_timeout = Duration::from_millis(cfg.limits.handshake_timeout_ms);
    let session_cfg = Arc::new(session_cfg);
    let (attached_tx, attached_rx) = mpsc::channel(256);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(accept_loop(
        listener,
        tls,
        session_cfg,
        shared.clone(),
        attached_tx,
        Duration::from_millis(cfg.limits.handshake_timeout_ms),
    )));
    let disc = HubDiscovery {
        _presence: presence,
        participant: participant.clone(),
        bridges,
        shared: cfg.shared.clone(),
        settings: cfg.clone(),
        writers: HashMap::new(),
        readers: HashMap::new(),
        robots: HashMap::new(),
        decided: HashSet::new(),
        servers: HashMap::new(),
        services,
        metrics: metrics.clone(),
    };
    tasks.push(tokio::spawn(disc.run(
        participant.discovery_events(),
        attached_rx,
        shutdown.clone(),
    )));
    Ok(HubRuntime {
        local_addr,
        tasks,
        shared,
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsServer>>,
    cfg: Arc<SessionHubConfig>,
    shared: Arc<HubShared>,
    attached: mpsc::Sender<Attached>,
    handshake_timeout: Duration,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        if shared.connections.load(Ordering::Relaxed) >= shared.max_links {
            tracing::warn!(%peer, max = shared.max_links, "too many robot links, connection refused");
            drop(tcp);
            continue;
        }
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let (tls, cfg, shared2, attached) =
            (tls.clone(), cfg.clone(), shared.clone(), attached.clone());
        tokio::spawn(async move {
            serve_connection(
                tcp,
                peer,
                tls,
                cfg,
                shared2.clone(),
                attached,
                handshake_timeout,
            )
            .await;
            shared2.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<TlsServer>>,
    cfg: Arc<SessionHubConfig>,
    shared: Arc<HubShared>,
    attached: mpsc::Sender<Attached>,
    handshake_timeout: Duration,
) {
    let io = match &tls {
        None => LinkStream::Plain(tcp),
        Some(t) => match t.accept(tcp, handshake_timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "TLS handshake failed, connection refused");
                return;
            }
        },
    };
    let (mut channels, out_tx, mut in_rx) = SessionChannels::bounded(8);
    let cancel = shared.shutdown.child_token();
    let session =
        tokio::spawn(async move { run_hub_session(io, &cfg, &mut channels, &cancel).await });
    if let Some(SessionEvent::Established(params)) = in_rx.recv().await {
        let robot = params.robot.clone();
        let ns = params.namespace.clone();
        let subscribe = subscribe_filter(&robot, params.subscribe.as_ref());
        let calls = calls_filter(&robot, params.subscribe.as_ref());
        let handle = shared.link_for(&robot, &ns);
        tracing::info!(%peer, robot = %robot, namespace = %ns, "robot link up");
        shared.metrics.link(&robot).connected(true);
        let attach = SessionAttach {
            params,
            out: out_tx,
            events: in_rx,
            peer: Some(peer.to_string()),
        };
        if handle
            .commands
            .send(LinkCommand::Attach(attach))
            .await
            .is_ok()
        {
            let _ = attached
                .send(Attached {
                    namespace: ns,
                    robot: robot.clone(),
                    subscribe,
                    calls,
                    handle,
                })
                .await;
        }
        let end = session.await;
        shared.metrics.link(&robot).connected(false);
        match end {
            Ok(Ok(end)) => tracing::info!(%peer, robot = %robot, ?end, "robot link ended"),
            Ok(Err(e)) => {
                shared
                    .metrics
                    .link(&robot)
                    .session_failed(session_error_code(&e));
                tracing::warn!(%peer, robot = %robot, error = %e, "robot link failed");
            }
            Err(e) => tracing::warn!(%peer, error = %e, "session task failed"),
        }
    } else {
        drop(out_tx);
        match session.await {
            Ok(Err(e)) => {
                shared
                    .metrics
                    .link("unauthenticated")
                    .session_failed(session_error_code(&e));
                tracing::warn!(%peer, error = %e, "connection refused");
            }
            Ok(Ok(end)) => tracing::debug!(%peer, ?end, "connection closed before the handshake"),
            Err(e) => tracing::warn!(%peer, error = %e, "session task failed"),
        }
    }
}

/// Patterns from a robot (at most 256; bad ones are logged and ignored).
fn parse_patterns(robot: &str, list: &[String]) -> Vec<Pattern> {
    list.iter()
        .take(256)
        .filter_map(|p| match Pattern::parse(p) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(robot, pattern = ?p, error = %e, "ignoring a bad subscribe pattern");
                None
            }
        })
        .collect()
}

/// The robot's `down` wishes as a filter.
fn subscribe_filter(robot: &str, s: Option<&Subscribe>) -> Filter {
    s.map_or_else(Filter::default, |s| {
        Filter::new(
            parse_patterns(robot, &s.allow),
            parse_patterns(robot, &s.deny),
        )
    })
}

/// The cloud services the robot's clients may call.
fn calls_filter(robot: &str, s: Option<&Subscribe>) -> Filter {
    s.map_or_else(Filter::default, |s| {
        Filter::new(parse_patterns(robot, &s.services), Vec::new())
    })
}

struct RobotEntry {
    robot: String,
    subscribe: Filter,
    calls: Filter,
    handle: LinkHandle,
}

struct HubDiscovery {
    _presence: ros2::dds::RawWriter,
    participant: Participant,
    bridges: PeerBridges,
    shared: Vec<Pattern>,
    settings: HubConfig,
    writers: HashMap<String, HashMap<[u8; 16], Endpoint>>,
    readers: HashMap<String, TopicReader>,
    robots: HashMap<String, RobotEntry>,
    decided: HashSet<(String, String)>,
    /// Cloud service servers: request topic -> the server's request reader.
    servers: HashMap<String, Endpoint>,
    services: ServedServices,
    metrics: Arc<Metrics>,
}

impl HubDiscovery {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<DiscoveryEvent>,
        mut attached: mpsc::Receiver<Attached>,
        shutdown: CancellationToken,
    ) {
        let mut expire = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = expire.tick() => expire_all(&self.services, &self.metrics),
                ev = events.recv() => match ev {
                    Some(DiscoveryEvent::WriterAppeared(ep))
                        if !ep.local
                            && !self.bridges.observe(&ep.topic, &ep.guid)
                            && !self.bridges.is_bridge(&ep.guid) =>
                    {
                        let topic = ep.topic.clone();
                        self.writers.entry(topic.clone()).or_default().insert(ep.guid, ep);
                        let robots: Vec<String> = self.robots.keys().cloned().collect();
                        for ns in robots {
                            self.consider(&ns, &topic).await;
                        }
                    }
                    Some(DiscoveryEvent::ReaderAppeared(ep))
                        if !ep.local && !self.bridges.is_bridge(&ep.guid) =>
                    {
                        if matches!(DdsTopic::parse(&ep.topic), Ok(DdsTopic::ServiceRequest(_))) {
                            let topic = ep.topic.clone();
                            self.servers.insert(topic.clone(), ep);
                            let robots: Vec<String> = self.robots.keys().cloned().collect();
                            for ns in robots {
                                self.consider_service(&ns, &topic).await;
                            }
                        }
                    }
                    Some(DiscoveryEvent::WriterGone { guid, topic }) => {
                        if let Some(w) = self.writers.get_mut(&topic) {
                            w.remove(&guid);
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                a = attached.recv() => if let Some(a) = a {
                    let ns = a.namespace.as_str().to_owned();
                    self.decided.retain(|(n, _)| *n != ns);
                    self.robots.insert(ns.clone(), RobotEntry {
                        robot: a.robot,
                        subscribe: a.subscribe,
                        calls: a.calls,
                        handle: a.handle,
                    });
                    let topics: Vec<String> = self.writers.keys().cloned().collect();
                    for t in topics {
                        self.consider(&ns, &t).await;
                    }
                    let servers: Vec<String> = self.servers.keys().cloned().collect();
                    for t in servers {
                        self.consider_service(&ns, &t).await;
                    }
                },
            }
        }
    }

    /// The name a cloud entity has for robot `ns`: stripped of the robot's namespace, or
    /// unchanged if shared; `None`: not for this robot.
    fn robot_facing(&self, ns: &Namespace, name: &RosName) -> Option<(String, String)> {
        if let Some(stripped) = name.strip_namespace(ns) {
            Some((stripped.as_str().to_owned(), "robot namespace".to_string()))
        } else {
            self.shared
                .iter()
                .find(|p| p.matches(name.as_str()))
                .map(|p| {
                    (
                        name.as_str().to_owned(),
                        format!("shared by {}", p.as_str()),
                    )
                })
        }
    }

    /// Should this cloud service be callable by this robot's clients? Logs the decision once.
    async fn consider_service(&mut self, ns: &str, topic: &str) {
        let Some(ep) = self.servers.get(topic).cloned() else {
            return;
        };
        let Ok(DdsTopic::ServiceRequest(name)) = DdsTopic::parse(topic) else {
            return;
        };
        let Ok(namespace) = Namespace::parse(ns) else {
            return;
        };
        let Some((target, why)) = self.robot_facing(&namespace, &name) else {
            return;
        };
        let Some(robot) = self.robots.get(ns) else {
            return;
        };
        let decision = robot.calls.decide(&target);
        if self.decided.insert((ns.to_owned(), topic.to_owned())) {
            tracing::info!(robot = %robot.robot, service = name.as_str(), to = %target, why = %why,
                decision = %decision, "cloud service for a robot's clients");
        }
        if !decision.is_allowed() {
            return;
        }
        let handle = robot.handle.clone();
        let existing = self
            .services
            .lock()
            .ok()
            .and_then(|m| m.get(name.as_str()).cloned());
        let svc = match existing {
            Some(s) => s,
            None => {
                let timeout = self.settings.services.timeout_for(name.as_str());
                match ServedService::start(&self.participant, &name, &ep.type_name, timeout) {
                    Ok(s) => {
                        let s = Arc::new(s);
                        if let Ok(mut m) = self.services.lock() {
                            m.insert(name.as_str().to_owned(), s.clone());
                        }
                        s
                    }
                    Err(e) => {
                        tracing::warn!(service = name.as_str(), error = %e, "cannot relay service");
                        return;
                    }
                }
            }
        };
        svc.offer(&handle, &target).await;
    }

    fn reader_qos(&self, topic: &str) -> Qos {
        reader_qos(self.writers.get(topic))
    }

    /// Should this cloud topic go down to this robot? Logs the decision once.
    async fn consider(&mut self, ns: &str, topic: &str) {
        let Some(ws) = self.writers.get(topic) else {
            return;
        };
        let Some(ep) = ws.values().next().cloned() else {
            return;
        };
        let Ok(DdsTopic::Topic(name)) = DdsTopic::parse(topic) else {
            return;
        };
        let Some(robot) = self.robots.get(ns) else {
            return;
        };
        let Ok(namespace) = Namespace::parse(ns) else {
            return;
        };
        let Some((target, why)) = self.robot_facing(&namespace, &name) else {
            return;
        };
        let decision = robot.subscribe.decide(&target);
        let first = self.decided.insert((ns.to_owned(), topic.to_owned()));
        if first {
            match &decision {
                Decision::Allowed { by } => {
                    tracing::info!(robot = %robot.robot, topic = name.as_str(),
                    to = %target, why = %why, rule = %by.as_str(), "down route allowed")
                }
                other => tracing::info!(robot = %robot.robot, topic = name.as_str(), to = %target,
                    why = %why, decision = %other, "down route not relayed (robot's down rules)"),
            }
        }
        if !decision.is_allowed() {
            return;
        }
        let qos = self.reader_qos(topic);
        let recreate = match self.readers.get(topic) {
            None => true,
            Some(r) => r.qos.reliability != qos.reliability || r.qos.durability != qos.durability,
        };
        if recreate {
            match TopicReader::start(
                &self.participant,
                self.bridges.clone(),
                topic,
                &ep.type_name,
                qos,
                None,
            ) {
                Ok(r) => {
                    // Targets of a replaced reader are re-added by `consider` for each robot.
                    let had = self.readers.insert(topic.to_owned(), r).is_some();
                    if had {
                        let robots: Vec<String> =
                            self.robots.keys().filter(|n| *n != ns).cloned().collect();
                        for other in robots {
                            self.decided.remove(&(other.clone(), topic.to_owned()));
                            Box::pin(self.consider(&other, topic)).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(topic, error = %e, "cannot read cloud topic");
                    return;
                }
            }
        }
        let (Some(reader), Some(robot)) = (self.readers.get(topic), self.robots.get(ns)) else {
            return;
        };
        let settings = route_settings(
            self.settings
                .topics
                .iter()
                .find(|t| t.pattern.matches(name.as_str())),
            &qos,
        );
        let spec = OutRouteSpec {
            name: target.clone(),
            kind: RouteKind::Topic,
            type_name: ep.type_name.clone(),
            request_type: None,
            qos: far_qos(&qos, settings.depth),
            settings,
            local_name: name.as_str().to_owned(),
        };
        let _ = robot
            .handle
            .commands
            .send(LinkCommand::AddRoute(spec))
            .await;
        reader.add_target(Target {
            link: robot.handle.clone(),
            name: Arc::from(target.as_str()),
            kind: RouteKind::Topic,
        });
    }
}
