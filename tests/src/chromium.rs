//! Debian's Chromium, headless, for page tests: the DOM after the page's scripts ran
//! ([`Chromium::dump_dom`]) and PNG screenshots ([`Chromium::screenshot`]).
//!
//! Every run gets a fresh profile (`--user-data-dir`, and `HOME`/XDG directories, in a temporary
//! directory removed afterwards), no background networking, updates, sync or QUIC, and runs in
//! its own process group: on timeout the whole group (browser, zygote, renderers) is killed and
//! the browser reaped, so no process outlives the call.
//!
//! ```ignore
//! let Some(bin) = prereq::require("chromium", chromium::find()) else { return Ok(()) };
//! let browser = Chromium::new(bin);
//! let dom = browser.dump_dom("http://127.0.0.1:9181/")?;
//! browser.screenshot("http://127.0.0.1:9181/", &out_dir("page").join("page.png"))?;
//! ```

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian's `chromium` package puts the browser.
pub const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";

/// The browser: `$CHROMIUM` if set, else [`DEBIAN_CHROMIUM`]; it must answer `--version`. Use
/// with [`crate::prereq::require`].
pub fn find() -> Result<PathBuf, String> {
    let bin = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_CHROMIUM));
    if !bin.is_file() {
        return Err(format!(
            "headless Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            bin.display()
        ));
    }
    match Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(bin),
        Ok(o) => Err(format!(
            "{} --version failed ({}): {}",
            bin.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{} cannot run: {e}", bin.display())),
    }
}

/// How to run the browser.
#[derive(Clone, Debug)]
pub struct Chromium {
    bin: PathBuf,
    /// Virtual time the page gets before the DOM is dumped or the screenshot taken (timers
    /// run, network requests are waited for).
    pub virtual_time_budget: Duration,
    /// Wall-clock limit of one run; the browser is killed after it.
    pub timeout: Duration,
    /// `--window-size` of screenshots.
    pub window: (u32, u32),
}

/// What one run printed.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Chromium {
    /// The browser at `bin` with a 5 s virtual-time budget, a 60 s timeout and a 1280x900
    /// window.
    pub fn new(bin: PathBuf) -> Self {
        Chromium {
            bin,
            virtual_time_budget: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            window: (1280, 900),
        }
    }

    /// The serialized DOM of `url` once the page's scripts had the virtual-time budget.
    pub fn dump_dom(&self, url: &str) -> Result<String> {
        let run = self.run(&["--dump-dom".to_owned()], url)?;
        if !run.status.success() || !run.stdout.contains("<html") {
            bail!(
                "chromium --dump-dom {url}: {} and {} bytes of DOM; stderr:\n{}",
                run.status,
                run.stdout.len(),
                tail(&run.stderr, 40)
            );
        }
        Ok(run.stdout)
    }

    /// A PNG screenshot of `url` (window [`Chromium::window`]) written to `out`.
    pub fn screenshot(&self, url: &str, out: &Path) -> Result<()> {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(out);
        let (w, h) = self.window;
        let run = self.run(
            &[
                format!("--screenshot={}", out.display()),
                format!("--window-size={w},{h}"),
                "--hide-scrollbars".to_owned(),
            ],
            url,
        )?;
        let png = std::fs::read(out).unwrap_or_default();
        if !run.status.success() || !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            bail!(
                "chromium --screenshot {url}: {}, {} ({} bytes); stderr:\n{}",
                run.status,
                out.display(),
                png.len(),
                tail(&run.stderr, 40)
            );
        }
        Ok(())
    }

    /// Runs the browser once on `url` with the common flags and `extra`, in a fresh profile.
    fn run(&self, extra: &[String], url: &str) -> Result<Run> {
        self.run_with_pid(extra, url).1
    }

    /// [`Chromium::run`], also returning the browser's pid (its process group id), once known.
    fn run_with_pid(&self, extra: &[String], url: &str) -> (Option<u32>, Result<Run>) {
        let mut pid = None;
        let r = self.run_inner(extra, url, &mut pid);
        (pid, r)
    }

    fn run_inner(&self, extra: &[String], url: &str, pid: &mut Option<u32>) -> Result<Run> {
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir()
            .context("creating a Chromium profile directory")?;
        let p = profile.path();
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-crash-reporter",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", p.join("data").display()))
        .arg(format!(
            "--virtual-time-budget={}",
            self.virtual_time_budget.as_millis()
        ))
        .args(extra)
        .arg(url)
        .env("HOME", p)
        .env("XDG_CONFIG_HOME", p.join("config"))
        .env("XDG_CACHE_HOME", p.join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout can kill every process it started.
        .process_group(0);
        tracing::info!(url, args = ?extra, "running headless chromium");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        *pid = Some(child.id());
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let mut group = Group { child, done: false };
        let status = group.wait(self.timeout);
        // The browser is gone (or was killed): its pipes close once its helpers are gone too.
        let grace = Duration::from_secs(10);
        let stdout = stdout.recv_timeout(grace).unwrap_or_default();
        let stderr = stderr.recv_timeout(grace).unwrap_or_default();
        let Some(status) = status? else {
            bail!(
                "chromium on {url} did not finish within {:?} (killed); stderr:\n{}",
                self.timeout,
                tail(&stderr, 40)
            );
        };
        Ok(Run {
            status,
            stdout,
            stderr,
        })
    }
}

/// The browser process and its group: the group is killed and the browser reaped on timeout
/// and on drop (a panic in between leaves nothing behind).
struct Group {
    child: Child,
    done: bool,
}

impl Group {
    /// The exit status, or `None` after killing the group at `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().context("waiting for chromium")? {
                self.done = true;
                // Helpers that outlived the browser (none normally) go with the group.
                self.kill_group();
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills every process of the group and waits (up to 10 s) until none is left: the
    /// helpers' parent is the browser, so once it is gone they are reaped by init, not by us.
    fn kill_group(&self) {
        // The group id is the browser's pid (`process_group(0)`).
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = group_members(pgid)
                .into_iter()
                .filter(|&p| p != pgid)
                .count();
            if left == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(pgid, left, "chromium helpers still not reaped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if self.done {
            return;
        }
        self.kill_group();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The processes (zombies too) whose process group is `pgid`, from `/proc`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<u32>().ok())
                == Some(pgid)
        })
        .collect()
}

/// Reads a pipe to its end in a thread; the text arrives on the returned channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Receiver<String> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_hung_page_is_killed_with_every_helper() -> Result<()> {
        let Some(bin) = crate::prereq::require("chromium", find()) else {
            return Ok(());
        };
        // A server that accepts and never answers: the page never loads.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().take(16) {
                held.push(s);
            }
        });
        let mut browser = Chromium::new(bin);
        browser.timeout = Duration::from_secs(8);
        let (pid, r) = browser.run_with_pid(&["--dump-dom".to_owned()], &format!("http://{addr}/"));
        let err = r.expect_err("the page never loads, the run must time out");
        assert!(err.to_string().contains("did not finish"), "{err:#}");
        let pid = pid.expect("the browser was started");
        // Reaped (no zombie) and nothing left in its group.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} remains"
        );
        assert_eq!(group_members(pid), Vec::<u32>::new());
        Ok(())
    }
}
