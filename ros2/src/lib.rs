//! The shared ROS 2 / DDS layer of kubeedge-ros2.
//!
//! # Layout
//! - [`names`]: ROS 2 names (topics, services, actions, types) and their DDS forms.
//! - [`msg`]: `.msg`/`.srv` definitions, the bundled interfaces, and the type registry.
//! - [`value`]: the dynamic value tree and field-path access (`pose.pose.position.x`).
//! - [`cdr`]: XCDR1 decode/encode of dynamic values (both endiannesses).
//! - [`dds`]: raw-CDR readers and writers, QoS and discovery events over rustdds.
#![forbid(unsafe_code)]

pub mod cdr;
pub mod dds;
pub mod msg;
pub mod names;
pub mod value;
