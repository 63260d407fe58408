//! The K3s install end to end: `manifests/overlays/k3s` and
//! `manifests/examples/robot` rendered with `kubectl kustomize`, fed as they
//! are to the fake API server (with the status subresource the generated CRDs
//! declare, and the RBAC the overlay creates), and the real `mapper` binary run
//! the way the DaemonSet runs it: its args, the ConfigMap's `mapper.yaml` in
//! place of the mounted file, env from the container spec (`NODE_NAME` from
//! `spec.nodeName` = the Device's node), and a kubeconfig with the
//! DaemonSet's service account token (standing in for in-cluster config).
//!
//! DDS runs in a network namespace made by the test (multicast on `lo`, the
//! example's domain 0 is the namespace's own): a simulated robot on Cyclone
//! DDS (`tests/python/robot.py`: battery_state, odom), a Cyclone subscriber of
//! `/robot1/speed_limit`, and the mapper. The fake API server listens on a
//! Unix socket too; a forwarder inside the namespace makes it
//! `127.0.0.1:6443` there (a namespace cannot reach the host's loopback).
//!
//! Checks: reported twins in the Device status, a desired `speed-limit`
//! merge-patched as `kubectl patch` would reaches the robot, an out-of-range
//! one becomes an Event and never reaches it, `/readyz` is 200, no 403 — and
//! the ClusterRole grants nothing the mapper did not use. The negative
//! control drops `patch` on `devices/status` from the ClusterRole: a 403 is
//! recorded and no twin appears.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use integration_tests::fake_kube::FakeKube;
use integration_tests::fleet::{spawn_in, wait_line};
use integration_tests::manifests;
use integration_tests::netns::Netns;
use integration_tests::prereq::{netns_capable, python, require};
use integration_tests::proc::Proc;
use integration_tests::robot::{mapper_bin, Robot};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(90);

/// The port the forwarder listens on inside the namespace (the API server's usual one).
const API_PORT: u16 = 6443;

/// Inside the namespace: `127.0.0.1:<port>` -> the fake's Unix socket.
const FORWARDER: &str = r#"
import socket, sys, threading
path, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', port))
srv.listen(64)
print('listening', flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
def serve(c):
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect(path)
    except OSError as e:
        print('connect failed', e, file=sys.stderr, flush=True)
        c.close()
        return
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Inside the namespace: prints the HTTP status of a GET.
const HTTP_GET: &str = r#"
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError as e:
    print(0, e)
"#;

/// What the tests need, or `None` (skipped).
struct Prereqs {
    py: PathBuf,
    kubectl: PathBuf,
}

fn prereqs() -> Option<Prereqs> {
    integration_tests::init_tracing();
    require("root and iproute2", netns_capable())?;
    let py = require("python venv", python())?;
    let kubectl = require("kubectl", manifests::kubectl())?;
    require(
        "the mapper binary",
        integration_tests::workspace_bin_built("mapper", "mapper"),
    )?;
    Some(Prereqs { py, kubectl })
}

/// The K3s overlay and the example robot, rendered.
fn render(kubectl: &Path) -> Result<Vec<Value>> {
    let mut objs = manifests::render(kubectl, &manifests::dir().join("overlays/k3s"))?;
    objs.extend(manifests::render(
        kubectl,
        &manifests::dir().join("examples/robot"),
    )?);
    Ok(objs)
}

/// The mapper's ClusterRole: the one the binding of the DaemonSet's service account names.
fn mapper_cluster_role_name(objs: &[Value], sa: &(String, String)) -> Result<String> {
    let names: Vec<String> = manifests::all_of(objs, "ClusterRoleBinding")
        .into_iter()
        .filter(|b| {
            b["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["kind"] == "ServiceAccount" && s["name"] == sa.1 && s["namespace"] == sa.0
                })
            })
        })
        .filter(|b| b["roleRef"]["kind"] == "ClusterRole")
        .filter_map(|b| b["roleRef"]["name"].as_str().map(str::to_owned))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("the service account {sa:?} is bound to ClusterRoles {names:?}, expected one"),
    }
}

/// Everything the mapper runs with, and the processes (dropped in this
/// order: the mapper first, the namespace and the API server last).
struct Install {
    mapper: Proc,
    speed_limit: Proc,
    robot: Robot,
    _forwarder: Proc,
    fake: FakeKube,
    ns: Netns,
    _dir: tempfile::TempDir,
    /// The mapper's readiness probe URL inside the namespace.
    readyz: String,
    user: String,
    py: PathBuf,
}

impl Install {
    /// Feeds `objs`, starts the namespace, the robot, the speed_limit
    /// subscriber and the mapper as the DaemonSet describes it.
    async fn start(p: &Prereqs, objs: &[Value], tag: &str) -> Result<Install> {
        let status =
            manifests::crd_status_subresource(objs, "devices", "devices.kubeedge.io", "v1beta1")
                .context("the rendered objects have no Device CRD with version v1beta1")?;
        ensure!(status, "the Device CRD declares no status subresource");
        let fake = FakeKube::start(status).await;
        manifests::feed(&fake, objs)?;

        let ds = manifests::find(objs, "DaemonSet", "ros2-mapper")?;
        let container = manifests::container(ds, "mapper")?;
        let sa = manifests::service_account(ds)?;
        manifests::find(objs, "ServiceAccount", &sa.1)
            .with_context(|| format!("the DaemonSet's service account {sa:?}"))?;
        let token = fake.add_service_account_token(&sa.0, &sa.1);
        let user = format!("system:serviceaccount:{}:{}", sa.0, sa.1);

        let device = manifests::find(objs, "Device", "robot1")?;
        let node = device["spec"]["nodeName"]
            .as_str()
            .ok_or_else(|| anyhow!("Device robot1 has no nodeName"))?
            .to_owned();
        let domain = device["spec"]["protocol"]["configData"]["domainId"]
            .as_u64()
            .unwrap_or(0);
        let ros_ns = device["spec"]["protocol"]["configData"]["namespace"]
            .as_str()
            .unwrap_or("/")
            .to_owned();

        let dir = tempfile::tempdir()?;
        let ns = Netns::new(tag)?;
        let sock = dir.path().join("kube.sock");
        fake.serve_unix(&sock).await?;
        let sock_s = sock.display().to_string();
        let port_s = API_PORT.to_string();
        let forwarder = spawn_in(&ns, &p.py, &["-c", FORWARDER, &sock_s, &port_s], &[])?;
        wait_line(&forwarder, |l| l == "listening", T).context("the API forwarder")?;

        // The robot and a controller listening to its speed limit.
        let robot_py = integration_tests::python_dir().join("robot.py");
        let robot_py = robot_py.display().to_string();
        let proc = spawn_in(
            &ns,
            &p.py,
            &[
                &robot_py,
                "--domain",
                &domain.to_string(),
                "--namespace",
                &ros_ns,
                "--rate",
                "10",
            ],
            &[],
        )?;
        proc.wait_stderr("READY", T)?;
        let mut robot = Robot { proc };
        robot.command("set battery 0.75")?;
        robot.command("set x 2.25")?;
        let peer = integration_tests::python_dir().join("ros2peer.py");
        let peer = peer.display().to_string();
        let topic = format!("rt{}/speed_limit", ros_ns.trim_end_matches('/'));
        let speed_limit = spawn_in(
            &ns,
            &p.py,
            &[
                &peer,
                "sub",
                "--topic",
                &topic,
                "--type",
                "std_msgs/msg/Float64",
                "--reliability",
                "reliable",
                "--durability",
                "transient_local",
                "--depth",
                "1",
                "--domain",
                &domain.to_string(),
                "--count",
                "1000",
                "--timeout",
                "600",
            ],
            &[],
        )?;
        speed_limit.wait_stderr("READY", T)?;

        // The mapper as the DaemonSet runs it.
        let mut args = manifests::args(container);
        for a in args.iter_mut() {
            if a.starts_with('/') {
                if let Ok(content) = manifests::mounted_file(objs, ds, "mapper", a) {
                    let name = Path::new(a.as_str())
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "mounted".into());
                    let local = dir.path().join(name);
                    std::fs::write(&local, content)?;
                    *a = local.display().to_string();
                }
            }
        }
        ensure!(
            args.iter()
                .any(|a| a.starts_with(&dir.path().display().to_string())),
            "the mapper's args {:?} name no file from its ConfigMap",
            manifests::args(container)
        );
        let env = manifests::env(container, |field| match field {
            "spec.nodeName" => Some(node.clone()),
            _ => None,
        })?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            FakeKube::kubeconfig(&format!("http://127.0.0.1:{API_PORT}"), Some(&token)),
        )?;
        let mut cmd = ns.command(mapper_bin());
        cmd.args(&args).env("KUBECONFIG", &kubeconfig);
        for k in [
            "RUST_LOG",
            "NODE_NAME",
            "MAPPER_BACKEND",
            "ROS_DOMAIN_ID",
            "ROS_AUTOMATIC_DISCOVERY_RANGE",
            "ROS_LOCALHOST_ONLY",
            "MAPPER_HTTP_LISTEN",
            "MAPPER_LOG_FORMAT",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mapper = Proc::spawn("mapper", cmd)?;
        mapper.wait_stderr("mapper started", T)?;

        let readyz = readiness_url(container)?;
        Ok(Install {
            fake,
            ns,
            _dir: dir,
            _forwarder: forwarder,
            robot,
            speed_limit,
            mapper,
            readyz,
            user,
            py: p.py.clone(),
        })
    }

    /// GET `url` inside the namespace: the HTTP status (0 when unreachable).
    fn http_status(&self, url: &str) -> Result<u16> {
        let out = self
            .ns
            .command(&self.py)
            .args(["-c", HTTP_GET, url])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("GET {url}: {text} {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Waits until the readiness probe gives 200.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + T;
        loop {
            let code = self.http_status(&self.readyz)?;
            if code == 200 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} gave {code} for {T:?}", self.readyz);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the robot's controller gets `want` on speed_limit; values
    /// before it must be in `resent` (a value published before may be sent
    /// again to a late-matching reader), anything else is a failure.
    fn expect_speed_limit(&self, want: f64, resent: &[f64]) -> Result<()> {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .speed_limit
                .read_lines(1, left)
                .with_context(|| format!("waiting for speed_limit {want}"))?
                .remove(0);
            let v: Value = serde_json::from_str(&line).with_context(|| format!("{line:?}"))?;
            let got = v["data"]
                .as_f64()
                .ok_or_else(|| anyhow!("speed_limit sample {line}"))?;
            if got == want {
                return Ok(());
            }
            ensure!(
                resent.contains(&got),
                "speed_limit got {got} while waiting for {want} (allowed before it: {resent:?})"
            );
        }
    }

    /// Sets the desired value of a property the way `kubectl patch --type=merge`
    /// does: the whole `spec.properties` list with one value changed.
    fn patch_desired(&self, property: &str, value: &str) -> Result<()> {
        let dev = self
            .fake
            .get("Device", "default", "robot1")
            .ok_or_else(|| anyhow!("no Device robot1"))?;
        let mut props = dev["spec"]["properties"].clone();
        let p = props
            .as_array_mut()
            .and_then(|ps| ps.iter_mut().find(|p| p["name"] == property))
            .ok_or_else(|| anyhow!("Device robot1 has no property {property}"))?;
        p["desired"] = json!({"value": value});
        self.fake.patch_json(
            "Device",
            "default",
            "robot1",
            "kubectl-patch",
            false,
            json!({"spec": {"properties": props}}),
        )?;
        Ok(())
    }
}

/// The readiness probe of a container as a URL on 127.0.0.1 (named ports resolved).
fn readiness_url(container: &Value) -> Result<String> {
    let get = &container["readinessProbe"]["httpGet"];
    let path = get["path"].as_str().unwrap_or("/");
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64().ok_or_else(|| anyhow!("port {n}"))?,
        Value::String(name) => container["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == *name))
            .and_then(|p| p["containerPort"].as_u64())
            .ok_or_else(|| anyhow!("no container port named {name}"))?,
        other => bail!("the mapper has no readinessProbe.httpGet.port ({other})"),
    };
    Ok(format!("http://127.0.0.1:{port}{path}"))
}

fn reported(obj: &Value, property: &str) -> Option<String> {
    obj["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == property)?["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

/// (verb, API group, resource[/subresource]).
type Grant = (String, String, String);

/// What the user's requests used, with `list` and `watch` standing for each other.
fn used_grants(fake: &FakeKube, user: &str) -> BTreeSet<Grant> {
    let mut used = BTreeSet::new();
    for a in fake.accesses().into_iter().filter(|a| a.user == user) {
        let at = &a.attributes;
        used.insert((at.verb.clone(), at.api_group.clone(), at.full_resource()));
    }
    used
}

/// Every (verb, group, resource) a rule list grants (wildcards kept as `*`).
fn granted(rules: &[integration_tests::rbac::PolicyRule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in rules {
        for v in &r.verbs {
            for g in &r.api_groups {
                for res in &r.resources {
                    out.insert((v.clone(), g.clone(), res.clone()));
                }
            }
        }
    }
    out
}

fn fmt(g: &BTreeSet<Grant>) -> String {
    g.iter()
        .map(|(v, gr, r)| format!("({v}, {gr:?}, {r})"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_overlay_mapper_reports_twins_and_takes_desired_values_with_its_rbac() -> Result<()> {
    let Some(p) = prereqs() else { return Ok(()) };
    let objs = render(&p.kubectl)?;
    let mut inst = Install::start(&p, &objs, "k3s").await?;

    // Everything the manifests create was fed; the Device has no status yet.
    assert_eq!(
        inst.fake.stored().len()
            + inst.fake.list("Device").len()
            + inst.fake.list("DeviceModel").len(),
        objs.len(),
        "{:?}",
        manifests::summary(&objs)
    );

    // Reported twins from the robot, and the device online.
    let dev = inst
        .fake
        .wait_for(
            "Device",
            "default",
            "robot1",
            |o| {
                reported(o, "battery").as_deref() == Some("75")
                    && reported(o, "pose-x").as_deref() == Some("2.25")
                    && o["status"]["state"] == "online"
            },
            T,
        )
        .await
        .map_err(|e| anyhow!("{e:#}\nmapper:\n{}", inst.mapper.stderr_log()))?;
    tracing::info!(status = %dev["status"], "twins reported");
    inst.wait_ready().await?;

    // The Device's initial desired speed limit (0.5) reaches the robot, then
    // a merge patch sets 0.8.
    inst.expect_speed_limit(0.5, &[])?;
    inst.patch_desired("speed-limit", "0.8")?;
    inst.expect_speed_limit(0.8, &[0.5])?;
    inst.fake
        .wait_for(
            "Device",
            "default",
            "robot1",
            |o| reported(o, "speed-limit").as_deref() == Some("0.8"),
            T,
        )
        .await?;

    // Out of range (maximum 1.5): an Event, never published; the next valid one is.
    inst.patch_desired("speed-limit", "3")?;
    inst.fake
        .wait_until(
            |f| {
                f.events().iter().any(|e| {
                    e["reason"] == "DesiredValueRejected" && e["involvedObject"]["name"] == "robot1"
                })
            },
            T,
        )
        .await
        .context("a DesiredValueRejected Event")?;
    inst.patch_desired("speed-limit", "1.25")?;
    // 3 must never reach speed_limit.
    inst.expect_speed_limit(1.25, &[0.8])?;
    assert_eq!(inst.http_status(&inst.readyz)?, 200);

    // The robot goes quiet: offline.
    inst.robot.command("stop")?;
    inst.fake
        .wait_for(
            "Device",
            "default",
            "robot1",
            |o| o["status"]["state"] == "offline",
            T,
        )
        .await?;

    // No request of the mapper was refused, and every request was the service account's.
    let denied = inst.fake.forbidden();
    assert!(denied.is_empty(), "403s: {denied:#?}");
    let accesses = inst.fake.accesses();
    assert!(!accesses.is_empty());
    assert!(
        accesses.iter().all(|a| a.user == inst.user),
        "{accesses:#?}"
    );

    // Least privilege: the ClusterRole grants nothing the mapper did not use
    // (list and watch count as a pair).
    let ds = manifests::find(&objs, "DaemonSet", "ros2-mapper")?;
    let sa = manifests::service_account(ds)?;
    let role = mapper_cluster_role_name(&objs, &sa)?;
    let rbac = inst.fake.rbac();
    let rules = rbac
        .cluster_role(&role)
        .ok_or_else(|| anyhow!("no ClusterRole {role}"))?;
    let granted = granted(rules);
    let used = used_grants(&inst.fake, &inst.user);
    eprintln!("K3S-RBAC used by the mapper: {}", fmt(&used));
    eprintln!("K3S-RBAC granted by ClusterRole {role}: {}", fmt(&granted));
    let pair = |v: &str| match v {
        "list" => Some("watch"),
        "watch" => Some("list"),
        _ => None,
    };
    let unused: BTreeSet<Grant> = granted
        .iter()
        .filter(|(v, g, r)| {
            let direct = used.contains(&(v.clone(), g.clone(), r.clone()));
            let paired =
                pair(v).is_some_and(|p| used.contains(&(p.to_owned(), g.clone(), r.clone())));
            !(direct || paired)
        })
        .cloned()
        .collect();
    let wildcards: BTreeSet<&Grant> = granted
        .iter()
        .filter(|(v, g, r)| v == "*" || g == "*" || r.contains('*'))
        .collect();
    assert!(wildcards.is_empty(), "wildcard grants: {wildcards:?}");
    assert!(
        unused.is_empty(),
        "ClusterRole {role} grants what the mapper never used: {}\nused: {}",
        fmt(&unused),
        fmt(&used)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_patch_on_devices_status_the_mapper_is_refused_and_no_twin_appears() -> Result<()> {
    let Some(p) = prereqs() else { return Ok(()) };
    let mut objs = render(&p.kubectl)?;
    // Drop `patch` from every rule of the mapper's ClusterRole that grants it on devices/status.
    let ds = manifests::find(&objs, "DaemonSet", "ros2-mapper")?;
    let sa = manifests::service_account(ds)?;
    let role = mapper_cluster_role_name(&objs, &sa)?;
    let cr = objs
        .iter_mut()
        .find(|o| manifests::kind_of(o) == "ClusterRole" && manifests::name_of(o) == role)
        .ok_or_else(|| anyhow!("no ClusterRole {role}"))?;
    let mut removed = 0;
    if let Some(rules) = cr["rules"].as_array_mut() {
        for r in rules.iter_mut() {
            let on_status = r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "devices/status"));
            if let (true, Some(verbs)) = (on_status, r["verbs"].as_array_mut()) {
                let before = verbs.len();
                verbs.retain(|v| v != "patch");
                removed += before - verbs.len();
            }
        }
        rules.retain(|r| r["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    }
    ensure!(
        removed > 0,
        "ClusterRole {role} grants no patch on devices/status"
    );

    let inst = Install::start(&p, &objs, "k3sneg").await?;
    let want = format!(
        "devices.devices.kubeedge.io \"robot1\" is forbidden: User \"{}\" cannot patch resource \"devices/status\" in API group \"devices.kubeedge.io\" in the namespace \"default\"",
        inst.user
    );
    if let Err(e) = inst.fake.wait_until(|f| !f.forbidden().is_empty(), T).await {
        bail!(
            "no 403: {e:#}; accesses: {:#?}\nmapper:\n{}",
            inst.fake.accesses(),
            inst.mapper.stderr_log()
        );
    }
    let denial = inst.fake.forbidden().remove(0);
    assert_eq!(denial.message, want);
    assert_eq!(denial.attributes.verb, "patch");
    assert_eq!(denial.attributes.full_resource(), "devices/status");
    // The mapper saw its Device (it tried to write it) and every write was refused.
    let writes: Vec<_> = inst
        .fake
        .accesses()
        .into_iter()
        .filter(|a| a.attributes.verb == "patch" && a.attributes.resource == "devices")
        .collect();
    assert!(writes.iter().all(|a| !a.allowed), "{writes:#?}");
    let dev = inst
        .fake
        .get("Device", "default", "robot1")
        .ok_or_else(|| anyhow!("no Device"))?;
    assert!(
        dev["status"]["twins"]
            .as_array()
            .is_none_or(|t| t.is_empty()),
        "a twin appeared without patch on devices/status: {}",
        dev["status"]
    );
    Ok(())
}

/// The fake's authentication and RBAC over HTTP with a kube-rs client (no
/// namespace, no kubectl needed): no token is admin, an unknown token is 401,
/// a service account gets what its ClusterRole grants and a real server's 403
/// for the rest, recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_authenticates_tokens_and_enforces_rbac() -> Result<()> {
    use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    integration_tests::init_tracing();
    mapper_kube::install_crypto_provider();
    let fake = FakeKube::start(true).await;
    let objs = manifests::parse_yaml(
        r#"
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: robot1, namespace: default}
spec: {nodeName: n1, protocol: {protocolName: ros2}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: m, namespace: sys}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r}
rules:
  - {apiGroups: [devices.kubeedge.io], resources: [devices], verbs: [get, list, watch]}
  - {apiGroups: [devices.kubeedge.io], resources: [devices/status], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: r}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: r}
subjects: [{kind: ServiceAccount, name: m, namespace: sys}]
"#,
    )?;
    manifests::feed(&fake, &objs)?;
    assert_eq!(fake.stored().len(), 3, "SA + RBAC in the generic store");
    let token = fake.add_service_account_token("sys", "m");
    let client = |token: Option<&str>| {
        let kc = Kubeconfig::from_yaml(&FakeKube::kubeconfig(&fake.url(), token));
        async move {
            let cfg =
                kube::Config::from_custom_kubeconfig(kc?, &KubeConfigOptions::default()).await?;
            anyhow::Ok(kube::Client::try_from(cfg)?)
        }
    };
    let ar = ApiResource {
        group: "devices.kubeedge.io".into(),
        version: "v1beta1".into(),
        api_version: "devices.kubeedge.io/v1beta1".into(),
        kind: "Device".into(),
        plural: "devices".into(),
    };
    let code = |r: Result<DynamicObject, kube::Error>| match r {
        Ok(_) => (200, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => (0, e.to_string()),
    };

    // No token: the admin path, as before.
    let admin: Api<DynamicObject> = Api::namespaced_with(client(None).await?, "default", &ar);
    admin
        .patch(
            "robot1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "n2"}})),
        )
        .await?;
    // An unknown token: 401.
    let stranger: Api<DynamicObject> =
        Api::namespaced_with(client(Some("nope")).await?, "default", &ar);
    assert_eq!(code(stranger.get("robot1").await).0, 401);
    assert!(fake.accesses().is_empty());

    // The service account: what its ClusterRole grants, 403 for the rest.
    let sa: Api<DynamicObject> = Api::namespaced_with(client(Some(&token)).await?, "default", &ar);
    let all: Api<DynamicObject> = Api::all_with(client(Some(&token)).await?, &ar);
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 1);
    sa.get("robot1").await?;
    let status = Patch::Merge(json!({"status": {"state": "online"}}));
    sa.patch_status("robot1", &PatchParams::default(), &status)
        .await?;
    let (c, msg) = code(
        sa.patch(
            "robot1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "x"}})),
        )
        .await,
    );
    assert_eq!(c, 403);
    assert_eq!(
        msg,
        r#"devices.devices.kubeedge.io "robot1" is forbidden: User "system:serviceaccount:sys:m" cannot patch resource "devices" in API group "devices.kubeedge.io" in the namespace "default""#
    );
    assert_eq!(
        code(
            sa.delete("robot1", &Default::default())
                .await
                .map(|_| DynamicObject::new("x", &ar))
        )
        .0,
        403
    );
    let denied: Vec<(String, String)> = fake
        .forbidden()
        .into_iter()
        .map(|d| (d.attributes.full_resource(), d.attributes.verb))
        .collect();
    assert_eq!(
        denied,
        [
            ("devices".into(), "patch".into()),
            ("devices".into(), "delete".into())
        ]
    );
    let verbs: Vec<String> = fake
        .accesses()
        .into_iter()
        .map(|a| a.attributes.verb)
        .collect();
    assert_eq!(verbs, ["list", "get", "patch", "patch", "delete"]);
    let dev = fake
        .get("Device", "default", "robot1")
        .ok_or_else(|| anyhow!("gone"))?;
    assert_eq!(dev["spec"]["nodeName"], "n2");
    assert_eq!(dev["status"]["state"], "online");
    Ok(())
}
