//! The one-command demo: two simulated ROS 2 robots, each in its own DDS domain, a bridge edge
//! per robot and a hub in the cloud domain, a fleet manager, a mapper per robot against an
//! embedded MQTT broker and an edgecore-like twin store, all in one process on this host's
//! loopback (`ParticipantConfig::localhost`), with a live view and end-of-run checks.
//!
//! # Layout
//!
//! - [`app`]: the wiring, the live loop, the summary ([`app::run`], [`app::Args`]).
//! - [`robot`]: a simulated robot (sensor, actuator and control nodes; its topics and types).
//! - [`fleet`]: the fleet manager in the cloud domain (missions out, statuses in).
//! - [`relay`]: the hub and the edges (the `bridge` crate in process), their configs.
//! - [`devices`]: the shipped example Device/DeviceModel, robot2 derived from it, a mapper per
//!   robot (mapper core + MQTT backend).
//! - [`broker`]: a small embedded MQTT 3.1.1 broker.
//! - [`twinstore`]: the edgecore-like twin store (pure rules and the MQTT service).
//! - [`spy`]: participants that record what a domain shows (for the checks).
//! - [`checks`]: the four checks (pure).
//! - [`view`], [`console`]: the terminal view and the interactive input.
//! - [`topic`]: typed publishers and subscriptions over the raw DDS layer.
//!
//! # Joining with real ROS 2
//!
//! Topic and type names are real ROS 2 ones (`rt/odom` carries `nav_msgs::msg::dds_::Odometry_`),
//! and every participant is unicast on 127.0.0.1, as ROS 2's localhost discovery range is. So a
//! ROS 2 installation on this host can join a robot's domain (41 for robot1 with the default
//! `--domain-base 40`) or the cloud's (40):
//!
//! ```sh
//! ROS_DOMAIN_ID=41 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST RMW_IMPLEMENTATION=rmw_cyclonedds_cpp \
//!   ros2 topic echo /odom
//! ROS_DOMAIN_ID=40 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST RMW_IMPLEMENTATION=rmw_cyclonedds_cpp \
//!   ros2 topic echo /robot1/fleet_status
//! ```
#![forbid(unsafe_code)]

pub mod app;
pub mod broker;
pub mod checks;
pub mod console;
pub mod devices;
pub mod fleet;
pub mod relay;
pub mod robot;
pub mod spy;
pub mod topic;
pub mod twinstore;
pub mod view;
