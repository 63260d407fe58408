//! The `bridge` binary (crate `bridge`) as a process inside a fleet namespace
//! ([`crate::fleet`]): configs written to a directory, stderr to a log file
//! there, `/status` read over HTTP inside the namespace, and small YAML
//! builders for hub and edge configs.
//!
//! ```ignore
//! let hub = start_hub(&fleet, &hub_yaml(17447, &[("robot1", "/robot1", "tok1")], &[], ""), dir)?;
//! let edge = start_edge(&fleet.robot("robot1").ns, &edge_yaml("robot1", &[spec]), dir)?;
//! edge.wait_status(|s| link_connected(s, "cloud"), Duration::from_secs(30))?;
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::fleet::{cyclone_lo_config, Fleet, HUB_NAME};
use crate::netns::Netns;

/// How long [`start_hub`] / [`start_edge`] wait for the "running" log line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `target/<profile>/bridge` (see [`crate::workspace_bin`]).
pub fn bridge_bin() -> PathBuf {
    crate::workspace_bin("bridge")
}

/// Whether the `bridge` binary is built: use with [`crate::prereq::require`].
pub fn bridge_built() -> Result<PathBuf, String> {
    crate::workspace_bin_built("bridge", "bridge")
}

/// A running `bridge hub` or `bridge edge` inside a namespace. Killed
/// (SIGKILL) on drop; its stderr goes to [`BridgeProc::log_path`].
#[derive(Debug)]
pub struct BridgeProc {
    name: String,
    child: Child,
    log: PathBuf,
    /// The namespace name and the `host:port` of the HTTP endpoint, if enabled.
    http: Option<(String, String)>,
}

/// The HTTP endpoint (`http.listen`) of a bridge config, as an address to
/// connect to (`0.0.0.0` becomes `127.0.0.1`). `None` if the key is absent or null.
fn http_addr(yaml: &str) -> Result<Option<String>> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).context("parsing the bridge config")?;
    let Some(listen) = v
        .get("http")
        .and_then(|h| h.get("listen"))
        .and_then(|l| l.as_str())
    else {
        return Ok(None);
    };
    let addr = match listen.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => listen.to_owned(),
    };
    Ok(Some(addr))
}

/// Starts `bridge <mode> --config <dir>/<name>.yaml` in `ns` with stderr
/// appended to `<dir>/<name>.log`, and waits up to [`START_TIMEOUT`] for its
/// `<mode> running` log line. `RUST_LOG` is `$BRIDGE_TEST_LOG`, else
/// `info,rustdds=warn`; `env` is applied on top.
pub fn start_bridge(
    ns: &Netns,
    mode: &str,
    name: &str,
    yaml: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<BridgeProc> {
    let cfg = dir.join(format!("{name}.yaml"));
    let log = dir.join(format!("{name}.log"));
    std::fs::write(&cfg, yaml).with_context(|| format!("writing {}", cfg.display()))?;
    let http = http_addr(yaml)?.map(|a| (ns.name().to_owned(), a));
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let rust_log =
        std::env::var("BRIDGE_TEST_LOG").unwrap_or_else(|_| "info,rustdds=warn".to_owned());
    let mut c = ns.command(bridge_bin());
    c.arg(mode)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .env("CYCLONEDDS_URI", cyclone_lo_config())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .spawn()
        .with_context(|| format!("spawning {} ({})", name, bridge_bin().display()))?;
    let mut p = BridgeProc {
        name: format!("{name}@{}", ns.name()),
        child,
        log,
        http,
    };
    tracing::info!(name = %p.name, log = %p.log.display(), "bridge started");
    p.wait_log(&format!("{mode} running"), START_TIMEOUT)?;
    Ok(p)
}

/// `bridge hub` in the fleet's cloud namespace, files `hub.yaml`/`hub.log` in `dir`.
pub fn start_hub(fleet: &Fleet, yaml: &str, dir: &Path) -> Result<BridgeProc> {
    start_bridge(fleet.cloud(), "hub", "hub", yaml, dir, &[])
}

/// `bridge edge` in `ns`, files `edge-<ns>.yaml`/`edge-<ns>.log` in `dir`.
pub fn start_edge(ns: &Netns, yaml: &str, dir: &Path) -> Result<BridgeProc> {
    start_bridge(ns, "edge", &format!("edge-{}", ns.name()), yaml, dir, &[])
}

impl BridgeProc {
    /// The name used in messages (`<file name>@<namespace>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file (the process's stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log so far with a header, for failure messages.
    pub fn log_dump(&self) -> String {
        format!(
            "---- {} ({}) ----\n{}---- end {} ----",
            self.name,
            self.log.display(),
            self.log(),
            self.name
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the log has a line containing `needle` and returns it;
    /// fails on timeout or when the process exits without printing it.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = !self.is_running();
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return Ok(l.to_owned());
            }
            if exited {
                bail!(
                    "{} exited before logging {needle:?}\n{}",
                    self.name,
                    self.log_dump()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no log line with {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_dump()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GETs `path` (e.g. `/metrics`) from the HTTP endpoint inside the
    /// namespace (with curl); returns the body of a 2xx answer.
    pub fn http_get(&self, path: &str) -> Result<String> {
        let (ns, addr) = self
            .http
            .as_ref()
            .ok_or_else(|| anyhow!("{}: http.listen is not set", self.name))?;
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-sS", "-f", "--max-time", "5"])
            .arg(format!("http://{addr}{path}"))
            .output()
            .context("running curl in the namespace")?;
        if !out.status.success() {
            bail!(
                "{}: GET {path}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET /status as JSON.
    pub fn status(&self) -> Result<Value> {
        let body = self.http_get("/status")?;
        serde_json::from_str(&body).with_context(|| format!("{}: /status {body:?}", self.name))
    }

    /// Polls /status (every 200 ms) until `pred` holds and returns that
    /// status; fails on timeout (with the last status and the log) or when
    /// the process exits.
    pub fn wait_status(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status() {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(v) => v.to_string(),
                Err(e) => format!("{e:#}"),
            };
            if !self.is_running() {
                bail!(
                    "{} exited; last /status: {last}\n{}",
                    self.name,
                    self.log_dump()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: /status condition not met within {timeout:?}; last: {last}\n{}",
                    self.name,
                    self.log_dump()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful drain) and waits up to `timeout` for the
    /// exit; returns whether it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> Result<bool> {
        let st = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !st.success() {
            bail!("{}: kill -TERM failed", self.name);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.success());
            }
            if Instant::now() > deadline {
                bail!("{}: still running {timeout:?} after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BridgeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The link named `name` in a /status document.
pub fn link<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["links"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
}

/// Whether the link named `name` is `connected` in a /status document.
pub fn link_connected(status: &Value, name: &str) -> bool {
    link(status, name).is_some_and(|l| l["state"] == "connected")
}

/// Routes of a /status document whose `route` text contains `needle`.
pub fn routes_matching<'a>(status: &'a Value, needle: &str) -> Vec<&'a Value> {
    status["routes"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["route"].as_str().is_some_and(|s| s.contains(needle)))
                .collect()
        })
        .unwrap_or_default()
}

/// The sum of `messages` over the routes whose text contains `needle`.
pub fn route_messages(status: &Value, needle: &str) -> u64 {
    routes_matching(status, needle)
        .iter()
        .filter_map(|r| r["messages"].as_u64())
        .sum()
}

/// A YAML flow list of quoted strings, e.g. `["/a", "/b"]`.
fn yaml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::Value::from(*s).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// A hub config: listens on `0.0.0.0:<port>`, DDS `domain_id` from `extra` if
/// given there (else `null`) on 127.0.0.1 only, one entry per `(robot,
/// namespace, token)`, `shared` topics, `heartbeat_ms: 1000`, no HTTP
/// endpoint unless `extra` sets one. `extra` is appended verbatim (top-level
/// keys such as `http: { listen: 127.0.0.1:19181 }` or `topics: [...]`); it
/// must not repeat a key written here except `dds`, `limits` and `http`,
/// which are left out when `extra` has them.
pub fn hub_yaml(port: u16, robots: &[(&str, &str, &str)], shared: &[&str], extra: &str) -> String {
    let has = |k: &str| extra.lines().any(|l| l.starts_with(&format!("{k}:")));
    let mut s = String::new();
    let _ = writeln!(s, "listen: 0.0.0.0:{port}");
    if !has("dds") {
        let _ = writeln!(s, "dds: {{ only_networks: [127.0.0.1] }}");
    }
    if !has("limits") {
        let _ = writeln!(s, "limits: {{ heartbeat_ms: 1000 }}");
    }
    if !has("http") {
        let _ = writeln!(s, "http: {{ listen: null }}");
    }
    let _ = writeln!(s, "robots:");
    if robots.is_empty() {
        s.pop();
        s.push_str(" []\n");
    }
    for (robot, ns, token) in robots {
        let _ = writeln!(
            s,
            "  - {{ robot: {robot}, namespace: {ns}, token: {} }}",
            serde_json::Value::from(*token)
        );
    }
    let _ = writeln!(s, "shared: {}", yaml_list(shared));
    s.push_str(extra);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// One `upstreams` entry for [`edge_yaml`].
#[derive(Debug, Clone, Default)]
pub struct UpstreamSpec<'a> {
    /// The upstream's name (`[a-z0-9-_]`).
    pub name: &'a str,
    /// `host:port` of the hub, e.g. `hub.fleet.test:17447`.
    pub address: String,
    /// The token (inline).
    pub token: &'a str,
    /// `up.allow`.
    pub up: Vec<&'a str>,
    /// `down.allow`.
    pub down: Vec<&'a str>,
    /// `services.serve.allow`.
    pub serve: Vec<&'a str>,
    /// `services.call.allow`.
    pub call: Vec<&'a str>,
    /// Up topics that get `store_forward: true` (one `up.topics` entry each).
    pub store_forward: Vec<&'a str>,
}

impl<'a> UpstreamSpec<'a> {
    /// An upstream to `hub.fleet.test:<port>` with nothing allowed yet.
    pub fn to_hub(name: &'a str, port: u16, token: &'a str) -> Self {
        Self {
            name,
            address: format!("{HUB_NAME}:{port}"),
            token,
            ..Self::default()
        }
    }
}

/// An edge config for `robot`: DDS on 127.0.0.1 (domain `null`: set
/// `ROS_DOMAIN_ID` via [`start_bridge`]'s env, or use [`edge_yaml_with`]),
/// fast reconnects (`initial_ms: 200, max_ms: 2000`), no HTTP endpoint.
pub fn edge_yaml(robot: &str, upstreams: &[UpstreamSpec<'_>]) -> String {
    edge_yaml_with(robot, upstreams, "")
}

/// [`edge_yaml`] plus `extra` top-level keys appended verbatim; `dds` and
/// `http` are left out when `extra` has them (e.g. `dds: { domain_id: 3,
/// only_networks: [127.0.0.1] }`, `http: { listen: 127.0.0.1:19180 }`).
pub fn edge_yaml_with(robot: &str, upstreams: &[UpstreamSpec<'_>], extra: &str) -> String {
    let has = |k: &str| extra.lines().any(|l| l.starts_with(&format!("{k}:")));
    let mut s = String::new();
    let _ = writeln!(s, "robot: {robot}");
    if !has("dds") {
        let _ = writeln!(s, "dds: {{ only_networks: [127.0.0.1] }}");
    }
    if !has("http") {
        let _ = writeln!(s, "http: {{ listen: null }}");
    }
    let _ = writeln!(s, "upstreams:");
    for u in upstreams {
        let _ = writeln!(s, "  - name: {}", u.name);
        let _ = writeln!(
            s,
            "    address: {}",
            serde_json::Value::from(u.address.as_str())
        );
        let _ = writeln!(s, "    token: {}", serde_json::Value::from(u.token));
        let _ = writeln!(s, "    reconnect: {{ initial_ms: 200, max_ms: 2000 }}");
        let _ = writeln!(s, "    up:");
        let _ = writeln!(s, "      allow: {}", yaml_list(&u.up));
        if !u.store_forward.is_empty() {
            let _ = writeln!(s, "      topics:");
            for t in &u.store_forward {
                let _ = writeln!(
                    s,
                    "        - {{ match: {}, store_forward: true }}",
                    serde_json::Value::from(*t)
                );
            }
        }
        let _ = writeln!(s, "    down:");
        let _ = writeln!(s, "      allow: {}", yaml_list(&u.down));
        let _ = writeln!(s, "    services:");
        let _ = writeln!(s, "      serve:");
        let _ = writeln!(s, "        allow: {}", yaml_list(&u.serve));
        let _ = writeln!(s, "      call:");
        let _ = writeln!(s, "        allow: {}", yaml_list(&u.call));
    }
    s.push_str(extra);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_builders_parse() {
        let h = hub_yaml(
            17447,
            &[("robot1", "/robot1", "t1"), ("robot2", "/robot2", "t2")],
            &["/fleet/mission"],
            "dds: { domain_id: 7, only_networks: [127.0.0.1] }\nhttp: { listen: 127.0.0.1:19181 }\n",
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&h).unwrap();
        assert_eq!(v["robots"][1]["token"].as_str(), Some("t2"));
        assert_eq!(v["dds"]["domain_id"].as_u64(), Some(7));
        assert_eq!(v["shared"][0].as_str(), Some("/fleet/mission"));
        assert_eq!(http_addr(&h).unwrap().as_deref(), Some("127.0.0.1:19181"));
        let e = edge_yaml_with(
            "robot1",
            &[UpstreamSpec {
                up: vec!["/a", "re:^/b$"],
                store_forward: vec!["/a"],
                ..UpstreamSpec::to_hub("cloud", 17447, "t1")
            }],
            "http: { listen: 0.0.0.0:19180 }",
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&e).unwrap();
        let u = &v["upstreams"][0];
        assert_eq!(u["address"].as_str(), Some("hub.fleet.test:17447"));
        assert_eq!(u["up"]["allow"][1].as_str(), Some("re:^/b$"));
        assert_eq!(u["up"]["topics"][0]["store_forward"].as_bool(), Some(true));
        assert_eq!(http_addr(&e).unwrap().as_deref(), Some("127.0.0.1:19180"));
        assert_eq!(http_addr(&edge_yaml("r", &[])).unwrap(), None);

        // The bridge itself accepts both (when it is built).
        if bridge_built().is_ok() {
            let dir = tempfile::tempdir().unwrap();
            for (mode, y) in [("hub", &h), ("edge", &e)] {
                let f = dir.path().join(format!("{mode}.yaml"));
                std::fs::write(&f, y).unwrap();
                let out = std::process::Command::new(bridge_bin())
                    .args([mode, "--check", "--config"])
                    .arg(&f)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{mode} --check:\n{y}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
