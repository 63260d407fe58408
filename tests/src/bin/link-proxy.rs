//! `link-proxy`: a TCP proxy to put between an edge bridge and the hub in the
//! fleet tests (`integration_tests::fleet`).
//!
//! ```text
//! link-proxy --listen 127.0.0.1:7000 --connect hub.fleet.test:7447 [--delay-ms N]
//! ```
//! - Prints `listening <addr>` on stdout once bound (flushed).
//! - `--connect` is resolved again at every accepted connection (so a moved
//!   hub is found through the hosts file).
//! - Copies bytes both ways; with `--delay-ms N` every chunk is held back
//!   N ms before it is forwarded, in order (a latency link).
//! - Killing it (SIGKILL) cuts every connection; starting it again on the
//!   same port restores the link (the listener uses `SO_REUSEADDR`).
//!
//! Logs go to stderr (`RUST_LOG`, default `info`).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "TCP proxy with optional delay, for the bridge's link tests")]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:7000.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to connect, `host:port` (resolved at every accepted connection).
    #[arg(long)]
    connect: String,
    /// Hold every chunk back this many milliseconds before forwarding it (0: none).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

/// Chunks in flight per direction with `--delay-ms` (bounds memory; the
/// reader waits when the delay line is full).
const DELAY_LINE: usize = 4096;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let local = listener.local_addr()?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {local}")?;
        out.flush()?;
    }
    tracing::info!(listen = %local, connect = %cli.connect, delay_ms = cli.delay_ms, "proxy up");
    let delay = Duration::from_millis(cli.delay_ms);
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let target = cli.connect.clone();
        tokio::spawn(async move {
            match relay(inbound, &target, delay).await {
                Ok((up, down)) => {
                    tracing::info!(%peer, up, down, "connection closed")
                }
                Err(e) => tracing::info!(%peer, error = format!("{e:#}"), "connection ended"),
            }
        });
    }
}

/// Connects to `target` (resolved now) and relays until both directions end
/// or one fails. Returns the bytes relayed (client to target, target to client).
async fn relay(mut inbound: TcpStream, target: &str, delay: Duration) -> Result<(u64, u64)> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .collect();
    let mut last_err = None;
    let mut outbound = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                outbound = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(mut outbound) = outbound else {
        return Err(match last_err {
            Some(e) => anyhow::Error::new(e).context(format!("connecting {target} ({addrs:?})")),
            None => anyhow::anyhow!("{target} resolved to no address"),
        });
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tracing::info!(target, addr = ?outbound.peer_addr().ok(), "connected");
    if delay.is_zero() {
        let (up, down) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
        return Ok((up, down));
    }
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    let up = delayed_copy(in_r, out_w, delay);
    let down = delayed_copy(out_r, in_w, delay);
    tokio::pin!(up, down);
    // A half-close goes on (the other direction may still carry bytes); an
    // error in either direction ends the connection (both sockets dropped).
    let (mut up_n, mut down_n) = (None, None);
    while up_n.is_none() || down_n.is_none() {
        tokio::select! {
            r = &mut up, if up_n.is_none() => up_n = Some(r?),
            r = &mut down, if down_n.is_none() => down_n = Some(r?),
        }
    }
    Ok((up_n.unwrap_or(0), down_n.unwrap_or(0)))
}

/// Copies `r` to `w`, each chunk forwarded `delay` after it was read, in
/// order; shuts `w` down at EOF. Returns the bytes copied.
async fn delayed_copy(
    mut r: impl AsyncRead + Unpin + Send + 'static,
    mut w: impl AsyncWrite + Unpin,
    delay: Duration,
) -> Result<u64> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_LINE);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    });
    // Abort the reader if this future is dropped (the connection ended).
    let mut reader = AbortOnDrop(reader);
    let mut total = 0u64;
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        w.write_all(&chunk).await?;
        total += chunk.len() as u64;
    }
    // The reader ended: EOF or an error.
    match (&mut reader.0).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    }
    w.shutdown().await?;
    Ok(total)
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
