//! The pure state machine of the eventbus backend: no I/O, no clock.
//!
//! Inputs ([`Input`]): "connected", "disconnected", an incoming MQTT message
//! (topic, payload), or a core [`Report`]. Outputs: a list of [`Action`]s —
//! subscribe, publish, or emit a [`BackendEvent`] to the core. The caller
//! passes the time (`now_ms`) with every input.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mapper_core::backend::{BackendEvent, DeviceBinding, Report};
use mapper_core::model::DeviceId;

use crate::config::{DeviceIdForm, Qos};
use crate::wire::{self, MemberDevice, MsgTwin};

/// What the machine is told.
#[derive(Debug)]
pub enum Input<'a> {
    /// A session with the broker started (CONNACK received): clean session, nothing subscribed.
    Connected,
    /// The session ended.
    Disconnected,
    /// A message on a subscribed topic.
    Message { topic: &'a str, payload: &'a [u8] },
    /// A report from the core.
    Report(Report),
    /// Time passed: re-ask `membership/get` and `twin/get` that got no answer.
    Tick,
}

/// One publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: String,
    pub qos: Qos,
    pub retain: bool,
}

/// What the machine asks for.
// `BackendEvent` (the core's type) is large; actions live briefly in short lists.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Action {
    Subscribe { filter: String, qos: Qos },
    Publish(Publication),
    Emit(BackendEvent),
}

/// Fixed settings of the machine.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub form: DeviceIdForm,
    pub qos: Qos,
    /// Also publish reported twins to `$ke/events/device/{id}/data/update`.
    pub publish_data_topic: bool,
    /// Re-ask an unanswered `membership/get` / `twin/get` after this many ms
    /// (edgecore may subscribe after the mapper, e.g. after a broker restart).
    pub get_retry_ms: i64,
}

/// How many times a `membership/get` or `twin/get` is sent per session without an answer.
pub const MAX_GET_ATTEMPTS: u32 = 12;

/// An unanswered get.
#[derive(Debug, Clone, Copy)]
struct Pending {
    attempts: u32,
    last_ms: i64,
}

/// Counters of what happened (monotonic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions started.
    pub connects: u64,
    /// Incoming messages that did not parse (ignored).
    pub malformed: u64,
    /// Incoming messages about devices this backend does not serve, or unknown suffixes.
    pub ignored: u64,
    /// `twin/update/result` errors from edgecore.
    pub update_errors: u64,
    /// Error results of `twin/get` and `membership/get`.
    pub get_errors: u64,
    /// `BackendEvent::Desired` emitted.
    pub desired: u64,
    /// Desired values not forwarded because they equal the observed desired value already reported.
    pub desired_suppressed: u64,
    /// Reports dropped while disconnected (the reconnect's Resync re-reports).
    pub reports_offline: u64,
    /// Reports about devices this backend does not serve.
    pub reports_unserved: u64,
    /// Rejected desired values published.
    pub rejections: u64,
    /// Publishes the MQTT client could not queue (filled in by the runtime).
    pub publish_dropped: u64,
}

/// uuid-shaped event ids from a seed and a counter.
#[derive(Debug, Clone)]
struct EventIds {
    seed: u64,
    n: u64,
}

impl EventIds {
    fn next(&mut self) -> String {
        self.n += 1;
        let a = self.seed;
        let b = self.n;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// The eventbus state machine.
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    /// The configured devices.
    configured: BTreeMap<DeviceId, DeviceBinding>,
    /// Topic id -> device id, for the configured devices.
    by_topic_id: HashMap<String, DeviceId>,
    /// The node's devices per edgecore's membership; `None` until a membership result arrived.
    membership: Option<BTreeSet<DeviceId>>,
    connected: bool,
    /// The observed desired value last reported, per device and property.
    observed: HashMap<(DeviceId, String), String>,
    ids: EventIds,
    counters: Counters,
    /// Unanswered `membership/get` of this session.
    awaiting_membership: Option<Pending>,
    /// Unanswered `twin/get`s of this session.
    awaiting_twins: BTreeMap<DeviceId, Pending>,
}

impl Machine {
    /// A machine serving `devices`; `seed` makes the event ids of this process distinct.
    pub fn new(settings: Settings, devices: Vec<DeviceBinding>, seed: u64) -> Self {
        let mut configured = BTreeMap::new();
        let mut by_topic_id = HashMap::new();
        for b in devices {
            let id = b.id();
            by_topic_id.insert(settings.form.topic_id(&id), id.clone());
            configured.insert(id, b);
        }
        Self {
            settings,
            configured,
            by_topic_id,
            membership: None,
            connected: false,
            observed: HashMap::new(),
            ids: EventIds { seed, n: 0 },
            counters: Counters::default(),
            awaiting_membership: None,
            awaiting_twins: BTreeMap::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Whether a membership result has arrived.
    pub fn has_membership(&self) -> bool {
        self.membership.is_some()
    }

    fn is_served(&self, id: &DeviceId) -> bool {
        self.configured.contains_key(id) && self.membership.as_ref().is_none_or(|m| m.contains(id))
    }

    /// The devices served now: configured, and in the membership once one arrived.
    pub fn served(&self) -> Vec<DeviceId> {
        self.configured
            .keys()
            .filter(|id| self.is_served(id))
            .cloned()
            .collect()
    }

    fn served_bindings(&self) -> Vec<DeviceBinding> {
        self.configured
            .iter()
            .filter(|(id, _)| self.is_served(id))
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn publish(&self, topic: String, payload: String) -> Action {
        Action::Publish(Publication {
            topic,
            payload,
            qos: self.settings.qos,
            retain: false,
        })
    }

    fn twin_get(&mut self, id: &DeviceId, now_ms: i64) -> Action {
        let attempts = self.awaiting_twins.get(id).map_or(0, |p| p.attempts) + 1;
        self.awaiting_twins.insert(
            id.clone(),
            Pending {
                attempts,
                last_ms: now_ms,
            },
        );
        let event_id = self.ids.next();
        self.publish(
            wire::device_topic(self.settings.form, id, wire::TWIN_GET),
            wire::base_message(&event_id, now_ms),
        )
    }

    fn membership_get(&mut self, now_ms: i64) -> Action {
        let attempts = self.awaiting_membership.map_or(0, |p| p.attempts) + 1;
        self.awaiting_membership = Some(Pending {
            attempts,
            last_ms: now_ms,
        });
        let event_id = self.ids.next();
        self.publish(
            wire::node_topic(&self.settings.node, wire::MEMBERSHIP_GET),
            wire::base_message(&event_id, now_ms),
        )
    }

    fn due(&self, p: &Pending, now_ms: i64) -> bool {
        now_ms.saturating_sub(p.last_ms) >= self.settings.get_retry_ms
    }

    fn on_tick(&mut self, now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.connected {
            return out;
        }
        if let Some(p) = self.awaiting_membership.filter(|p| self.due(p, now_ms)) {
            if p.attempts >= MAX_GET_ATTEMPTS {
                tracing::warn!(node = %self.settings.node, attempts = p.attempts, "edgecore never answered membership/get; serving the configured devices");
                self.awaiting_membership = None;
            } else {
                tracing::debug!(node = %self.settings.node, attempt = p.attempts + 1, "membership/get unanswered; asking again");
                out.push(self.membership_get(now_ms));
            }
        }
        let due: Vec<(DeviceId, Pending)> = self
            .awaiting_twins
            .iter()
            .filter(|(_, p)| self.due(p, now_ms))
            .map(|(id, p)| (id.clone(), *p))
            .collect();
        for (id, p) in due {
            if !self.is_served(&id) {
                self.awaiting_twins.remove(&id);
            } else if p.attempts >= MAX_GET_ATTEMPTS {
                tracing::warn!(device = %id, attempts = p.attempts, "edgecore never answered twin/get");
                self.awaiting_twins.remove(&id);
            } else {
                tracing::debug!(device = %id, attempt = p.attempts + 1, "twin/get unanswered; asking again");
                out.push(self.twin_get(&id, now_ms));
            }
        }
        out
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input<'_>, now_ms: i64) -> Vec<Action> {
        match input {
            Input::Connected => self.on_connected(now_ms),
            Input::Disconnected => {
                self.connected = false;
                self.awaiting_membership = None;
                self.awaiting_twins.clear();
                Vec::new()
            }
            Input::Tick => self.on_tick(now_ms),
            Input::Message { topic, payload } => self.on_message(topic, payload, now_ms),
            Input::Report(r) => self.on_report(r, now_ms),
        }
    }

    fn on_connected(&mut self, now_ms: i64) -> Vec<Action> {
        self.connected = true;
        self.counters.connects += 1;
        let mut out: Vec<Action> = wire::subscriptions(self.settings.form, &self.settings.node)
            .into_iter()
            .map(|filter| Action::Subscribe {
                filter,
                qos: self.settings.qos,
            })
            .collect();
        self.awaiting_membership = None;
        self.awaiting_twins.clear();
        out.push(self.membership_get(now_ms));
        for id in self.served() {
            out.push(self.twin_get(&id, now_ms));
        }
        out.push(Action::Emit(BackendEvent::Sync(self.served_bindings())));
        out.push(Action::Emit(BackendEvent::Resync));
        tracing::info!(
            node = %self.settings.node,
            devices = self.served().len(),
            "eventbus session started: subscribing, asking for membership and twins"
        );
        out
    }

    fn malformed(&mut self, topic: &str, err: &dyn std::fmt::Display) -> Vec<Action> {
        self.counters.malformed += 1;
        tracing::warn!(topic, error = %err, malformed = self.counters.malformed, "ignoring a malformed eventbus message");
        Vec::new()
    }

    /// Parses a JSON object that has at least one of `keys` (edgecore always
    /// sends them; a payload without any is not the message it claims to be).
    fn parse<T: serde::de::DeserializeOwned>(
        &mut self,
        topic: &str,
        payload: &[u8],
        keys: &[&str],
    ) -> Option<T> {
        let value: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.malformed(topic, &e);
                return None;
            }
        };
        let Some(obj) = value.as_object() else {
            self.malformed(topic, &"not a JSON object");
            return None;
        };
        if !keys.iter().any(|k| obj.contains_key(*k)) {
            self.malformed(topic, &format_args!("none of the keys {keys:?}"));
            return None;
        }
        match serde_json::from_value(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.malformed(topic, &e);
                None
            }
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], now_ms: i64) -> Vec<Action> {
        if let Some(rest) = topic.strip_prefix(wire::NODE_PREFIX) {
            let suffix = rest
                .strip_prefix(self.settings.node.as_str())
                .and_then(|s| s.strip_prefix('/'));
            return match suffix {
                Some(wire::MEMBERSHIP_GET_RESULT) => {
                    match self.parse(topic, payload, &["devices", "code"]) {
                        Some(m) => self.on_membership_result(m, now_ms),
                        None => Vec::new(),
                    }
                }
                Some(wire::MEMBERSHIP_UPDATED) => {
                    match self.parse(topic, payload, &["added_devices", "removed_devices"]) {
                        Some(m) => self.on_membership_update(m, topic, now_ms),
                        None => Vec::new(),
                    }
                }
                _ => self.ignore(topic, "not a node topic of this backend"),
            };
        }
        let Some((topic_id, suffix)) = self.settings.form.split(wire::DEVICE_PREFIX, topic) else {
            return self.ignore(topic, "not a device topic");
        };
        let Some(id) = self
            .by_topic_id
            .get(topic_id)
            .cloned()
            .filter(|id| self.is_served(id))
        else {
            return self.ignore(topic, "a device this backend does not serve");
        };
        match suffix {
            wire::TWIN_UPDATE_DELTA => {
                match self.parse::<wire::TwinDelta>(topic, payload, &["delta"]) {
                    Some(d) => {
                        let mut out = Vec::new();
                        for (prop, value) in d.delta.unwrap_or_default() {
                            out.extend(self.desired(&id, prop, value, "delta"));
                        }
                        out
                    }
                    None => Vec::new(),
                }
            }
            wire::TWIN_GET_RESULT => {
                let parsed = self.parse::<wire::TwinResult>(topic, payload, &["twin", "code"]);
                if parsed.is_some() {
                    self.awaiting_twins.remove(&id);
                }
                match parsed {
                    Some(r) if r.code.is_some() => {
                        self.counters.get_errors += 1;
                        tracing::warn!(device = %id, code = r.code, reason = r.reason.as_deref().unwrap_or(""), "edgecore refused twin/get");
                        Vec::new()
                    }
                    Some(r) => {
                        let mut out = Vec::new();
                        for (prop, twin) in r.twin.unwrap_or_default() {
                            if let Some(v) = twin.as_ref().and_then(MsgTwin::pending_expected) {
                                out.extend(self.desired(&id, prop, v.to_owned(), "twin/get"));
                            }
                        }
                        out
                    }
                    None => Vec::new(),
                }
            }
            wire::TWIN_UPDATE_RESULT => {
                match self.parse::<wire::TwinResult>(topic, payload, &["twin", "code", "event_id"])
                {
                    Some(r) if r.code.is_some() => {
                        self.counters.update_errors += 1;
                        tracing::warn!(
                            device = %id,
                            event_id = r.event_id.as_deref().unwrap_or(""),
                            code = r.code,
                            reason = r.reason.as_deref().unwrap_or(""),
                            "edgecore refused a twin update"
                        );
                        Vec::new()
                    }
                    Some(r) => {
                        tracing::trace!(device = %id, event_id = r.event_id.as_deref().unwrap_or(""), "twin update accepted");
                        Vec::new()
                    }
                    None => Vec::new(),
                }
            }
            wire::DEVICE_UPDATED => {
                match self.parse::<wire::AttrUpdate>(topic, payload, &["attributes"]) {
                    Some(u) => {
                        let attrs: Vec<String> =
                            u.attributes.unwrap_or_default().into_keys().collect();
                        tracing::info!(device = %id, attributes = ?attrs, "edgecore updated device attributes");
                        Vec::new()
                    }
                    None => Vec::new(),
                }
            }
            _ => self.ignore(topic, "an unknown device topic"),
        }
    }

    fn ignore(&mut self, topic: &str, why: &str) -> Vec<Action> {
        self.counters.ignored += 1;
        tracing::trace!(topic, why, "ignoring a message");
        Vec::new()
    }

    fn desired(
        &mut self,
        id: &DeviceId,
        property: String,
        value: String,
        via: &str,
    ) -> Option<Action> {
        if self.observed.get(&(id.clone(), property.clone())) == Some(&value) {
            self.counters.desired_suppressed += 1;
            tracing::debug!(device = %id, property, value, via, "desired value already applied; not forwarded");
            return None;
        }
        self.counters.desired += 1;
        tracing::info!(device = %id, property, value, via, "desired value from edgecore");
        Some(Action::Emit(BackendEvent::Desired {
            device: id.clone(),
            property,
            value,
        }))
    }

    /// Resolves a membership entry to a configured device.
    fn member_id(&self, d: &MemberDevice) -> Option<DeviceId> {
        let key =
            d.id.as_deref()
                .filter(|s| !s.is_empty())
                .or(d.name.as_deref())?;
        if let Some(id) = self.by_topic_id.get(key) {
            return Some(id.clone());
        }
        match self.settings.form {
            DeviceIdForm::Namespaced => Some(DeviceId::parse(key)),
            DeviceIdForm::Name => None,
        }
    }

    fn on_membership_result(&mut self, m: wire::MembershipResult, now_ms: i64) -> Vec<Action> {
        self.awaiting_membership = None;
        if m.code.is_some() {
            self.counters.get_errors += 1;
            tracing::warn!(
                code = m.code,
                reason = m.reason.as_deref().unwrap_or(""),
                "edgecore refused membership/get"
            );
            return Vec::new();
        }
        let before: BTreeSet<DeviceId> = self.served().into_iter().collect();
        let mut members = BTreeSet::new();
        for d in m.devices.unwrap_or_default() {
            match self.member_id(&d) {
                Some(id) => {
                    if !self.configured.contains_key(&id) {
                        tracing::info!(device = %id, "edgecore lists a device that is not in the device files; not served");
                    }
                    members.insert(id);
                }
                None => {
                    tracing::info!(id = ?d.id, name = ?d.name, "edgecore lists a device that is not in the device files; not served")
                }
            }
        }
        self.membership = Some(members);
        let now_served = self.served();
        for id in self.configured.keys().filter(|id| !self.is_served(id)) {
            tracing::warn!(device = %id, "configured device is not a member of this node in edgecore; not served");
        }
        tracing::info!(devices = now_served.len(), "membership from edgecore");
        let mut out = vec![Action::Emit(BackendEvent::Sync(self.served_bindings()))];
        // Devices served now but not before need their twins.
        out.extend(self.gets_for_new(&before, now_ms));
        out
    }

    fn gets_for_new(&mut self, before: &BTreeSet<DeviceId>, now_ms: i64) -> Vec<Action> {
        let new: Vec<DeviceId> = self
            .served()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        new.iter().map(|id| self.twin_get(id, now_ms)).collect()
    }

    fn on_membership_update(
        &mut self,
        m: wire::MembershipUpdate,
        topic: &str,
        now_ms: i64,
    ) -> Vec<Action> {
        let before: BTreeSet<DeviceId> = self.served().into_iter().collect();
        let mut members = self.membership.take().unwrap_or_else(|| before.clone());
        let mut desired = Vec::new();
        for d in m.removed_devices.unwrap_or_default() {
            if let Some(id) = self.member_id(&d) {
                members.remove(&id);
            }
        }
        for d in m.added_devices.unwrap_or_default() {
            if let Some(id) = self.member_id(&d) {
                for (prop, twin) in d.twin.iter().flatten() {
                    if let Some(v) = twin.as_ref().and_then(MsgTwin::pending_expected) {
                        desired.push((id.clone(), prop.clone(), v.to_owned()));
                    }
                }
                members.insert(id);
            }
        }
        self.membership = Some(members);
        let after: BTreeSet<DeviceId> = self.served().into_iter().collect();
        let mut out = Vec::new();
        for id in before.difference(&after) {
            tracing::info!(device = %id, topic, "device removed from this node");
            out.push(Action::Emit(BackendEvent::Remove(id.clone())));
        }
        for id in after.difference(&before) {
            tracing::info!(device = %id, topic, "device added to this node");
            if let Some(b) = self.configured.get(id) {
                out.push(Action::Emit(BackendEvent::Upsert(b.clone())));
            }
        }
        for (id, prop, value) in desired {
            if after.contains(&id) {
                out.extend(self.desired(&id, prop, value, "membership"));
            }
        }
        out.extend(self.gets_for_new(&before, now_ms));
        out
    }

    fn on_report(&mut self, r: Report, now_ms: i64) -> Vec<Action> {
        if !self.is_served(&r.device) {
            self.counters.reports_unserved += 1;
            tracing::debug!(device = %r.device, "report for a device this backend does not serve; dropped");
            return Vec::new();
        }
        for t in &r.twins {
            if let Some(d) = &t.observed_desired {
                self.observed
                    .insert((r.device.clone(), t.property.clone()), d.clone());
            }
        }
        if !self.connected {
            self.counters.reports_offline += 1;
            tracing::debug!(device = %r.device, "not connected to the broker; report dropped (re-reported after reconnect)");
            return Vec::new();
        }
        let form = self.settings.form;
        let mut out = Vec::new();
        if r.report_to_cloud && !r.twins.is_empty() {
            let event_id = self.ids.next();
            tracing::debug!(device = %r.device, twins = r.twins.len(), event_id, "twin update");
            out.push(self.publish(
                wire::device_topic(form, &r.device, wire::TWIN_UPDATE),
                wire::twin_update(&event_id, now_ms, &r.twins),
            ));
        }
        if self.settings.publish_data_topic && !r.twins.is_empty() {
            let points: Vec<wire::DataPoint<'_>> = r
                .twins
                .iter()
                .map(|t| wire::DataPoint {
                    property: &t.property,
                    value: &t.reported,
                    value_type: t.value_type,
                    timestamp_ms: t.timestamp_ms,
                })
                .collect();
            out.push(self.publish(
                wire::ke_device_topic(form, &r.device, wire::DATA_UPDATE),
                wire::device_data(now_ms, &points),
            ));
        }
        if let Some(state) = r.state {
            tracing::debug!(device = %r.device, state = %state, "state update");
            out.push(self.publish(
                wire::device_topic(form, &r.device, wire::STATE_UPDATE),
                wire::state_update(now_ms, state.as_str()),
            ));
        }
        if !r.rejections.is_empty() {
            for rej in &r.rejections {
                self.counters.rejections += 1;
                tracing::warn!(device = %r.device, property = rej.property, value = rej.value, reason = rej.reason, "desired value rejected");
            }
            out.push(self.publish(
                wire::ke_device_topic(form, &r.device, wire::TWIN_REJECTED),
                wire::twin_rejected(now_ms, &r.rejections),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapper_core::backend::{DeviceState, Rejection, TwinReport};
    use mapper_core::model::Device;

    const NOW: i64 = 1_700_000_000_500;
    const TS: i64 = 1_700_000_000_000;

    fn binding(ns: &str, name: &str) -> DeviceBinding {
        let d: Device = serde_yaml::from_str(&format!(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{protocol: {{protocolName: ros2}}}}\n"
        ))
        .unwrap();
        DeviceBinding {
            device: d,
            model: None,
        }
    }

    fn machine(form: DeviceIdForm, publish_data_topic: bool) -> Machine {
        Machine::new(
            Settings {
                node: "edge-1".into(),
                form,
                qos: Qos::AtMostOnce,
                publish_data_topic,
                get_retry_ms: 1000,
            },
            vec![binding("default", "r1"), binding("fleet", "r2")],
            0,
        )
    }

    fn connected(form: DeviceIdForm) -> Machine {
        let mut m = machine(form, false);
        m.handle(Input::Connected, NOW);
        m
    }

    fn r1() -> DeviceId {
        DeviceId::new("default", "r1")
    }

    fn msg(m: &mut Machine, topic: &str, payload: &str) -> Vec<Action> {
        m.handle(
            Input::Message {
                topic,
                payload: payload.as_bytes(),
            },
            NOW,
        )
    }

    fn publishes(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish(p) => Some((p.topic.clone(), p.payload.clone())),
                _ => None,
            })
            .collect()
    }

    fn desired(actions: &[Action]) -> Vec<(String, String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(BackendEvent::Desired {
                    device,
                    property,
                    value,
                }) => Some((device.to_string(), property.clone(), value.clone())),
                _ => None,
            })
            .collect()
    }

    fn report(twins: Vec<TwinReport>, state: Option<DeviceState>) -> Report {
        Report {
            device: r1(),
            twins,
            state,
            rejections: vec![],
            report_to_cloud: true,
        }
    }

    fn battery(v: &str) -> TwinReport {
        TwinReport {
            property: "battery".into(),
            reported: v.into(),
            observed_desired: None,
            value_type: "float",
            timestamp_ms: TS,
        }
    }

    #[test]
    fn connect_subscribes_gets_and_syncs_namespaced() {
        let mut m = machine(DeviceIdForm::Namespaced, false);
        let a = m.handle(Input::Connected, NOW);
        let subs: Vec<&str> = a
            .iter()
            .filter_map(|a| match a {
                Action::Subscribe { filter, .. } => Some(filter.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            subs,
            [
                "$hw/events/device/+/+/twin/update/delta",
                "$hw/events/device/+/+/twin/update/result",
                "$hw/events/device/+/+/twin/get/result",
                "$hw/events/device/+/+/updated",
                "$hw/events/node/edge-1/membership/get/result",
                "$hw/events/node/edge-1/membership/updated",
            ]
        );
        let p = publishes(&a);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].0, "$hw/events/node/edge-1/membership/get");
        assert_eq!(
            p[0].1,
            r#"{"event_id":"00000000-0000-4000-8000-000000000001","timestamp":1700000000500}"#
        );
        assert_eq!(p[1].0, "$hw/events/device/default/r1/twin/get");
        assert_eq!(p[2].0, "$hw/events/device/fleet/r2/twin/get");
        assert_eq!(
            p[2].1,
            r#"{"event_id":"00000000-0000-4000-8000-000000000003","timestamp":1700000000500}"#
        );
        let n = a.len();
        match (&a[n - 2], &a[n - 1]) {
            (Action::Emit(BackendEvent::Sync(list)), Action::Emit(BackendEvent::Resync)) => {
                let ids: Vec<String> = list.iter().map(|b| b.id().to_string()).collect();
                assert_eq!(ids, ["default/r1", "fleet/r2"]);
            }
            other => panic!("expected Sync then Resync, got {other:?}"),
        }
        assert!(m.is_connected());
        // A reconnect replays everything.
        m.handle(Input::Disconnected, NOW);
        assert!(!m.is_connected());
        let again = m.handle(Input::Connected, NOW);
        assert_eq!(again.len(), a.len());
        assert_eq!(m.counters().connects, 2);
    }

    #[test]
    fn name_form_topics() {
        let mut m = machine(DeviceIdForm::Name, false);
        let a = m.handle(Input::Connected, NOW);
        assert!(
            matches!(&a[0], Action::Subscribe { filter, .. } if filter == "$hw/events/device/+/twin/update/delta")
        );
        let p = publishes(&a);
        assert_eq!(p[1].0, "$hw/events/device/r1/twin/get");
        assert_eq!(p[2].0, "$hw/events/device/r2/twin/get");
        let a = m.handle(
            Input::Report(report(vec![battery("87.5")], Some(DeviceState::Online))),
            NOW,
        );
        let p = publishes(&a);
        assert_eq!(p[0].0, "$hw/events/device/r1/twin/update");
        assert_eq!(p[1].0, "$hw/events/device/r1/state/update");
        let d = desired(&msg(
            &mut m,
            "$hw/events/device/r2/twin/update/delta",
            r#"{"delta":{"speed":"0.5"}}"#,
        ));
        assert_eq!(d, [("fleet/r2".into(), "speed".into(), "0.5".into())]);
        // A namespaced topic does not parse in the name form.
        assert!(msg(
            &mut m,
            "$hw/events/device/fleet/r2/twin/update/delta",
            r#"{"delta":{"speed":"0.5"}}"#
        )
        .is_empty());
    }

    #[test]
    fn twin_update_exact_json() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let a = m.handle(Input::Report(report(vec![battery("87.5")], None)), NOW);
        assert_eq!(
            publishes(&a),
            [(
                "$hw/events/device/default/r1/twin/update".to_string(),
                r#"{"event_id":"00000000-0000-4000-8000-000000000004","timestamp":1700000000500,"twin":{"battery":{"actual":{"value":"87.5","metadata":{"timestamp":1700000000000}},"metadata":{"type":"float"}}}}"#.to_string()
            )]
        );
        let mut speed = battery("0.48");
        speed.property = "speed".into();
        speed.observed_desired = Some("0.5".into());
        speed.value_type = "double";
        let a = m.handle(Input::Report(report(vec![speed], None)), NOW);
        assert_eq!(
            publishes(&a)[0].1,
            r#"{"event_id":"00000000-0000-4000-8000-000000000005","timestamp":1700000000500,"twin":{"speed":{"actual":{"value":"0.48","metadata":{"timestamp":1700000000000}},"expected":{"value":"0.5"},"metadata":{"type":"double"}}}}"#
        );
    }

    #[test]
    fn state_update_exact_json() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let a = m.handle(
            Input::Report(report(vec![], Some(DeviceState::Offline))),
            NOW,
        );
        assert_eq!(
            publishes(&a),
            [(
                "$hw/events/device/default/r1/state/update".to_string(),
                r#"{"event_id":"","timestamp":1700000000500,"state":"offline"}"#.to_string()
            )]
        );
    }

    #[test]
    fn report_to_cloud_false_is_not_a_twin_update_but_is_data() {
        let mut m = machine(DeviceIdForm::Namespaced, true);
        m.handle(Input::Connected, NOW);
        let mut r = report(vec![battery("50")], None);
        r.report_to_cloud = false;
        let p = publishes(&m.handle(Input::Report(r), NOW));
        assert_eq!(
            p,
            [(
                "$ke/events/device/default/r1/data/update".to_string(),
                r#"{"event_id":"","timestamp":1700000000500,"data":{"battery":{"value":"50","metadata":{"timestamp":1700000000000,"type":"float"}}}}"#.to_string()
            )]
        );
        // Without publishDataTopic nothing at all.
        let mut m = connected(DeviceIdForm::Namespaced);
        let mut r = report(vec![battery("50")], None);
        r.report_to_cloud = false;
        assert!(m.handle(Input::Report(r), NOW).is_empty());
    }

    #[test]
    fn rejections_published_and_counted() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let mut r = report(vec![], None);
        r.rejections = vec![Rejection {
            property: "speed".into(),
            value: "9".into(),
            reason: "above maximum 1.5".into(),
        }];
        let p = publishes(&m.handle(Input::Report(r), NOW));
        assert_eq!(
            p,
            [(
                "$ke/events/device/default/r1/twin/rejected".to_string(),
                r#"{"event_id":"","timestamp":1700000000500,"rejected":{"speed":{"value":"9","reason":"above maximum 1.5"}}}"#.to_string()
            )]
        );
        assert_eq!(m.counters().rejections, 1);
    }

    #[test]
    fn reports_dropped_while_disconnected_or_unserved() {
        let mut m = machine(DeviceIdForm::Namespaced, false);
        assert!(m
            .handle(Input::Report(report(vec![battery("1")], None)), NOW)
            .is_empty());
        assert_eq!(m.counters().reports_offline, 1);
        m.handle(Input::Connected, NOW);
        let mut r = report(vec![battery("1")], None);
        r.device = DeviceId::new("default", "stranger");
        assert!(m.handle(Input::Report(r), NOW).is_empty());
        assert_eq!(m.counters().reports_unserved, 1);
    }

    #[test]
    fn delta_becomes_desired() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let payload = r#"{"event_id":"e1","timestamp":1,"twin":{"led":{"expected":{"value":"ON","metadata":{"timestamp":1}},"actual":{"value":"OFF"},"optional":false,"metadata":{"type":"string"}}},"delta":{"led":"ON","speed":"0.5"}}"#;
        let d = desired(&msg(
            &mut m,
            "$hw/events/device/default/r1/twin/update/delta",
            payload,
        ));
        assert_eq!(
            d,
            [
                ("default/r1".into(), "led".into(), "ON".into()),
                ("default/r1".into(), "speed".into(), "0.5".into())
            ]
        );
        assert_eq!(m.counters().desired, 2);
        // A delta without a delta map is harmless.
        assert!(msg(
            &mut m,
            "$hw/events/device/default/r1/twin/update/delta",
            r#"{"event_id":"x","delta":null}"#
        )
        .is_empty());
        // Another device's delta (not configured) is ignored.
        assert!(msg(
            &mut m,
            "$hw/events/device/default/other/twin/update/delta",
            payload
        )
        .is_empty());
        assert!(m.counters().ignored >= 1);
    }

    #[test]
    fn delta_equal_to_observed_desired_is_suppressed() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let mut speed = battery("0.48");
        speed.property = "speed".into();
        speed.observed_desired = Some("0.5".into());
        m.handle(Input::Report(report(vec![speed], None)), NOW);
        let t = "$hw/events/device/default/r1/twin/update/delta";
        assert!(desired(&msg(&mut m, t, r#"{"delta":{"speed":"0.5"}}"#)).is_empty());
        assert_eq!(m.counters().desired_suppressed, 1);
        assert_eq!(
            desired(&msg(&mut m, t, r#"{"delta":{"speed":"0.7"}}"#)).len(),
            1
        );
    }

    #[test]
    fn twin_get_result_yields_pending_expected_only() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let payload = r#"{"event_id":"g","timestamp":2,"twin":{
            "a":{"expected":{"value":"1"},"actual":{"value":"0"}},
            "b":{"expected":{"value":"1"},"actual":{"value":"1"}},
            "c":{"expected":{"value":""},"actual":{"value":"0"}},
            "d":{"actual":{"value":"0"}},
            "e":{"expected":{"value":"5"}},
            "f":{"expected":{"value":"x"},"actual":{"value":"y"},"metadata":{"type":"deleted"}},
            "g":null}}"#;
        let d = desired(&msg(
            &mut m,
            "$hw/events/device/default/r1/twin/get/result",
            payload,
        ));
        assert_eq!(
            d,
            [
                ("default/r1".into(), "a".into(), "1".into()),
                ("default/r1".into(), "e".into(), "5".into())
            ]
        );
        // An error result is counted, not fatal.
        assert!(msg(
            &mut m,
            "$hw/events/device/default/r1/twin/get/result",
            r#"{"event_id":"g","timestamp":2,"code":404,"reason":"not found"}"#
        )
        .is_empty());
        assert_eq!(m.counters().get_errors, 1);
    }

    #[test]
    fn update_result_errors_counted() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let t = "$hw/events/device/default/r1/twin/update/result";
        assert!(msg(
            &mut m,
            t,
            r#"{"event_id":"u","timestamp":3,"code":400,"reason":"key:twin does not exist"}"#
        )
        .is_empty());
        assert!(msg(&mut m, t, r#"{"event_id":"u","timestamp":3,"twin":{}}"#).is_empty());
        assert_eq!(m.counters().update_errors, 1);
        assert!(msg(
            &mut m,
            "$hw/events/device/default/r1/updated",
            r#"{"attributes":{"x":{"value":"1"}}}"#
        )
        .is_empty());
    }

    #[test]
    fn malformed_payloads_are_counted_and_ignored() {
        let mut m = connected(DeviceIdForm::Namespaced);
        let topics = [
            "$hw/events/device/default/r1/twin/update/delta",
            "$hw/events/device/default/r1/twin/get/result",
            "$hw/events/device/default/r1/twin/update/result",
            "$hw/events/device/default/r1/updated",
            "$hw/events/node/edge-1/membership/get/result",
            "$hw/events/node/edge-1/membership/updated",
        ];
        let bad: [&[u8]; 5] = [
            b"{not json",
            b"",
            b"\xff\xfe",
            br#"{"delta":{"a":1}}"#,
            br#"[1,2]"#,
        ];
        let mut n = 0;
        for t in topics {
            for p in bad {
                let a = m.handle(
                    Input::Message {
                        topic: t,
                        payload: p,
                    },
                    NOW,
                );
                assert!(a.is_empty(), "{t} {p:?} -> {a:?}");
                n += 1;
            }
        }
        assert_eq!(m.counters().malformed, n, "{:?}", m.counters());
        // Still works afterwards.
        assert_eq!(
            desired(&msg(&mut m, topics[0], r#"{"delta":{"a":"1"}}"#)).len(),
            1
        );
        // Garbage topics are ignored.
        for t in [
            "$hw/events/device/",
            "$hw/events/device/a",
            "$hw/events/node/other/membership/updated",
            "x",
            "",
        ] {
            assert!(m
                .handle(
                    Input::Message {
                        topic: t,
                        payload: b"{}"
                    },
                    NOW
                )
                .is_empty());
        }
    }

    #[test]
    fn membership_filters_served_devices() {
        let mut m = connected(DeviceIdForm::Namespaced);
        assert!(!m.has_membership());
        let t = "$hw/events/node/edge-1/membership/get/result";
        let a = msg(
            &mut m,
            t,
            r#"{"event_id":"m","timestamp":1,"devices":[{"id":"default/r1","name":"r1","state":"online"},{"id":"default/unknown","name":"unknown"}]}"#,
        );
        match a.as_slice() {
            [Action::Emit(BackendEvent::Sync(list))] => {
                assert_eq!(
                    list.iter().map(|b| b.id().to_string()).collect::<Vec<_>>(),
                    ["default/r1"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.served(), [r1()]);
        // Not served: its reports and deltas are dropped.
        let mut r = report(vec![battery("1")], None);
        r.device = DeviceId::new("fleet", "r2");
        assert!(m.handle(Input::Report(r), NOW).is_empty());
        assert!(msg(
            &mut m,
            "$hw/events/device/fleet/r2/twin/update/delta",
            r#"{"delta":{"a":"1"}}"#
        )
        .is_empty());
        // r2 added: Upsert and a twin/get, plus desired values carried in the membership (<= 1.14).
        let u = "$hw/events/node/edge-1/membership/updated";
        let a = msg(
            &mut m,
            u,
            r#"{"event_id":"","timestamp":1,"added_devices":[{"id":"fleet/r2","name":"r2","twin":{"speed":{"expected":{"value":"0.3"}}}}],"removed_devices":null}"#,
        );
        assert!(
            matches!(&a[0], Action::Emit(BackendEvent::Upsert(b)) if b.id() == DeviceId::new("fleet", "r2"))
        );
        assert_eq!(
            desired(&a),
            [("fleet/r2".into(), "speed".into(), "0.3".into())]
        );
        assert_eq!(publishes(&a)[0].0, "$hw/events/device/fleet/r2/twin/get");
        // r1 removed.
        let a = msg(
            &mut m,
            u,
            r#"{"added_devices":[],"removed_devices":[{"id":"default/r1"}]}"#,
        );
        assert!(matches!(a.as_slice(), [Action::Emit(BackendEvent::Remove(id))] if *id == r1()));
        assert_eq!(m.served(), [DeviceId::new("fleet", "r2")]);
        // An empty membership serves nothing.
        let a = msg(
            &mut m,
            t,
            r#"{"event_id":"m","timestamp":1,"devices":null}"#,
        );
        assert!(matches!(a.as_slice(), [Action::Emit(BackendEvent::Sync(l))] if l.is_empty()));
        // Membership error results are counted.
        assert!(msg(&mut m, t, r#"{"code":500,"reason":"db"}"#).is_empty());
        assert_eq!(m.counters().get_errors, 1);
        assert!(m.served().is_empty());
    }

    #[test]
    fn membership_update_before_result_starts_from_configured() {
        let mut m = connected(DeviceIdForm::Name);
        let a = msg(
            &mut m,
            "$hw/events/node/edge-1/membership/updated",
            r#"{"removed_devices":[{"id":"r2","name":"r2"}]}"#,
        );
        assert!(
            matches!(a.as_slice(), [Action::Emit(BackendEvent::Remove(id))] if *id == DeviceId::new("fleet", "r2"))
        );
        assert_eq!(m.served(), [r1()]);
        // Name form resolves membership by name; a re-add serves it again with a twin/get.
        let a = msg(
            &mut m,
            "$hw/events/node/edge-1/membership/get/result",
            r#"{"devices":[{"id":"r1"},{"id":"r2"}]}"#,
        );
        assert_eq!(
            publishes(&a),
            [(
                "$hw/events/device/r2/twin/get".to_string(),
                r#"{"event_id":"00000000-0000-4000-8000-000000000004","timestamp":1700000000500}"#
                    .to_string()
            )]
        );
        assert_eq!(m.served().len(), 2);
    }

    #[test]
    fn unanswered_gets_are_retried_until_answered_or_capped() {
        let mut m = connected(DeviceIdForm::Namespaced);
        // Not due yet.
        assert!(m.handle(Input::Tick, NOW + 999).is_empty());
        let topics = |a: &[Action]| publishes(a).into_iter().map(|(t, _)| t).collect::<Vec<_>>();
        let a = m.handle(Input::Tick, NOW + 1000);
        assert_eq!(
            topics(&a),
            [
                "$hw/events/node/edge-1/membership/get",
                "$hw/events/device/default/r1/twin/get",
                "$hw/events/device/fleet/r2/twin/get"
            ]
        );
        // Answers stop the retries, per device.
        msg(
            &mut m,
            "$hw/events/device/default/r1/twin/get/result",
            r#"{"twin":{}}"#,
        );
        msg(
            &mut m,
            "$hw/events/node/edge-1/membership/get/result",
            r#"{"devices":[{"id":"default/r1"},{"id":"fleet/r2"}]}"#,
        );
        let a = m.handle(Input::Tick, NOW + 2000);
        assert_eq!(topics(&a), ["$hw/events/device/fleet/r2/twin/get"]);
        // Capped per session.
        let mut n = 3; // on connect, +1000, +2000
        for k in 3..40 {
            n += m.handle(Input::Tick, NOW + k * 1000).len();
        }
        assert_eq!(n as u32, MAX_GET_ATTEMPTS);
        // Nothing while disconnected; a new session starts over.
        m.handle(Input::Disconnected, NOW);
        assert!(m.handle(Input::Tick, NOW + 100_000).is_empty());
        m.handle(Input::Connected, NOW + 100_000);
        assert_eq!(m.handle(Input::Tick, NOW + 101_000).len(), 3);
    }
}
