//! The upstream side: registration with edgecore's `DeviceManagerService`
//! and delivery of the core's reports, paced by the [`Outbox`].
//!
//! Link states: *down* (dial and `MapperRegister(withData)` with backoff;
//! reports keep being merged meanwhile) and *up* (calls as the outbox allows).
//! A lost socket or a transport error takes the link down; registering again
//! yields `Sync` and, after the first time, `Resync`.

use std::sync::Arc;

use mapper_core::backend::{BackendEvent, Report};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::config::DmiConfig;
use crate::convert::{device_from_proto, model_from_proto, state_to_proto, twin_report_to_proto};
use crate::error::DmiError;
use crate::outbox::{Backoff, Call, Outbox, OutboxConfig};
use crate::proto::v1beta1 as pb;
use crate::proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use crate::tables::{DmiStats, Tables};
use crate::uds::{connect_once, Connection};

/// The message edgecore's limiter answers with (`dmiserver/server.go`).
pub const TOO_MANY_REQUEST: &str = "too many request";

/// What an error from edgecore means for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// edgecore's rate limiter: retry later.
    RateLimited,
    /// The call did not get through (edgecore gone or restarting): re-dial and re-register.
    Transport,
    /// edgecore does not know the rpc (`ReportDeviceStates` before KubeEdge 1.18).
    Unimplemented,
    /// edgecore refused the content: drop it.
    Refused,
}

/// Classifies an error status of a call to edgecore.
pub fn classify(status: &Status) -> Outcome {
    if status.message().contains(TOO_MANY_REQUEST) {
        return Outcome::RateLimited;
    }
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => Outcome::Transport,
        Code::Unimplemented => Outcome::Unimplemented,
        // Errors made by our own transport (hyper/h2) carry a source; edgecore's do not.
        _ if std::error::Error::source(status).is_some() => Outcome::Transport,
        _ => Outcome::Refused,
    }
}

struct Up {
    conn: Connection,
    client: DeviceManagerServiceClient<Channel>,
}

pub(crate) struct Client {
    pub config: Arc<DmiConfig>,
    pub tables: Arc<Tables>,
    pub stats: Arc<DmiStats>,
    pub events: mpsc::Sender<BackendEvent>,
    pub reports: mpsc::Receiver<Report>,
    pub shutdown: CancellationToken,
}

/// Sleeps until `at` (or forever when `None`).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Client {
    pub async fn run(mut self) -> Result<(), DmiError> {
        let cfg = self.config.clone();
        let mut outbox = Outbox::new(
            &OutboxConfig {
                per_second: cfg.rate_limit.per_second,
                burst: cfg.rate_limit.burst,
                min_interval: cfg.min_report_interval(),
                backoff_initial: cfg.rate_limited_backoff.initial(),
                backoff_max: cfg.rate_limited_backoff.max(),
            },
            now(),
        );
        let mut redial = Backoff::new(
            cfg.reregister_backoff.initial(),
            cfg.reregister_backoff.max(),
        );
        let mut reports_open = true;
        let mut registered_before = false;
        let mut retry_at = Instant::now();
        let mut link: Option<Up> = None;
        let shutdown = self.shutdown.clone();
        loop {
            match link.take() {
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        r = self.reports.recv(), if reports_open => reports_open = self.take_report(r, &mut outbox),
                        _ = tokio::time::sleep_until(retry_at) => {
                            let attempt = tokio::select! {
                                _ = shutdown.cancelled() => return Ok(()),
                                a = self.register(&mut outbox) => a,
                            };
                            match attempt {
                                Ok((up, events)) => {
                                    DmiStats::bump(&self.stats.registrations, 1);
                                    redial.reset();
                                    let mut events = events;
                                    if registered_before {
                                        events.push(BackendEvent::Resync);
                                    }
                                    registered_before = true;
                                    for e in events {
                                        tokio::select! {
                                            _ = shutdown.cancelled() => return Ok(()),
                                            sent = self.events.send(e) => if sent.is_err() {
                                                tracing::info!("the core stopped listening; dmi client ends");
                                                return Ok(());
                                            },
                                        }
                                    }
                                    link = Some(up);
                                }
                                Err(error) => {
                                    let delay = redial.next_delay();
                                    tracing::warn!(%error, socket = %cfg.edgecore_socket.display(), retry_in_ms = delay.as_millis() as u64, "cannot register with edgecore");
                                    retry_at = Instant::now() + delay;
                                }
                            }
                        }
                    }
                }
                Some(mut up) => {
                    let wake = outbox.next_wake(now()).map(Instant::from_std);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = up.conn.lost.cancelled() => {
                            let delay = redial.next_delay();
                            tracing::warn!(retry_in_ms = delay.as_millis() as u64, "connection to edgecore lost; registering again");
                            retry_at = Instant::now() + delay;
                            continue;
                        }
                        r = self.reports.recv(), if reports_open => reports_open = self.take_report(r, &mut outbox),
                        _ = sleep_until(wake), if wake.is_some() => {
                            if !self.flush(&mut up, &mut outbox).await {
                                if shutdown.is_cancelled() {
                                    return Ok(());
                                }
                                retry_at = Instant::now() + redial.next_delay();
                                continue;
                            }
                        }
                    }
                    link = Some(up);
                }
            }
        }
    }

    /// Merges a report into the outbox; `false` when the core closed the channel.
    fn take_report(&self, r: Option<Report>, outbox: &mut Outbox) -> bool {
        let Some(r) = r else {
            tracing::info!("the core closed the report channel");
            return false;
        };
        for rej in &r.rejections {
            tracing::warn!(device = %r.device, property = %rej.property, value = %rej.value, reason = %rej.reason, "desired value rejected (DMI cannot carry rejections)");
        }
        DmiStats::bump(&self.stats.rejections, r.rejections.len() as u64);
        self.tables.record_report(&r);
        outbox.push(&r, now());
        true
    }

    /// Dials edgecore and registers; returns the link and the `Sync` event.
    async fn register(&self, outbox: &mut Outbox) -> Result<(Up, Vec<BackendEvent>), DmiError> {
        let cfg = &self.config;
        let conn = connect_once(&cfg.edgecore_socket, cfg.call_timeout()).await?;
        let mut client = DeviceManagerServiceClient::new(conn.channel.clone());
        outbox.registering(now());
        let request = pb::MapperRegisterRequest {
            with_data: true,
            mapper: Some(pb::MapperInfo {
                name: cfg.name.clone(),
                version: cfg.version.clone(),
                api_version: cfg.api_version.clone(),
                protocol: cfg.protocol.clone(),
                address: cfg.socket.to_string_lossy().into_owned().into_bytes(),
                state: "ok".into(),
            }),
        };
        let response = client
            .mapper_register(request)
            .await
            .map_err(|s| DmiError::call("MapperRegister", &s))?
            .into_inner();
        let models = response
            .model_list
            .iter()
            .filter_map(|m| model_from_proto(m).map_err(|error| tracing::warn!(model = %m.name, %error, "skipping a device model from edgecore")).ok())
            .collect();
        let devices = response
            .device_list
            .iter()
            .filter(|d| {
                let p = d.spec.as_ref().and_then(|s| s.protocol.as_ref()).map(|p| p.protocol_name.as_str()).unwrap_or("");
                let ours = p == cfg.protocol;
                if !ours {
                    tracing::warn!(device = %d.name, protocol = p, "edgecore listed a device of another protocol; ignoring it");
                }
                ours
            })
            .filter_map(|d| device_from_proto(d).map_err(|error| tracing::warn!(device = %d.name, %error, "skipping a device from edgecore")).ok())
            .collect::<Vec<_>>();
        let bindings = self.tables.replace_all(devices, models);
        tracing::info!(devices = bindings.len(), socket = %cfg.edgecore_socket.display(), "registered with edgecore");
        Ok((Up { conn, client }, vec![BackendEvent::Sync(bindings)]))
    }

    /// Makes the calls the outbox allows now; `false` when the link is gone.
    async fn flush(&self, up: &mut Up, outbox: &mut Outbox) -> bool {
        while let Some(call) = outbox.next_call(now()) {
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                r = send(&mut up.client, &call) => r,
            };
            let device = call.device().clone();
            let Err(status) = result else {
                outbox.succeeded();
                let counter = match call {
                    Call::Status { .. } => &self.stats.status_calls,
                    Call::State { .. } => &self.stats.state_calls,
                };
                DmiStats::bump(counter, 1);
                continue;
            };
            match classify(&status) {
                Outcome::RateLimited => {
                    DmiStats::bump(&self.stats.rate_limited, 1);
                    let delay = outbox.rate_limited(call, now());
                    tracing::warn!(device = %device, retry_in_ms = delay.as_millis() as u64, "edgecore: too many request; backing off");
                    return true;
                }
                Outcome::Transport => {
                    outbox.failed(call, now());
                    tracing::warn!(device = %device, code = ?status.code(), message = status.message(), "call to edgecore failed; registering again");
                    return false;
                }
                Outcome::Unimplemented if matches!(call, Call::State { .. }) => {
                    tracing::warn!("edgecore has no ReportDeviceStates (KubeEdge < 1.18); device states are not reported");
                    outbox.disable_states();
                }
                Outcome::Unimplemented | Outcome::Refused => {
                    DmiStats::bump(&self.stats.refused, 1);
                    tracing::warn!(device = %device, code = ?status.code(), message = status.message(), "edgecore refused a report; dropping it");
                }
            }
        }
        true
    }
}

async fn send(client: &mut DeviceManagerServiceClient<Channel>, call: &Call) -> Result<(), Status> {
    match call {
        Call::Status {
            device,
            twins,
            report_to_cloud,
        } => {
            let request = pb::ReportDeviceStatusRequest {
                device_name: device.name.clone(),
                device_namespace: device.namespace.clone(),
                reported_device: Some(pb::DeviceStatus {
                    twins: twins.iter().map(twin_report_to_proto).collect(),
                    report_to_cloud: *report_to_cloud,
                    report_cycle: 0,
                }),
            };
            tracing::debug!(device = %device, twins = twins.len(), "ReportDeviceStatus");
            client.report_device_status(request).await.map(|_| ())
        }
        Call::State { device, state } => {
            let request = pb::ReportDeviceStatesRequest {
                device_name: device.name.clone(),
                device_namespace: device.namespace.clone(),
                state: state_to_proto(*state),
            };
            tracing::debug!(device = %device, state = %state, "ReportDeviceStates");
            client.report_device_states(request).await.map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_edgecore_errors() {
        assert_eq!(
            classify(&Status::unknown(
                "fail to report device status because of too many request: robot1"
            )),
            Outcome::RateLimited
        );
        assert_eq!(
            classify(&Status::unknown(
                "fail to register mapper because of too many request: ros2-mapper"
            )),
            Outcome::RateLimited
        );
        assert_eq!(
            classify(&Status::unavailable("connection refused")),
            Outcome::Transport
        );
        assert_eq!(
            classify(&Status::deadline_exceeded("timeout")),
            Outcome::Transport
        );
        assert_eq!(
            classify(&Status::unimplemented("unknown method")),
            Outcome::Unimplemented
        );
        assert_eq!(
            classify(&Status::unknown(
                "fail to get propertyType for property x of device y"
            )),
            Outcome::Refused
        );
        assert_eq!(classify(&Status::invalid_argument("bad")), Outcome::Refused);
    }
}
