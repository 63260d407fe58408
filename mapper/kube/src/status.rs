//! Pure status logic: coalescing reports per device, and building the status
//! patch from the object's current status (keeping what others wrote).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mapper_core::backend::{DeviceState, Report, TwinReport};
use mapper_core::model::DeviceId;
use serde_json::{json, Map, Value};

/// What is waiting to be written for one device: the latest value of each
/// twin and the latest state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    pub twins: BTreeMap<String, TwinReport>,
    pub state: Option<DeviceState>,
    /// When the state was last set to online (ms since the epoch).
    pub online_at_ms: Option<i64>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.twins.is_empty() && self.state.is_none()
    }

    /// Adds a report on top: newer values win, per twin.
    pub fn merge_report(&mut self, report: &Report, now_ms: i64) {
        if report.report_to_cloud {
            for t in &report.twins {
                self.twins.insert(t.property.clone(), t.clone());
            }
        }
        if let Some(s) = report.state {
            self.state = Some(s);
            self.online_at_ms = (s == DeviceState::Online).then_some(now_ms);
        }
    }

    /// Puts an older pending (a failed write) under this one: this one's values win.
    pub fn merge_older(&mut self, older: Pending) {
        for (k, v) in older.twins {
            self.twins.entry(k).or_insert(v);
        }
        if self.state.is_none() {
            self.state = older.state;
            self.online_at_ms = older.online_at_ms;
        }
    }
}

#[derive(Debug)]
struct Slot {
    pending: Pending,
    /// When the pending data may be written.
    due: Instant,
    last_write: Option<Instant>,
}

/// Per-device rate limit for status writes: at most one write per `interval`
/// per device; what arrives in between is merged (latest value wins).
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    retry_delay: Duration,
    slots: HashMap<DeviceId, Slot>,
}

impl Coalescer {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            retry_delay: interval.max(Duration::from_secs(1)),
            slots: HashMap::new(),
        }
    }

    /// Takes a report from the core.
    pub fn push(&mut self, report: &Report, now: Instant, now_ms: i64) {
        let interval = self.interval;
        let slot = self
            .slots
            .entry(report.device.clone())
            .or_insert_with(|| Slot {
                pending: Pending::default(),
                due: now,
                last_write: None,
            });
        let was_empty = slot.pending.is_empty();
        slot.pending.merge_report(report, now_ms);
        if was_empty {
            slot.due = match slot.last_write {
                Some(last) => (last + interval).max(now),
                None => now,
            };
        }
    }

    /// The earliest time something is due, if anything is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| !s.pending.is_empty())
            .map(|s| s.due)
            .min()
    }

    /// Takes what is due at `now`, marking those devices written at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(DeviceId, Pending)> {
        let mut out = Vec::new();
        for (id, slot) in &mut self.slots {
            if !slot.pending.is_empty() && slot.due <= now {
                slot.last_write = Some(now);
                out.push((id.clone(), std::mem::take(&mut slot.pending)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Gives back a pending whose write failed, to be retried after the retry delay.
    pub fn requeue(&mut self, id: DeviceId, older: Pending, now: Instant) {
        let retry = now + self.retry_delay;
        let slot = self.slots.entry(id).or_insert_with(|| Slot {
            pending: Pending::default(),
            due: retry,
            last_write: None,
        });
        slot.pending.merge_older(older);
        slot.due = slot.due.max(retry);
    }

    /// Forgets a device (removed from this node).
    pub fn remove(&mut self, id: &DeviceId) {
        self.slots.remove(id);
    }

    /// Devices with something pending.
    pub fn pending_count(&self) -> usize {
        self.slots
            .values()
            .filter(|s| !s.pending.is_empty())
            .count()
    }
}

/// RFC 3339 (UTC, second precision) of ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    use k8s_openapi::jiff::{Timestamp, Unit};
    Timestamp::from_millisecond(ms)
        .ok()
        .and_then(|t| t.round(Unit::Second).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

fn twin_value(value: &str, ty: &str, ts_ms: i64) -> Value {
    json!({"value": value, "metadata": {"timestamp": ts_ms.to_string(), "type": ty}})
}

/// The `twins` list after writing `pending` over `existing` (the list on the
/// server): twins of properties this write does not report are kept as they
/// are, and in the twins it does report only `reported` and `observedDesired`
/// are replaced (any other key another writer put there stays). New twins go
/// at the end, in property order.
pub fn merge_twins(existing: Option<&Value>, pending: &Pending) -> Vec<Value> {
    let mut out: Vec<Value> = existing
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut done = std::collections::BTreeSet::new();
    for twin in out.iter_mut() {
        let Some(obj) = twin.as_object_mut() else {
            continue;
        };
        let Some(name) = obj
            .get("propertyName")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        if let Some(t) = pending.twins.get(&name) {
            apply_twin(obj, t);
            done.insert(name);
        }
    }
    for (name, t) in &pending.twins {
        if !done.contains(name) {
            let mut obj = Map::new();
            obj.insert("propertyName".into(), Value::String(name.clone()));
            apply_twin(&mut obj, t);
            out.push(Value::Object(obj));
        }
    }
    out
}

fn apply_twin(obj: &mut Map<String, Value>, t: &TwinReport) {
    obj.insert(
        "reported".into(),
        twin_value(&t.reported, t.value_type, t.timestamp_ms),
    );
    if let Some(d) = &t.observed_desired {
        obj.insert(
            "observedDesired".into(),
            twin_value(d, t.value_type, t.timestamp_ms),
        );
    }
}

/// The JSON merge patch for one write: `metadata.resourceVersion` (the
/// precondition), and in `status` only `twins` (when reporting twins),
/// `state` and `lastOnlineTime` (when the state changes). Nothing else of the
/// status is named, so a merge patch leaves it alone.
pub fn status_patch(
    existing_status: Option<&Value>,
    resource_version: Option<&str>,
    pending: &Pending,
) -> Value {
    let mut status = Map::new();
    if !pending.twins.is_empty() {
        let existing_twins = existing_status.and_then(|s| s.get("twins"));
        status.insert(
            "twins".into(),
            Value::Array(merge_twins(existing_twins, pending)),
        );
    }
    if let Some(state) = pending.state {
        status.insert("state".into(), Value::String(state.as_str().into()));
        if let (DeviceState::Online, Some(ms)) = (state, pending.online_at_ms) {
            status.insert("lastOnlineTime".into(), Value::String(rfc3339(ms)));
        }
    }
    let mut patch = json!({ "status": Value::Object(status) });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(p: &str, v: &str, ts: i64) -> TwinReport {
        TwinReport {
            property: p.into(),
            reported: v.into(),
            observed_desired: None,
            value_type: "float",
            timestamp_ms: ts,
        }
    }

    fn report(twins: Vec<TwinReport>, state: Option<DeviceState>) -> Report {
        Report {
            device: DeviceId::new("default", "r1"),
            twins,
            state,
            rejections: vec![],
            report_to_cloud: true,
        }
    }

    #[test]
    fn coalesces_latest_value_wins_and_respects_interval() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1));
        c.push(
            &report(vec![twin("battery", "50", 1)], Some(DeviceState::Online)),
            t0,
            1000,
        );
        assert_eq!(c.next_due(), Some(t0));
        let due = c.take_due(t0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.twins["battery"].reported, "50");
        assert_eq!(c.next_due(), None);

        // Within the interval: merged, written only at t0 + 1 s.
        let t1 = t0 + Duration::from_millis(100);
        c.push(
            &report(
                vec![twin("battery", "49", 2), twin("speed", "0.1", 2)],
                None,
            ),
            t1,
            1100,
        );
        c.push(&report(vec![twin("battery", "48", 3)], None), t1, 1200);
        assert_eq!(c.next_due(), Some(t0 + Duration::from_secs(1)));
        assert!(c.take_due(t1).is_empty());
        let due = c.take_due(t0 + Duration::from_secs(1));
        assert_eq!(due.len(), 1);
        let p = &due[0].1;
        assert_eq!(p.twins["battery"].reported, "48");
        assert_eq!(p.twins["speed"].reported, "0.1");
        assert_eq!(p.state, None);
    }

    #[test]
    fn zero_interval_writes_immediately_and_requeue_keeps_newer() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        c.push(
            &report(vec![twin("a", "1", 1)], Some(DeviceState::Offline)),
            t0,
            0,
        );
        let (id, failed) = c.take_due(t0).pop().unwrap();
        c.push(&report(vec![twin("a", "2", 2)], None), t0, 0);
        c.requeue(id, failed, t0);
        // Retried no sooner than 1 s later, with the newer value and the older state.
        assert!(c.take_due(t0).is_empty());
        let (_, p) = c.take_due(t0 + Duration::from_secs(1)).pop().unwrap();
        assert_eq!(p.twins["a"].reported, "2");
        assert_eq!(p.state, Some(DeviceState::Offline));
        c.remove(&DeviceId::new("default", "r1"));
        assert_eq!(c.pending_count(), 0);
    }

    #[test]
    fn keep_local_reports_only_carry_state() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        let mut r = report(vec![twin("a", "1", 1)], Some(DeviceState::Online));
        r.report_to_cloud = false;
        c.push(&r, t0, 5);
        let (_, p) = c.take_due(t0).pop().unwrap();
        assert!(p.twins.is_empty());
        assert_eq!(p.state, Some(DeviceState::Online));
        assert_eq!(p.online_at_ms, Some(5));
    }

    #[test]
    fn patch_keeps_other_twins_and_fields() {
        let existing = json!({
            "twins": [
                {"propertyName": "other", "reported": {"value": "x"}},
                {"propertyName": "battery", "reported": {"value": "1"}, "desired": {"value": "keep"}},
            ],
            "extensions": {"owner": "console"},
            "state": "offline"
        });
        let mut p = Pending::default();
        let mut t = twin("battery", "42.5", 1_700_000_000_000);
        t.observed_desired = Some("40".into());
        p.twins.insert("battery".into(), t);
        p.twins
            .insert("speed".into(), twin("speed", "0.3", 1_700_000_000_000));
        p.state = Some(DeviceState::Online);
        p.online_at_ms = Some(1_700_000_000_000);
        let patch = status_patch(Some(&existing), Some("7"), &p);
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let s = &patch["status"];
        assert!(
            s.get("extensions").is_none(),
            "a merge patch must not name others' fields"
        );
        assert_eq!(s["state"], "online");
        assert_eq!(s["lastOnlineTime"], "2023-11-14T22:13:20Z");
        let twins = s["twins"].as_array().unwrap();
        assert_eq!(twins.len(), 3);
        assert_eq!(
            twins[0],
            json!({"propertyName": "other", "reported": {"value": "x"}})
        );
        assert_eq!(twins[1]["desired"]["value"], "keep");
        assert_eq!(twins[1]["reported"]["value"], "42.5");
        assert_eq!(twins[1]["reported"]["metadata"]["type"], "float");
        assert_eq!(
            twins[1]["reported"]["metadata"]["timestamp"],
            "1700000000000"
        );
        assert_eq!(twins[1]["observedDesired"]["value"], "40");
        assert_eq!(twins[2]["propertyName"], "speed");
    }

    #[test]
    fn patch_with_state_only_does_not_touch_twins() {
        let p = Pending {
            state: Some(DeviceState::Offline),
            ..Default::default()
        };
        let patch = status_patch(None, None, &p);
        assert_eq!(patch, json!({"status": {"state": "offline"}}));
        // Garbage in the existing list is kept, not fatal.
        let mut p = Pending::default();
        p.twins.insert("a".into(), twin("a", "1", 0));
        let twins = merge_twins(Some(&json!([5, {"noName": true}])), &p);
        assert_eq!(twins.len(), 3);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
