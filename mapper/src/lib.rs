//! The `ros2` KubeEdge mapper, as a library the binary is a thin shell over.
//!
//! # Layout
//! - [`config`]: the YAML config file, environment overrides, validation.
//! - [`app`]: wiring of registry, core manager, backend, data push, HTTP; drain on SIGTERM.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! The core is `mapper-core`; the backends are `mapper-mqtt`, `mapper-dmi` and `mapper-kube`.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod http;
