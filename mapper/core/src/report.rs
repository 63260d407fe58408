//! The reporting policy of one device, as a pure state machine (no I/O, no
//! clock of its own: every call is given `now`).
//!
//! - **collectCycle**: a property's value is taken from its newest sample at
//!   most once per cycle (0 = every sample).
//! - **on change**: a collected value that differs from the last reported one
//!   (numbers: by more than the deadband) is reported at once, together with
//!   every other changed twin of the device: one batch per poll.
//! - **reportCycle**: a twin unchanged for a whole cycle is reported again.
//! - **reportToCloud: false**: the value is collected (and pushed) but not
//!   reported as a twin.
//! - **state**: a read property is live while its last sample is younger than
//!   `livenessCycles × max(collectCycle, 1 s)`. A device with read properties
//!   is online while any of them is live; a device with only write properties
//!   is online while something subscribes to what it writes. Offline
//!   otherwise, and unknown until the first window has passed.

use std::time::{Duration, Instant};

use crate::backend::{DeviceState, Rejection, TwinReport};

/// The shortest base of the liveness window (a collect cycle of 0 means "every
/// sample", not "offline after 0 s").
pub const MIN_LIVENESS_BASE: Duration = Duration::from_secs(1);

/// The reporting settings of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyPolicy {
    pub name: String,
    pub collect_cycle: Duration,
    pub report_cycle: Duration,
    pub report_to_cloud: bool,
    pub deadband: f64,
    /// Whether samples come from a topic (else liveness comes from the writer).
    pub reads: bool,
    /// The twin type for `metadata.type`.
    pub value_type: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    twin: String,
    numeric: Option<f64>,
    timestamp_ms: i64,
}

#[derive(Debug)]
struct PropState {
    policy: PropertyPolicy,
    /// The newest sample not yet collected.
    pending: Option<Sample>,
    collected_at: Option<Instant>,
    last_sample_at: Option<Instant>,
    /// The last collected sample.
    current: Option<Sample>,
    reported: Option<Sample>,
    reported_at: Option<Instant>,
    dirty: bool,
    observed_desired: Option<String>,
    writer_live: bool,
}

/// What a poll produced: a batch for the backend, and which properties were
/// collected (for the data push).
#[derive(Debug, Default, PartialEq)]
pub struct PollOutput {
    pub twins: Vec<TwinReport>,
    pub state: Option<DeviceState>,
    pub rejections: Vec<Rejection>,
    /// Indices of properties whose value was collected in this poll, with the value.
    pub collected: Vec<(usize, String, i64)>,
}

impl PollOutput {
    /// Whether there is anything for the backend.
    pub fn has_report(&self) -> bool {
        !self.twins.is_empty() || self.state.is_some() || !self.rejections.is_empty()
    }
}

/// The reporting state of one device.
#[derive(Debug)]
pub struct Reporter {
    props: Vec<PropState>,
    liveness_cycles: u32,
    started: Instant,
    state: DeviceState,
    reported_state: Option<DeviceState>,
    rejections: Vec<Rejection>,
}

impl Reporter {
    pub fn new(policies: Vec<PropertyPolicy>, liveness_cycles: u32, now: Instant) -> Self {
        let props = policies
            .into_iter()
            .map(|policy| PropState {
                policy,
                pending: None,
                collected_at: None,
                last_sample_at: None,
                current: None,
                reported: None,
                reported_at: None,
                dirty: false,
                observed_desired: None,
                writer_live: false,
            })
            .collect();
        Self {
            props,
            liveness_cycles: liveness_cycles.max(1),
            started: now,
            state: DeviceState::Unknown,
            reported_state: None,
            rejections: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.props.len()
    }

    pub fn is_empty(&self) -> bool {
        self.props.is_empty()
    }

    /// The current device state.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// The last reported value of a property.
    pub fn reported(&self, idx: usize) -> Option<&str> {
        self.props
            .get(idx)?
            .reported
            .as_ref()
            .map(|s| s.twin.as_str())
    }

    fn window(&self, p: &PropState) -> Duration {
        p.policy.collect_cycle.max(MIN_LIVENESS_BASE) * self.liveness_cycles
    }

    /// A new value of property `idx` (already in twin form).
    pub fn on_sample(
        &mut self,
        idx: usize,
        twin: String,
        numeric: Option<f64>,
        timestamp_ms: i64,
        now: Instant,
    ) {
        if let Some(p) = self.props.get_mut(idx) {
            p.pending = Some(Sample {
                twin,
                numeric,
                timestamp_ms,
            });
            p.last_sample_at = Some(now);
        }
    }

    /// A desired value was applied (published): it is the observed desired value.
    pub fn on_desired_applied(&mut self, idx: usize, value: String) {
        if let Some(p) = self.props.get_mut(idx) {
            p.observed_desired = Some(value);
            if p.current.is_some() {
                p.dirty = true;
            }
        }
    }

    /// Whether the writer of a write-only property has a matched subscriber.
    pub fn on_writer_liveness(&mut self, idx: usize, live: bool) {
        if let Some(p) = self.props.get_mut(idx) {
            p.writer_live = live;
        }
    }

    /// A desired value that was refused.
    pub fn on_rejection(&mut self, r: Rejection) {
        self.rejections.push(r);
    }

    /// Report everything again (the backend lost state).
    pub fn force_full(&mut self) {
        for p in &mut self.props {
            if p.current.is_some() || p.pending.is_some() {
                p.dirty = true;
                p.collected_at = None;
            }
        }
        self.reported_state = None;
    }

    /// Advances the state machine: collects due samples, decides what to report.
    pub fn poll(&mut self, now: Instant) -> PollOutput {
        let mut out = PollOutput::default();
        for (i, p) in self.props.iter_mut().enumerate() {
            let due = p
                .collected_at
                .is_none_or(|t| now.saturating_duration_since(t) >= p.policy.collect_cycle);
            if due {
                if let Some(s) = p.pending.take() {
                    p.collected_at = Some(now);
                    out.collected.push((i, s.twin.clone(), s.timestamp_ms));
                    let changed = match (&p.reported, s.numeric) {
                        (None, _) => true,
                        (Some(r), Some(x)) if p.policy.deadband > 0.0 => {
                            r.numeric.is_none_or(|y| {
                                (x - y).abs() > p.policy.deadband || x.is_nan() != y.is_nan()
                            })
                        }
                        (Some(r), _) => r.twin != s.twin,
                    };
                    p.dirty |= changed;
                    p.current = Some(s);
                }
            }
            if p.current.is_some()
                && p.reported_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= p.policy.report_cycle)
            {
                p.dirty = true;
            }
            if p.dirty {
                p.dirty = false;
                if let Some(cur) = &p.current {
                    p.reported = Some(cur.clone());
                    p.reported_at = Some(now);
                    if p.policy.report_to_cloud {
                        out.twins.push(TwinReport {
                            property: p.policy.name.clone(),
                            reported: cur.twin.clone(),
                            observed_desired: p.observed_desired.clone(),
                            value_type: p.policy.value_type,
                            timestamp_ms: cur.timestamp_ms,
                        });
                    }
                }
            }
        }
        self.state = self.compute_state(now);
        if self.reported_state != Some(self.state) {
            self.reported_state = Some(self.state);
            out.state = Some(self.state);
        }
        out.rejections = std::mem::take(&mut self.rejections);
        out
    }

    fn compute_state(&self, now: Instant) -> DeviceState {
        // Sensors decide when there are any; a write-only device is live
        // while something subscribes to what it writes.
        let any_reads = self.props.iter().any(|p| p.policy.reads);
        let any_signal = !self.props.is_empty();
        for p in &self.props {
            let live = if any_reads {
                p.policy.reads
                    && p.last_sample_at
                        .is_some_and(|t| now.saturating_duration_since(t) < self.window(p))
            } else {
                p.writer_live
            };
            if live {
                return DeviceState::Online;
            }
        }
        let first_window = self
            .props
            .iter()
            .map(|p| self.window(p))
            .min()
            .unwrap_or(MIN_LIVENESS_BASE);
        if !any_signal || now.saturating_duration_since(self.started) < first_window {
            DeviceState::Unknown
        } else {
            DeviceState::Offline
        }
    }

    /// When `poll` should run next, if nothing else happens before.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            let t = t.max(now);
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        for p in &self.props {
            if p.pending.is_some() {
                consider(p.collected_at.map_or(now, |t| t + p.policy.collect_cycle));
            }
            if let (Some(_), Some(t)) = (&p.current, p.reported_at) {
                consider(t + p.policy.report_cycle);
            }
            if let Some(t) = p.last_sample_at {
                let expiry = t + self.window(p);
                if expiry > now {
                    consider(expiry);
                }
            }
        }
        if self.state == DeviceState::Unknown {
            let first = self
                .props
                .iter()
                .map(|p| self.window(p))
                .min()
                .unwrap_or(MIN_LIVENESS_BASE);
            let t = self.started + first;
            if t > now {
                consider(t);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, collect_ms: u64, report_ms: u64, deadband: f64) -> PropertyPolicy {
        PropertyPolicy {
            name: name.into(),
            collect_cycle: Duration::from_millis(collect_ms),
            report_cycle: Duration::from_millis(report_ms),
            report_to_cloud: true,
            deadband,
            reads: true,
            value_type: "double",
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn names(o: &PollOutput) -> Vec<(&str, &str)> {
        o.twins
            .iter()
            .map(|t| (t.property.as_str(), t.reported.as_str()))
            .collect()
    }

    #[test]
    fn changed_twins_of_a_device_go_in_one_batch() {
        let t0 = Instant::now();
        let mut r = Reporter::new(
            vec![policy("a", 0, 10_000, 0.0), policy("b", 0, 10_000, 0.0)],
            3,
            t0,
        );
        r.on_sample(0, "1".into(), Some(1.0), 1, t0);
        r.on_sample(1, "2".into(), Some(2.0), 1, t0);
        let o = r.poll(t0);
        assert_eq!(names(&o), [("a", "1"), ("b", "2")]);
        assert_eq!(o.state, Some(DeviceState::Online));
        // Unchanged values are not reported again before the report cycle.
        r.on_sample(0, "1".into(), Some(1.0), 2, ms(t0, 10));
        assert!(!r.poll(ms(t0, 10)).has_report());
        // ... but are at the report cycle.
        r.on_sample(0, "1".into(), Some(1.0), 3, ms(t0, 9_000));
        assert!(r.poll(ms(t0, 9_000)).twins.is_empty());
        let o = r.poll(ms(t0, 10_000));
        assert_eq!(
            names(&o),
            [("a", "1"), ("b", "2")],
            "both unchanged for a whole cycle"
        );
    }

    #[test]
    fn collect_cycle_limits_sampling_and_deadband_filters_noise() {
        let t0 = Instant::now();
        let mut r = Reporter::new(vec![policy("v", 1000, 60_000, 0.5)], 3, t0);
        r.on_sample(0, "10".into(), Some(10.0), 0, t0);
        assert_eq!(names(&r.poll(t0)), [("v", "10")]);
        r.on_sample(0, "10.2".into(), Some(10.2), 0, ms(t0, 100));
        // Not collected yet: the next collection is due at 1000 ms.
        assert!(r.poll(ms(t0, 100)).collected.is_empty());
        assert_eq!(r.next_deadline(ms(t0, 100)), Some(ms(t0, 1000)));
        let o = r.poll(ms(t0, 1000));
        assert_eq!(o.collected.len(), 1);
        assert!(o.twins.is_empty(), "within the deadband");
        r.on_sample(0, "11".into(), Some(11.0), 0, ms(t0, 1500));
        assert_eq!(names(&r.poll(ms(t0, 2000))), [("v", "11")]);
    }

    #[test]
    fn liveness_drives_the_device_state() {
        let t0 = Instant::now();
        let mut r = Reporter::new(vec![policy("v", 1000, 60_000, 0.0)], 3, t0);
        assert_eq!(r.poll(t0).state, Some(DeviceState::Unknown));
        assert_eq!(r.next_deadline(t0), Some(ms(t0, 3000)));
        assert_eq!(r.poll(ms(t0, 3000)).state, Some(DeviceState::Offline));
        r.on_sample(0, "1".into(), Some(1.0), 0, ms(t0, 3500));
        assert_eq!(r.poll(ms(t0, 3500)).state, Some(DeviceState::Online));
        assert_eq!(r.poll(ms(t0, 6000)).state, None);
        assert_eq!(r.next_deadline(ms(t0, 6000)), Some(ms(t0, 6500)));
        assert_eq!(r.poll(ms(t0, 6500)).state, Some(DeviceState::Offline));
        r.on_sample(0, "1".into(), Some(1.0), 0, ms(t0, 7000));
        assert_eq!(r.poll(ms(t0, 7000)).state, Some(DeviceState::Online));
    }

    #[test]
    fn write_only_devices_are_live_while_subscribed() {
        let t0 = Instant::now();
        let mut p = policy("speed", 1000, 60_000, 0.0);
        p.reads = false;
        let mut r = Reporter::new(vec![p], 3, t0);
        r.on_writer_liveness(0, true);
        assert_eq!(r.poll(t0).state, Some(DeviceState::Online));
        r.on_writer_liveness(0, false);
        assert_eq!(r.poll(ms(t0, 3000)).state, Some(DeviceState::Offline));
    }

    #[test]
    fn resync_reports_everything_and_local_only_twins_stay_local() {
        let t0 = Instant::now();
        let mut local = policy("raw", 0, 60_000, 0.0);
        local.report_to_cloud = false;
        let mut r = Reporter::new(vec![policy("a", 0, 60_000, 0.0), local], 3, t0);
        r.on_sample(0, "1".into(), Some(1.0), 0, t0);
        r.on_sample(1, "9".into(), Some(9.0), 0, t0);
        let o = r.poll(t0);
        assert_eq!(names(&o), [("a", "1")]);
        assert_eq!(
            o.collected.len(),
            2,
            "local-only values are still collected (for push)"
        );
        r.on_desired_applied(0, "5".into());
        r.on_rejection(Rejection {
            property: "a".into(),
            value: "99".into(),
            reason: "above".into(),
        });
        let o = r.poll(ms(t0, 1));
        assert_eq!(o.twins[0].observed_desired.as_deref(), Some("5"));
        assert_eq!(o.rejections.len(), 1);
        r.force_full();
        let o = r.poll(ms(t0, 2));
        assert_eq!(names(&o), [("a", "1")]);
        assert_eq!(o.state, Some(DeviceState::Online));
    }
}
