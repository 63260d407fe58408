//! Driving rumqttc's event loop: one task per client polls it, forwards
//! session starts/ends and incoming publishes, and reconnects with
//! exponential backoff and jitter when the broker goes away.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A random u64 from the standard library's per-process random hasher keys.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// Exponential backoff with "equal jitter": delay n is uniformly in
/// `[d/2, d]` where `d = min(min * 2^n, max)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            current: min,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The next delay (and doubles the base for the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let span = (d - half).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Back to the shortest delay (after a successful connect).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// What the poller reports.
#[derive(Debug)]
pub enum NetEvent {
    /// CONNACK received: a new (clean) session.
    Connected,
    /// The connection failed or ended (the reason); the poller retries.
    Disconnected(String),
    /// An incoming publish.
    Message {
        topic: String,
        payload: bytes::Bytes,
    },
}

/// Polls `eventloop` until `shutdown`: forwards events to `tx` (when given),
/// sleeps the backoff delay after each error, then polls again (rumqttc
/// reconnects on the next poll). On shutdown it sends DISCONNECT when
/// connected, waiting at most a second for it to be written.
pub async fn drive(
    name: &'static str,
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut backoff: Backoff,
    tx: Option<mpsc::Sender<NetEvent>>,
    shutdown: CancellationToken,
) {
    let broker = format!(
        "{}:{}",
        eventloop.mqtt_options.broker_address().0,
        eventloop.mqtt_options.broker_address().1
    );
    let mut connected = false;
    let mut failures: u64 = 0;
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        let forward = match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                backoff.reset();
                tracing::info!(
                    client = name,
                    broker,
                    after_failures = failures,
                    "connected to the MQTT broker"
                );
                failures = 0;
                Some(NetEvent::Connected)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Some(NetEvent::Message {
                topic: p.topic,
                payload: p.payload,
            }),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    tracing::warn!(
                        client = name,
                        broker,
                        pkid = ack.pkid,
                        "the broker refused a subscription"
                    );
                }
                None
            }
            Ok(_) => None,
            Err(e) => {
                failures += 1;
                let delay = backoff.next_delay();
                if connected {
                    tracing::warn!(client = name, broker, error = %e, retry_in_ms = delay.as_millis() as u64, "lost the MQTT broker; reconnecting");
                } else if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(client = name, broker, error = %e, failures, retry_in_ms = delay.as_millis() as u64, "cannot reach the MQTT broker; retrying");
                } else {
                    tracing::debug!(client = name, broker, error = %e, failures, retry_in_ms = delay.as_millis() as u64, "cannot reach the MQTT broker; retrying");
                }
                let was = std::mem::replace(&mut connected, false);
                if was {
                    if let Some(tx) = &tx {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            r = tx.send(NetEvent::Disconnected(e.to_string())) => if r.is_err() { break },
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                None
            }
        };
        if let (Some(ev), Some(tx)) = (forward, &tx) {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tx.send(ev) => if r.is_err() { break },
            }
        }
    }
    if connected {
        let _ = client.try_disconnect();
        let done = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        tracing::info!(
            client = name,
            broker,
            clean = done.is_ok(),
            "disconnected from the MQTT broker"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000), 7);
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for base in bases {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= base / 2 && d <= base,
                "{d} not in [{}, {base}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        let mut seen = std::collections::HashSet::new();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 99);
        for _ in 0..20 {
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 5, "jitter varies");
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO, 0);
        assert!(z.next_delay() <= Duration::from_millis(1));
    }
}
