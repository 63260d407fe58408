//! A fleet of hosts for the bridge's multi-host tests: one "cloud" network
//! namespace (where the hub runs) and one namespace per robot (where an edge
//! bridge and the robot's ROS 2 apps run), each robot joined to the cloud by
//! its own veth pair.
//!
//! ```text
//!  robot1 ns                         cloud ns
//!  veth1 10.77.1.2/24  <------->  veth1 10.77.1.1/24
//!  robot2 ns                         hub0 10.88.0.1/32 = hub.fleet.test
//!  veth2 10.77.2.2/24  <------->  veth2 10.77.2.1/24
//! ```
//!
//! - Robots route `10.88.0.0/16` (the hub's service addresses) via their cloud-side IP.
//! - Every namespace drops ALL UDP on its veth interfaces (nftables table
//!   [`UDP_GUARD_TABLE`]), so DDS can never cross between hosts except
//!   through the bridge's TCP link. DDS apps bind to `lo` with multicast
//!   ([`cyclone_lo_config`], used by [`spawn_in`]).
//! - `/etc/netns/<ns>/hosts` maps [`HUB_NAME`] to the hub's IP in every
//!   namespace (`ip netns exec` bind-mounts it over `/etc/hosts`).
//!   [`Fleet::move_hub`] moves the hub and rewrites these files in place.
//! - Link faults: [`Fleet::link_down`]/[`Fleet::link_up`] (interfaces down),
//!   [`Fleet::block`]/[`Fleet::unblock`] (nftables drop of TCP).
//!
//! Everything (namespaces, `/etc/netns/<ns>` dirs) is removed on drop, also
//! when a test fails half-way.
//!
//! Needs root, `ip` and `nft` ([`fleet_capable`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::netns::Netns;
use crate::proc::Proc;

/// The hub's DNS name inside every fleet namespace (via `/etc/netns/<ns>/hosts`).
pub const HUB_NAME: &str = "hub.fleet.test";

/// The nftables table (family `inet`) in every namespace that drops UDP on the veth interfaces.
pub const UDP_GUARD_TABLE: &str = "fleet_udp_guard";

/// The nftables table (family `inet`) that [`Fleet::block`] adds in a robot namespace.
pub const BLOCK_TABLE: &str = "fleet_block";

/// The interface in the cloud namespace that holds the hub's address (a
/// dummy, or a veth whose peer `hub0p` is in the cloud too where the kernel
/// has no dummy driver).
pub const HUB_IFACE: &str = "hub0";

/// Root, `ip` and `nft` (nftables): what [`Fleet::new`] needs. Use with
/// [`crate::prereq::require`].
pub fn fleet_capable() -> Result<(), String> {
    crate::prereq::netns_capable()?;
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the `nft` tool (apt-get install nftables)".into()),
    }
}

/// One robot host: its namespace and its end of the veth pair to the cloud.
#[derive(Debug)]
pub struct RobotHost {
    /// The robot's name as given to [`Fleet::new`] (e.g. `robot1`).
    pub name: String,
    /// The robot's network namespace.
    pub ns: Netns,
    /// The robot-side address, `10.77.<i>.2`.
    pub ip: Ipv4Addr,
    /// The cloud-side address of this robot's link, `10.77.<i>.1` (the robot's gateway).
    pub cloud_side_ip: Ipv4Addr,
    /// The name of both ends of the veth pair (`veth<i>`, the same in both namespaces).
    veth: String,
}

impl RobotHost {
    /// The name of the veth interface (the same on the robot side and the cloud side).
    pub fn veth(&self) -> &str {
        &self.veth
    }
}

/// The cloud namespace, the robot namespaces and their links. Removed on drop.
#[derive(Debug)]
pub struct Fleet {
    cloud: Netns,
    robots: Vec<RobotHost>,
    hub_ip: Ipv4Addr,
    /// How often the hub was moved (its address is `10.88.0.<moves + 1>`).
    moves: u8,
    /// `/etc/netns/<ns>` directories made by this fleet, removed on drop.
    hosts_dirs: Vec<PathBuf>,
}

/// Runs `nft -f -` with `script` inside `ns`.
fn nft_script(ns: &Netns, script: &str) -> Result<()> {
    let mut c = ns.command("nft");
    c.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("running nft (is nftables installed?)")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("nft: no stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {}: {}\nscript:\n{script}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `nft ARGS` inside `ns`.
fn nft(ns: &Netns, args: &[&str]) -> Result<()> {
    let out = ns
        .command("nft")
        .args(args)
        .output()
        .context("running nft")?;
    if !out.status.success() {
        bail!(
            "nft {} in {}: {}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The nftables table that drops all UDP on interfaces named `veth*`.
fn udp_guard_script() -> String {
    format!(
        r#"table inet {UDP_GUARD_TABLE} {{
  chain input {{ type filter hook input priority 0; policy accept; iifname "veth*" meta l4proto udp drop; }}
  chain output {{ type filter hook output priority 0; policy accept; oifname "veth*" meta l4proto udp drop; }}
  chain forward {{ type filter hook forward priority 0; policy accept; iifname "veth*" meta l4proto udp drop; oifname "veth*" meta l4proto udp drop; }}
}}
"#
    )
}

/// Writes `content` into `path` in place (same inode: truncate and write),
/// so processes that already have it bind-mounted over `/etc/hosts` see it.
fn write_in_place(path: &Path, content: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates `/etc/netns/<ns>` (the caller records it for removal).
fn make_hosts_dir(ns: &str) -> Result<PathBuf> {
    let dir = Path::new("/etc/netns").join(ns);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl Fleet {
    /// Makes the cloud namespace and one namespace per robot (in order: the
    /// i-th robot, from 1, gets `10.77.<i>.2/24`, its cloud side
    /// `10.77.<i>.1/24`, interfaces `veth<i>`), the hub address `10.88.0.1/32`
    /// on a dummy interface in the cloud, the UDP guard in every namespace
    /// and the hosts files. On error everything made so far is removed.
    pub fn new(robots: &[&str]) -> Result<Self> {
        if robots.len() > 250 {
            bail!("at most 250 robots, got {}", robots.len());
        }
        for (i, r) in robots.iter().enumerate() {
            if r.is_empty() || robots[..i].contains(r) {
                bail!("robot names must be non-empty and distinct: {robots:?}");
            }
        }
        let cloud = Netns::new("cloud")?;
        let hub_ip = Ipv4Addr::new(10, 88, 0, 1);
        // From here on, Drop cleans up whatever was made.
        let mut fleet = Self {
            cloud,
            robots: Vec::with_capacity(robots.len()),
            hub_ip,
            moves: 0,
            hosts_dirs: Vec::new(),
        };
        fleet.add_hub_iface()?;
        fleet
            .cloud
            .exec_ip(&["addr", "add", &format!("{hub_ip}/32"), "dev", HUB_IFACE])?;
        nft_script(&fleet.cloud, &udp_guard_script())?;
        let dir = make_hosts_dir(fleet.cloud.name())?;
        fleet.hosts_dirs.push(dir);

        for (i, name) in robots.iter().enumerate() {
            let idx = u8::try_from(i + 1).context("robot index")?;
            let ns = Netns::new(name)?;
            let veth = format!("veth{idx}");
            let host = RobotHost {
                name: (*name).to_owned(),
                ns,
                ip: Ipv4Addr::new(10, 77, idx, 2),
                cloud_side_ip: Ipv4Addr::new(10, 77, idx, 1),
                veth,
            };
            let ns_name = host.ns.name().to_owned();
            fleet.robots.push(host);
            let dir = make_hosts_dir(&ns_name)?;
            fleet.hosts_dirs.push(dir);
            let host = fleet.robots.last().ok_or_else(|| anyhow!("no robot"))?;
            let cloud = &fleet.cloud;
            // Created in the cloud, its peer directly in the robot namespace
            // (nothing appears in the host's namespace, no name clashes).
            cloud.exec_ip(&[
                "link",
                "add",
                &host.veth,
                "type",
                "veth",
                "peer",
                "name",
                &host.veth,
                "netns",
                host.ns.name(),
            ])?;
            cloud.exec_ip(&[
                "addr",
                "add",
                &format!("{}/24", host.cloud_side_ip),
                "dev",
                &host.veth,
            ])?;
            host.ns
                .exec_ip(&["addr", "add", &format!("{}/24", host.ip), "dev", &host.veth])?;
            nft_script(&host.ns, &udp_guard_script())?;
            fleet.set_link(host, true)?;
            tracing::info!(robot = %host.name, ns = %host.ns.name(), ip = %host.ip, "fleet robot up");
        }
        fleet.write_hosts()?;
        tracing::info!(cloud = %fleet.cloud.name(), hub = %fleet.hub_ip, robots = fleet.robots.len(), "fleet up");
        Ok(fleet)
    }

    /// Creates the interface for the hub's address in the cloud: a dummy, or
    /// where the kernel has no dummy driver (some containers), one end of a
    /// veth pair whose both ends stay in the cloud (`hub0` and `hub0p`).
    fn add_hub_iface(&self) -> Result<()> {
        let c = &self.cloud;
        if let Err(e) = c.exec_ip(&["link", "add", HUB_IFACE, "type", "dummy"]) {
            tracing::debug!(error = %e, "no dummy interfaces; using a veth pair for the hub");
            let peer = format!("{HUB_IFACE}p");
            c.exec_ip(&[
                "link", "add", HUB_IFACE, "type", "veth", "peer", "name", &peer,
            ])?;
            c.exec_ip(&["link", "set", &peer, "up"])?;
        }
        c.exec_ip(&["link", "set", HUB_IFACE, "up"])
    }

    /// The hosts file content for every namespace.
    fn hosts_content(&self) -> String {
        let mut s = String::from("127.0.0.1 localhost\n");
        let _ = writeln!(s, "{} {HUB_NAME}", self.hub_ip);
        s
    }

    /// (Re)writes every namespace's hosts file in place.
    fn write_hosts(&self) -> Result<()> {
        let content = self.hosts_content();
        for dir in &self.hosts_dirs {
            write_in_place(&dir.join("hosts"), &content)?;
        }
        Ok(())
    }

    /// Sets both ends of `host`'s veth up (and its route to the hub) or down.
    fn set_link(&self, host: &RobotHost, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        self.cloud
            .exec_ip(&["link", "set", &host.veth, state])
            .with_context(|| format!("cloud side of {}", host.name))?;
        host.ns
            .exec_ip(&["link", "set", &host.veth, state])
            .with_context(|| format!("robot side of {}", host.name))?;
        if up {
            // Routes through an interface are flushed when it goes down: (re)add.
            host.ns.exec_ip(&[
                "route",
                "replace",
                "10.88.0.0/16",
                "via",
                &host.cloud_side_ip.to_string(),
                "dev",
                &host.veth,
                "onlink",
            ])?;
        }
        Ok(())
    }

    /// The cloud namespace (where the hub runs).
    pub fn cloud(&self) -> &Netns {
        &self.cloud
    }

    /// The robot host named `name`, if any.
    pub fn try_robot(&self, name: &str) -> Option<&RobotHost> {
        self.robots.iter().find(|r| r.name == name)
    }

    /// The robot host named `name`.
    ///
    /// # Panics
    /// If there is no such robot (a bug in the test); see [`Fleet::try_robot`].
    pub fn robot(&self, name: &str) -> &RobotHost {
        match self.try_robot(name) {
            Some(r) => r,
            None => panic!("no robot {name:?} in this fleet"),
        }
    }

    fn robot_checked(&self, name: &str) -> Result<&RobotHost> {
        self.try_robot(name)
            .ok_or_else(|| anyhow!("no robot {name:?} in this fleet"))
    }

    /// Every robot host, in the order given to [`Fleet::new`].
    pub fn robots(&self) -> &[RobotHost] {
        &self.robots
    }

    /// The hub's current address (what [`HUB_NAME`] resolves to).
    pub fn hub_ip(&self) -> Ipv4Addr {
        self.hub_ip
    }

    /// Moves the hub to a new address (`10.88.0.<n+1>` after the n-th move):
    /// removes the old address, adds the new one and rewrites every hosts
    /// file in place (running processes see the new name at their next
    /// lookup). Returns the new address.
    pub fn move_hub(&mut self) -> Result<Ipv4Addr> {
        let moves = self
            .moves
            .checked_add(1)
            .filter(|m| *m < 254)
            .ok_or_else(|| anyhow!("the hub was moved too often"))?;
        let new_ip = Ipv4Addr::new(10, 88, 0, moves + 1);
        let old_ip = self.hub_ip;
        self.cloud
            .exec_ip(&["addr", "del", &format!("{old_ip}/32"), "dev", HUB_IFACE])?;
        self.cloud
            .exec_ip(&["addr", "add", &format!("{new_ip}/32"), "dev", HUB_IFACE])?;
        self.moves = moves;
        self.hub_ip = new_ip;
        self.write_hosts()?;
        tracing::info!(old = %old_ip, new = %new_ip, "hub moved");
        Ok(new_ip)
    }

    /// Cuts `robot`'s link: both ends of its veth go down.
    pub fn link_down(&self, robot: &str) -> Result<()> {
        let host = self.robot_checked(robot)?;
        self.set_link(host, false)?;
        tracing::info!(robot, "link down");
        Ok(())
    }

    /// Restores `robot`'s link: both ends up again, and its route to the hub.
    pub fn link_up(&self, robot: &str) -> Result<()> {
        let host = self.robot_checked(robot)?;
        self.set_link(host, true)?;
        tracing::info!(robot, "link up");
        Ok(())
    }

    /// Cuts `robot`'s link with nftables in the robot namespace: all TCP in
    /// and out of its veth is dropped (silently: connections hang, no reset).
    /// Blocking twice is the same as once.
    pub fn block(&self, robot: &str) -> Result<()> {
        let host = self.robot_checked(robot)?;
        let v = &host.veth;
        // `add table` + `delete table` makes the script idempotent.
        let script = format!(
            r#"add table inet {BLOCK_TABLE}
delete table inet {BLOCK_TABLE}
table inet {BLOCK_TABLE} {{
  chain input {{ type filter hook input priority -10; policy accept; iifname "{v}" meta l4proto tcp drop; }}
  chain output {{ type filter hook output priority -10; policy accept; oifname "{v}" meta l4proto tcp drop; }}
}}
"#
        );
        nft_script(&host.ns, &script)?;
        tracing::info!(robot, "link blocked");
        Ok(())
    }

    /// Removes [`Fleet::block`]'s rule (nothing to do if not blocked).
    pub fn unblock(&self, robot: &str) -> Result<()> {
        let host = self.robot_checked(robot)?;
        nft_script(
            &host.ns,
            &format!("add table inet {BLOCK_TABLE}\ndelete table inet {BLOCK_TABLE}\n"),
        )?;
        tracing::info!(robot, "link unblocked");
        Ok(())
    }

    /// Removes the UDP guard (`on = false`) in the cloud and every robot
    /// namespace, or puts it back. Only for negative controls that show the
    /// guard is what keeps DDS apart.
    pub fn set_udp_guard(&self, on: bool) -> Result<()> {
        let all = std::iter::once(&self.cloud).chain(self.robots.iter().map(|r| &r.ns));
        for ns in all {
            nft(ns, &["delete", "table", "inet", UDP_GUARD_TABLE]).or_else(|e| {
                // Absent already: fine.
                if e.to_string().contains("No such file") {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            if on {
                nft_script(ns, &udp_guard_script())?;
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for dir in &self.hosts_dirs {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove hosts dir");
            }
        }
        // The namespaces are deleted by Netns's own drop (fields drop after this).
    }
}

/// Cyclone DDS on `lo` only, with multicast (every fleet namespace has
/// multicast on `lo`): for DDS apps inside the fleet's namespaces. The
/// domain id comes from the application (`Domain Id="any"`).
pub fn cyclone_lo_config() -> String {
    cyclone_iface_config("lo")
}

/// Cyclone DDS bound to interface `iface` with multicast. Apart from `lo`
/// ([`cyclone_lo_config`]) this is for negative controls: DDS apps bound to
/// a veth must not reach each other while the UDP guard is on.
pub fn cyclone_iface_config(iface: &str) -> String {
    format!(
        r#"<CycloneDDS><Domain Id="any"><General><Interfaces><NetworkInterface name="{iface}" multicast="true"/></Interfaces><AllowMulticast>true</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>60</MaxAutoParticipantIndex></Discovery></Domain></CycloneDDS>"#
    )
}

/// Runs `program args` inside `ns` as a [`Proc`] (killed on drop; stdout
/// lines readable with [`Proc::read_lines`] or [`wait_line`]; stderr echoed
/// to the test output with a `[name]` prefix and kept for failure messages).
/// `CYCLONEDDS_URI` is [`cyclone_lo_config`] unless `env` sets it; `env` is
/// applied on top of the test's environment.
pub fn spawn_in(ns: &Netns, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
    let mut c = ns.command(program);
    c.args(args).env("CYCLONEDDS_URI", cyclone_lo_config());
    for (k, v) in env {
        c.env(k, v);
    }
    let prog = program
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string());
    // For `python script.py`, name it after the script.
    let what = args
        .first()
        .filter(|a| a.ends_with(".py"))
        .and_then(|a| Path::new(a).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or(prog);
    let name = format!("{what}@{}", ns.name());
    tracing::debug!(name = %name, args = ?args, "spawn in namespace");
    Proc::spawn(&name, c)
}

/// Waits for a stdout line of `p` for which `pred` holds (lines before it are
/// consumed and dropped); fails on timeout or when the process exits.
pub fn wait_line(p: &Proc, pred: impl Fn(&str) -> bool, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = p
            .read_lines(1, left)
            .with_context(|| format!("waiting {timeout:?} for a matching stdout line"))?
            .remove(0);
        if pred(&line) {
            return Ok(line);
        }
    }
}

/// `tests/python/seqpeer.py` run by `py` inside `ns` (see [`spawn_in`]), e.g.
/// `seqpeer(ns, py, &["sub", "--topic", "rt/seq", "--expect", "100"])`.
pub fn seqpeer(ns: &Netns, py: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
    let script = crate::python_dir().join("seqpeer.py");
    let script = script.to_string_lossy().into_owned();
    let mut a = vec![script.as_str()];
    a.extend_from_slice(args);
    spawn_in(ns, py, &a, env)
}

/// The closing report of `seqpeer.py sub` (one JSON line on stdout).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqReport {
    /// Valid samples received (duplicates included).
    pub received: u64,
    /// Distinct counter values in `1..=expect` received.
    pub unique: u64,
    /// Samples whose counter value was already received.
    pub duplicates: u64,
    /// New values that arrived after a higher value.
    pub out_of_order: u64,
    /// Values in `1..=expect` never received.
    pub missing_count: u64,
    /// The smallest missing values (up to 20).
    pub missing_first: Vec<u64>,
    /// Samples whose data is not a counter in `1..=expect`.
    pub invalid: u64,
    /// The first value received (`None` if nothing arrived).
    pub first: Option<u64>,
    /// The last value received (`None` if nothing arrived).
    pub last: Option<u64>,
}

impl SeqReport {
    /// Every value arrived exactly once, in order, and nothing else arrived.
    pub fn is_clean(&self, expect: u64) -> bool {
        self.unique == expect
            && self.missing_count == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.invalid == 0
    }
}

/// Waits for `seqpeer.py sub`'s report line (it skips `ready`).
pub fn seq_report(p: &Proc, timeout: Duration) -> Result<SeqReport> {
    let line = wait_line(p, |l| l.starts_with('{'), timeout)?;
    serde_json::from_str(&line).with_context(|| format!("seqpeer report {line:?}"))
}
