//! The bridge's status page in headless Chromium during a demo run: the demo binary
//! (`target/<profile>/demo`) runs two robots, their edges and a hub on loopback; once the hub's
//! `/status` shows both robots connected and traffic flowing, Chromium loads the hub's page and
//! the DOM its script built must show `robot1` and `robot2` connected and a route with a
//! non-zero rate. A screenshot is kept under `tests/out/status_page/`.
//!
//! Needs Debian's `chromium` (skipped with `SKIPPED: needs …` without it, a failure under CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration_tests::chromium::{self, Chromium};
use integration_tests::{init_tracing, prereq};
use serde_json::Value;

/// A domain base no other test uses (the demo takes this one and the next two).
const DOMAIN_BASE: u16 = 70;
/// The demo's run time: long enough for the waits and the browser runs below.
const DEMO_SECONDS: u64 = 40;

fn demo_built() -> Result<PathBuf, String> {
    integration_tests::workspace_bin_built("demo", "demo")
}

/// The demo process: stdout lines on a channel, stderr in a log file; killed on drop.
struct Demo {
    child: Child,
    stdout: Receiver<String>,
    log: PathBuf,
}

impl Demo {
    fn start(bin: &Path, out: &Path) -> Result<Self> {
        let log = out.join("demo.log");
        let logf = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["--duration", &DEMO_SECONDS.to_string()])
            .args(["--domain-base", &DOMAIN_BASE.to_string()])
            .args(["--hub-status", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pipe = child.stdout.take().context("no stdout")?;
        let (tx, stdout) = mpsc::channel();
        let copy = out.join("demo.stdout");
        std::thread::spawn(move || {
            let mut copy = std::fs::File::create(copy).ok();
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                // The receiver may be gone; keep copying to the file.
                let _ = tx.send(line);
            }
        });
        tracing::info!(pid = child.id(), log = %log.display(), "demo started");
        Ok(Demo { child, stdout, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first stdout line starting with `prefix` (the rest of it).
    fn wait_line(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.trim().strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "demo: no line {prefix:?} within {timeout:?}; stderr:\n{}",
                        self.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("demo exited before {prefix:?}; stderr:\n{}", self.log())
                }
            }
        }
    }

    /// SIGINT (the demo's Ctrl-C), then waits up to `timeout` for the exit.
    fn interrupt(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            tracing::warn!(status = %st, "the demo had already exited");
            return Ok(st);
        }
        let st = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !st.success() {
            bail!("kill -INT {} failed", self.child.id());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!(
                    "the demo still runs {timeout:?} after SIGINT; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://{addr}{path}` with `Connection: close`; the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

fn link_state<'a>(status: &'a Value, name: &str) -> Option<&'a str> {
    status["links"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)?["state"]
        .as_str()
}

/// Both robots connected and some route moving (by the server's rates).
fn fleet_live(status: &Value) -> bool {
    let connected = ["robot1", "robot2"]
        .iter()
        .all(|r| link_state(status, r) == Some("connected"));
    let moving = status["routes"].as_array().is_some_and(|routes| {
        routes
            .iter()
            .any(|r| r["rate"]["messages_per_s"].as_f64().unwrap_or(0.0) > 0.0)
    });
    connected && moving
}

/// The attributes of every `<tr …>` start tag in `dom`.
fn row_tags(dom: &str) -> Vec<&str> {
    dom.match_indices("<tr ")
        .filter_map(|(i, _)| {
            let rest = &dom[i..];
            rest.find('>').map(|end| &rest[..end])
        })
        .collect()
}

/// The value of attribute `name` in a start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')?;
    Some(&tag[start..start + end])
}

/// What the page shows: robots connected, and whether a route row has a non-zero rate.
fn page_shows(dom: &str) -> (Vec<String>, bool) {
    let tags = row_tags(dom);
    let connected = tags
        .iter()
        .filter(|t| attr(t, "data-state") == Some("connected"))
        .filter_map(|t| attr(t, "data-link"))
        .map(str::to_owned)
        .collect();
    let moving = tags.iter().any(|t| {
        attr(t, "data-msg-rate")
            .and_then(|r| r.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0)
    });
    (connected, moving)
}

#[test]
fn hub_status_page_in_headless_chromium() -> Result<()> {
    init_tracing();
    let Some(browser) = prereq::require("chromium", chromium::find()) else {
        return Ok(());
    };
    let Some(demo_bin) = prereq::require("the demo binary", demo_built()) else {
        return Ok(());
    };
    let out = integration_tests::out_dir("status_page");
    let mut demo = Demo::start(&demo_bin, &out)?;
    let url = demo.wait_line("hub status page:", Duration::from_secs(60))?;
    let addr = url
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .with_context(|| format!("unexpected status page address {url:?}"))?
        .to_owned();
    tracing::info!(%url, "hub status page");

    // Wait for both robots and traffic, as the server sees them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        match http_get(&addr, "/status").and_then(|b| Ok(serde_json::from_str(&b)?)) {
            Ok(v) if fleet_live(&v) => break,
            Ok(v) => last = v,
            Err(e) => tracing::debug!(error = %e, "status not available yet"),
        }
        if Instant::now() > deadline {
            bail!(
                "the hub's /status never showed robot1 and robot2 connected with traffic:\n{}\ndemo stderr:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                demo.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The page, as the browser renders it after its script fetched /status.
    let browser = Chromium::new(browser);
    let mut shown = (Vec::new(), false);
    let mut dom = String::new();
    for attempt in 1..=3 {
        dom = browser.dump_dom(&url)?;
        shown = page_shows(&dom);
        let (connected, moving) = &shown;
        if connected.iter().any(|r| r == "robot1")
            && connected.iter().any(|r| r == "robot2")
            && *moving
        {
            break;
        }
        tracing::info!(attempt, ?shown, "page not complete yet");
    }
    std::fs::write(out.join("hub.html"), &dom)?;
    let (connected, moving) = shown;
    assert!(
        connected.iter().any(|r| r == "robot1") && connected.iter().any(|r| r == "robot2"),
        "the page does not show robot1 and robot2 connected (connected: {connected:?}); DOM in {}",
        out.join("hub.html").display()
    );
    assert!(
        moving,
        "no route row with a non-zero rate; DOM in {}",
        out.join("hub.html").display()
    );

    let png = out.join("hub.png");
    browser.screenshot(&url, &png)?;
    println!("status page screenshot: {}", png.display());

    let st = demo.interrupt(Duration::from_secs(30))?;
    tracing::info!(status = %st, "demo stopped");
    Ok(())
}

#[test]
fn dom_parsing_finds_rows() {
    let dom = r#"<tbody id="links"><tr data-link="robot1" data-state="connected"><td>robot1</td></tr>
<tr data-link="robot2" data-state="backoff"><td>robot2</td></tr></tbody>
<tbody id="routes"><tr data-link="robot1" data-msg-rate=""></tr><tr data-link="robot1" data-msg-rate="0"></tr></tbody>"#;
    assert_eq!(page_shows(dom), (vec!["robot1".to_owned()], false));
    let dom = dom.replace(r#"data-msg-rate="0""#, r#"data-msg-rate="9.5""#);
    assert_eq!(page_shows(&dom), (vec!["robot1".to_owned()], true));
}
