//! `bridge edge`: the robot's side.
//!
//! - one DDS participant in the robot's domain; its discovery events drive the routes: a
//!   publisher on a topic an upstream's `up` rules allow makes a route to that upstream (logged:
//!   every allow/deny decision, once per upstream and topic); a service server that `services.serve`
//!   allows becomes callable from the cloud;
//! - one [`LinkActor`] and one connector task per upstream: resolve the name again, connect
//!   (TCP or TLS), handshake, hand the session to the link; on any failure back off
//!   (exponential, jitter) and retry; routes are re-announced on every session;
//! - routes from the hub (its `down` routes, service requests) are opened by [`EdgeSinks`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use ros2::dds::{DdsError, DiscoveryEvent, Durability, Endpoint, Participant, Qos, RawWriter};
use ros2::names::{DdsTopic, RosName};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{EdgeConfig, UpstreamConfig};
use crate::filter::{Decision, Filter};
use crate::link::frame::{Announce, RouteKind, Subscribe};
use crate::metrics::Metrics;
use crate::reader::{announce_presence, PeerBridges, Target, TopicReader};
use crate::relay::{
    LinkActor, LinkCommand, LinkContext, LinkHandle, LinkLimits, LinkSnapshot, OutRouteSpec,
    SessionAttach, Side, Sink, SinkFactory,
};
use crate::routing::{far_qos, reader_qos, route_settings, writer_qos};
use crate::service_route::{expire_all, proxy_sink, ServedService, ServedServices};
use crate::session::{
    run_edge_session, EdgeConfig as SessionEdgeConfig, SessionChannels, SessionEvent,
};
use crate::session::{EdgeHandshakeConfig, SessionError};
use crate::transport::{self, Backoff, TlsClient};

/// Errors starting the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The DDS participant could not be created.
    #[error("DDS: {0}")]
    Dds(#[from] DdsError),
    /// Configuration that only fails when used (token files, TLS files).
    #[error("{0}")]
    Config(String),
}

/// Opens the local end of routes the hub announces.
struct EdgeSinks {
    participant: Participant,
    bridges: PeerBridges,
    down: Filter,
    services: ServedServices,
    serve: Filter,
    call: Filter,
}

impl SinkFactory for EdgeSinks {
    fn open(&self, ctx: &LinkContext, a: &Announce) -> Result<Sink, String> {
        let name = RosName::parse(&a.name).map_err(|e| format!("bad name: {e}"))?;
        match a.kind {
            RouteKind::Topic => {
                match self.down.decide(name.as_str()) {
                    Decision::Allowed { by } => {
                        tracing::info!(link = %ctx.link, topic = %name.as_str(), rule = %by.as_str(),
                            "down route allowed");
                    }
                    other => return Err(format!("down rules: {other}")),
                }
                let topic = name.to_dds_topic().map_err(|e| e.to_string())?;
                let writer = self
                    .participant
                    .writer(&topic, &a.type_name, &writer_qos(&a.qos))
                    .map_err(|e| e.to_string())?;
                Ok(writer_sink(name.as_str().to_owned(), Arc::new(writer)))
            }
            RouteKind::ServiceRequest => {
                if !self.serve.allows(name.as_str()) {
                    return Err("services.serve does not allow it".into());
                }
                let svc = self
                    .services
                    .lock()
                    .ok()
                    .and_then(|m| m.get(name.as_str()).cloned())
                    .ok_or_else(|| "no such service server on this robot".to_string())?;
                Ok(svc.request_sink(ctx.link.clone()))
            }
            RouteKind::ServiceReply => match self.call.decide(name.as_str()) {
                Decision::Allowed { by } => {
                    tracing::info!(link = %ctx.link, service = %name.as_str(), rule = %by.as_str(),
                        "cloud service offered to this robot's clients");
                    proxy_sink(&self.participant, &self.bridges, ctx, a, &name)
                }
                other => Err(format!("services.call: {other}")),
            },
        }
    }
}

/// A sink writing each message to a DDS writer.
pub(crate) fn writer_sink(local_name: String, writer: Arc<RawWriter>) -> Sink {
    let w = writer.clone();
    Sink {
        local_name,
        deliver: Box::new(move |payload: Bytes| {
            let w = w.clone();
            async move { w.write_async(payload).await.map_err(|e| e.to_string()) }.boxed()
        }),
        guards: vec![Box::new(writer)],
    }
}

struct EdgeLink {
    name: String,
    handle: LinkHandle,
    cfg: UpstreamConfig,
    up: Filter,
    serve: Filter,
}

/// Status of the whole edge, for `/status`.
pub type LinkSnapshots = Vec<(String, watch::Receiver<LinkSnapshot>)>;

/// A running edge.
#[derive(Debug)]
pub struct EdgeRuntime {
    /// Per link snapshots.
    pub links: LinkSnapshots,
    /// The connector states (per upstream).
    pub connectors: Vec<(String, watch::Receiver<ConnectorState>)>,
    /// The tasks; they end after shutdown.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The participant.
    pub participant: Participant,
}

/// What a connector is doing.
#[derive(Debug, Clone, Default)]
pub struct ConnectorState {
    /// `connecting`, `connected`, `backoff`.
    pub state: &'static str,
    /// Reconnects so far.
    pub reconnects: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Address in use.
    pub peer: Option<String>,
    /// Unix ms of the last change.
    pub since_ms: u64,
}

/// Starts the edge: DDS, links, connectors, the discovery loop.
pub async fn start(
    cfg: EdgeConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<EdgeRuntime, EdgeError> {
    let env = |k: &str| std::env::var(k).ok();
    let pcfg = cfg
        .dds
        .participant_config(env)
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let participant = tokio::task::spawn_blocking(move || Participant::new(pcfg))
        .await
        .map_err(|e| EdgeError::Config(format!("DDS start: {e}")))??;
    let bridges = PeerBridges::default();
    bridges.insert(participant.guid_prefix());
    let presence = announce_presence(&participant)?;
    let services: ServedServices = Arc::default();
    let mut tasks = Vec::new();
    let mut links = Vec::new();
    let mut snapshots = Vec::new();
    let mut connectors = Vec::new();
    for up in &cfg.upstreams {
        let token = up
            .token_source()
            .and_then(|s| s.resolve(env))
            .map_err(|e| EdgeError::Config(e.to_string()))?;
        let tls = match &up.tls {
            None => None,
            Some(t) => {
                let ca = t.ca_file.as_deref().ok_or_else(|| {
                    EdgeError::Config(format!("upstreams.{}.tls.ca_file is required", up.name))
                })?;
                let client = match (&t.client_cert_file, &t.client_key_file) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    _ => None,
                };
                Some(
                    TlsClient::from_pem_files(ca, client, t.server_name.clone())
                        .map_err(|e| EdgeError::Config(e.to_string()))?,
                )
            }
        };
        let down = up.down.filter();
        let serve = up.services.serve.clone();
        let factory = Arc::new(EdgeSinks {
            participant: participant.clone(),
            bridges: bridges.clone(),
            down: down.clone(),
            services: services.clone(),
            serve: serve.clone(),
            call: up.services.call.clone(),
        });
        let (actor, rx, snap) = LinkActor::new(
            &up.name,
            Side::Edge,
            factory,
            metrics.clone(),
            LinkLimits::default(),
        );
        let actor = actor.with_drain(Duration::from_millis(cfg.drain_timeout_ms));
        let handle = actor.handle();
        tasks.push(tokio::spawn(actor.run(rx, shutdown.clone(), None)));
        snapshots.push((up.name.clone(), snap));
        let mut hs = EdgeHandshakeConfig::new(cfg.robot.clone(), token);
        hs.max_frame_size = up.max_frame_size;
        hs.features = vec!["zstd".into()];
        hs.subscribe = Some(Subscribe {
            allow: up
                .down
                .allow
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            deny: up.down.deny.iter().map(|p| p.as_str().to_owned()).collect(),
            services: up
                .services
                .call
                .allow
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        });
        let (state_tx, state_rx) = watch::channel(ConnectorState::default());
        connectors.push((up.name.clone(), state_rx));
        tasks.push(tokio::spawn(connector(
            up.clone(),
            SessionEdgeConfig::new(hs),
            tls,
            handle.clone(),
            metrics.clone(),
            state_tx,
            shutdown.clone(),
        )));
        links.push(EdgeLink {
            name: up.name.clone(),
            handle,
            cfg: up.clone(),
            up: up.up.filter(),
            serve,
        });
    }
    let events = participant.discovery_events();
    let disc = Discovery {
        _presence: presence,
        participant: participant.clone(),
        bridges,
        links,
        writers: HashMap::new(),
        readers: HashMap::new(),
        decided: HashSet::new(),
        services,
        metrics,
    };
    tasks.push(tokio::spawn(disc.run(events, shutdown.clone())));
    Ok(EdgeRuntime {
        links: snapshots,
        connectors,
        tasks,
        participant,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Connect, hand the session to the link, wait for its end, back off, again.
async fn connector(
    up: UpstreamConfig,
    session_cfg: SessionEdgeConfig,
    tls: Option<TlsClient>,
    link: LinkHandle,
    metrics: Arc<Metrics>,
    state: watch::Sender<ConnectorState>,
    shutdown: CancellationToken,
) {
    let lm = metrics.link(&up.name);
    let mut backoff = Backoff::new(
        Duration::from_millis(up.reconnect.initial_ms),
        Duration::from_millis(up.reconnect.max_ms),
        up.reconnect.jitter,
    );
    let connect_timeout = Duration::from_millis(up.connect_timeout_ms);
    let mut reconnects = 0u64;
    let set = |s: &'static str, err: Option<String>, peer: Option<String>, n: u64| {
        state.send_replace(ConnectorState {
            state: s,
            reconnects: n,
            last_error: err,
            peer,
            since_ms: now_ms(),
        });
    };
    let mut last_error: Option<String> = None;
    loop {
        set("connecting", last_error.clone(), None, reconnects);
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = transport::connect(&up.address, tls.as_ref(), connect_timeout) => r,
        };
        let mut slow_retry = false;
        match attempt {
            Err(e) => {
                tracing::warn!(upstream = %up.name, address = %up.address, error = %e, "connect failed");
                lm.session_failed("connect");
                last_error = Some(e.to_string());
            }
            Ok(stream) => {
                let peer = stream.peer_addr().map(|a| a.to_string());
                let (mut channels, out_tx, mut in_rx) = SessionChannels::bounded(8);
                let cancel = shutdown.child_token();
                let cfg = session_cfg.clone();
                let session = tokio::spawn(async move {
                    run_edge_session(stream, &cfg, &mut channels, &cancel).await
                });
                // The first event is Established, unless the handshake failed.
                match in_rx.recv().await {
                    Some(SessionEvent::Established(params)) => {
                        backoff.reset();
                        lm.connected(true);
                        set("connected", None, peer.clone(), reconnects);
                        let attach = SessionAttach {
                            params,
                            out: out_tx,
                            events: in_rx,
                            peer: peer.clone(),
                        };
                        if link
                            .commands
                            .send(LinkCommand::Attach(attach))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    _ => drop(out_tx),
                }
                let end = session.await;
                lm.connected(false);
                match end {
                    Ok(Ok(end)) => {
                        tracing::info!(upstream = %up.name, ?end, "session ended");
                        last_error = Some(format!("{end:?}"));
                    }
                    Ok(Err(e)) => {
                        if let SessionError::Handshake(h) = &e {
                            if matches!(
                                h.reason_code(),
                                Some(crate::link::frame::ReasonCode::BadToken)
                                    | Some(crate::link::frame::ReasonCode::UnsupportedVersion)
                            ) || matches!(h, crate::session::HandshakeError::Rejected(r)
                                if matches!(r.code, crate::link::frame::ReasonCode::BadToken
                                    | crate::link::frame::ReasonCode::UnsupportedVersion))
                            {
                                slow_retry = true;
                            }
                        }
                        tracing::warn!(upstream = %up.name, error = %e, "session failed");
                        lm.session_failed(session_error_code(&e));
                        last_error = Some(e.to_string());
                    }
                    Err(e) => last_error = Some(format!("session task: {e}")),
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        reconnects += 1;
        lm.reconnect();
        let mut delay = backoff.next_delay();
        if slow_retry {
            delay = delay.max(Duration::from_secs(30));
        }
        set("backoff", last_error.clone(), None, reconnects);
        tracing::info!(upstream = %up.name, delay_ms = delay.as_millis() as u64, "reconnecting after back-off");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// A short code for metrics: the protocol's reason code where there is one.
pub(crate) fn session_error_code(e: &SessionError) -> &'static str {
    use crate::link::frame::ReasonCode as R;
    use crate::session::HandshakeError as H;
    let code = match e {
        SessionError::Handshake(H::Rejected(r)) => Some(r.code),
        SessionError::Handshake(h) => h.reason_code(),
        _ => None,
    };
    match code {
        Some(R::BadToken) => "bad_token",
        Some(R::UnsupportedVersion) => "unsupported_version",
        Some(R::FrameTooLarge) => "frame_too_large",
        Some(R::Malformed) => "malformed",
        Some(R::DuplicateSession) => "duplicate_session",
        Some(R::LimitExceeded) => "limit_exceeded",
        Some(R::Timeout) => "timeout",
        Some(R::Shutdown) => "shutdown",
        Some(R::Unknown) => "rejected",
        None => match e {
            SessionError::Handshake(_) => "handshake",
            SessionError::Io(_) => "io",
            SessionError::Frame(_) | SessionError::Unexpected(_) => "malformed",
            SessionError::PeerTimeout(_) => "timeout",
            SessionError::WriteTimeout(_) => "write_timeout",
            SessionError::Eof => "eof",
        },
    }
}

struct Discovery {
    _presence: RawWriter,
    participant: Participant,
    bridges: PeerBridges,
    links: Vec<EdgeLink>,
    writers: HashMap<String, HashMap<[u8; 16], Endpoint>>,
    readers: HashMap<String, TopicReader>,
    decided: HashSet<(usize, String)>,
    services: ServedServices,
    metrics: Arc<Metrics>,
}

impl Discovery {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<DiscoveryEvent>,
        shutdown: CancellationToken,
    ) {
        let mut expire = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
                _ = expire.tick() => self.expire_calls(),
            }
        }
    }

    fn expire_calls(&self) {
        expire_all(&self.services, &self.metrics);
    }

    async fn on_event(&mut self, ev: DiscoveryEvent) {
        match ev {
            DiscoveryEvent::WriterAppeared(ep) if !ep.local => {
                if self.bridges.observe(&ep.topic, &ep.guid) || self.bridges.is_bridge(&ep.guid) {
                    return;
                }
                let Ok(DdsTopic::Topic(name)) = DdsTopic::parse(&ep.topic) else {
                    return;
                };
                self.writers
                    .entry(ep.topic.clone())
                    .or_default()
                    .insert(ep.guid, ep.clone());
                self.route_topic(&ep, name.as_str()).await;
            }
            DiscoveryEvent::WriterGone { guid, topic } => {
                if let Some(w) = self.writers.get_mut(&topic) {
                    w.remove(&guid);
                }
                if let Some(r) = self.readers.get(&topic) {
                    if r.qos.durability == Durability::TransientLocal {
                        if let Ok(DdsTopic::Topic(name)) = DdsTopic::parse(&topic) {
                            for l in &self.links {
                                let _ = l
                                    .handle
                                    .commands
                                    .send(LinkCommand::RemoveSource {
                                        name: name.as_str().to_owned(),
                                        source: guid,
                                    })
                                    .await;
                            }
                        }
                    }
                }
            }
            DiscoveryEvent::ReaderAppeared(ep) if !ep.local => {
                if self.bridges.is_bridge(&ep.guid) {
                    return;
                }
                if let Ok(DdsTopic::ServiceRequest(name)) = DdsTopic::parse(&ep.topic) {
                    self.route_service(&ep, name.as_str()).await;
                }
            }
            _ => {}
        }
    }

    /// The QoS the local reader needs to match every known publisher of `topic`.
    fn reader_qos(&self, topic: &str) -> Qos {
        reader_qos(self.writers.get(topic))
    }

    async fn route_topic(&mut self, ep: &Endpoint, name: &str) {
        for i in 0..self.links.len() {
            let decision = self.links[i].up.decide(name);
            let allowed = decision.is_allowed();
            if self.decided.insert((i, name.to_owned())) {
                match &decision {
                    Decision::Allowed { by } => tracing::info!(upstream = %self.links[i].name,
                        topic = name, rule = %by.as_str(), "up route allowed"),
                    other => tracing::info!(upstream = %self.links[i].name, topic = name,
                        decision = %other, "up route not relayed"),
                }
            }
            if !allowed {
                continue;
            }
            let qos = self.reader_qos(&ep.topic);
            let recreate = match self.readers.get(&ep.topic) {
                None => true,
                Some(r) => {
                    r.qos.reliability != qos.reliability || r.qos.durability != qos.durability
                }
            };
            if recreate {
                let old_targets = self.readers.remove(&ep.topic);
                match TopicReader::start(
                    &self.participant,
                    self.bridges.clone(),
                    &ep.topic,
                    &ep.type_name,
                    qos,
                    None,
                ) {
                    Ok(r) => {
                        tracing::debug!(topic = %ep.topic, ?qos, "DDS reader for an up route");
                        self.readers.insert(ep.topic.clone(), r);
                    }
                    Err(e) => {
                        tracing::warn!(topic = %ep.topic, error = %e, "cannot read topic");
                        continue;
                    }
                }
                drop(old_targets);
                // Every link carrying it needs its target again.
                for j in 0..self.links.len() {
                    if j != i
                        && self.links[j].up.allows(name)
                        && self.decided.contains(&(j, name.to_owned()))
                    {
                        self.add_topic_route(j, ep, name, qos).await;
                    }
                }
            }
            self.add_topic_route(i, ep, name, qos).await;
        }
    }

    async fn add_topic_route(&self, i: usize, ep: &Endpoint, name: &str, qos: Qos) {
        let l = &self.links[i];
        let Some(reader) = self.readers.get(&ep.topic) else {
            return;
        };
        let settings = route_settings(l.cfg.up.settings_for(name), &qos);
        let spec = OutRouteSpec {
            name: name.to_owned(),
            kind: RouteKind::Topic,
            type_name: ep.type_name.clone(),
            request_type: None,
            qos: far_qos(&qos, settings.depth),
            settings,
            local_name: name.to_owned(),
        };
        let _ = l.handle.commands.send(LinkCommand::AddRoute(spec)).await;
        reader.add_target(Target {
            link: l.handle.clone(),
            name: Arc::from(name),
            kind: RouteKind::Topic,
        });
    }

    async fn route_service(&mut self, ep: &Endpoint, name: &str) {
        let allowed: Vec<usize> = (0..self.links.len())
            .filter(|i| {
                let d = self.links[*i].serve.decide(name);
                if self.decided.insert((*i, format!("srv:{name}"))) {
                    tracing::info!(upstream = %self.links[*i].name, service = name,
                        decision = %d, "service server seen");
                }
                d.is_allowed()
            })
            .collect();
        if allowed.is_empty() {
            return;
        }
        let existing = self.services.lock().ok().and_then(|m| m.get(name).cloned());
        let svc = match existing {
            Some(s) => s,
            None => {
                let Ok(rname) = RosName::parse(name) else {
                    return;
                };
                let timeout = self
                    .links
                    .get(allowed[0])
                    .map_or(Duration::from_secs(10), |l| {
                        l.cfg.services.timeout_for(name)
                    });
                match ServedService::start(&self.participant, &rname, &ep.type_name, timeout) {
                    Ok(s) => {
                        let s = Arc::new(s);
                        if let Ok(mut m) = self.services.lock() {
                            m.insert(name.to_owned(), s.clone());
                        }
                        s
                    }
                    Err(e) => {
                        tracing::warn!(service = name, error = %e, "cannot relay service");
                        return;
                    }
                }
            }
        };
        for i in allowed {
            svc.offer(&self.links[i].handle, name).await;
        }
    }
}
