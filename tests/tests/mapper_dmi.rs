//! The DMI backend (`mapper_dmi`) against the edgecore stand-in
//! (`integration_tests::dmi_edgecore`), driven through its `BackendIo` as the
//! core would. Everything runs in-process on Unix sockets in a temp dir.

use std::time::Instant;

use anyhow::{bail, Result};
use integration_tests::dmi_edgecore::{
    ros2_device, ros2_model, test_config, DmiEdgecore, Limit, MapperClient, RunningBackend,
};
use integration_tests::init_tracing;
use mapper_core::backend::{BackendEvent, DeviceBinding, DeviceState, Report, TwinReport};
use mapper_core::model::{Device, DeviceId};
use mapper_dmi::config::RateLimit;
use mapper_dmi::DmiConfig;
use serde_json::json;
use tempfile::TempDir;

struct Setup {
    _dir: TempDir,
    edge: DmiEdgecore,
    backend: RunningBackend,
}

/// An edgecore stand-in answering registration with `devices`, and the backend.
async fn setup(devices: &[Device], tweak: impl FnOnce(&mut DmiConfig)) -> Result<Setup> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let edge = DmiEdgecore::start(dir.path().join("dmi.sock"))?;
    edge.set_register_response(
        devices,
        &[ros2_model(
            "default",
            "robot-model",
            &["battery", "speed", "temp"],
        )],
    )?;
    let mut config = test_config(dir.path(), edge.socket());
    tweak(&mut config);
    let backend = RunningBackend::start(config)?;
    Ok(Setup {
        _dir: dir,
        edge,
        backend,
    })
}

async fn expect_sync(backend: &mut RunningBackend) -> Result<Vec<DeviceBinding>> {
    match backend.next_event().await? {
        BackendEvent::Sync(b) => Ok(b),
        other => bail!("expected Sync, got {other:?}"),
    }
}

async fn expect_upsert(backend: &mut RunningBackend) -> Result<DeviceBinding> {
    match backend.next_event().await? {
        BackendEvent::Upsert(b) => Ok(b),
        other => bail!("expected Upsert, got {other:?}"),
    }
}

fn desired(b: &DeviceBinding, prop: &str) -> Option<String> {
    b.device
        .spec
        .properties
        .iter()
        .find(|p| p.name == prop)?
        .desired
        .as_ref()
        .map(|d| d.value.clone())
}

fn twin(p: &str, v: &str) -> TwinReport {
    TwinReport {
        property: p.into(),
        reported: v.into(),
        observed_desired: None,
        value_type: "float",
        timestamp_ms: 1_700_000_000_000,
    }
}

fn report(name: &str, twins: &[(&str, &str)], state: Option<DeviceState>) -> Report {
    Report {
        device: DeviceId::new("default", name),
        twins: twins.iter().map(|(p, v)| twin(p, v)).collect(),
        state,
        rejections: vec![],
        report_to_cloud: true,
    }
}

#[tokio::test]
async fn registration_syncs_devices_and_desired_values() -> Result<()> {
    let devices = [
        ros2_device(
            "default",
            "robot1",
            "robot-model",
            &[("battery", None), ("speed", Some("0.5"))],
        ),
        ros2_device("default", "robot2", "robot-model", &[("battery", None)]),
    ];
    let mut s = setup(&devices, |_| {}).await?;
    let sync = expect_sync(&mut s.backend).await?;
    assert_eq!(sync.len(), 2);
    let r1 = sync
        .iter()
        .find(|b| b.id() == DeviceId::new("default", "robot1"))
        .expect("robot1");
    assert_eq!(desired(r1, "speed").as_deref(), Some("0.5"));
    assert!(
        r1.model.is_some(),
        "the model from the register response is bound"
    );
    // edgecore sent domainId as a float32 FloatValue; it comes back as the integer 3.
    let cfg = r1
        .device
        .spec
        .protocol
        .as_ref()
        .and_then(|p| p.config_data.clone())
        .unwrap_or_default();
    assert_eq!(cfg["domainId"], json!(3));
    assert_eq!(cfg["namespace"], json!("/robot1"));

    let reg = s.edge.wait_registrations(1).await?;
    assert!(reg.with_data);
    let info = reg.mapper.expect("mapper info");
    assert_eq!(
        (
            info.name.as_str(),
            info.protocol.as_str(),
            info.state.as_str()
        ),
        ("ros2-mapper", "ros2", "ok")
    );
    assert!(String::from_utf8(info.address)?.ends_with("ros2.sock"));
    s.backend.stop().await
}

#[tokio::test]
async fn devices_pushed_by_edgecore_become_upserts_and_removes() -> Result<()> {
    let mut s = setup(&[], |_| {}).await?;
    assert!(expect_sync(&mut s.backend).await?.is_empty());
    let mapper = s.edge.mapper_client().await?;

    let mut d = ros2_device(
        "default",
        "robot3",
        "robot-model",
        &[("speed", Some("0.5"))],
    );
    let resp = mapper.register_device(&d).await?;
    assert_eq!(
        (resp.device_name.as_str(), resp.device_namespace.as_str()),
        ("robot3", "default")
    );
    let b = expect_upsert(&mut s.backend).await?;
    assert_eq!(b.id(), DeviceId::new("default", "robot3"));
    assert_eq!(desired(&b, "speed").as_deref(), Some("0.5"));
    assert!(b.model.is_some());

    d.spec.properties[0]
        .desired
        .as_mut()
        .expect("desired")
        .value = "0.8".into();
    mapper.update_device(&d).await?;
    assert_eq!(
        desired(&expect_upsert(&mut s.backend).await?, "speed").as_deref(),
        Some("0.8")
    );

    // Devices of another protocol are refused with an explanation.
    let mut other = ros2_device("default", "plc", "robot-model", &[]);
    other
        .spec
        .protocol
        .as_mut()
        .expect("protocol")
        .protocol_name = "modbus".into();
    let err = mapper
        .register_device(&other)
        .await
        .expect_err("modbus refused");
    assert!(
        err.message().contains("serves protocol \"ros2\" only"),
        "{err:?}"
    );

    // A model update re-binds the devices using it.
    mapper
        .update_device_model(&ros2_model("default", "robot-model", &["speed", "extra"]))
        .await?;
    let b = expect_upsert(&mut s.backend).await?;
    assert_eq!(b.model.expect("model").spec.properties.len(), 2);

    mapper.remove_device("default", "robot3").await?;
    match s.backend.next_event().await? {
        BackendEvent::Remove(id) => assert_eq!(id, DeviceId::new("default", "robot3")),
        other => bail!("expected Remove, got {other:?}"),
    }
    s.backend.stop().await
}

#[tokio::test]
async fn twins_of_a_device_go_in_one_call_with_type_and_timestamp() -> Result<()> {
    let devices = [ros2_device(
        "default",
        "robot1",
        "robot-model",
        &[("battery", None)],
    )];
    let mut s = setup(&devices, |_| {}).await?;
    expect_sync(&mut s.backend).await?;
    let twins: Vec<(String, String)> = (0..8)
        .map(|i| (format!("p{i}"), format!("{i}.5")))
        .collect();
    let refs: Vec<(&str, &str)> = twins
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    s.backend
        .report(report("robot1", &refs, Some(DeviceState::Online)))
        .await?;

    let call = s
        .edge
        .wait_for("the status report", |r| r.status_reports.first().cloned())
        .await?;
    let status = call.reported_device.expect("reportedDevice");
    assert_eq!(status.twins.len(), 8, "all twins in one ReportDeviceStatus");
    let t = &status.twins[0];
    let reported = t.reported.as_ref().expect("reported");
    assert_eq!(
        reported.metadata.get("type").map(String::as_str),
        Some("float")
    );
    assert_eq!(
        reported.metadata.get("timestamp").map(String::as_str),
        Some("1700000000000")
    );
    assert!(t.observed_desired.is_some());
    let state = s
        .edge
        .wait_for("the state report", |r| r.state_reports.first().cloned())
        .await?;
    assert_eq!(
        (
            state.device_name.as_str(),
            state.device_namespace.as_str(),
            state.state.as_str()
        ),
        ("robot1", "default", "online")
    );
    assert_eq!(s.edge.recorded().status_reports.len(), 1);
    s.backend.stop().await
}

#[tokio::test]
async fn a_burst_of_reports_stays_within_the_rate() -> Result<()> {
    let (per_second, burst) = (5.0, 3);
    let mut s = setup(&[], |c| c.rate_limit = RateLimit { per_second, burst }).await?;
    expect_sync(&mut s.backend).await?;
    let start = Instant::now();
    let n = 12;
    for i in 0..n {
        s.backend
            .report(report(&format!("robot{i}"), &[("battery", "1")], None))
            .await?;
    }
    s.edge
        .wait_for("every device's report", |r| {
            (r.status_reports.len() >= n).then_some(())
        })
        .await?;
    let elapsed = start.elapsed().as_secs_f64();
    let rec = s.edge.recorded();
    assert_eq!(rec.status_reports.len(), n, "one call per device");
    // Registration + reports never exceed the bucket: burst + rate * elapsed.
    let allowed = f64::from(burst) + per_second * elapsed + 1.0;
    assert!(
        (rec.calls() as f64) <= allowed,
        "{} calls in {elapsed:.2}s, allowed {allowed:.1}",
        rec.calls()
    );
    // And the burst was really paced (12 calls cannot fit in the burst).
    assert!(
        elapsed >= (n as f64 - f64::from(burst) - 1.0) / per_second * 0.5,
        "elapsed {elapsed:.2}s"
    );
    assert_eq!(rec.refused, 0);
    s.backend.stop().await
}

#[tokio::test]
async fn too_many_request_is_retried_and_the_latest_value_arrives() -> Result<()> {
    let devices = [ros2_device(
        "default",
        "robot1",
        "robot-model",
        &[("battery", None)],
    )];
    let mut s = setup(&devices, |_| {}).await?;
    expect_sync(&mut s.backend).await?;
    s.edge.set_limit(Limit::RefuseNext(3));
    s.backend
        .report(report("robot1", &[("battery", "10"), ("temp", "30")], None))
        .await?;
    s.edge
        .wait_for("a refusal", |r| (r.refused >= 1).then_some(()))
        .await?;
    s.backend
        .report(report("robot1", &[("battery", "11")], None))
        .await?;
    s.edge
        .wait_for("battery 11 and temp 30 accepted", |r| {
            (r.latest_reported("default", "robot1", "battery").as_deref() == Some("11")
                && r.latest_reported("default", "robot1", "temp").as_deref() == Some("30"))
            .then_some(())
        })
        .await?;
    let rec = s.edge.recorded();
    assert_eq!(rec.refused, 3);
    assert!(
        s.backend
            .stats
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    s.backend.stop().await
}

#[tokio::test]
async fn edgecore_restart_re_registers_and_resyncs() -> Result<()> {
    let devices = [ros2_device(
        "default",
        "robot1",
        "robot-model",
        &[("battery", None)],
    )];
    let mut s = setup(&devices, |_| {}).await?;
    assert_eq!(expect_sync(&mut s.backend).await?.len(), 1);
    s.backend
        .report(report("robot1", &[("battery", "1")], None))
        .await?;
    s.edge
        .wait_for("the first report", |r| {
            r.latest_reported("default", "robot1", "battery")
        })
        .await?;

    // edgecore restarts, and meanwhile a second device was bound to the node.
    s.edge.stop().await;
    s.edge.set_register_response(
        &[
            devices[0].clone(),
            ros2_device(
                "default",
                "robot2",
                "robot-model",
                &[("speed", Some("1.5"))],
            ),
        ],
        &[ros2_model("default", "robot-model", &["battery", "speed"])],
    )?;
    s.edge.resume()?;

    let sync = expect_sync(&mut s.backend).await?;
    assert_eq!(sync.len(), 2);
    assert!(matches!(
        s.backend.next_event().await?,
        BackendEvent::Resync
    ));
    s.edge.wait_registrations(2).await?;

    s.backend
        .report(report("robot2", &[("speed", "1.5")], None))
        .await?;
    s.edge
        .wait_for("a report after the restart", |r| {
            r.latest_reported("default", "robot2", "speed")
        })
        .await?;
    s.backend.stop().await
}

#[tokio::test]
async fn get_device_returns_the_reported_twins() -> Result<()> {
    let devices = [ros2_device(
        "default",
        "robot1",
        "robot-model",
        &[("battery", None), ("speed", Some("0.5"))],
    )];
    let mut s = setup(&devices, |_| {}).await?;
    expect_sync(&mut s.backend).await?;
    let mut r = report(
        "robot1",
        &[("battery", "87.5"), ("speed", "0.5")],
        Some(DeviceState::Online),
    );
    r.twins[1].observed_desired = Some("0.5".into());
    s.backend.report(r).await?;
    s.edge
        .wait_for("the report", |r| {
            r.latest_reported("default", "robot1", "battery")
        })
        .await?;

    let mapper: MapperClient = s.edge.mapper_client().await?;
    let d = mapper.get_device("default", "robot1").await?;
    let status = d.status.expect("status");
    let value = |p: &str| {
        status
            .twins
            .iter()
            .find(|t| t.property_name == p)
            .and_then(|t| t.reported.clone())
            .map(|v| v.value)
    };
    assert_eq!(value("battery").as_deref(), Some("87.5"));
    let speed = status
        .twins
        .iter()
        .find(|t| t.property_name == "speed")
        .expect("speed");
    assert_eq!(
        speed.observed_desired.as_ref().map(|v| v.value.as_str()),
        Some("0.5")
    );
    // DMI v1beta1's DeviceStatus has no state field: the state is not in GetDevice.
    assert_eq!(d.spec.properties.len(), 2);
    let err = mapper
        .get_device("default", "nobody")
        .await
        .expect_err("unknown device");
    assert!(err.to_string().contains("not known"), "{err}");
    s.backend.stop().await
}

#[tokio::test]
async fn unreachable_edgecore_is_retried_and_the_socket_is_cleaned_up() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let edge_sock = dir.path().join("dmi.sock");
    let config = test_config(dir.path(), &edge_sock);
    let mapper_sock = config.socket.clone();
    let mut backend = RunningBackend::start(config)?;
    // Reports are taken while edgecore is not there.
    backend
        .report(report("robot1", &[("battery", "5")], None))
        .await?;
    let edge = DmiEdgecore::start(&edge_sock)?;
    expect_sync(&mut backend).await?;
    edge.wait_for("the report queued before edgecore came", |r| {
        r.latest_reported("default", "robot1", "battery")
    })
    .await?;
    assert!(mapper_sock.exists());
    backend.stop().await?;
    assert!(
        !mapper_sock.exists(),
        "the mapper's socket is removed on shutdown"
    );
    Ok(())
}
