//! The MQTT client handle: connection options from the config, and
//! non-blocking execution of the state machine's subscribe/publish actions.

use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions};

use crate::config::{BrokerAddr, Qos};
use crate::state::Publication;

/// Largest MQTT packet accepted or sent (a `twin/get/result` of many twins can be large).
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Capacity of the client's request queue (bounded; a full queue drops the publish).
pub const REQUEST_QUEUE: usize = 1024;

/// Connection settings of one client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub broker: BrokerAddr,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keepalive: Duration,
}

/// Builds the client and its event loop (clean session, nothing connected yet).
pub fn connect(settings: &ClientSettings) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(
        settings.client_id.clone(),
        settings.broker.host.clone(),
        settings.broker.port,
    );
    o.set_clean_session(true)
        // validated: 0 or >= 1 s
        .set_keep_alive(settings.keepalive)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some((u, p)) = &settings.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    AsyncClient::new(o, REQUEST_QUEUE)
}

/// A client handle that never blocks: a full request queue drops the request
/// (returns `false`), which the caller counts.
#[derive(Debug, Clone)]
pub struct Handle {
    client: AsyncClient,
}

impl Handle {
    pub fn new(client: AsyncClient) -> Self {
        Self { client }
    }

    pub fn publish(&self, p: Publication) -> bool {
        let topic = p.topic;
        match self
            .client
            .try_publish(topic.clone(), p.qos.to_rumqttc(), p.retain, p.payload)
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(topic, error = %e, "publish not queued; dropped");
                false
            }
        }
    }

    pub fn subscribe(&self, filter: String, qos: Qos) -> bool {
        match self.client.try_subscribe(filter.clone(), qos.to_rumqttc()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(filter, error = %e, "subscribe not queued");
                false
            }
        }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}
