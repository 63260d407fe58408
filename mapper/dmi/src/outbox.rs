//! What is waiting to go to edgecore, and when it may go: the pure state of
//! the upstream side (no I/O, no clock of its own: every method takes `now`).
//!
//! - Per device only the latest pending twins (merged by property) and the
//!   latest state are kept; an older value of a twin is superseded.
//! - All pending twins of a device go in one `ReportDeviceStatus` call, at
//!   most once per `min_interval` per device (the same for `ReportDeviceStates`).
//! - Every call takes a token from a [`TokenBucket`] (our share of edgecore's
//!   node-wide limiter).
//! - A call answered "too many request" gives its values back (unless newer
//!   ones arrived meanwhile) and blocks all calls for an exponential [`Backoff`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mapper_core::backend::{DeviceState, Report, TwinReport};
use mapper_core::model::DeviceId;

/// A token bucket: up to `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        Self {
            capacity,
            per_second,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // Tolerate float rounding: a token is "there" at the instant `ready_at` named.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Takes a token if there is one, without waiting (for calls that must
    /// go anyway, like registration: they still count).
    pub fn take_if_any(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// When the next token is there.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// Exponential backoff: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the one after it doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// One call to edgecore.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `ReportDeviceStatus`: all pending twins of a device.
    Status {
        device: DeviceId,
        twins: Vec<TwinReport>,
        report_to_cloud: bool,
    },
    /// `ReportDeviceStates`.
    State {
        device: DeviceId,
        state: DeviceState,
    },
}

impl Call {
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Status { device, .. } | Self::State { device, .. } => device,
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    twins: BTreeMap<String, TwinReport>,
    twins_since: Option<Instant>,
    report_to_cloud: bool,
    state: Option<DeviceState>,
    state_since: Option<Instant>,
    last_status: Option<Instant>,
    last_state: Option<Instant>,
}

impl Pending {
    fn is_idle(&self) -> bool {
        self.twins.is_empty() && self.state.is_none()
    }
}

/// Parameters of an [`Outbox`].
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub per_second: f64,
    pub burst: u32,
    pub min_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// The pending reports and the pacing state.
#[derive(Debug)]
pub struct Outbox {
    bucket: TokenBucket,
    backoff: Backoff,
    blocked_until: Option<Instant>,
    min_interval: Duration,
    devices: BTreeMap<DeviceId, Pending>,
    states_enabled: bool,
}

fn due(last: Option<Instant>, min: Duration) -> Option<Instant> {
    last.map(|t| t + min)
}

impl Outbox {
    pub fn new(cfg: &OutboxConfig, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(cfg.per_second, cfg.burst, now),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            blocked_until: None,
            min_interval: cfg.min_interval,
            devices: BTreeMap::new(),
            states_enabled: true,
        }
    }

    /// Queues a report from the core. Twins of a report with
    /// `report_to_cloud == false` stay local (the core pushes them elsewhere).
    pub fn push(&mut self, report: &Report, now: Instant) {
        let p = self.devices.entry(report.device.clone()).or_default();
        if report.report_to_cloud {
            for t in &report.twins {
                p.twins.insert(t.property.clone(), t.clone());
            }
            if !p.twins.is_empty() {
                p.twins_since.get_or_insert(now);
            }
            p.report_to_cloud = true;
        }
        if let Some(s) = report.state {
            if self.states_enabled {
                p.state = Some(s);
                p.state_since.get_or_insert(now);
            }
        }
    }

    /// Forgets a device's pending values (it was removed).
    pub fn forget(&mut self, device: &DeviceId) {
        self.devices.remove(device);
    }

    /// Stops queueing states (edgecore < 1.18 has no `ReportDeviceStates`).
    pub fn disable_states(&mut self) {
        self.states_enabled = false;
        for p in self.devices.values_mut() {
            p.state = None;
            p.state_since = None;
        }
    }

    /// How many devices have something pending.
    pub fn pending_devices(&self) -> usize {
        self.devices.values().filter(|p| !p.is_idle()).count()
    }

    /// The pending twins of a device (for tests and introspection).
    pub fn pending_twins(&self, device: &DeviceId) -> Vec<&TwinReport> {
        self.devices
            .get(device)
            .map(|p| p.twins.values().collect())
            .unwrap_or_default()
    }

    /// The device call that waited longest and may go now (kind, since).
    fn candidate(&self, now: Instant) -> Option<(DeviceId, bool)> {
        let mut best: Option<(Instant, DeviceId, bool)> = None;
        for (id, p) in &self.devices {
            let mut consider = |since: Option<Instant>, last: Option<Instant>, is_state: bool| {
                if let Some(since) = since {
                    if due(last, self.min_interval).is_none_or(|d| d <= now)
                        && best.as_ref().is_none_or(|(b, _, _)| since < *b)
                    {
                        best = Some((since, id.clone(), is_state));
                    }
                }
            };
            if p.state.is_some() {
                consider(p.state_since, p.last_state, true);
            }
            if !p.twins.is_empty() {
                consider(p.twins_since, p.last_status, false);
            }
        }
        best.map(|(_, id, is_state)| (id, is_state))
    }

    /// The next call to make now, if any may go (it takes a token).
    pub fn next_call(&mut self, now: Instant) -> Option<Call> {
        if self.blocked_until.is_some_and(|b| b > now) {
            return None;
        }
        let (id, is_state) = self.candidate(now)?;
        if !self.bucket.try_take(now) {
            return None;
        }
        let p = self.devices.get_mut(&id)?;
        if is_state {
            p.last_state = Some(now);
            p.state_since = None;
            let state = p.state.take()?;
            Some(Call::State { device: id, state })
        } else {
            p.last_status = Some(now);
            p.twins_since = None;
            let twins = std::mem::take(&mut p.twins).into_values().collect();
            Some(Call::Status {
                device: id,
                twins,
                report_to_cloud: p.report_to_cloud,
            })
        }
    }

    /// When [`Outbox::next_call`] may return something, if anything is pending.
    pub fn next_wake(&mut self, now: Instant) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for p in self.devices.values() {
            let mut at = |last: Option<Instant>| {
                let t = due(last, self.min_interval).unwrap_or(now).max(now);
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            };
            if p.state.is_some() {
                at(p.last_state);
            }
            if !p.twins.is_empty() {
                at(p.last_status);
            }
        }
        let earliest = earliest?;
        let blocked = self.blocked_until.unwrap_or(now);
        Some(earliest.max(blocked).max(self.bucket.ready_at(now)))
    }

    /// A call went through.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
        self.blocked_until = None;
    }

    /// edgecore said "too many request": the values go back (newer ones win)
    /// and every call waits for the returned backoff.
    pub fn rate_limited(&mut self, call: Call, now: Instant) -> Duration {
        self.restore(call, now);
        let delay = self.backoff.next_delay();
        self.blocked_until = Some(now + delay);
        delay
    }

    /// The call did not reach edgecore (transport): the values go back.
    pub fn failed(&mut self, call: Call, now: Instant) {
        self.restore(call, now);
    }

    /// A registration call is about to go: it counts against the bucket.
    pub fn registering(&mut self, now: Instant) {
        self.bucket.take_if_any(now);
    }

    fn restore(&mut self, call: Call, now: Instant) {
        match call {
            Call::Status {
                device,
                twins,
                report_to_cloud,
            } => {
                let p = self.devices.entry(device).or_default();
                for t in twins {
                    p.twins.entry(t.property.clone()).or_insert(t);
                }
                p.report_to_cloud |= report_to_cloud;
                if !p.twins.is_empty() {
                    p.twins_since.get_or_insert(now);
                }
            }
            Call::State { device, state } => {
                if self.states_enabled {
                    let p = self.devices.entry(device).or_default();
                    p.state.get_or_insert(state);
                    p.state_since.get_or_insert(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> OutboxConfig {
        OutboxConfig {
            per_second: 1.0,
            burst: 3,
            min_interval: 1000 * MS,
            backoff_initial: 500 * MS,
            backoff_max: 2000 * MS,
        }
    }

    fn twin(p: &str, v: &str) -> TwinReport {
        TwinReport {
            property: p.into(),
            reported: v.into(),
            observed_desired: None,
            value_type: "float",
            timestamp_ms: 1,
        }
    }

    fn report(dev: &str, twins: &[(&str, &str)], state: Option<DeviceState>) -> Report {
        Report {
            device: DeviceId::new("default", dev),
            twins: twins.iter().map(|(p, v)| twin(p, v)).collect(),
            state,
            rejections: vec![],
            report_to_cloud: true,
        }
    }

    fn status_values(c: &Call) -> Vec<(String, String)> {
        match c {
            Call::Status { twins, .. } => twins
                .iter()
                .map(|t| (t.property.clone(), t.reported.clone()))
                .collect(),
            Call::State { .. } => panic!("not a status call: {c:?}"),
        }
    }

    #[test]
    fn bucket_refills_and_caps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 2, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && !b.try_take(t0));
        assert_eq!(b.ready_at(t0), t0 + 500 * MS);
        assert!(b.try_take(t0 + 500 * MS));
        // Long idle: capped at burst.
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_take(later) && b.try_take(later) && !b.try_take(later));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(100 * MS, 350 * MS);
        let seq: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seq, vec![100 * MS, 200 * MS, 350 * MS, 350 * MS, 350 * MS]);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).next_delay(),
            MS
        );
    }

    #[test]
    fn twins_of_a_device_are_merged_into_one_call_latest_wins() {
        let t0 = Instant::now();
        let mut o = Outbox::new(&cfg(), t0);
        o.push(
            &report("r1", &[("battery", "10"), ("speed", "1")], None),
            t0,
        );
        o.push(
            &report("r1", &[("battery", "11"), ("temp", "30")], None),
            t0,
        );
        let c = o.next_call(t0).unwrap();
        assert_eq!(
            status_values(&c),
            vec![
                ("battery".into(), "11".into()),
                ("speed".into(), "1".into()),
                ("temp".into(), "30".into())
            ]
        );
        assert!(o.next_call(t0).is_none());
        assert_eq!(o.next_wake(t0), None);
    }

    #[test]
    fn min_interval_per_device() {
        let t0 = Instant::now();
        let mut o = Outbox::new(&cfg(), t0);
        o.push(&report("r1", &[("a", "1")], None), t0);
        assert!(o.next_call(t0).is_some());
        o.succeeded();
        o.push(&report("r1", &[("a", "2")], None), t0 + 10 * MS);
        o.push(&report("r2", &[("a", "9")], None), t0 + 10 * MS);
        // r2 may go, r1 must wait for its interval.
        assert_eq!(o.next_call(t0 + 10 * MS).unwrap().device().name, "r2");
        assert!(o.next_call(t0 + 10 * MS).is_none());
        assert_eq!(o.next_wake(t0 + 10 * MS), Some(t0 + 1000 * MS));
        assert_eq!(
            status_values(&o.next_call(t0 + 1000 * MS).unwrap()),
            vec![("a".into(), "2".into())]
        );
    }

    #[test]
    fn token_bucket_bounds_a_burst() {
        let t0 = Instant::now();
        let mut o = Outbox::new(
            &OutboxConfig {
                min_interval: Duration::ZERO,
                ..cfg()
            },
            t0,
        );
        for i in 0..10 {
            o.push(&report(&format!("r{i}"), &[("a", "1")], None), t0);
        }
        let mut sent = 0;
        while o.next_call(t0).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 3, "burst");
        assert_eq!(o.next_wake(t0), Some(t0 + 1000 * MS));
        assert!(o.next_call(t0 + 1000 * MS).is_some());
        assert!(o.next_call(t0 + 1000 * MS).is_none());
        // Over 10 s at most burst + 10 calls in total.
        let mut t = t0 + 1000 * MS;
        let mut more = 0;
        while t < t0 + Duration::from_secs(10) {
            t += 100 * MS;
            while o.next_call(t).is_some() {
                more += 1;
            }
        }
        assert_eq!(sent + 1 + more, 10);
        assert_eq!(o.pending_devices(), 0);
    }

    #[test]
    fn too_many_request_restores_values_newer_ones_win_and_backs_off() {
        let t0 = Instant::now();
        let mut o = Outbox::new(
            &OutboxConfig {
                min_interval: Duration::ZERO,
                ..cfg()
            },
            t0,
        );
        o.push(&report("r1", &[("a", "1"), ("b", "1")], None), t0);
        let c = o.next_call(t0).unwrap();
        o.push(&report("r1", &[("a", "2")], None), t0);
        assert_eq!(o.rate_limited(c, t0), 500 * MS);
        assert!(o.next_call(t0 + 499 * MS).is_none());
        assert_eq!(o.next_wake(t0), Some(t0 + 500 * MS));
        let c = o.next_call(t0 + 500 * MS).unwrap();
        assert_eq!(
            status_values(&c),
            vec![("a".into(), "2".into()), ("b".into(), "1".into())]
        );
        // Again: the backoff doubles.
        assert_eq!(o.rate_limited(c, t0 + 500 * MS), 1000 * MS);
        let c = o.next_call(t0 + 1500 * MS).unwrap();
        o.succeeded();
        assert_eq!(status_values(&c).len(), 2);
        o.push(&report("r1", &[("a", "3")], None), t0 + 1500 * MS);
        let c = o.next_call(t0 + 2500 * MS).unwrap();
        assert_eq!(
            o.rate_limited(c, t0 + 2500 * MS),
            500 * MS,
            "reset after success"
        );
    }

    #[test]
    fn states_are_separate_calls_latest_wins_and_can_be_disabled() {
        let t0 = Instant::now();
        let mut o = Outbox::new(&cfg(), t0);
        o.push(&report("r1", &[], Some(DeviceState::Online)), t0);
        o.push(&report("r1", &[("a", "1")], Some(DeviceState::Offline)), t0);
        let first = o.next_call(t0).unwrap();
        let second = o.next_call(t0).unwrap();
        let mut kinds = [&first, &second].map(|c| matches!(c, Call::State { .. }));
        kinds.sort();
        assert_eq!(kinds, [false, true]);
        for c in [first, second] {
            if let Call::State { state, .. } = c {
                assert_eq!(state, DeviceState::Offline);
                o.failed(
                    Call::State {
                        device: DeviceId::new("default", "r1"),
                        state,
                    },
                    t0,
                );
            }
        }
        o.disable_states();
        assert!(o.next_call(t0 + 2000 * MS).is_none());
        o.push(&report("r1", &[], Some(DeviceState::Online)), t0);
        assert_eq!(o.pending_devices(), 0);
    }

    #[test]
    fn local_only_twins_are_not_queued() {
        let t0 = Instant::now();
        let mut o = Outbox::new(&cfg(), t0);
        let mut r = report("r1", &[("a", "1")], None);
        r.report_to_cloud = false;
        o.push(&r, t0);
        assert!(o.next_call(t0).is_none());
        assert!(o.pending_twins(&DeviceId::new("default", "r1")).is_empty());
    }

    #[test]
    fn transport_failure_gives_values_back_and_forget_drops_them() {
        let t0 = Instant::now();
        let mut o = Outbox::new(
            &OutboxConfig {
                min_interval: Duration::ZERO,
                ..cfg()
            },
            t0,
        );
        o.push(&report("r1", &[("a", "1")], None), t0);
        let c = o.next_call(t0).unwrap();
        o.failed(c, t0);
        let id = DeviceId::new("default", "r1");
        assert_eq!(o.pending_twins(&id).len(), 1);
        o.forget(&id);
        assert_eq!(o.pending_devices(), 0);
        // Registration takes tokens but never blocks.
        for _ in 0..5 {
            o.registering(t0);
        }
        o.push(&report("r1", &[("a", "1")], None), t0);
        assert!(o.next_call(t0).is_none());
        assert!(o.next_wake(t0).unwrap() > t0);
    }
}
