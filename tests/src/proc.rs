//! Child processes for tests: killed on drop, stdout/stderr read line by
//! line in background threads, with waits for a line that matches.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A running child process with its output lines.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stderr line so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

fn pump(
    name: String,
    r: impl std::io::Read + Send + 'static,
    log: Option<Arc<Mutex<Vec<String>>>>,
) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = &log {
                eprintln!("[{name}] {line}");
                if let Ok(mut l) = log.lock() {
                    l.push(line.clone());
                }
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    /// Spawns `cmd` with piped stdio.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = pump(
            name.to_owned(),
            child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?,
            None,
        );
        let stderr = pump(
            name.to_owned(),
            child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?,
            Some(log.clone()),
        );
        Ok(Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            log,
        })
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => bail!(
                    "{}: no stderr line with {needle:?} within {timeout:?}",
                    self.name
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "{}: exited before printing {needle:?}; stderr:\n{}",
                        self.name,
                        self.stderr_log()
                    )
                }
            }
        }
    }

    /// Reads `n` stdout lines.
    pub fn read_lines(&self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(e) => bail!(
                    "{}: got {} of {n} stdout lines ({e:?}); stderr:\n{}",
                    self.name,
                    out.len(),
                    self.stderr_log()
                ),
            }
        }
        Ok(out)
    }

    /// Writes a line to stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin closed", self.name))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for exit and checks the status is success.
    pub fn wait_success(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                if st.success() {
                    return Ok(());
                }
                bail!(
                    "{} exited with {st}; stderr:\n{}",
                    self.name,
                    self.stderr_log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
