//! The protocol-independent core of the `ros2` KubeEdge mapper.
//!
//! # Layout
//! - [`model`]: KubeEdge `devices.kubeedge.io/v1beta1` Device, DeviceModel, DeviceStatus.
//! - [`visitor`]: the `ros2` protocol and visitor config, resolved into a [`visitor::DevicePlan`].
//! - [`twin`]: field values <-> twin strings, desired-value validation against the model.
//! - [`report`]: the pure reporting state machine (collect/report cycles, on-change, liveness).
//! - [`device`]: the runtime of one device: DDS readers and writers, its reporter.
//! - [`mapper`]: the manager: devices by id, backend events in, reports out.
//! - [`metrics`]: Prometheus metrics of the core.
//! - [`backend`]: the channel types between the core and a twin backend.
#![forbid(unsafe_code)]

pub mod backend;
pub mod device;
pub mod mapper;
pub mod metrics;
pub mod model;
pub mod report;
pub mod twin;
pub mod visitor;
