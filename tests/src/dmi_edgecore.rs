//! An edgecore stand-in for DMI gRPC: `DeviceManagerService` on a Unix
//! socket, and a client for the mapper's `DeviceMapperService`.
//!
//! - [`DmiEdgecore`] records `MapperRegister`, `ReportDeviceStatus` and
//!   `ReportDeviceStates` calls, answers `MapperRegister` with the devices and
//!   models set by the test (packed as real edgecore packs them: every
//!   `configData` number a float32 `FloatValue`), can refuse calls with
//!   edgecore's "too many request" error (`Status::unknown`, as a Go
//!   `fmt.Errorf` becomes), and can be stopped and started again on the same
//!   socket path (an edgecore restart).
//! - [`MapperClient`] calls the mapper like edgecore's DMI client does
//!   (`RegisterDevice`, `UpdateDevice`, `RemoveDevice`, `GetDevice`, models).
//! - [`RunningBackend`] runs `mapper_dmi` against it and plays the core's side
//!   of [`mapper_core::backend::BackendIo`].
//! - [`ros2_device`] / [`ros2_model`] build fixtures.
//!
//! Waiting is event driven ([`DmiEdgecore::wait_for`] wakes on every recorded
//! call), bounded by a timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use mapper_core::backend::{self, BackendEvent, Report};
use mapper_core::model::{
    AccessMode, Device, DeviceModel, DeviceModelRef, DeviceModelSpec, DeviceProperty, DeviceSpec,
    ModelProperty, PropertyType, ProtocolConfig, TwinProperty,
};
use mapper_dmi::client::TOO_MANY_REQUEST;
use mapper_dmi::convert::{device_from_proto, device_to_proto, model_to_proto, AnyEncoding};
use mapper_dmi::proto::v1beta1 as pb;
use mapper_dmi::proto::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use mapper_dmi::proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use mapper_dmi::{DmiConfig, DmiError, DmiStats};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long helpers wait for an event before failing.
pub const WAIT: Duration = Duration::from_secs(15);

/// How the stand-in's rate limiter answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Every call goes through.
    Off,
    /// The next `n` calls (any rpc) are refused with "too many request".
    RefuseNext(u32),
    /// Every call is refused.
    RefuseAll,
}

/// Everything the stand-in has seen (accepted calls only, plus counters).
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub registrations: Vec<pb::MapperRegisterRequest>,
    pub status_reports: Vec<pb::ReportDeviceStatusRequest>,
    pub state_reports: Vec<pb::ReportDeviceStatesRequest>,
    /// Calls refused with "too many request".
    pub refused: u32,
}

impl Recorded {
    /// The latest reported value of `property` of `ns/name`, over all accepted reports.
    pub fn latest_reported(&self, ns: &str, name: &str, property: &str) -> Option<String> {
        self.status_reports
            .iter()
            .rev()
            .filter(|r| r.device_namespace == ns && r.device_name == name)
            .flat_map(|r| r.reported_device.iter().flat_map(|d| d.twins.iter()))
            .find(|t| t.property_name == property)
            .and_then(|t| t.reported.as_ref().map(|p| p.value.clone()))
    }

    /// Accepted calls of every kind (what counts against edgecore's limiter).
    pub fn calls(&self) -> usize {
        self.registrations.len() + self.status_reports.len() + self.state_reports.len()
    }
}

#[derive(Debug)]
struct Shared {
    recorded: Mutex<Recorded>,
    limit: Mutex<Limit>,
    register_response: Mutex<pb::MapperRegisterResponse>,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Applies the limiter; `Err` is edgecore's refusal.
    fn admit(&self, what: &str, name: &str) -> Result<(), Status> {
        let refuse = {
            let mut l = lock(&self.limit);
            match *l {
                Limit::Off => false,
                Limit::RefuseAll => true,
                Limit::RefuseNext(n) => {
                    *l = if n <= 1 {
                        Limit::Off
                    } else {
                        Limit::RefuseNext(n - 1)
                    };
                    true
                }
            }
        };
        if refuse {
            lock(&self.recorded).refused += 1;
            self.changed.notify_waiters();
            // edgecore: fmt.Errorf("fail to ... because of too many request: %s", name)
            return Err(Status::unknown(format!(
                "fail to {what} because of {TOO_MANY_REQUEST}: {name}"
            )));
        }
        Ok(())
    }

    fn record(&self, f: impl FnOnce(&mut Recorded)) {
        f(&mut lock(&self.recorded));
        self.changed.notify_waiters();
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<Shared>);

#[tonic::async_trait]
impl DeviceManagerService for Service {
    async fn mapper_register(
        &self,
        request: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        let r = request.into_inner();
        let name = r
            .mapper
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        self.0.admit("register mapper", &name)?;
        if r.mapper.as_ref().is_none_or(|m| m.protocol.is_empty()) {
            return Err(Status::unknown(format!(
                "fail to register mapper {name} because the protocol is nil"
            )));
        }
        let with_data = r.with_data;
        self.0.record(|rec| rec.registrations.push(r));
        if !with_data {
            return Ok(Response::new(pb::MapperRegisterResponse::default()));
        }
        Ok(Response::new(lock(&self.0.register_response).clone()))
    }

    async fn report_device_status(
        &self,
        request: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        let r = request.into_inner();
        self.0.admit("report device status", &r.device_name)?;
        // edgecore needs reported.metadata.type of every twin.
        for t in r.reported_device.iter().flat_map(|d| d.twins.iter()) {
            if t.reported
                .as_ref()
                .is_none_or(|p| !p.metadata.contains_key("type"))
            {
                return Err(Status::unknown(format!(
                    "fail to get propertyType for property {} of device {}",
                    t.property_name, r.device_name
                )));
            }
        }
        self.0.record(|rec| rec.status_reports.push(r));
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        request: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        let r = request.into_inner();
        self.0.admit("report device states", &r.device_name)?;
        self.0.record(|rec| rec.state_reports.push(r));
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

/// The edgecore stand-in. Dropping it stops the server.
#[derive(Debug)]
pub struct DmiEdgecore {
    socket: PathBuf,
    shared: Arc<Shared>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl DmiEdgecore {
    /// Starts serving on `socket` (a stale socket file there is replaced).
    pub fn start(socket: impl Into<PathBuf>) -> Result<Self> {
        let shared = Arc::new(Shared {
            recorded: Mutex::default(),
            limit: Mutex::new(Limit::Off),
            register_response: Mutex::default(),
            changed: Notify::new(),
        });
        let mut me = Self {
            socket: socket.into(),
            shared,
            running: None,
        };
        me.resume()?;
        Ok(me)
    }

    /// The socket path (what the mapper's `edgecore_socket` must be).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts serving again after [`DmiEdgecore::stop`] (recordings are kept).
    pub fn resume(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = mapper_dmi::uds::bind(&self.socket)?;
        let stop = CancellationToken::new();
        let svc = DeviceManagerServiceServer::new(Service(self.shared.clone()));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    s.cancelled_owned(),
                )
                .await;
            if let Err(error) = r {
                tracing::warn!(%error, "dmi edgecore stand-in stopped with an error");
            }
        });
        self.running = Some((stop, task));
        tracing::info!(socket = %self.socket.display(), "dmi edgecore stand-in serving");
        Ok(())
    }

    /// Stops serving and closes every connection (as an edgecore crash or
    /// restart does). The socket file stays behind, stale.
    pub async fn stop(&mut self) {
        if let Some((stop, mut task)) = self.running.take() {
            stop.cancel();
            if tokio::time::timeout(Duration::from_millis(500), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
            tracing::info!(socket = %self.socket.display(), "dmi edgecore stand-in stopped");
        }
    }

    /// Stops and starts again on the same socket path.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.resume()
    }

    /// What `MapperRegister(withData)` answers from now on: the devices and
    /// models converted as edgecore does (`FloatValue` numbers).
    pub fn set_register_response(&self, devices: &[Device], models: &[DeviceModel]) -> Result<()> {
        let device_list = devices
            .iter()
            .map(|d| device_to_proto(d, AnyEncoding::Edgecore))
            .collect::<Result<Vec<_>, _>>()?;
        let model_list = models.iter().map(model_to_proto).collect();
        *lock(&self.shared.register_response) = pb::MapperRegisterResponse {
            model_list,
            device_list,
        };
        Ok(())
    }

    /// Switches the rate limiter.
    pub fn set_limit(&self, limit: Limit) {
        *lock(&self.shared.limit) = limit;
    }

    /// A copy of everything recorded so far.
    pub fn recorded(&self) -> Recorded {
        lock(&self.shared.recorded).clone()
    }

    /// Waits until `f` returns `Some` on the recordings (re-checked on every
    /// recorded call), for at most [`WAIT`].
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn(&Recorded) -> Option<T>) -> Result<T> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(t) = f(&lock(&self.shared.recorded)) {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "timed out waiting for {what}; recorded: {:#?}",
                    self.recorded()
                );
            }
        }
    }

    /// Waits for the `n`th (1-based) registration and returns it.
    pub async fn wait_registrations(&self, n: usize) -> Result<pb::MapperRegisterRequest> {
        self.wait_for(&format!("registration #{n}"), |r| {
            r.registrations.get(n - 1).cloned()
        })
        .await
    }

    /// A client for the mapper's socket, from the address of the latest
    /// registration (as edgecore finds it).
    pub async fn mapper_client(&self) -> Result<MapperClient> {
        let reg = self.wait_registrations(1).await?;
        let addr = reg.mapper.map(|m| m.address).unwrap_or_default();
        let path =
            PathBuf::from(String::from_utf8(addr).context("MapperInfo.address is not UTF-8")?);
        MapperClient::connect(&path).await
    }
}

/// edgecore's side of `DeviceMapperService`.
#[derive(Debug, Clone)]
pub struct MapperClient {
    client: DeviceMapperServiceClient<Channel>,
}

impl MapperClient {
    pub async fn connect(path: &Path) -> Result<Self> {
        let channel = mapper_dmi::uds::connect(path, Duration::from_secs(5)).await?;
        Ok(Self {
            client: DeviceMapperServiceClient::new(channel),
        })
    }

    fn proto(d: &Device) -> Result<pb::Device> {
        Ok(device_to_proto(d, AnyEncoding::Edgecore)?)
    }

    pub async fn register_device(&self, d: &Device) -> Result<pb::RegisterDeviceResponse, Status> {
        let device = Self::proto(d).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let r = self
            .client
            .clone()
            .register_device(pb::RegisterDeviceRequest {
                device: Some(device),
            })
            .await?;
        Ok(r.into_inner())
    }

    pub async fn update_device(&self, d: &Device) -> Result<(), Status> {
        let device = Self::proto(d).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.client
            .clone()
            .update_device(pb::UpdateDeviceRequest {
                device: Some(device),
            })
            .await?;
        Ok(())
    }

    pub async fn remove_device(&self, namespace: &str, name: &str) -> Result<(), Status> {
        let req = pb::RemoveDeviceRequest {
            device_name: name.into(),
            device_namespace: namespace.into(),
        };
        self.client.clone().remove_device(req).await?;
        Ok(())
    }

    pub async fn create_device_model(&self, m: &DeviceModel) -> Result<(), Status> {
        let req = pb::CreateDeviceModelRequest {
            model: Some(model_to_proto(m)),
        };
        self.client.clone().create_device_model(req).await?;
        Ok(())
    }

    pub async fn update_device_model(&self, m: &DeviceModel) -> Result<(), Status> {
        let req = pb::UpdateDeviceModelRequest {
            model: Some(model_to_proto(m)),
        };
        self.client.clone().update_device_model(req).await?;
        Ok(())
    }

    /// `GetDevice`, converted back to the model.
    pub async fn get_device(&self, namespace: &str, name: &str) -> Result<Device> {
        let req = pb::GetDeviceRequest {
            device_name: name.into(),
            device_namespace: namespace.into(),
        };
        let r = self.client.clone().get_device(req).await?.into_inner();
        let d = r
            .device
            .ok_or_else(|| anyhow!("GetDevice answered without a device"))?;
        Ok(device_from_proto(&d)?)
    }
}

/// A `ros2` device with one property per `(name, desired)`; read properties
/// take `sensor_msgs/msg/BatteryState.percentage` from `battery_state`.
pub fn ros2_device(
    namespace: &str,
    name: &str,
    model: &str,
    props: &[(&str, Option<&str>)],
) -> Device {
    let properties = props
        .iter()
        .map(|(p, desired)| DeviceProperty {
            name: (*p).into(),
            desired: desired.map(|v| TwinProperty { value: v.into(), metadata: BTreeMap::new() }),
            visitors: Some(ProtocolConfig {
                protocol_name: "ros2".into(),
                config_data: Some(json!({"topic": "battery_state", "type": "sensor_msgs/msg/BatteryState", "field": "percentage"})),
            }),
            report_cycle: Some(1000),
            collect_cycle: Some(1000),
            report_to_cloud: Some(true),
            push_method: None,
        })
        .collect();
    let mut d = Device::new(
        name,
        DeviceSpec {
            device_model_ref: Some(DeviceModelRef { name: model.into() }),
            protocol: Some(ProtocolConfig {
                protocol_name: "ros2".into(),
                config_data: Some(json!({"domainId": 3, "namespace": format!("/{name}")})),
            }),
            properties,
            ..Default::default()
        },
    );
    d.metadata.namespace = Some(namespace.into());
    d
}

/// A model with a `FLOAT` ReadWrite property per name.
pub fn ros2_model(namespace: &str, name: &str, props: &[&str]) -> DeviceModel {
    let properties = props
        .iter()
        .map(|p| ModelProperty {
            name: (*p).into(),
            type_: PropertyType::Float,
            access_mode: Some(AccessMode::ReadWrite),
            ..Default::default()
        })
        .collect();
    let mut m = DeviceModel::new(
        name,
        DeviceModelSpec {
            properties,
            ..Default::default()
        },
    );
    m.metadata.namespace = Some(namespace.into());
    m
}

/// A DMI config for tests: sockets in `dir`, fast backoffs.
pub fn test_config(dir: &Path, edgecore_socket: &Path) -> DmiConfig {
    DmiConfig {
        edgecore_socket: edgecore_socket.to_path_buf(),
        socket: dir.join("ros2.sock"),
        rate_limit: mapper_dmi::config::RateLimit {
            per_second: 50.0,
            burst: 20,
        },
        min_report_interval_ms: 0,
        rate_limited_backoff: mapper_dmi::config::Backoff {
            initial_ms: 50,
            max_ms: 400,
        },
        reregister_backoff: mapper_dmi::config::Backoff {
            initial_ms: 50,
            max_ms: 400,
        },
        call_timeout_ms: 2000,
        ..DmiConfig::default()
    }
}

/// The DMI backend running in this process, with the core's ends of its channels.
#[derive(Debug)]
pub struct RunningBackend {
    pub events: mpsc::Receiver<BackendEvent>,
    pub reports: mpsc::Sender<Report>,
    pub shutdown: CancellationToken,
    pub stats: Arc<DmiStats>,
    task: Option<JoinHandle<Result<(), DmiError>>>,
}

impl RunningBackend {
    pub fn start(config: DmiConfig) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let (io, events, reports) = backend::channels(shutdown.clone());
        let backend = mapper_dmi::DmiBackend::new(config)?;
        let stats = backend.stats();
        let task = tokio::spawn(backend.run(io));
        Ok(Self {
            events,
            reports,
            shutdown,
            stats,
            task: Some(task),
        })
    }

    /// The next event from the backend (at most [`WAIT`]).
    pub async fn next_event(&mut self) -> Result<BackendEvent> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .map_err(|_| anyhow!("timed out waiting for a backend event"))?
            .ok_or_else(|| anyhow!("the backend closed its event channel"))
    }

    /// Sends a report as the core does.
    pub async fn report(&self, r: Report) -> Result<()> {
        self.reports
            .send(r)
            .await
            .map_err(|_| anyhow!("the backend stopped taking reports"))
    }

    /// Cancels and waits for the backend's result.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => Ok(tokio::time::timeout(WAIT, task)
                .await
                .context("backend did not stop")???),
            None => Ok(()),
        }
    }
}

impl Drop for RunningBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Drop for DmiEdgecore {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            task.abort();
        }
    }
}
