//! The Kubernetes API backend (`mapper-kube`) against the in-process fake API
//! server (`integration_tests::fake_kube`): this test acts as the mapper core
//! on the backend's `BackendIo`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use integration_tests::fake_kube::{ApplyAs, FakeKube};
use mapper_core::backend::{self, BackendEvent, DeviceState, Rejection, Report, TwinReport};
use mapper_core::model::DeviceId;
use mapper_kube::{KubeConfig, KubeError, StatusMode, StatusSubresource};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

const MODEL: &str = r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: ros2-robot, namespace: default}
spec:
  protocol: ros2
  properties:
    - {name: battery, type: FLOAT, accessMode: ReadOnly, minimum: "0", maximum: "100"}
    - {name: speed, type: DOUBLE, accessMode: ReadWrite, minimum: "0", maximum: "1.5"}
"#;

fn device_yaml(name: &str, node: &str, protocol: &str, desired_speed: &str) -> String {
    format!(
        r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: {name}, namespace: default}}
spec:
  deviceModelRef: {{name: ros2-robot}}
  nodeName: {node}
  protocol: {{protocolName: {protocol}}}
  properties:
    - name: battery
      reportCycle: 1000
      visitors:
        protocolName: ros2
        configData: {{topic: battery_state, type: sensor_msgs/msg/BatteryState, field: percentage}}
    - name: speed
      desired: {{value: "{desired_speed}", metadata: {{type: double}}}}
"#
    )
}

/// The test's side of the backend: what the core would hold.
struct Core {
    events: mpsc::Receiver<BackendEvent>,
    reports: mpsc::Sender<Report>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), KubeError>>,
}

impl Core {
    fn start(fake: &FakeKube, config: KubeConfig) -> Core {
        integration_tests::init_tracing();
        let shutdown = CancellationToken::new();
        let (io, events, reports) = backend::channels(shutdown.clone());
        let task = tokio::spawn(mapper_kube::run(config, fake.client(), io));
        Core {
            events,
            reports,
            shutdown,
            task,
        }
    }

    async fn next(&mut self) -> anyhow::Result<BackendEvent> {
        match tokio::time::timeout(T, self.events.recv()).await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => bail!("backend stopped"),
            Err(_) => bail!("no backend event within {T:?}"),
        }
    }

    /// The next event that is not an Upsert/Remove of the ignored kinds.
    async fn next_sync(&mut self) -> anyhow::Result<Vec<String>> {
        loop {
            if let BackendEvent::Sync(b) = self.next().await? {
                let mut names: Vec<String> = b.iter().map(|b| b.id().name).collect();
                names.sort();
                return Ok(names);
            }
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(T, self.task)
            .await
            .context("backend did not stop")??
            .context("backend result")?;
        Ok(())
    }
}

fn config(mode: StatusMode, sub: StatusSubresource) -> KubeConfig {
    let mut c = KubeConfig::new("edge-1");
    c.status_mode = mode;
    c.status_subresource = sub;
    c.min_status_interval_ms = 50;
    c
}

fn twin(property: &str, value: &str, observed: Option<&str>, ty: &'static str) -> TwinReport {
    TwinReport {
        property: property.into(),
        reported: value.into(),
        observed_desired: observed.map(str::to_owned),
        value_type: ty,
        timestamp_ms: backend::now_ms(),
    }
}

fn report(name: &str, twins: Vec<TwinReport>, state: Option<DeviceState>) -> Report {
    Report {
        device: DeviceId::new("default", name),
        twins,
        state,
        rejections: vec![],
        report_to_cloud: true,
    }
}

fn find_twin<'a>(obj: &'a Value, property: &str) -> Option<&'a Value> {
    obj.pointer("/status/twins")?
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == property)
}

fn reported(obj: &Value, property: &str) -> Option<String> {
    find_twin(obj, property)?
        .pointer("/reported/value")?
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_sync_upsert_remove_and_resync() -> anyhow::Result<()> {
    let fake = FakeKube::start(false).await;
    fake.apply_yaml(MODEL)?;
    fake.apply_yaml(&device_yaml("robot1", "edge-1", "ros2", "0.5"))?;
    fake.apply_yaml(&device_yaml("robot2", "edge-1", "ros2", "0.5"))?;
    fake.apply_yaml(&device_yaml("elsewhere", "edge-2", "ros2", "0.5"))?;
    fake.apply_yaml(&device_yaml("plc", "edge-1", "modbus", "0.5"))?;
    // Garbage in a property (a string cycle), stored as a schema-less CRD would.
    fake.apply_yaml(
        &device_yaml("broken", "edge-1", "ros2", "0.5")
            .replace("reportCycle: 1000", "reportCycle: fast"),
    )?;

    let mut core = Core::start(&fake, config(StatusMode::Device, StatusSubresource::Auto));
    let BackendEvent::Sync(bindings) = core.next().await? else {
        bail!("first event is not a Sync")
    };
    let mut names: Vec<String> = bindings.iter().map(|b| b.id().name).collect();
    names.sort();
    assert_eq!(
        names,
        ["robot1", "robot2"],
        "only this node's ros2 devices, the broken one skipped"
    );
    let r1 = bindings.iter().find(|b| b.id().name == "robot1").unwrap();
    assert_eq!(
        r1.model.as_ref().map(|m| m.spec.properties.len()),
        Some(2),
        "the device comes with its model"
    );

    // The cloud console changes a desired value.
    fake.patch_json(
        "Device",
        "default",
        "robot1",
        "console",
        false,
        json!({"spec": {"properties": [
            {"name": "battery", "reportCycle": 1000},
            {"name": "speed", "desired": {"value": "0.8", "metadata": {"type": "double"}}}
        ]}}),
    )?;
    match core.next().await? {
        BackendEvent::Upsert(b) => {
            assert_eq!(b.id().name, "robot1");
            assert_eq!(
                b.device.spec.properties[1].desired.as_ref().unwrap().value,
                "0.8"
            );
        }
        other => bail!("expected Upsert, got {other:?}"),
    }

    // A model change re-Upserts both devices that use it.
    fake.patch_json(
        "DeviceModel",
        "default",
        "ros2-robot",
        "console",
        false,
        json!({"spec": {"properties": [
            {"name": "battery", "type": "FLOAT", "accessMode": "ReadOnly"},
            {"name": "speed", "type": "DOUBLE", "accessMode": "ReadWrite", "maximum": "2.0"}
        ]}}),
    )?;
    let mut upserted = Vec::new();
    for _ in 0..2 {
        match core.next().await? {
            BackendEvent::Upsert(b) => {
                assert_eq!(
                    b.model.as_ref().unwrap().spec.properties[1]
                        .maximum
                        .as_deref(),
                    Some("2.0")
                );
                upserted.push(b.id().name);
            }
            other => bail!("expected Upsert, got {other:?}"),
        }
    }
    upserted.sort();
    assert_eq!(upserted, ["robot1", "robot2"]);

    // Another node's device and the broken one change: nothing for us.
    fake.patch_json(
        "Device",
        "default",
        "elsewhere",
        "console",
        false,
        json!({"metadata": {"labels": {"x": "y"}}}),
    )?;
    // Deleting gives Remove.
    fake.delete("Device", "default", "robot2")?;
    match core.next().await? {
        BackendEvent::Remove(id) => assert_eq!(id, DeviceId::new("default", "robot2")),
        other => bail!("expected Remove, got {other:?}"),
    }

    // Moving a device onto this node gives Upsert.
    fake.patch_json(
        "Device",
        "default",
        "elsewhere",
        "console",
        false,
        json!({"spec": {"nodeName": "edge-1"}}),
    )?;
    match core.next().await? {
        BackendEvent::Upsert(b) => assert_eq!(b.id().name, "elsewhere"),
        other => bail!("expected Upsert, got {other:?}"),
    }

    // Compaction: the watches are cut and resume with 410 Gone -> relist -> Sync.
    fake.truncate_history();
    fake.apply_yaml(&device_yaml("robot3", "edge-1", "ros2", "0.1"))?;
    // Each watcher (devices, models) relists and each relist ends in a Sync;
    // the device relist is the one that sees robot3.
    let names = loop {
        match core.next().await? {
            BackendEvent::Sync(b) => {
                let mut n: Vec<String> = b.iter().map(|b| b.id().name).collect();
                n.sort();
                if n.iter().any(|n| n == "robot3") {
                    break n;
                }
                assert_eq!(
                    n,
                    ["elsewhere", "robot1"],
                    "a Sync before the device relist"
                );
            }
            other => bail!("expected Sync, got {other:?}"),
        }
    };
    assert_eq!(names, ["elsewhere", "robot1", "robot3"]);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("GET /apis/devices.kubeedge.io/v1beta1/devices")),
        "the devices were listed cluster-wide"
    );
    core.stop().await
}

async fn status_round_trip(
    mode: StatusMode,
    server_sub: bool,
    config_sub: StatusSubresource,
) -> anyhow::Result<()> {
    let fake = FakeKube::start(server_sub).await;
    fake.apply_yaml(MODEL)?;
    fake.apply_yaml(&device_yaml("robot1", "edge-1", "ros2", "0.5"))?;
    let kind = match mode {
        StatusMode::Device => "Device",
        StatusMode::DeviceStatus => "DeviceStatus",
    };
    // Another writer was there first (Device mode: in the Device's status).
    if mode == StatusMode::Device {
        fake.patch_status_json(
            kind,
            "default",
            "robot1",
            "console",
            json!({"status": {"twins": [{"propertyName": "temperature", "reported": {"value": "21", "metadata": {"type": "float"}}}]}}),
        )?;
    }

    let mut core = Core::start(&fake, config(mode, config_sub));
    assert_eq!(core.next_sync().await?, ["robot1"]);
    core.reports
        .send(report(
            "robot1",
            vec![
                twin("battery", "42.5", None, "float"),
                twin("speed", "0.5", Some("0.5"), "double"),
            ],
            Some(DeviceState::Online),
        ))
        .await?;
    let obj = fake
        .wait_for(
            kind,
            "default",
            "robot1",
            |o| reported(o, "battery").as_deref() == Some("42.5"),
            T,
        )
        .await?;
    let battery = find_twin(&obj, "battery").unwrap();
    assert_eq!(battery["reported"]["metadata"]["type"], "float");
    let ts: i64 = battery["reported"]["metadata"]["timestamp"]
        .as_str()
        .unwrap()
        .parse()?;
    assert!(ts > 1_600_000_000_000, "timestamp in ms: {ts}");
    let speed = find_twin(&obj, "speed").unwrap();
    assert_eq!(speed["observedDesired"]["value"], "0.5");
    assert_eq!(speed["observedDesired"]["metadata"]["type"], "double");
    assert_eq!(obj["status"]["state"], "online");
    let lot = obj["status"]["lastOnlineTime"].as_str().unwrap();
    lot.parse::<k8s_openapi::jiff::Timestamp>()
        .with_context(|| format!("RFC 3339: {lot}"))?;

    if mode == StatusMode::DeviceStatus {
        let device = fake.get("Device", "default", "robot1").unwrap();
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Device");
        assert_eq!(owner["name"], "robot1");
        assert_eq!(owner["uid"], device["metadata"]["uid"]);
        assert!(
            device.get("status").is_none(),
            "the Device itself is not written"
        );
    } else {
        assert!(
            reported(&obj, "temperature").is_some(),
            "the earlier writer's twin survived: {obj}"
        );
    }

    // Another writer adds its own twin (read-modify-write, as it must) and,
    // by server-side apply, an extension.
    let mut twins = obj["status"]["twins"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    twins.retain(|t| t["propertyName"] != "humidity");
    twins.push(json!({"propertyName": "humidity", "reported": {"value": "40", "metadata": {"type": "int"}}}));
    fake.patch_status_json(
        kind,
        "default",
        "robot1",
        "console",
        json!({"status": {"twins": twins}}),
    )?;
    fake.apply(
        kind,
        "default",
        "robot1",
        ApplyAs {
            manager: "dashboard",
            status: server_sub,
            force: false,
        },
        json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": kind,
            "metadata": {"name": "robot1", "namespace": "default"},
            "status": {"extensions": {"dashboard": "pinned"}}
        }),
    )?;

    core.reports
        .send(report(
            "robot1",
            vec![twin("battery", "41", None, "float")],
            Some(DeviceState::Offline),
        ))
        .await?;
    let obj = fake
        .wait_for(
            kind,
            "default",
            "robot1",
            |o| reported(o, "battery").as_deref() == Some("41"),
            T,
        )
        .await?;
    assert_eq!(
        reported(&obj, "humidity").as_deref(),
        Some("40"),
        "another writer's twin survives: {obj}"
    );
    assert_eq!(
        obj["status"]["extensions"]["dashboard"], "pinned",
        "another writer's field survives: {obj}"
    );
    assert_eq!(
        reported(&obj, "speed").as_deref(),
        Some("0.5"),
        "our earlier twin stays"
    );
    assert_eq!(obj["status"]["state"], "offline");
    assert_eq!(
        obj["status"]["lastOnlineTime"], lot,
        "lastOnlineTime is kept while offline"
    );
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .map(|m| m.iter().filter_map(|e| e["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        managers.contains(&"ros2-mapper") && managers.contains(&"dashboard"),
        "managers: {managers:?}"
    );

    // Where the writes went.
    let patches: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH"))
        .collect();
    assert!(
        patches
            .iter()
            .all(|p| p.ends_with("application/merge-patch+json")),
        "{patches:?}"
    );
    let to_status = patches.iter().filter(|p| p.contains("/status ")).count();
    match (server_sub, config_sub) {
        (true, _) => assert_eq!(to_status, patches.len(), "all to /status: {patches:?}"),
        (false, StatusSubresource::Auto) => assert_eq!(
            to_status, 1,
            "one probe of /status, then the main resource: {patches:?}"
        ),
        (false, _) => assert_eq!(to_status, 0, "{patches:?}"),
    }
    core.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_device_without_subresource_auto() -> anyhow::Result<()> {
    status_round_trip(StatusMode::Device, false, StatusSubresource::Auto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_device_with_subresource_auto() -> anyhow::Result<()> {
    status_round_trip(StatusMode::Device, true, StatusSubresource::Auto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_devicestatus_without_subresource() -> anyhow::Result<()> {
    status_round_trip(StatusMode::DeviceStatus, false, StatusSubresource::No).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_devicestatus_with_subresource() -> anyhow::Result<()> {
    status_round_trip(StatusMode::DeviceStatus, true, StatusSubresource::Yes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_coalesced_latest_wins() -> anyhow::Result<()> {
    let fake = FakeKube::start(true).await;
    fake.apply_yaml(MODEL)?;
    fake.apply_yaml(&device_yaml("robot1", "edge-1", "ros2", "0.5"))?;
    let mut cfg = config(StatusMode::Device, StatusSubresource::Yes);
    cfg.min_status_interval_ms = 2000;
    let mut core = Core::start(&fake, cfg);
    assert_eq!(core.next_sync().await?, ["robot1"]);
    for v in ["1", "2", "3", "4"] {
        core.reports
            .send(report(
                "robot1",
                vec![twin("battery", v, None, "float")],
                None,
            ))
            .await?;
    }
    fake.wait_for(
        "Device",
        "default",
        "robot1",
        |o| reported(o, "battery").as_deref() == Some("4"),
        T,
    )
    .await?;
    let writes = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    assert!(
        writes <= 2,
        "four reports within the interval make at most two writes, got {writes}"
    );
    core.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_creates_an_event() -> anyhow::Result<()> {
    let fake = FakeKube::start(false).await;
    fake.apply_yaml(MODEL)?;
    fake.apply_yaml(&device_yaml("robot1", "edge-1", "ros2", "9.9"))?;
    let mut core = Core::start(&fake, config(StatusMode::Device, StatusSubresource::No));
    assert_eq!(core.next_sync().await?, ["robot1"]);
    let mut r = report("robot1", vec![], None);
    r.rejections.push(Rejection {
        property: "speed".into(),
        value: "9.9".into(),
        reason: "above the maximum 1.5".into(),
    });
    core.reports.send(r).await?;
    fake.wait_until(|f| !f.events().is_empty(), T).await?;
    let ev = &fake.events()[0];
    assert_eq!(ev["reason"], "DesiredValueRejected");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["kind"], "Device");
    assert_eq!(ev["involvedObject"]["name"], "robot1");
    let uid = fake.get("Device", "default", "robot1").unwrap()["metadata"]["uid"].clone();
    assert_eq!(ev["involvedObject"]["uid"], uid);
    let msg = ev["message"].as_str().unwrap();
    assert!(
        msg.contains("speed") && msg.contains("9.9") && msg.contains("maximum"),
        "{msg}"
    );
    core.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespace_only() -> anyhow::Result<()> {
    let fake = FakeKube::start(false).await;
    fake.apply_yaml(MODEL)?;
    fake.apply_yaml(&device_yaml("robot1", "edge-1", "ros2", "0.5"))?;
    fake.apply_yaml(
        &device_yaml("robot9", "edge-1", "ros2", "0.5")
            .replace("namespace: default", "namespace: lab"),
    )?;
    let mut cfg = config(StatusMode::Device, StatusSubresource::Auto);
    cfg.namespace = Some("lab".into());
    let mut core = Core::start(&fake, cfg);
    assert_eq!(core.next_sync().await?, ["robot9"]);
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /apis/devices.kubeedge.io/v1beta1/namespaces/lab/devices")));
    core.stop().await
}

/// The fake itself: server-side apply ownership and conflicts, 410 on an old
/// resourceVersion, preconditions, field selectors on spec fields refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_behaves() -> anyhow::Result<()> {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
    use kube::core::ApiResource;
    use mapper_core::model::Device;

    let fake = FakeKube::start(true).await;
    fake.apply_yaml(&device_yaml("robot1", "edge-1", "ros2", "0.5"))?;
    let ar = ApiResource::erase::<Device>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(fake.client(), "default", &ar);

    // Apply by two managers: each keeps its fields; a conflicting apply fails without force.
    let body = |v: Value| -> Value {
        let mut b = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": {"name": "robot1"}});
        b["status"] = v;
        b
    };
    api.patch_status(
        "robot1",
        &PatchParams::apply("a"),
        &Patch::Apply(body(json!({"state": "online"}))),
    )
    .await?;
    api.patch_status(
        "robot1",
        &PatchParams::apply("b"),
        &Patch::Apply(body(json!({"extensions": {"k": "v"}}))),
    )
    .await?;
    let o = fake.get("Device", "default", "robot1").unwrap();
    assert_eq!(o["status"]["state"], "online");
    assert_eq!(o["status"]["extensions"]["k"], "v");
    let err = api
        .patch_status(
            "robot1",
            &PatchParams::apply("b"),
            &Patch::Apply(body(json!({"state": "offline"}))),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
    // b stops applying `extensions`: removed, a's state stays.
    api.patch_status(
        "robot1",
        &PatchParams::apply("b").force(),
        &Patch::Apply(body(json!({"state": "offline"}))),
    )
    .await?;
    let o = fake.get("Device", "default", "robot1").unwrap();
    assert_eq!(o["status"]["state"], "offline");
    assert!(o["status"].get("extensions").is_none(), "{o}");

    // Main resource writes do not change the status when the subresource exists.
    api.patch(
        "robot1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"state": "x"}})),
    )
    .await?;
    assert_eq!(
        fake.get("Device", "default", "robot1").unwrap()["status"]["state"],
        "offline"
    );

    // Precondition.
    let err = api
        .patch(
            "robot1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"nodeName": "x"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );

    // A field selector on a spec field is refused, on metadata.name works.
    assert!(api
        .list(&ListParams::default().fields("spec.nodeName=edge-1"))
        .await
        .is_err());
    assert_eq!(
        api.list(&ListParams::default().fields("metadata.name=robot1"))
            .await?
            .items
            .len(),
        1
    );
    assert_eq!(
        api.list(&ListParams::default().fields("metadata.name=nope"))
            .await?
            .items
            .len(),
        0
    );

    // Watch from a current RV sees a change; from a truncated one gets 410.
    let rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api.watch(&WatchParams::default(), &rv).await?.boxed();
    fake.patch_json(
        "Device",
        "default",
        "robot1",
        "console",
        false,
        json!({"metadata": {"labels": {"a": "b"}}}),
    )?;
    loop {
        match tokio::time::timeout(T, stream.try_next()).await?? {
            Some(WatchEvent::Modified(o)) => {
                assert_eq!(o.metadata.labels.unwrap()["a"], "b");
                break;
            }
            Some(WatchEvent::Bookmark(_)) => continue,
            other => bail!("unexpected {other:?}"),
        }
    }
    fake.truncate_history();
    let mut stream = api.watch(&WatchParams::default(), &rv).await?.boxed();
    match tokio::time::timeout(T, stream.try_next()).await?? {
        Some(WatchEvent::Error(s)) => assert_eq!(s.code, 410),
        other => bail!("expected 410, got {other:?}"),
    }
    Ok(())
}
