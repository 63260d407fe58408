//! The relay engine end to end without DDS: an edge link and a hub link joined by in-memory
//! sessions (`tokio::io::duplex`), with sinks that record what they deliver.
//!
//! Covers what the netns tests cannot pin down exactly: exactly-once in-order delivery of a
//! store-and-forward route across many disconnects, latched samples per publisher resent to a
//! receiver that lost them, priorities (a small urgent message overtakes a large bulk one), and
//! rate limiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::link::frame::{
    Announce, Compression, Durability, Reliability, RouteKind, RouteQos, Token,
};
use bridge::link::reliable::OutboxLimits;
use bridge::metrics::Metrics;
use bridge::relay::{
    LinkActor, LinkCommand, LinkContext, LinkHandle, LinkLimits, OutRouteSpec, RouteSettings,
    Sample, SessionAttach, Side, Sink, SinkFactory,
};
use bridge::session::{
    run_edge_session, run_hub_session, EdgeConfig, EdgeHandshakeConfig, Grant, HubConfig,
    HubHandshakeConfig, SessionChannels, SessionEvent, TokenTable,
};
use bytes::Bytes;
use futures::FutureExt;
use ros2::names::Namespace;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// (route name, local name, payload) of every delivery.
type Delivered = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct Recorder {
    delivered: Delivered,
    tx: mpsc::UnboundedSender<()>,
}

impl SinkFactory for Recorder {
    fn open(&self, ctx: &LinkContext, a: &Announce) -> Result<Sink, String> {
        let local = format!(
            "{}{}#{}",
            ctx.namespace,
            a.name,
            a.source.clone().unwrap_or_default()
        );
        let d = self.delivered.clone();
        let tx = self.tx.clone();
        let name = local.clone();
        Ok(Sink {
            local_name: local,
            deliver: Box::new(move |p: Bytes| {
                d.lock().unwrap().push((name.clone(), p.to_vec()));
                let _ = tx.send(());
                async { Ok(()) }.boxed()
            }),
            guards: Vec::new(),
        })
    }
}

struct Refuse;
impl SinkFactory for Refuse {
    fn open(&self, _: &LinkContext, _: &Announce) -> Result<Sink, String> {
        Err("edge takes nothing".into())
    }
}

fn settings(reliable: bool, sf: bool, priority: u8, latched: bool) -> RouteSettings {
    RouteSettings {
        priority,
        reliable,
        store_forward: sf,
        compression: Compression::None,
        max_rate_hz: None,
        depth: 1,
        outbox: OutboxLimits::default(),
        latched,
    }
}

fn spec(name: &str, s: RouteSettings) -> OutRouteSpec {
    OutRouteSpec {
        name: name.into(),
        kind: RouteKind::Topic,
        type_name: "std_msgs::msg::dds_::String_".into(),
        request_type: None,
        qos: RouteQos {
            reliability: if s.reliable {
                Reliability::Reliable
            } else {
                Reliability::BestEffort
            },
            durability: if s.latched {
                Durability::TransientLocal
            } else {
                Durability::Volatile
            },
            depth: 1,
        },
        settings: s,
        local_name: name.into(),
    }
}

/// The session's byte pipe: `(hub end, edge end)`. Hub to edge flows freely; edge to hub only
/// while `gate` is open, so a test can hold the edge's frames back (the edge's own buffers fill,
/// then its scheduler queues) and release them at a moment it chooses.
fn gated_pipe(
    mut gate: tokio::sync::watch::Receiver<bool>,
    cancel: &CancellationToken,
) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (hub, hub_pipe) = tokio::io::duplex(256 * 1024);
    let (edge, edge_pipe) = tokio::io::duplex(256 * 1024);
    let (mut from_hub, mut to_hub) = tokio::io::split(hub_pipe);
    let (mut from_edge, mut to_edge) = tokio::io::split(edge_pipe);
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::io::copy(&mut from_hub, &mut to_edge) => {}
            _ = c.cancelled() => {}
        }
    });
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                n = from_edge.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = c.cancelled() => break,
            };
            tokio::select! {
                open = gate.wait_for(|open| *open) => if open.is_err() { break },
                _ = c.cancelled() => break,
            }
            if to_hub.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    (hub, edge)
}

struct Pair {
    edge: LinkHandle,
    edge_state: tokio::sync::watch::Receiver<bridge::relay::LinkSnapshot>,
    hub: LinkHandle,
    delivered: Delivered,
    notify: mpsc::UnboundedReceiver<()>,
    shutdown: CancellationToken,
    session: Option<CancellationToken>,
    /// Bytes from the edge reach the hub only while this is `true` (see [`gated_pipe`]).
    gate: tokio::sync::watch::Sender<bool>,
    heartbeat: Duration,
}

fn tokens() -> TokenTable {
    let mut t = TokenTable::new();
    t.insert(
        Token::new("tok-1"),
        Grant {
            namespace: Namespace::parse("/robot1").unwrap(),
            robot: Some("robot1".into()),
        },
    )
    .unwrap();
    t
}

impl Pair {
    fn new() -> Self {
        let metrics = Metrics::new("test");
        let shutdown = CancellationToken::new();
        let delivered: Delivered = Arc::default();
        let (tx, notify) = mpsc::unbounded_channel();
        let (edge, erx, edge_state) = LinkActor::new(
            "cloud",
            Side::Edge,
            Arc::new(Refuse),
            metrics.clone(),
            LinkLimits::default(),
        );
        let eh = edge.handle();
        tokio::spawn(edge.run(erx, shutdown.clone(), None));
        let rec = Arc::new(Recorder {
            delivered: delivered.clone(),
            tx,
        });
        let (hub, hrx, _) =
            LinkActor::new("robot1", Side::Hub, rec, metrics, LinkLimits::default());
        let hh = hub.handle();
        tokio::spawn(hub.run(hrx, shutdown.clone(), None));
        Self {
            edge: eh,
            edge_state,
            hub: hh,
            delivered,
            notify,
            shutdown,
            session: None,
            gate: tokio::sync::watch::Sender::new(true),
            heartbeat: Duration::from_millis(500),
        }
    }

    /// Connects a fresh session (the previous one must be cut).
    async fn connect(&mut self) {
        let cancel = self.shutdown.child_token();
        let (a, b) = gated_pipe(self.gate.subscribe(), &cancel);
        let hub_cfg = HubConfig::new(
            HubHandshakeConfig {
                heartbeat: self.heartbeat,
                ..HubHandshakeConfig::default()
            },
            tokens(),
        );
        let edge_cfg = EdgeConfig::new(EdgeHandshakeConfig::new("robot1", Token::new("tok-1")));
        let (mut hch, hout, mut hin) = SessionChannels::bounded(8);
        let (mut ech, eout, mut ein) = SessionChannels::bounded(8);
        let c1 = cancel.clone();
        tokio::spawn(async move { run_hub_session(a, &hub_cfg, &mut hch, &c1).await });
        let c2 = cancel.clone();
        tokio::spawn(async move { run_edge_session(b, &edge_cfg, &mut ech, &c2).await });
        for (events, out, link) in [(&mut hin, hout, &self.hub), (&mut ein, eout, &self.edge)] {
            let Some(SessionEvent::Established(params)) = events.recv().await else {
                panic!("no session");
            };
            let (tx, rx) = mpsc::channel(64);
            // Forward the remaining events (the receiver moves into the attach).
            let mut src = std::mem::replace(events, mpsc::channel(1).1);
            tokio::spawn(async move {
                while let Some(e) = src.recv().await {
                    if tx.send(e).await.is_err() {
                        break;
                    }
                }
            });
            link.commands
                .send(LinkCommand::Attach(SessionAttach {
                    params,
                    out,
                    events: rx,
                    peer: None,
                }))
                .await
                .unwrap();
        }
        self.session = Some(cancel);
    }

    /// Waits until the edge link is (not) attached to a session.
    async fn wait_attached(&mut self, attached: bool) {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.edge_state.wait_for(|s| s.connected == attached),
        )
        .await
        .expect("edge link state")
        .expect("edge link alive");
    }

    fn cut(&mut self) {
        if let Some(c) = self.session.take() {
            c.cancel();
        }
    }

    async fn publish(&self, name: &str, source: u8, payload: Vec<u8>) {
        let mut guid = [0u8; 16];
        guid[15] = source;
        self.edge
            .samples
            .send(Sample {
                name: Arc::from(name),
                kind: RouteKind::Topic,
                source: guid,
                payload: Bytes::from(payload),
                received: Instant::now(),
            })
            .await
            .unwrap();
    }

    async fn wait_delivered(&mut self, n: usize) -> Vec<(String, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let d = self.delivered.lock().unwrap();
                if d.len() >= n {
                    return d.clone();
                }
            }
            tokio::select! {
                _ = self.notify.recv() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let d = self.delivered.lock().unwrap();
                    panic!("only {} of {n} delivered", d.len());
                }
            }
        }
    }
}

fn cdr(n: u64) -> Vec<u8> {
    let mut v = vec![0, 1, 0, 0];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

fn seq_of(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[4..12].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_is_exactly_once_in_order_across_cuts() {
    let mut p = Pair::new();
    p.edge
        .commands
        .send(LinkCommand::AddRoute(spec(
            "/seq",
            settings(true, true, 4, false),
        )))
        .await
        .unwrap();
    p.connect().await;
    let mut n = 0u64;
    for round in 0..25 {
        for _ in 0..20 {
            n += 1;
            p.publish("/seq", 1, cdr(n)).await;
        }
        if round % 2 == 0 {
            // Let some through, then cut with messages in flight and publish during the outage.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        p.cut();
        for _ in 0..10 {
            n += 1;
            p.publish("/seq", 1, cdr(n)).await;
        }
        p.connect().await;
    }
    let got = p.wait_delivered(n as usize).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = p.delivered.lock().unwrap().clone();
    assert_eq!(got_after.len(), got.len(), "duplicates arrived late");
    let seqs: Vec<u64> = got.iter().map(|(_, p)| seq_of(p)).collect();
    let expected: Vec<u64> = (1..=n).collect();
    assert_eq!(seqs, expected, "lost, duplicated or reordered");
    p.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_routes_drop_during_an_outage_and_resume() {
    let mut p = Pair::new();
    p.edge
        .commands
        .send(LinkCommand::AddRoute(spec(
            "/scan",
            settings(false, false, 4, false),
        )))
        .await
        .unwrap();
    p.connect().await;
    p.publish("/scan", 1, cdr(1)).await;
    p.wait_delivered(1).await;
    p.cut();
    p.wait_attached(false).await;
    p.publish("/scan", 1, cdr(2)).await; // dropped: not connected
    p.connect().await;
    p.wait_attached(true).await;
    p.publish("/scan", 1, cdr(3)).await;
    let got = p.wait_delivered(2).await;
    let seqs: Vec<u64> = got.iter().map(|(_, p)| seq_of(p)).collect();
    assert_eq!(seqs, vec![1, 3]);
    p.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latched_routes_keep_one_writer_per_publisher() {
    let mut p = Pair::new();
    p.edge
        .commands
        .send(LinkCommand::AddRoute(spec(
            "/tf_static",
            settings(true, false, 4, true),
        )))
        .await
        .unwrap();
    p.connect().await;
    p.publish("/tf_static", 1, cdr(100)).await;
    p.publish("/tf_static", 2, cdr(200)).await;
    let got = p.wait_delivered(2).await;
    let sinks: std::collections::HashSet<&String> = got.iter().map(|(n, _)| n).collect();
    assert_eq!(sinks.len(), 2, "one sink (writer) per publisher: {got:?}");
    // The same hub after a reconnect does not get them twice.
    p.cut();
    p.connect().await;
    p.publish("/tf_static", 1, cdr(101)).await;
    let got = p.wait_delivered(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.delivered.lock().unwrap().len(), 3, "{got:?}");
    p.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_message_overtakes_a_bulk_one() {
    let mut p = Pair::new();
    p.edge
        .commands
        .send(LinkCommand::AddRoute(spec(
            "/points",
            settings(true, false, 7, false),
        )))
        .await
        .unwrap();
    p.edge
        .commands
        .send(LinkCommand::AddRoute(spec(
            "/cmd_vel",
            settings(true, false, 0, false),
        )))
        .await
        .unwrap();
    p.heartbeat = Duration::from_secs(5); // the gate below holds the edge's heartbeats too
    p.connect().await;
    p.wait_attached(true).await;
    // Hold the edge's frames back, so both messages are queued at once; 8 MiB cannot fit in
    // the buffers between the edge's scheduler and the gate.
    p.gate.send_replace(false);
    let mut big = cdr(1);
    big.resize(8 * 1024 * 1024, 7);
    p.publish("/points", 1, big).await;
    p.publish("/cmd_vel", 1, cdr(2)).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        p.edge_state
            .wait_for(|s| s.routes.iter().filter(|r| r.messages > 0).count() == 2),
    )
    .await
    .expect("both samples taken by the edge")
    .expect("edge link alive");
    assert!(p.delivered.lock().unwrap().is_empty());
    p.gate.send_replace(true);
    let got = p.wait_delivered(2).await;
    assert!(
        got[0].0.ends_with("/cmd_vel#"),
        "cmd_vel first: {:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    p.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_downsamples() {
    let mut p = Pair::new();
    let mut s = settings(false, false, 4, false);
    s.max_rate_hz = Some(5.0);
    p.edge
        .commands
        .send(LinkCommand::AddRoute(spec("/cam", s)))
        .await
        .unwrap();
    p.connect().await;
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1000) {
        n += 1;
        p.publish("/cam", 1, cdr(n)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = p.delivered.lock().unwrap().len();
    assert!(
        (4..=7).contains(&got),
        "{got} delivered of {n} at 5 Hz over 1 s"
    );
    p.shutdown.cancel();
}
