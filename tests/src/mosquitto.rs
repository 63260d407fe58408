//! A real Mosquitto broker on a free 127.0.0.1 port, killed on drop, and an
//! MQTT probe client (subscribe and wait for messages, publish raw bytes).
//!
//! ```ignore
//! let Some(_) = require("mosquitto", mosquitto::available()) else { return };
//! let mut broker = Mosquitto::start()?;
//! let url = broker.url();            // tcp://127.0.0.1:PORT
//! broker.restart()?;                 // same port: "broker restart mid-test"
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The mosquitto binary: `$KE_ROS2_MOSQUITTO`, else `/usr/sbin/mosquitto`, else on `PATH`.
pub fn available() -> Result<PathBuf, String> {
    let candidates = std::env::var_os("KE_ROS2_MOSQUITTO")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("mosquitto"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    Err("the Mosquitto broker (apt-get install -y mosquitto; scripts/test installs it)".into())
}

/// A running broker (or a stopped one that can be started again on its port).
#[derive(Debug)]
pub struct Mosquitto {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Mosquitto {
    /// Starts a broker on a free 127.0.0.1 port (anonymous, no persistence) and
    /// waits until it accepts TCP connections.
    pub fn start() -> Result<Self> {
        let bin = available().map_err(|e| anyhow!(e))?;
        let mut last = None;
        // The port is free when chosen but could be taken before mosquitto binds it: retry.
        for _ in 0..3 {
            let mut m = Self {
                bin: bin.clone(),
                dir: tempfile::tempdir().context("temp dir for mosquitto.conf")?,
                port: free_port()?,
                child: None,
            };
            match m.spawn() {
                Ok(()) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("mosquitto did not start")))
    }

    fn spawn(&mut self) -> Result<()> {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n",
                self.port
            ),
        )?;
        let log = self.log_path();
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        // Owned from here: killed on every exit path.
        let mut child = KillOnDrop(Some(child));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = child.0.take();
                return Ok(());
            }
            if let Some(c) = child.0.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!(
                        "mosquitto exited ({st}) before listening on {addr}: {}",
                        self.log()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "mosquitto did not listen on {addr} within {START_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// The broker's log (errors and warnings) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (connected clients see the connection drop).
    pub fn stop(&mut self) {
        drop(KillOnDrop(self.child.take()));
    }

    /// Kills the broker and starts it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A test MQTT client: subscribes (awaiting SUBACK), collects messages,
/// publishes raw payloads; reconnects and resubscribes after broker restarts.
#[derive(Debug)]
pub struct MqttProbe {
    client: AsyncClient,
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    sessions: watch::Receiver<u64>,
    shutdown: CancellationToken,
}

impl MqttProbe {
    /// Connects to `url` (`tcp://host:port`) and subscribes to `filters` at QoS 1.
    pub async fn start(url: &str, filters: &[&str]) -> Result<Self> {
        let (host, port) = host_port(url)?;
        let id = format!("probe-{}-{}", std::process::id(), next_id());
        let mut o = MqttOptions::new(id, host, port);
        o.set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 256);
        let (tx, rx) = mpsc::channel(1024);
        let (sessions_tx, sessions) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let (c, stop) = (client.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut pending_acks = 0usize;
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => break,
                    ev = el.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        pending_acks = filters.len();
                        for f in &filters {
                            let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                        if filters.is_empty() {
                            sessions_tx.send_modify(|n| *n += 1);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending_acks = pending_acks.saturating_sub(1);
                        if pending_acks == 0 {
                            sessions_tx.send_modify(|n| *n += 1);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.try_send((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        }
                    }
                }
            }
        });
        let mut p = Self {
            client,
            rx,
            sessions,
            shutdown,
        };
        p.wait_sessions(1, Duration::from_secs(10)).await?;
        Ok(p)
    }

    /// Waits until `n` sessions have been subscribed (1 = the first connect).
    pub async fn wait_sessions(&mut self, n: u64, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.sessions.wait_for(|s| *s >= n))
            .await
            .map_err(|_| anyhow!("probe: not subscribed {n} time(s) within {timeout:?}"))?
            .map_err(|_| anyhow!("probe task ended"))?;
        Ok(())
    }

    /// The next message, or an error after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<(String, Vec<u8>)> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .map_err(|_| anyhow!("probe: no message within {timeout:?}"))?
            .ok_or_else(|| anyhow!("probe task ended"))
    }

    /// Publishes raw bytes (QoS 1) and returns once queued.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await?;
        Ok(())
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `tcp://host:port` -> (host, port).
pub fn host_port(url: &str) -> Result<(String, u16)> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (h, p) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("no port in broker url {url:?}"))?;
    Ok((
        h.to_owned(),
        p.parse().with_context(|| format!("port of {url:?}"))?,
    ))
}

/// A unique MQTT client id for test clients.
pub fn client_id(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next_id())
}
