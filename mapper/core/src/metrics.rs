//! Prometheus metrics of the mapper core.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::backend::DeviceState;

/// The `device="ns/name"` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    pub device: String,
}

impl DeviceLabel {
    pub fn new(device: &str) -> Self {
        Self {
            device: device.to_owned(),
        }
    }
}

/// Counters and gauges of the core; cheap to clone, register once.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Family<DeviceLabel, Counter>,
    pub decode_errors: Family<DeviceLabel, Counter>,
    pub reports: Family<DeviceLabel, Counter>,
    pub desired_applied: Family<DeviceLabel, Counter>,
    pub desired_rejected: Family<DeviceLabel, Counter>,
    /// 1 online, 0 offline, -1 unknown.
    pub device_state: Family<DeviceLabel, Gauge>,
    pub devices: Gauge,
    pub config_errors: Counter,
    pub push_dropped: Counter,
}

/// The per-device counters, looked up once when a device starts (not per sample).
#[derive(Debug, Clone, Default)]
pub struct DeviceCounters {
    pub samples: Counter,
    pub decode_errors: Counter,
    pub reports: Counter,
    pub desired_applied: Counter,
    pub desired_rejected: Counter,
}

impl Metrics {
    /// The counters of one device.
    pub fn device(&self, device: &str) -> DeviceCounters {
        let l = DeviceLabel::new(device);
        DeviceCounters {
            samples: self.samples.get_or_create(&l).clone(),
            decode_errors: self.decode_errors.get_or_create(&l).clone(),
            reports: self.reports.get_or_create(&l).clone(),
            desired_applied: self.desired_applied.get_or_create(&l).clone(),
            desired_rejected: self.desired_rejected.get_or_create(&l).clone(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "mapper_samples",
            "DDS samples received",
            self.samples.clone(),
        );
        r.register(
            "mapper_decode_errors",
            "samples or values that could not be decoded",
            self.decode_errors.clone(),
        );
        r.register(
            "mapper_reports",
            "reports handed to the twin backend",
            self.reports.clone(),
        );
        r.register(
            "mapper_desired_applied",
            "desired values published",
            self.desired_applied.clone(),
        );
        r.register(
            "mapper_desired_rejected",
            "desired values refused (not published)",
            self.desired_rejected.clone(),
        );
        r.register(
            "mapper_device_state",
            "device state: 1 online, 0 offline, -1 unknown",
            self.device_state.clone(),
        );
        r.register("mapper_devices", "devices served", self.devices.clone());
        r.register(
            "mapper_config_errors",
            "device or property configurations refused",
            self.config_errors.clone(),
        );
        r.register(
            "mapper_push_dropped",
            "push samples dropped because the push queue was full",
            self.push_dropped.clone(),
        );
    }

    pub fn set_state(&self, device: &str, s: DeviceState) {
        let v = match s {
            DeviceState::Online => 1,
            DeviceState::Offline => 0,
            DeviceState::Unknown => -1,
        };
        self.device_state
            .get_or_create(&DeviceLabel::new(device))
            .set(v);
    }
}
