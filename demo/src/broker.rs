//! A small embedded MQTT 3.1.1 broker on loopback, enough for KubeEdge's eventbus between the
//! mappers and the twin store: CONNECT, SUBSCRIBE/UNSUBSCRIBE with `+`/`#` filters, PUBLISH at
//! QoS 0 and 1 (acknowledged; delivered at the lower of the publish and subscription QoS),
//! PINGREQ, DISCONNECT. No retained messages, wills, persistent sessions or QoS 2 (the eventbus
//! uses none of them). Packets are encoded and parsed by rumqttc's `mqttbytes`.
//!
//! Why not `rumqttd`: it brings a second axum, hyper and `config` with every file format to
//! build on a 2-core machine, runs its router on threads of its own that cannot be stopped
//! under a caller's cancellation token, and would still need glue for an ephemeral port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as MqttBytesError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest packet accepted or sent.
pub const MAX_PACKET: usize = 1 << 20;
/// Messages queued per client before new ones to it are dropped.
pub const CLIENT_QUEUE: usize = 1024;

/// Does the topic `filter` match `topic` (MQTT 3.1.1 §4.7)? Topics starting with `$` match
/// no filter that starts with a wildcard.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match t.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[derive(Debug)]
struct Client {
    filters: Vec<(String, QoS)>,
    tx: mpsc::Sender<Publish>,
}

#[derive(Debug, Default)]
struct Router {
    clients: Mutex<HashMap<u64, Client>>,
    next_id: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl Router {
    fn route(&self, p: &Publish) {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        for c in clients.values() {
            let Some(qos) = c
                .filters
                .iter()
                .filter(|(f, _)| topic_matches(f, &p.topic))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8)
            else {
                continue;
            };
            let qos = if (qos as u8) < (p.qos as u8) {
                qos
            } else {
                p.qos
            };
            let mut out = Publish::new(p.topic.clone(), qos, p.payload.clone());
            out.retain = false;
            match c.tx.try_send(out) {
                Ok(()) => self.delivered.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// The running broker.
#[derive(Debug)]
pub struct Broker {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    router: Arc<Router>,
    task: tokio::task::JoinHandle<()>,
}

impl Broker {
    /// Binds 127.0.0.1:0 and serves until `shutdown` is cancelled.
    pub async fn start(shutdown: CancellationToken) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("MQTT broker: bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let router = Arc::new(Router::default());
        let r = router.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "MQTT broker: accept failed");
                            continue;
                        }
                    },
                };
                let (r, s) = (r.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, r, s).await {
                        tracing::debug!(%peer, error = %e, "MQTT broker: client gone");
                    }
                });
            }
        });
        tracing::info!(%addr, "MQTT broker listening");
        Ok(Self { addr, router, task })
    }

    /// The broker URL for clients (`tcp://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Messages delivered and dropped (a full client queue) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.router.delivered.load(Ordering::Relaxed),
            self.router.dropped.load(Ordering::Relaxed),
        )
    }

    /// Waits for the accept loop to end (after the shutdown token).
    pub async fn stop(self) {
        let _ = self.task.await;
    }
}

async fn write(stream: &mut TcpStream, buf: &mut BytesMut, p: Packet) -> Result<()> {
    buf.clear();
    p.write(buf, MAX_PACKET)
        .map_err(|e| anyhow::anyhow!("encode: {e:?}"))?;
    stream.write_all(buf).await?;
    Ok(())
}

async fn serve(
    mut stream: TcpStream,
    router: Arc<Router>,
    shutdown: CancellationToken,
) -> Result<()> {
    let id = router.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
    let mut input = BytesMut::with_capacity(8192);
    let mut output = BytesMut::with_capacity(8192);
    let mut connected = false;
    let mut pkid: u16 = 0;
    let result = async {
        loop {
            // Every complete packet in the buffer first.
            loop {
                let packet = match Packet::read(&mut input, MAX_PACKET) {
                    Ok(p) => p,
                    Err(MqttBytesError::InsufficientBytes(_)) => break,
                    Err(e) => anyhow::bail!("bad packet: {e:?}"),
                };
                match packet {
                    Packet::Connect(_) if !connected => {
                        connected = true;
                        router
                            .clients
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(
                                id,
                                Client {
                                    filters: Vec::new(),
                                    tx: tx.clone(),
                                },
                            );
                        let ack = ConnAck::new(ConnectReturnCode::Success, false);
                        write(&mut stream, &mut output, Packet::ConnAck(ack)).await?;
                    }
                    _ if !connected => anyhow::bail!("packet before CONNECT"),
                    Packet::Subscribe(s) => {
                        let mut codes = Vec::new();
                        {
                            let mut clients = router
                                .clients
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner);
                            let c = clients.get_mut(&id).context("client vanished")?;
                            for f in s.filters {
                                let qos = if f.qos == QoS::ExactlyOnce {
                                    QoS::AtLeastOnce
                                } else {
                                    f.qos
                                };
                                codes.push(SubscribeReasonCode::Success(qos));
                                c.filters.retain(|(p, _)| *p != f.path);
                                c.filters.push((f.path, qos));
                            }
                        }
                        write(
                            &mut stream,
                            &mut output,
                            Packet::SubAck(SubAck::new(s.pkid, codes)),
                        )
                        .await?;
                    }
                    Packet::Unsubscribe(u) => {
                        if let Some(c) = router
                            .clients
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_mut(&id)
                        {
                            c.filters.retain(|(p, _)| !u.topics.contains(p));
                        }
                        write(
                            &mut stream,
                            &mut output,
                            Packet::UnsubAck(UnsubAck::new(u.pkid)),
                        )
                        .await?;
                    }
                    Packet::Publish(p) => {
                        if p.qos == QoS::AtLeastOnce {
                            write(
                                &mut stream,
                                &mut output,
                                Packet::PubAck(PubAck::new(p.pkid)),
                            )
                            .await?;
                        }
                        router.route(&p);
                    }
                    Packet::PingReq => {
                        write(&mut stream, &mut output, Packet::PingResp).await?;
                    }
                    Packet::Disconnect => return Ok(()),
                    // Acks of what we sent, and what the eventbus never uses.
                    _ => {}
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = stream.read_buf(&mut input) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                Some(mut p) = rx.recv() => {
                    if p.qos != QoS::AtMostOnce {
                        pkid = pkid.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
                        p.pkid = pkid;
                    }
                    write(&mut stream, &mut output, Packet::Publish(p)).await?;
                }
            }
        }
    }
    .await;
    router
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches(
            "$hw/events/device/+/+/twin/+",
            "$hw/events/device/default/robot1/twin/update"
        ));
        assert!(!topic_matches(
            "$hw/events/device/+/+/twin/+",
            "$hw/events/device/default/robot1/twin/update/delta"
        ));
        assert!(!topic_matches("#", "$hw/x"));
        assert!(!topic_matches("+/x", "$hw/x"));
    }
}
