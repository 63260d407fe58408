//! The bridges, in process: one hub in the cloud domain and one edge per robot, linked over
//! loopback TCP with a token per robot. Configs are built here in the bridge's own YAML
//! (`docs/bridge.md`):
//!
//! - up (robot -> cloud): only `/fleet_status`; the sensor topics are denied outright;
//! - down (cloud -> robot): `/mission` (a cloud publisher on `/robot1/mission` reaches
//!   robot1's `/mission`, and only robot1's).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bridge::app::{start_edge, start_hub, Running};
use bridge::config::{EdgeConfig, HubConfig};
use tokio_util::sync::CancellationToken;

/// A fresh token per robot and run.
pub fn token(robot: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("demo-{robot}-{:x}-{nanos:x}", std::process::id())
}

fn dds(domain: u16) -> String {
    format!("{{domain_id: {domain}, discovery_range: localhost, only_networks: [127.0.0.1]}}")
}

/// The hub's config.
pub fn hub_yaml(domain: u16, http: SocketAddr, robots: &[(String, String)]) -> String {
    let robots: String = robots
        .iter()
        .map(|(r, t)| format!("  - {{robot: {r}, namespace: /{r}, token: \"{t}\"}}\n"))
        .collect();
    format!(
        "listen: 127.0.0.1:0\n\
         dds: {}\n\
         robots:\n{robots}\
         topics:\n  - {{match: 're:^/[a-z0-9_]+/mission$', priority: 1, reliable: true}}\n\
         limits: {{heartbeat_ms: 1000}}\n\
         http: {{listen: \"{http}\"}}\n\
         drain_timeout_ms: 1000\n",
        dds(domain)
    )
}

/// A robot's edge config.
pub fn edge_yaml(robot: &str, domain: u16, hub: SocketAddr, token: &str) -> String {
    format!(
        "robot: {robot}\n\
         dds: {}\n\
         upstreams:\n\
         \x20 - name: cloud\n\
         \x20   address: \"{hub}\"\n\
         \x20   token: \"{token}\"\n\
         \x20   up:\n\
         \x20     allow: [/fleet_status]\n\
         \x20     deny: ['re:^/(battery_state|odom|points)$']\n\
         \x20   down:\n\
         \x20     allow: [/mission]\n\
         \x20     topics: [{{match: /mission, priority: 1}}]\n\
         \x20   reconnect: {{initial_ms: 200, max_ms: 2000, jitter: 0.2}}\n\
         http: {{listen: \"127.0.0.1:0\"}}\n\
         drain_timeout_ms: 1000\n",
        dds(domain)
    )
}

/// Starts the hub.
pub async fn hub(
    domain: u16,
    http: SocketAddr,
    robots: &[(String, String)],
    shutdown: CancellationToken,
) -> Result<Running> {
    let cfg = HubConfig::from_yaml_str(&hub_yaml(domain, http, robots))?;
    cfg.validate()?;
    start_hub(cfg, shutdown).await.context("hub")
}

/// Starts a robot's edge.
pub async fn edge(
    robot: &str,
    domain: u16,
    hub: SocketAddr,
    token: &str,
    shutdown: CancellationToken,
) -> Result<Running> {
    let cfg = EdgeConfig::from_yaml_str(&edge_yaml(robot, domain, hub, token))?;
    cfg.validate()?;
    start_edge(cfg, shutdown)
        .await
        .with_context(|| format!("{robot}'s edge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configs_validate() {
        let robots = vec![("robot1".to_owned(), token("robot1"))];
        let hub = HubConfig::from_yaml_str(&hub_yaml(
            40,
            "127.0.0.1:0"
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            &robots,
        ));
        assert!(
            hub.as_ref().map(|c| c.validate().is_ok()).unwrap_or(false),
            "{hub:?}"
        );
        let edge = EdgeConfig::from_yaml_str(&edge_yaml(
            "robot1",
            41,
            SocketAddr::from(([127, 0, 0, 1], 7447)),
            &robots[0].1,
        ));
        assert!(
            edge.as_ref().map(|c| c.validate().is_ok()).unwrap_or(false),
            "{edge:?}"
        );
    }
}
