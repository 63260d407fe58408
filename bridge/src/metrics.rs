//! Prometheus metrics of the bridge, per route and per link, registered under the prefix `bridge`.
//!
//! [`Metrics::new`] registers every family once; the relay engine then looks up the series of a
//! route ([`Metrics::route`]) or a link ([`Metrics::link`]) once, when the route or link starts,
//! and records through the returned handles. Handles are cheap to clone (one `Arc`) and recording
//! on the hot paths (messages, bytes, frames, queue depth, latency) neither allocates nor locks.
//!
//! # Series
//!
//! | name | type | labels |
//! |---|---|---|
//! | `bridge_info` | gauge (always 1) | `mode`, `version` |
//! | `bridge_links` | gauge | (connected links: derived from [`LinkMetrics::connected`]) |
//! | `bridge_route_messages_total` | counter | `link`, `route`, `direction` |
//! | `bridge_route_bytes_total` | counter | `link`, `route`, `direction` |
//! | `bridge_route_dropped_total` | counter | `link`, `route`, `direction`, `reason` |
//! | `bridge_route_queue_depth` | gauge | `link`, `route`, `direction` |
//! | `bridge_route_latency_seconds` | histogram | `link`, `route`, `direction` |
//! | `bridge_link_up` | gauge (0/1) | `link` |
//! | `bridge_link_reconnects_total` | counter | `link` |
//! | `bridge_link_session_failures_total` | counter | `link`, `reason` |
//! | `bridge_link_frames_sent_total`, `…_received_total` | counter | `link` |
//! | `bridge_link_bytes_sent_total`, `…_received_total` | counter | `link` |
//!
//! # Link churn
//!
//! A hub sees robots come and go; [`Metrics::remove_link`] forgets every series of one link (its
//! routes included) so that the exposition does not grow without bound. Handles obtained before
//! the removal keep working but record into detached metrics that are no longer exported; a later
//! [`Metrics::route`] or [`Metrics::link`] call for the same name starts fresh series.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the route latency histogram: 50 µs to 5 s in a 1-2-5 series (each
/// bound 2 to 2.5 times the previous one); slower samples land in `+Inf`.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
    2.0, 5.0,
];

/// At most this many distinct `reason` values of `bridge_link_session_failures_total` per link;
/// further reasons are counted as `other` (bounds the cardinality if a caller passes free text).
pub const MAX_FAILURE_REASONS: usize = 32;

/// Direction of a route as seen from this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// DDS -> link: samples taken from the local ROS graph and sent to the peer.
    Out,
    /// Link -> DDS: messages received from the peer and written to the local ROS graph.
    In,
}

impl Direction {
    /// The label value: `out` or `in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The route's local queue was full.
    QueueFull,
    /// The link's outbox (send scheduler) was full.
    OutboxFull,
    /// The route's rate limit was exceeded.
    RateLimited,
    /// The link was down and the route does not store and forward.
    NotConnected,
    /// A message already delivered (reliable delivery saw its sequence number before).
    Duplicate,
    /// Chunks could not be reassembled (missing, inconsistent or over the limits).
    Reassembly,
    /// The payload could not be decompressed.
    Decompress,
    /// The message named a route this process does not know.
    UnknownRoute,
    /// Writing to the local DDS graph failed.
    DdsWrite,
    /// A relayed service call got no response in time.
    ServiceTimeout,
    /// The message came back to where it started (loop prevention).
    Loop,
}

impl DropReason {
    /// Every reason, in declaration order (the index of a reason is `reason as usize`).
    pub const ALL: [DropReason; 11] = [
        DropReason::QueueFull,
        DropReason::OutboxFull,
        DropReason::RateLimited,
        DropReason::NotConnected,
        DropReason::Duplicate,
        DropReason::Reassembly,
        DropReason::Decompress,
        DropReason::UnknownRoute,
        DropReason::DdsWrite,
        DropReason::ServiceTimeout,
        DropReason::Loop,
    ];

    /// The label value, in snake case (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::OutboxFull => "outbox_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::NotConnected => "not_connected",
            DropReason::Duplicate => "duplicate",
            DropReason::Reassembly => "reassembly",
            DropReason::Decompress => "decompress",
            DropReason::UnknownRoute => "unknown_route",
            DropReason::DdsWrite => "dds_write",
            DropReason::ServiceTimeout => "service_timeout",
            DropReason::Loop => "loop",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    mode: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkReasonLabels {
    link: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    link: String,
    route: String,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteDropLabels {
    link: String,
    route: String,
    direction: Direction,
    reason: DropReason,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metric families (each a cheap handle onto shared storage).
#[derive(Debug)]
struct Families {
    links: Gauge,
    route_messages: Family<RouteLabels, Counter>,
    route_bytes: Family<RouteLabels, Counter>,
    route_dropped: Family<RouteDropLabels, Counter>,
    route_queue_depth: Family<RouteLabels, Gauge>,
    route_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    link_up: Family<LinkLabels, Gauge>,
    link_reconnects: Family<LinkLabels, Counter>,
    link_session_failures: Family<LinkReasonLabels, Counter>,
    link_frames_sent: Family<LinkLabels, Counter>,
    link_frames_received: Family<LinkLabels, Counter>,
    link_bytes_sent: Family<LinkLabels, Counter>,
    link_bytes_received: Family<LinkLabels, Counter>,
}

/// What one link has created, so that [`Metrics::remove_link`] can forget it.
#[derive(Debug, Default)]
struct LinkSeries {
    /// Set when the link is removed; handles holding it stop creating series.
    retired: Arc<AtomicBool>,
    routes: HashSet<(String, Direction)>,
    failure_reasons: HashSet<String>,
}

#[derive(Debug)]
struct Shared {
    families: Families,
    /// Series per link name. Lazily created series (drop reasons, failure reasons, link up) are
    /// made under this lock, after checking the handle's `retired` flag, so that a removal
    /// cannot race with a stale handle re-creating a series.
    index: Mutex<HashMap<String, LinkSeries>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, LinkSeries>> {
        // Nothing in the critical sections can leave the map inconsistent: keep going.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// All metrics of one bridge process and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    mode: &'static str,
    shared: Arc<Shared>,
}

impl Metrics {
    /// Creates and registers every family under the prefix `bridge`; `mode` (`edge` or `hub`)
    /// and the crate version are exported as `bridge_info{mode,version} 1`.
    pub fn new(mode: &'static str) -> Arc<Self> {
        let families = Families {
            links: Gauge::default(),
            route_messages: Family::default(),
            route_bytes: Family::default(),
            route_dropped: Family::default(),
            route_queue_depth: Family::default(),
            route_latency: Family::new_with_constructor(latency_histogram),
            link_up: Family::default(),
            link_reconnects: Family::default(),
            link_session_failures: Family::default(),
            link_frames_sent: Family::default(),
            link_frames_received: Family::default(),
            link_bytes_sent: Family::default(),
            link_bytes_received: Family::default(),
        };
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            mode: mode.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);

        let mut r = Registry::with_prefix("bridge");
        let f = &families;
        r.register("info", "bridge mode and version (always 1)", info);
        r.register(
            "links",
            "links currently connected (hub: robots; edge: upstreams)",
            f.links.clone(),
        );
        r.register(
            "route_messages",
            "messages relayed on a route",
            f.route_messages.clone(),
        );
        r.register(
            "route_bytes",
            "payload bytes relayed on a route",
            f.route_bytes.clone(),
        );
        r.register(
            "route_dropped",
            "messages dropped on a route, by reason",
            f.route_dropped.clone(),
        );
        r.register(
            "route_queue_depth",
            "messages waiting in the route's send queue or outbox",
            f.route_queue_depth.clone(),
        );
        r.register(
            "route_latency_seconds",
            "time a message spent in the bridge on this route",
            f.route_latency.clone(),
        );
        r.register(
            "link_up",
            "1 while the link is connected",
            f.link_up.clone(),
        );
        r.register(
            "link_reconnects",
            "link sessions re-established after a loss",
            f.link_reconnects.clone(),
        );
        r.register(
            "link_session_failures",
            "link sessions that failed, by reason",
            f.link_session_failures.clone(),
        );
        r.register(
            "link_frames_sent",
            "frames written to the link",
            f.link_frames_sent.clone(),
        );
        r.register(
            "link_frames_received",
            "frames read from the link",
            f.link_frames_received.clone(),
        );
        r.register(
            "link_bytes_sent",
            "bytes written to the link",
            f.link_bytes_sent.clone(),
        );
        r.register(
            "link_bytes_received",
            "bytes read from the link",
            f.link_bytes_received.clone(),
        );

        Arc::new(Metrics {
            registry: r,
            mode,
            shared: Arc::new(Shared {
                families,
                index: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The registry to encode (`prometheus_client::encoding::text::encode`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The mode given to [`Metrics::new`].
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// The series of one route (labels `{link, route, direction}`), created on first use. Call
    /// once when the route starts and keep the handle.
    pub fn route(&self, link: &str, route: &str, direction: Direction) -> RouteMetrics {
        let labels = RouteLabels {
            link: link.to_owned(),
            route: route.to_owned(),
            direction,
        };
        let f = &self.shared.families;
        let mut index = self.shared.lock();
        let series = index.entry(link.to_owned()).or_default();
        series.routes.insert((route.to_owned(), direction));
        RouteMetrics {
            inner: Arc::new(RouteInner {
                messages: f.route_messages.get_or_create_owned(&labels),
                bytes: f.route_bytes.get_or_create_owned(&labels),
                queue_depth: f.route_queue_depth.get_or_create_owned(&labels),
                latency: f.route_latency.get_or_create_owned(&labels),
                drops: Default::default(),
                retired: series.retired.clone(),
                labels,
                shared: self.shared.clone(),
            }),
        }
    }

    /// The series of one link (label `{link}`), created on first use. Call once when the link
    /// starts (edge: per upstream; hub: per robot) and keep the handle.
    pub fn link(&self, link: &str) -> LinkMetrics {
        let labels = LinkLabels {
            link: link.to_owned(),
        };
        let f = &self.shared.families;
        let mut index = self.shared.lock();
        let series = index.entry(link.to_owned()).or_default();
        LinkMetrics {
            inner: Arc::new(LinkInner {
                up: f.link_up.get_or_create_owned(&labels),
                reconnects: f.link_reconnects.get_or_create_owned(&labels),
                frames_sent: f.link_frames_sent.get_or_create_owned(&labels),
                frames_received: f.link_frames_received.get_or_create_owned(&labels),
                bytes_sent: f.link_bytes_sent.get_or_create_owned(&labels),
                bytes_received: f.link_bytes_received.get_or_create_owned(&labels),
                retired: series.retired.clone(),
                link: labels.link,
                shared: self.shared.clone(),
            }),
        }
    }

    /// Forgets every series of `link`, its routes' included, and takes it out of `bridge_links`
    /// if it was up. Returns whether the link was known. Handles obtained earlier keep working
    /// but are no longer exported (see the module docs).
    pub fn remove_link(&self, link: &str) -> bool {
        let f = &self.shared.families;
        let mut index = self.shared.lock();
        let Some(series) = index.remove(link) else {
            return false;
        };
        series.retired.store(true, Ordering::Release);
        for (route, direction) in series.routes {
            let labels = RouteLabels {
                link: link.to_owned(),
                route,
                direction,
            };
            f.route_messages.remove(&labels);
            f.route_bytes.remove(&labels);
            f.route_queue_depth.remove(&labels);
            f.route_latency.remove(&labels);
            let mut drop = RouteDropLabels {
                link: labels.link,
                route: labels.route,
                direction,
                reason: DropReason::QueueFull,
            };
            for reason in DropReason::ALL {
                drop.reason = reason;
                f.route_dropped.remove(&drop);
            }
        }
        for reason in series.failure_reasons {
            f.link_session_failures.remove(&LinkReasonLabels {
                link: link.to_owned(),
                reason,
            });
        }
        let labels = LinkLabels {
            link: link.to_owned(),
        };
        if let Some(up) = f.link_up.get(&labels) {
            if up.set(0) != 0 {
                f.links.dec();
            }
        }
        f.link_up.remove(&labels);
        f.link_reconnects.remove(&labels);
        f.link_frames_sent.remove(&labels);
        f.link_frames_received.remove(&labels);
        f.link_bytes_sent.remove(&labels);
        f.link_bytes_received.remove(&labels);
        tracing::debug!(link, "forgot the link's metrics");
        true
    }
}

#[derive(Debug)]
struct RouteInner {
    messages: Counter,
    bytes: Counter,
    queue_depth: Gauge,
    latency: Histogram,
    /// Per-reason counters, created on the first drop for that reason (most routes never drop
    /// for most reasons, so eager creation would export many zero series).
    drops: [OnceLock<Counter>; DropReason::ALL.len()],
    retired: Arc<AtomicBool>,
    labels: RouteLabels,
    shared: Arc<Shared>,
}

/// The series of one route; cheap to clone, recording does not allocate (apart from the first
/// drop for each reason).
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    inner: Arc<RouteInner>,
}

/// Current totals of one route, e.g. for a status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCounts {
    /// `bridge_route_messages_total`.
    pub messages: u64,
    /// `bridge_route_bytes_total`.
    pub bytes: u64,
    /// Sum of `bridge_route_dropped_total` over all reasons.
    pub dropped: u64,
    /// `bridge_route_queue_depth` (negative values read as 0).
    pub queue_depth: u64,
}

impl RouteMetrics {
    /// One message of `bytes` payload bytes relayed.
    pub fn message(&self, bytes: usize) {
        self.inner.messages.inc();
        self.inner
            .bytes
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// `n` messages dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        let i = &self.inner;
        i.drops[reason as usize]
            .get_or_init(|| {
                let _index = i.shared.lock();
                if i.retired.load(Ordering::Acquire) {
                    return Counter::default();
                }
                i.shared
                    .families
                    .route_dropped
                    .get_or_create_owned(&RouteDropLabels {
                        link: i.labels.link.clone(),
                        route: i.labels.route.clone(),
                        direction: i.labels.direction,
                        reason,
                    })
            })
            .inc_by(n);
    }

    /// Messages now waiting in the route's send queue or outbox.
    pub fn set_queue_depth(&self, messages: i64) {
        self.inner.queue_depth.set(messages);
    }

    /// Time one message spent in the bridge (the engine decides the two ends, e.g. DDS receive
    /// to link write for [`Direction::Out`]).
    pub fn latency(&self, d: Duration) {
        self.inner.latency.observe(d.as_secs_f64());
    }

    /// The current totals.
    pub fn counts(&self) -> RouteCounts {
        let i = &self.inner;
        RouteCounts {
            messages: i.messages.get(),
            bytes: i.bytes.get(),
            dropped: i
                .drops
                .iter()
                .filter_map(OnceLock::get)
                .map(Counter::get)
                .fold(0u64, u64::saturating_add),
            queue_depth: u64::try_from(i.queue_depth.get()).unwrap_or(0),
        }
    }
}

#[derive(Debug)]
struct LinkInner {
    up: Gauge,
    reconnects: Counter,
    frames_sent: Counter,
    frames_received: Counter,
    bytes_sent: Counter,
    bytes_received: Counter,
    retired: Arc<AtomicBool>,
    link: String,
    shared: Arc<Shared>,
}

/// The series of one link; cheap to clone.
#[derive(Clone, Debug)]
pub struct LinkMetrics {
    inner: Arc<LinkInner>,
}

/// Current totals of one link, e.g. for a status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// `bridge_link_up == 1`.
    pub up: bool,
    /// `bridge_link_reconnects_total`.
    pub reconnects: u64,
    /// `bridge_link_frames_sent_total`.
    pub frames_sent: u64,
    /// `bridge_link_frames_received_total`.
    pub frames_received: u64,
    /// `bridge_link_bytes_sent_total`.
    pub bytes_sent: u64,
    /// `bridge_link_bytes_received_total`.
    pub bytes_received: u64,
}

impl LinkMetrics {
    /// The link went up (`true`) or down (`false`); sets `bridge_link_up` and keeps
    /// `bridge_links` (the number of links up) in step. Idempotent.
    pub fn connected(&self, up: bool) {
        let i = &self.inner;
        let _index = i.shared.lock();
        if i.retired.load(Ordering::Acquire) {
            return;
        }
        let was_up = i.up.set(i64::from(up)) != 0;
        match (was_up, up) {
            (false, true) => {
                i.shared.families.links.inc();
            }
            (true, false) => {
                i.shared.families.links.dec();
            }
            _ => {}
        }
    }

    /// A session was re-established after a loss.
    pub fn reconnect(&self) {
        self.inner.reconnects.inc();
    }

    /// A session attempt or session failed; `reason` is a short code such as `timeout`,
    /// `bad_token` or `io` (at most [`MAX_FAILURE_REASONS`] distinct codes per link, then
    /// `other`).
    pub fn session_failed(&self, reason: &str) {
        let i = &self.inner;
        let mut index = i.shared.lock();
        if i.retired.load(Ordering::Acquire) {
            return;
        }
        let Some(series) = index.get_mut(&i.link) else {
            return;
        };
        let reason = if series.failure_reasons.contains(reason) {
            reason
        } else if series.failure_reasons.len() < MAX_FAILURE_REASONS {
            series.failure_reasons.insert(reason.to_owned());
            reason
        } else {
            series.failure_reasons.insert("other".to_owned());
            "other"
        };
        i.shared
            .families
            .link_session_failures
            .get_or_create(&LinkReasonLabels {
                link: i.link.clone(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// `n` frames written to the link.
    pub fn frames_sent(&self, n: u64) {
        self.inner.frames_sent.inc_by(n);
    }

    /// `n` frames read from the link.
    pub fn frames_received(&self, n: u64) {
        self.inner.frames_received.inc_by(n);
    }

    /// `n` bytes written to the link.
    pub fn bytes_sent(&self, n: u64) {
        self.inner.bytes_sent.inc_by(n);
    }

    /// `n` bytes read from the link.
    pub fn bytes_received(&self, n: u64) {
        self.inner.bytes_received.inc_by(n);
    }

    /// The current totals.
    pub fn counts(&self) -> LinkCounts {
        let i = &self.inner;
        LinkCounts {
            up: i.up.get() != 0,
            reconnects: i.reconnects.get(),
            frames_sent: i.frames_sent.get(),
            frames_received: i.frames_received.get(),
            bytes_sent: i.bytes_sent.get(),
            bytes_received: i.bytes_received.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, m.registry()).expect("encode");
        out
    }

    /// The value of the series whose line starts with `series ` (name and labels), if exported.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().expect("number"))
    }

    #[test]
    fn info_and_route_series() {
        let m = Metrics::new("edge");
        let text = encode(&m);
        let info = format!(
            "bridge_info{{mode=\"edge\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&text, &info), Some(1.0), "{text}");
        assert_eq!(value(&text, "bridge_links"), Some(0.0), "{text}");

        let r = m.route("cloud", "/odom", Direction::Out);
        r.message(10);
        r.clone().message(20);
        r.message(0);
        r.dropped(DropReason::QueueFull, 2);
        r.dropped(DropReason::QueueFull, 1);
        r.dropped(DropReason::Loop, 4);
        r.set_queue_depth(7);
        r.latency(Duration::from_micros(70));
        r.latency(Duration::from_secs(60));
        let text = encode(&m);
        let l = r#"{link="cloud",route="/odom",direction="out"}"#;
        assert_eq!(
            value(&text, &format!("bridge_route_messages_total{l}")),
            Some(3.0)
        );
        assert_eq!(
            value(&text, &format!("bridge_route_bytes_total{l}")),
            Some(30.0)
        );
        assert_eq!(
            value(&text, &format!("bridge_route_queue_depth{l}")),
            Some(7.0)
        );
        assert_eq!(
            value(
                &text,
                r#"bridge_route_dropped_total{link="cloud",route="/odom",direction="out",reason="queue_full"}"#
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                r#"bridge_route_dropped_total{link="cloud",route="/odom",direction="out",reason="loop"}"#
            ),
            Some(4.0)
        );
        // Reasons never used are not exported.
        assert!(!text.contains("reason=\"duplicate\""), "{text}");
        // 70 µs lands in the 100 µs bucket, 60 s only in +Inf.
        let h = r#"bridge_route_latency_seconds_bucket{le="#;
        assert_eq!(
            value(
                &text,
                &format!("{h}\"0.00005\",link=\"cloud\",route=\"/odom\",direction=\"out\"}}")
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("{h}\"0.0001\",link=\"cloud\",route=\"/odom\",direction=\"out\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("{h}\"5.0\",link=\"cloud\",route=\"/odom\",direction=\"out\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("{h}\"+Inf\",link=\"cloud\",route=\"/odom\",direction=\"out\"}}")
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(&text, &format!("bridge_route_latency_seconds_count{l}")),
            Some(2.0)
        );

        assert_eq!(
            r.counts(),
            RouteCounts {
                messages: 3,
                bytes: 30,
                dropped: 7,
                queue_depth: 7
            }
        );
        // A second lookup of the same route shares the series.
        let again = m.route("cloud", "/odom", Direction::Out);
        again.message(1);
        assert_eq!(r.counts().messages, 4);
        // The other direction is a separate series.
        let inbound = m.route("cloud", "/odom", Direction::In);
        assert_eq!(inbound.counts(), RouteCounts::default());
        assert!(encode(&m).contains(r#"{link="cloud",route="/odom",direction="in"}"#));
    }

    #[test]
    fn link_series_and_connected_count() {
        let m = Metrics::new("hub");
        let a = m.link("robot1");
        let b = m.link("robot2");
        a.connected(true);
        a.connected(true); // idempotent
        b.connected(true);
        let text = encode(&m);
        assert_eq!(value(&text, "bridge_links"), Some(2.0), "{text}");
        assert_eq!(value(&text, r#"bridge_link_up{link="robot1"}"#), Some(1.0));
        b.connected(false);
        b.connected(false);
        a.reconnect();
        a.frames_sent(3);
        a.frames_received(4);
        a.bytes_sent(100);
        a.bytes_received(200);
        a.session_failed("timeout");
        a.session_failed("timeout");
        a.session_failed("bad_token");
        let text = encode(&m);
        assert_eq!(value(&text, "bridge_links"), Some(1.0), "{text}");
        assert_eq!(value(&text, r#"bridge_link_up{link="robot2"}"#), Some(0.0));
        assert_eq!(
            value(&text, r#"bridge_link_reconnects_total{link="robot1"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"bridge_link_frames_sent_total{link="robot1"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(&text, r#"bridge_link_frames_received_total{link="robot1"}"#),
            Some(4.0)
        );
        assert_eq!(
            value(&text, r#"bridge_link_bytes_sent_total{link="robot1"}"#),
            Some(100.0)
        );
        assert_eq!(
            value(&text, r#"bridge_link_bytes_received_total{link="robot1"}"#),
            Some(200.0)
        );
        assert_eq!(
            value(
                &text,
                r#"bridge_link_session_failures_total{link="robot1",reason="timeout"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                r#"bridge_link_session_failures_total{link="robot1",reason="bad_token"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            a.counts(),
            LinkCounts {
                up: true,
                reconnects: 1,
                frames_sent: 3,
                frames_received: 4,
                bytes_sent: 100,
                bytes_received: 200
            }
        );
    }

    #[test]
    fn failure_reasons_are_bounded() {
        let m = Metrics::new("hub");
        let l = m.link("r");
        for i in 0..MAX_FAILURE_REASONS + 10 {
            l.session_failed(&format!("why{i}"));
        }
        let text = encode(&m);
        let series = text
            .lines()
            .filter(|l| l.starts_with("bridge_link_session_failures_total{"))
            .count();
        assert_eq!(series, MAX_FAILURE_REASONS + 1, "{text}");
        assert_eq!(
            value(
                &text,
                r#"bridge_link_session_failures_total{link="r",reason="other"}"#
            ),
            Some(10.0)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("edge");
        m.route("a\"b", "/x\\y\nz", Direction::In).message(1);
        let text = encode(&m);
        assert!(
            text.contains(
                r#"bridge_route_messages_total{link="a\"b",route="/x\\y\nz",direction="in"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn remove_link_forgets_its_series() {
        let m = Metrics::new("hub");
        let keep = m.link("keep");
        keep.connected(true);
        m.route("keep", "/a", Direction::In).message(1);

        let gone = m.link("gone");
        gone.connected(true);
        gone.session_failed("io");
        gone.frames_sent(1);
        let r = m.route("gone", "/odom", Direction::Out);
        r.message(5);
        r.dropped(DropReason::Duplicate, 1);
        r.latency(Duration::from_millis(1));
        let in_route = m.route("gone", "/cmd", Direction::In);
        in_route.set_queue_depth(3);
        assert_eq!(value(&encode(&m), "bridge_links"), Some(2.0));

        assert!(m.remove_link("gone"));
        assert!(!m.remove_link("gone"));
        assert!(!m.remove_link("never"));
        let text = encode(&m);
        assert!(!text.contains("\"gone\""), "{text}");
        assert_eq!(value(&text, "bridge_links"), Some(1.0), "{text}");
        assert_eq!(value(&text, r#"bridge_link_up{link="keep"}"#), Some(1.0));
        assert!(text.contains(r#"route="/a""#));

        // Stale handles neither resurrect series nor move bridge_links.
        r.message(1);
        r.dropped(DropReason::Duplicate, 1);
        r.dropped(DropReason::QueueFull, 1);
        gone.connected(false);
        gone.connected(true);
        gone.session_failed("timeout");
        gone.frames_received(1);
        let text = encode(&m);
        assert!(!text.contains("\"gone\""), "{text}");
        assert_eq!(value(&text, "bridge_links"), Some(1.0), "{text}");

        // The same name comes back with fresh series.
        let back = m.link("gone");
        back.connected(true);
        let r2 = m.route("gone", "/odom", Direction::Out);
        r2.message(2);
        r2.dropped(DropReason::Duplicate, 1);
        let text = encode(&m);
        assert_eq!(value(&text, "bridge_links"), Some(2.0), "{text}");
        assert_eq!(
            value(
                &text,
                r#"bridge_route_messages_total{link="gone",route="/odom",direction="out"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"bridge_route_dropped_total{link="gone",route="/odom",direction="out",reason="duplicate"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn drop_reasons_match_serde_and_indices() {
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
            assert_eq!(
                serde_json::to_value(r).expect("serialize"),
                serde_json::Value::String(r.as_str().to_owned())
            );
        }
        assert_eq!(
            serde_json::to_value(Direction::Out).expect("serialize"),
            "out"
        );
        assert_eq!(
            serde_json::to_value(Direction::In).expect("serialize"),
            "in"
        );
    }
}
