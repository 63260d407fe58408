//! Network namespaces made by a test: DDS peers run inside them, so no
//! discovery traffic reaches the host's own interfaces.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace whose `lo` is up with multicast switched on (and a
/// route for 239.0.0.0/8), so DDS discovery works inside it. Deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates `ke-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!(
            "ke-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        ns.exec_ip(&["link", "set", "lo", "multicast", "on"])?;
        ns.exec_ip(&["route", "add", "239.0.0.0/8", "dev", "lo"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> ARGS`.
    pub fn exec_ip(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
