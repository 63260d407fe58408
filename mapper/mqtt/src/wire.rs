//! The eventbus wire format: topic names for both device-ID forms, the JSON
//! the backend publishes (built exactly), and lenient types for what it reads.

use std::collections::BTreeMap;

use mapper_core::backend::{Rejection, TwinReport};
use mapper_core::model::DeviceId;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::DeviceIdForm;

/// Prefix of device topics.
pub const DEVICE_PREFIX: &str = "$hw/events/device/";
/// Prefix of node topics.
pub const NODE_PREFIX: &str = "$hw/events/node/";
/// Prefix of the mapper-only `$ke` topics.
pub const KE_DEVICE_PREFIX: &str = "$ke/events/device/";

pub const TWIN_UPDATE: &str = "twin/update";
pub const TWIN_UPDATE_RESULT: &str = "twin/update/result";
pub const TWIN_UPDATE_DELTA: &str = "twin/update/delta";
pub const TWIN_UPDATE_DOCUMENT: &str = "twin/update/document";
pub const TWIN_GET: &str = "twin/get";
pub const TWIN_GET_RESULT: &str = "twin/get/result";
pub const STATE_UPDATE: &str = "state/update";
pub const DEVICE_UPDATED: &str = "updated";
pub const MEMBERSHIP_GET: &str = "membership/get";
pub const MEMBERSHIP_GET_RESULT: &str = "membership/get/result";
pub const MEMBERSHIP_UPDATED: &str = "membership/updated";
/// `$ke/events/device/{id}/twin/rejected`: this mapper's own convention.
pub const TWIN_REJECTED: &str = "twin/rejected";
/// `$ke/events/device/{id}/data/update` (mappers-go `TopicDataUpdate`).
pub const DATA_UPDATE: &str = "data/update";

impl DeviceIdForm {
    /// The device's id inside topics: `{ns}/{name}` or `{name}`.
    pub fn topic_id(self, id: &DeviceId) -> String {
        match self {
            Self::Namespaced => format!("{}/{}", id.namespace, id.name),
            Self::Name => id.name.clone(),
        }
    }

    /// The wildcard matching one device id: `+/+` or `+`.
    pub fn wildcard(self) -> &'static str {
        match self {
            Self::Namespaced => "+/+",
            Self::Name => "+",
        }
    }

    /// Number of topic levels of a device id.
    pub fn levels(self) -> usize {
        match self {
            Self::Namespaced => 2,
            Self::Name => 1,
        }
    }

    /// Splits `{prefix}{id}/{suffix}` into the topic id and the suffix.
    pub fn split<'a>(self, prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic.strip_prefix(prefix)?;
        let mut end = 0;
        for level in 0..self.levels() {
            let from = if level == 0 { 0 } else { end + 1 };
            let seg_len = rest.get(from..)?.find('/')?;
            if seg_len == 0 {
                return None;
            }
            end = from + seg_len;
        }
        Some((&rest[..end], &rest[end + 1..]))
    }
}

/// `$hw/events/device/{id}/{suffix}`.
pub fn device_topic(form: DeviceIdForm, id: &DeviceId, suffix: &str) -> String {
    format!("{DEVICE_PREFIX}{}/{suffix}", form.topic_id(id))
}

/// `$ke/events/device/{id}/{suffix}`.
pub fn ke_device_topic(form: DeviceIdForm, id: &DeviceId, suffix: &str) -> String {
    format!("{KE_DEVICE_PREFIX}{}/{suffix}", form.topic_id(id))
}

/// `$hw/events/node/{node}/{suffix}`.
pub fn node_topic(node: &str, suffix: &str) -> String {
    format!("{NODE_PREFIX}{node}/{suffix}")
}

/// The subscriptions of the backend (device topics by wildcard: devices this
/// backend does not serve are filtered after receipt).
pub fn subscriptions(form: DeviceIdForm, node: &str) -> Vec<String> {
    let w = form.wildcard();
    let mut v: Vec<String> = [
        TWIN_UPDATE_DELTA,
        TWIN_UPDATE_RESULT,
        TWIN_GET_RESULT,
        DEVICE_UPDATED,
    ]
    .iter()
    .map(|s| format!("{DEVICE_PREFIX}{w}/{s}"))
    .collect();
    v.push(node_topic(node, MEMBERSHIP_GET_RESULT));
    v.push(node_topic(node, MEMBERSHIP_UPDATED));
    v
}

/// `BaseMessage`: `{"event_id":..,"timestamp":..}`.
pub fn base_message(event_id: &str, now_ms: i64) -> String {
    json!({"event_id": event_id, "timestamp": now_ms}).to_string()
}

/// `DeviceTwinUpdate` of reported twins (`expected` = the observed desired value, when any).
pub fn twin_update(event_id: &str, now_ms: i64, twins: &[TwinReport]) -> String {
    let mut map = Map::new();
    for t in twins {
        let mut twin = Map::new();
        twin.insert(
            "actual".into(),
            json!({"value": t.reported, "metadata": {"timestamp": t.timestamp_ms}}),
        );
        if let Some(d) = &t.observed_desired {
            twin.insert("expected".into(), json!({"value": d}));
        }
        twin.insert("metadata".into(), json!({"type": t.value_type}));
        map.insert(t.property.clone(), Value::Object(twin));
    }
    json!({"event_id": event_id, "timestamp": now_ms, "twin": map}).to_string()
}

/// `DeviceUpdate` with a state: `{"event_id":"","timestamp":..,"state":".."}`.
pub fn state_update(now_ms: i64, state: &str) -> String {
    json!({"event_id": "", "timestamp": now_ms, "state": state}).to_string()
}

/// `{"event_id":"","timestamp":..,"rejected":{prop:{"value":..,"reason":..}}}`.
pub fn twin_rejected(now_ms: i64, rejections: &[Rejection]) -> String {
    let mut map = Map::new();
    for r in rejections {
        map.insert(
            r.property.clone(),
            json!({"value": r.value, "reason": r.reason}),
        );
    }
    json!({"event_id": "", "timestamp": now_ms, "rejected": map}).to_string()
}

/// One entry of a `DeviceData` message.
#[derive(Debug, Clone, Copy)]
pub struct DataPoint<'a> {
    pub property: &'a str,
    pub value: &'a str,
    pub value_type: &'a str,
    pub timestamp_ms: i64,
}

/// `DeviceData`: `{"event_id":"","timestamp":..,"data":{prop:{"value":..,"metadata":{"timestamp":..,"type":..}}}}`.
pub fn device_data(now_ms: i64, points: &[DataPoint<'_>]) -> String {
    let mut map = Map::new();
    for p in points {
        map.insert(
            p.property.into(),
            json!({"value": p.value, "metadata": {"timestamp": p.timestamp_ms, "type": p.value_type}}),
        );
    }
    json!({"event_id": "", "timestamp": now_ms, "data": map}).to_string()
}

// ---- what the backend reads (lenient: unknown keys ignored, nulls accepted) ----

/// `TwinValue`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TwinValue {
    #[serde(default)]
    pub value: Option<String>,
}

/// `metadata` of a twin.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TwinMeta {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// `MsgTwin`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MsgTwin {
    #[serde(default)]
    pub expected: Option<TwinValue>,
    #[serde(default)]
    pub actual: Option<TwinValue>,
    #[serde(default)]
    pub metadata: Option<TwinMeta>,
}

impl MsgTwin {
    /// The expected value when it is pending: non-empty, differs from actual,
    /// and the twin is not `deleted` (edgecore's delta rule).
    pub fn pending_expected(&self) -> Option<&str> {
        let deleted = self.metadata.as_ref().and_then(|m| m.type_.as_deref()) == Some("deleted");
        let expected = self.expected.as_ref()?.value.as_deref()?;
        let actual = self.actual.as_ref().and_then(|a| a.value.as_deref());
        (!deleted && !expected.is_empty() && Some(expected) != actual).then_some(expected)
    }
}

/// `DeviceTwinDelta`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TwinDelta {
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub delta: Option<BTreeMap<String, String>>,
}

/// `DeviceTwinResult` or an error `Result`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TwinResult {
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub twin: Option<BTreeMap<String, Option<MsgTwin>>>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A device in membership messages.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemberDevice {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub twin: Option<BTreeMap<String, Option<MsgTwin>>>,
}

/// `membership/get/result`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MembershipResult {
    #[serde(default)]
    pub devices: Option<Vec<MemberDevice>>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `membership/updated`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MembershipUpdate {
    #[serde(default)]
    pub added_devices: Option<Vec<MemberDevice>>,
    #[serde(default)]
    pub removed_devices: Option<Vec<MemberDevice>>,
}

/// `DeviceAttrUpdate` (`.../updated`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AttrUpdate {
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_topics() {
        let n = DeviceIdForm::Namespaced;
        assert_eq!(
            n.split(DEVICE_PREFIX, "$hw/events/device/ns/r1/twin/update/delta"),
            Some(("ns/r1", "twin/update/delta"))
        );
        assert_eq!(n.split(DEVICE_PREFIX, "$hw/events/device/r1/twin"), None);
        assert_eq!(
            n.split(DEVICE_PREFIX, "$hw/events/device/ns//updated"),
            None
        );
        assert_eq!(n.split(DEVICE_PREFIX, "$hw/events/device/ns/r1"), None);
        let m = DeviceIdForm::Name;
        assert_eq!(
            m.split(DEVICE_PREFIX, "$hw/events/device/r1/updated"),
            Some(("r1", "updated"))
        );
        assert_eq!(m.split(DEVICE_PREFIX, "$hw/other/r1/updated"), None);
        assert_eq!(m.split(DEVICE_PREFIX, "$hw/events/device/r1"), None);
    }
}
