//! The mapper's side of DMI: `DeviceMapperService` on our own Unix socket,
//! called by edgecore to push devices and models down.

use std::sync::Arc;

use mapper_core::backend::{BackendEvent, DeviceBinding};
use mapper_core::model::{Device, DeviceId};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::convert::{
    device_from_proto, device_to_proto, model_from_proto, namespace_or_default, AnyEncoding,
};
use crate::error::DmiError;
use crate::proto::v1beta1 as pb;
use crate::proto::v1beta1::device_mapper_service_server::{
    DeviceMapperService, DeviceMapperServiceServer,
};
use crate::tables::Tables;

/// The `DeviceMapperService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct MapperService {
    pub protocol: String,
    pub tables: Arc<Tables>,
    pub events: mpsc::Sender<BackendEvent>,
}

impl MapperService {
    async fn emit(&self, event: BackendEvent) -> Result<(), Status> {
        self.events
            .send(event)
            .await
            .map_err(|_| Status::unavailable("the mapper is shutting down"))
    }

    async fn emit_all(&self, bindings: Vec<DeviceBinding>) -> Result<(), Status> {
        for b in bindings {
            self.emit(BackendEvent::Upsert(b)).await?;
        }
        Ok(())
    }

    /// Checks and converts a device from edgecore.
    fn accept(&self, device: Option<&pb::Device>, call: &'static str) -> Result<Device, Status> {
        let d = device.ok_or_else(|| {
            Status::invalid_argument(format!("{call}: the request has no device"))
        })?;
        let protocol = d
            .spec
            .as_ref()
            .and_then(|s| s.protocol.as_ref())
            .map(|p| p.protocol_name.as_str())
            .unwrap_or("");
        if protocol != self.protocol {
            tracing::warn!(call, device = %d.name, namespace = %d.namespace, protocol, "refusing a device of another protocol");
            return Err(Status::invalid_argument(format!(
                "device {}/{} has spec.protocol.protocolName {protocol:?}; this mapper serves protocol {:?} only",
                namespace_or_default(&d.namespace),
                d.name,
                self.protocol
            )));
        }
        device_from_proto(d).map_err(|e| Status::invalid_argument(format!("{call}: {e}")))
    }
}

#[tonic::async_trait]
impl DeviceMapperService for MapperService {
    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let device = self.accept(request.get_ref().device.as_ref(), "RegisterDevice")?;
        let id = DeviceId::of(&device);
        tracing::info!(device = %id, "RegisterDevice");
        let binding = self.tables.upsert_device(device);
        self.emit(BackendEvent::Upsert(binding)).await?;
        Ok(Response::new(pb::RegisterDeviceResponse {
            device_name: id.name,
            device_namespace: id.namespace,
        }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let r = request.into_inner();
        if r.device_name.is_empty() {
            return Err(Status::invalid_argument(
                "RemoveDevice: deviceName is empty",
            ));
        }
        let id = DeviceId::new(namespace_or_default(&r.device_namespace), r.device_name);
        let known = self.tables.remove_device(&id);
        tracing::info!(device = %id, known, "RemoveDevice");
        self.emit(BackendEvent::Remove(id)).await?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn update_device(
        &self,
        request: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::UpdateDeviceResponse>, Status> {
        let device = self.accept(request.get_ref().device.as_ref(), "UpdateDevice")?;
        tracing::info!(device = %DeviceId::of(&device), "UpdateDevice");
        let binding = self.tables.upsert_device(device);
        self.emit(BackendEvent::Upsert(binding)).await?;
        Ok(Response::new(pb::UpdateDeviceResponse {}))
    }

    async fn create_device_model(
        &self,
        request: Request<pb::CreateDeviceModelRequest>,
    ) -> Result<Response<pb::CreateDeviceModelResponse>, Status> {
        let m = request.into_inner().model.ok_or_else(|| {
            Status::invalid_argument("CreateDeviceModel: the request has no model")
        })?;
        let model = model_from_proto(&m)
            .map_err(|e| Status::invalid_argument(format!("CreateDeviceModel: {e}")))?;
        let (name, namespace) = (m.name.clone(), namespace_or_default(&m.namespace));
        tracing::info!(model = %name, %namespace, "CreateDeviceModel");
        let affected = self.tables.put_model(model);
        self.emit_all(affected).await?;
        Ok(Response::new(pb::CreateDeviceModelResponse {
            device_model_name: name,
            device_model_namespace: namespace,
        }))
    }

    async fn remove_device_model(
        &self,
        request: Request<pb::RemoveDeviceModelRequest>,
    ) -> Result<Response<pb::RemoveDeviceModelResponse>, Status> {
        let r = request.into_inner();
        let namespace = namespace_or_default(&r.model_namespace);
        tracing::info!(model = %r.model_name, %namespace, "RemoveDeviceModel");
        let affected = self.tables.remove_model(&namespace, &r.model_name);
        self.emit_all(affected).await?;
        Ok(Response::new(pb::RemoveDeviceModelResponse {}))
    }

    async fn update_device_model(
        &self,
        request: Request<pb::UpdateDeviceModelRequest>,
    ) -> Result<Response<pb::UpdateDeviceModelResponse>, Status> {
        let m = request.into_inner().model.ok_or_else(|| {
            Status::invalid_argument("UpdateDeviceModel: the request has no model")
        })?;
        let model = model_from_proto(&m)
            .map_err(|e| Status::invalid_argument(format!("UpdateDeviceModel: {e}")))?;
        tracing::info!(model = %m.name, namespace = %namespace_or_default(&m.namespace), "UpdateDeviceModel");
        let affected = self.tables.put_model(model);
        self.emit_all(affected).await?;
        Ok(Response::new(pb::UpdateDeviceModelResponse {}))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let r = request.into_inner();
        let id = DeviceId::new(namespace_or_default(&r.device_namespace), r.device_name);
        let device = self
            .tables
            .get_device(&id)
            .ok_or_else(|| Status::not_found(format!("device {id} is not known to this mapper")))?;
        let device = device_to_proto(&device, AnyEncoding::Lossless)
            .map_err(|e| Status::internal(format!("GetDevice {id}: {e}")))?;
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(device),
        }))
    }
}

/// Serves `DeviceMapperService` on `listener` until `shutdown`.
pub(crate) async fn serve(
    service: MapperService,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), DmiError> {
    tonic::transport::Server::builder()
        .add_service(DeviceMapperServiceServer::new(service))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(DmiError::Serve)
}
