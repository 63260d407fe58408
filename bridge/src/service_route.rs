//! The DDS side of relayed ROS 2 services, used by both modes (the server may be on either
//! side of a link):
//!
//! - [`ServedService`]: where the real server runs. Requests from the link are written on
//!   `rq/<name>Request` with this bridge's own client id and a fresh sequence number
//!   ([`ServerSide`]); the server's replies read on `rr/<name>Reply` get the caller's original
//!   request header back and go to the link they came from. Calls past their timeout expire
//!   (logged, counted).
//! - [`proxy_sink`]: where the callers are. A stand-in server: a reader of
//!   `rq/<name>Request` feeds the link's request route, and the replies coming back are written on
//!   `rr/<name>Reply` unchanged (their header is the caller's, so the caller recognises them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use ros2::dds::{History, Participant, Qos, RawWriter};
use ros2::names::RosName;

use crate::link::frame::{Announce, RouteKind};
use crate::metrics::{Direction, DropReason, Metrics};
use crate::reader::{PeerBridges, SampleHook, Target, TopicReader};
use crate::relay::{LinkCommand, LinkContext, LinkHandle, OutRouteSpec, Sink};
use crate::routing::{far_qos, route_settings};
use crate::service::{guid_to_client_id, ServerSide, DEFAULT_MAX_PENDING};

/// Priority of service routes (interactive).
pub const SERVICE_PRIORITY: u8 = 1;

/// `pkg::srv::dds_::X_Request_` -> `pkg::srv::dds_::X_Response_`.
pub fn response_type(request: &str) -> Option<String> {
    request
        .strip_suffix("_Request_")
        .map(|base| format!("{base}_Response_"))
}

/// A service whose real server is in this process's DDS domain.
pub struct ServedService {
    /// The local ROS name of the service.
    pub name: String,
    server: Arc<Mutex<ServerSide<Arc<str>>>>,
    writer: Arc<RawWriter>,
    reader: TopicReader,
    /// Request DDS type.
    pub request_type: String,
    /// Reply DDS type.
    pub reply_type: String,
}

impl std::fmt::Debug for ServedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedService")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServedService {
    /// Creates the request writer and the reply reader for the server of `name`.
    pub fn start(
        participant: &Participant,
        name: &RosName,
        request_type: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let reply_type = response_type(request_type)
            .ok_or_else(|| format!("{request_type} is not a request type"))?;
        let rq = name.to_dds_request().map_err(|e| e.to_string())?;
        let rr = name.to_dds_reply().map_err(|e| e.to_string())?;
        let qos = Qos::services();
        let writer = Arc::new(
            participant
                .writer(&rq, request_type, &qos)
                .map_err(|e| e.to_string())?,
        );
        let server = Arc::new(Mutex::new(ServerSide::new(
            guid_to_client_id(&writer.guid()),
            timeout,
            DEFAULT_MAX_PENDING,
        )));
        let hook_server = server.clone();
        let hook: SampleHook = Arc::new(move |_writer, payload| {
            let mut s = hook_server.lock().ok()?;
            match s.on_reply(&payload, std::time::Instant::now()) {
                Ok(Some((link, p))) => Some(vec![(link, p)]),
                _ => None,
            }
        });
        // Replies of a server are never a bridge's own writes: no peer-bridge filter here.
        let reader = TopicReader::start(
            participant,
            PeerBridges::default(),
            &rr,
            &reply_type,
            qos.with_history(History::KeepLast(100)),
            Some(hook),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.as_str().to_owned(),
            server,
            writer,
            reader,
            request_type: request_type.to_owned(),
            reply_type,
        })
    }

    /// Sends this service's replies on `link` as route `route_name`, and announces the reply
    /// route there (the far side then serves the service to its callers).
    pub async fn offer(&self, link: &LinkHandle, route_name: &str) {
        let qos = Qos::services();
        let mut settings = route_settings(None, &qos);
        settings.priority = SERVICE_PRIORITY;
        let spec = OutRouteSpec {
            name: route_name.to_owned(),
            kind: RouteKind::ServiceReply,
            type_name: self.reply_type.clone(),
            request_type: Some(self.request_type.clone()),
            qos: far_qos(&qos, 10),
            settings,
            local_name: self.name.clone(),
        };
        let _ = link.commands.send(LinkCommand::AddRoute(spec)).await;
        self.reader.add_target(Target {
            link: link.clone(),
            name: Arc::from(route_name),
            kind: RouteKind::ServiceReply,
        });
    }

    /// The sink of the request route from `origin`: maps each request's identity and writes it
    /// to the server.
    pub fn request_sink(self: &Arc<Self>, origin: Arc<str>) -> Sink {
        let svc = self.clone();
        Sink {
            local_name: self.name.clone(),
            deliver: Box::new(move |payload: Bytes| {
                let svc = svc.clone();
                let origin = origin.clone();
                async move {
                    let req = svc
                        .server
                        .lock()
                        .map_err(|_| "service state poisoned".to_string())?
                        .on_request(&payload, origin, std::time::Instant::now())
                        .map_err(|e| e.to_string())?;
                    svc.writer.write_async(req).await.map_err(|e| e.to_string())
                }
                .boxed()
            }),
            guards: Vec::new(),
        }
    }

    /// Expires calls past their timeout: logged and counted per link.
    pub fn expire(&self, metrics: &Metrics) {
        let expired = match self.server.lock() {
            Ok(mut s) => s.expire(std::time::Instant::now()),
            Err(_) => return,
        };
        for (link, id) in expired {
            tracing::warn!(service = %self.name, link = %link, client = id.client_guid,
                sequence = id.sequence, "service call timed out");
            metrics
                .route(&link, &self.name, Direction::In)
                .dropped(DropReason::ServiceTimeout, 1);
        }
    }
}

/// Services served here, by local name.
pub type ServedServices = Arc<Mutex<HashMap<String, Arc<ServedService>>>>;

/// Expires the calls of every served service.
pub fn expire_all(services: &ServedServices, metrics: &Metrics) {
    let all: Vec<Arc<ServedService>> = match services.lock() {
        Ok(m) => m.values().cloned().collect(),
        Err(_) => return,
    };
    for s in all {
        s.expire(metrics);
    }
}

/// Withdraws the request route when the proxy's reply route goes.
struct RemoveOnDrop {
    handle: LinkHandle,
    name: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = self.handle.commands.try_send(LinkCommand::RemoveRoute {
            name: self.name.clone(),
            kind: RouteKind::ServiceRequest,
        });
    }
}

/// The sink of a service reply route announced by the peer (whose side has the server): a
/// stand-in server named `local` here. Its request reader feeds a request route back.
pub fn proxy_sink(
    participant: &Participant,
    bridges: &PeerBridges,
    ctx: &LinkContext,
    a: &Announce,
    local: &RosName,
) -> Result<Sink, String> {
    let request_type = a
        .request_type
        .clone()
        .ok_or_else(|| "service route without request_type".to_string())?;
    let rq = local.to_dds_request().map_err(|e| e.to_string())?;
    let rr = local.to_dds_reply().map_err(|e| e.to_string())?;
    let qos = Qos::services();
    let writer = participant
        .writer(&rr, &a.type_name, &qos)
        .map_err(|e| e.to_string())?;
    let reader = TopicReader::start(
        participant,
        bridges.clone(),
        &rq,
        &request_type,
        qos.with_history(History::KeepLast(100)),
        None,
    )
    .map_err(|e| e.to_string())?;
    reader.add_target(Target {
        link: ctx.handle.clone(),
        name: Arc::from(a.name.as_str()),
        kind: RouteKind::ServiceRequest,
    });
    let mut settings = route_settings(None, &qos);
    settings.priority = SERVICE_PRIORITY;
    let spec = OutRouteSpec {
        name: a.name.clone(),
        kind: RouteKind::ServiceRequest,
        type_name: request_type,
        request_type: None,
        qos: far_qos(&qos, 10),
        settings,
        local_name: local.as_str().to_owned(),
    };
    ctx.handle
        .commands
        .try_send(LinkCommand::AddRoute(spec))
        .map_err(|_| "link busy".to_string())?;
    let mut sink = crate::edge::writer_sink(local.as_str().to_owned(), Arc::new(writer));
    sink.guards.push(Box::new(reader));
    sink.guards.push(Box::new(RemoveOnDrop {
        handle: ctx.handle.clone(),
        name: a.name.clone(),
    }));
    Ok(sink)
}
