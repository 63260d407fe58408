//! The deployment manifests (`manifests/`, kustomize): every overlay renders with kubectl's
//! built-in kustomize, every rendered object validates against the Kubernetes API schema
//! (strict: unknown fields are errors) and custom resources against the CRDs (the generated
//! ones and KubeEdge's own), and the objects fit together: the configs they mount pass the
//! binaries' own `--check` with the mounts and environment the pods get, every referenced
//! ConfigMap/Secret/ServiceAccount exists, selectors select, tokens match between hub and edge.
//!
//! Needs kubectl (`scripts/test` installs it into the test venv) and the venv's Python with
//! `kubernetes-validate`; KubeEdge's CRDs come from `../shared/kubeedge` (CI only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::bridge_proc::bridge_built;
use integration_tests::certs;
use integration_tests::manifests::{self, kubectl};
use integration_tests::prereq::{python, require, shared_kubeedge};
use integration_tests::robot::mapper_bin;
use integration_tests::workspace_bin_built;
use serde_json::Value;

/// The Kubernetes version whose API schema the manifests must satisfy.
const K8S_VERSION: &str = "1.35.0";

/// Every overlay, and what it must contain.
const OVERLAYS: &[(&str, &[&str])] = &[
    (
        "kubeedge-dmi",
        &[
            "DaemonSet/ros2-mapper",
            "DaemonSet/ros2-bridge-edge",
            "Deployment/ros2-bridge-hub",
        ],
    ),
    (
        "kubeedge-mqtt",
        &[
            "DaemonSet/ros2-mapper",
            "DaemonSet/ros2-bridge-edge",
            "Deployment/ros2-bridge-hub",
        ],
    ),
    (
        "k3s",
        &[
            "DaemonSet/ros2-mapper",
            "ClusterRole/kubeedge-ros2-mapper",
            "CustomResourceDefinition/devices.devices.kubeedge.io",
        ],
    ),
    (
        "k3s-bridge",
        &["DaemonSet/ros2-mapper", "DaemonSet/ros2-bridge-edge"],
    ),
    (
        "hub",
        &["Deployment/ros2-bridge-hub", "Service/ros2-bridge-hub"],
    ),
];

fn manifests_dir() -> PathBuf {
    manifests::dir()
}

struct Rendered {
    file: PathBuf,
    objects: Vec<Value>,
}

fn render(dir: &Path, out: &Path) -> Rendered {
    let kubectl = require("kubectl", kubectl()).expect("checked by the caller");
    let file = out.join(format!(
        "{}.yaml",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let objects = manifests::render(&kubectl, dir).unwrap();
    write_stream(&file, &objects);
    Rendered { file, objects }
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    manifests::find(objects, kind, name).unwrap()
}

fn run_validator(script: &str, args: &[&std::ffi::OsStr]) -> (bool, String) {
    integration_tests::run_python_script(script, args)
}

fn validate_k8s(file: &Path) -> (bool, String) {
    run_validator(
        "validate_k8s.py",
        &[
            "--k8s-version".as_ref(),
            K8S_VERSION.as_ref(),
            "--custom-group".as_ref(),
            "devices.kubeedge.io".as_ref(),
            "--objects".as_ref(),
            file.as_os_str(),
        ],
    )
}

fn prerequisites() -> bool {
    require("kubectl", kubectl()).is_some()
        && require("python venv", python()).is_some()
        && require("the mapper binary", workspace_bin_built("mapper", "mapper")).is_some()
        && require("the bridge binary", bridge_built()).is_some()
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_schema() {
    if !prerequisites() {
        return;
    }
    let out = integration_tests::out_dir("deploy_manifests");
    // No overlay is left out of this test.
    let on_disk: BTreeSet<String> = std::fs::read_dir(manifests_dir().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let tested: BTreeSet<String> = OVERLAYS.iter().map(|(o, _)| o.to_string()).collect();
    assert_eq!(on_disk, tested, "overlays on disk vs overlays tested");

    for (overlay, must) in OVERLAYS {
        let r = render(&manifests_dir().join("overlays").join(overlay), &out);
        let keys: BTreeSet<String> = r.objects.iter().map(key).collect();
        for m in *must {
            assert!(keys.contains(*m), "{overlay}: {m} missing from {keys:?}");
        }
        let (ok, report) = validate_k8s(&r.file);
        assert!(ok, "{overlay}:\n{report}");
        assert!(
            report.contains(&format!("{} passed, 0 failed", r.objects.len())),
            "{overlay}: every object has a schema:\n{report}"
        );
        println!("{overlay}: {} objects valid", r.objects.len());
        let mut objects = r.objects;
        if *overlay == "kubeedge-mqtt" {
            // Made by the user, as the overlay's comment (and docs/install.md) says.
            objects.push(devices_configmap());
        }
        check_wiring(overlay, &objects);
        check_configs(overlay, &objects, &out);
    }
}

#[test]
fn the_schema_validation_can_fail() {
    if !prerequisites() {
        return;
    }
    let out = integration_tests::out_dir("deploy_manifests");
    let r = render(&manifests_dir().join("overlays/k3s"), &out);
    let mut bad = r.objects.clone();
    let ds = bad.iter_mut().find(|o| o["kind"] == "DaemonSet").unwrap();
    ds["spec"]["template"]["spec"]["dnsPolicyy"] = "ClusterFirstWithHostNet".into();
    let file = out.join("k3s-broken.yaml");
    write_stream(&file, &bad);
    let (ok, report) = validate_k8s(&file);
    assert!(!ok, "{report}");
    assert!(report.contains("'dnsPolicyy' was unexpected"), "{report}");
}

#[test]
fn example_robot_validates_against_generated_and_kubeedge_crds() {
    if !prerequisites() {
        return;
    }
    let out = integration_tests::out_dir("deploy_manifests");
    let r = render(&manifests_dir().join("examples/robot"), &out);
    let kinds: BTreeSet<String> = r.objects.iter().map(key).collect();
    assert!(kinds.contains("DeviceModel/ros2-mobile-robot"), "{kinds:?}");
    assert!(kinds.contains("Device/robot1"), "{kinds:?}");
    let mut crds: Vec<PathBuf> = vec![manifests_dir().join("crds")];
    if let Some(shared) = require("KubeEdge's CRDs", shared_kubeedge()) {
        crds.push(shared.join("crds/devices_v1beta1_device.yaml"));
        crds.push(shared.join("crds/devices_v1beta1_devicemodel.yaml"));
    }
    let mut args: Vec<&std::ffi::OsStr> = vec!["--crds".as_ref()];
    args.extend(crds.iter().map(|p| p.as_os_str()));
    args.extend([
        "--require-all".as_ref(),
        "--objects".as_ref(),
        r.file.as_os_str(),
    ]);
    let (ok, report) = run_validator("validate_crd.py", &args);
    assert!(ok, "{report}");
    // Each object against each CRD set given.
    let expected = 2 * crds.len().min(2);
    assert!(
        report.contains(&format!("crd-validation: {expected} passed, 0 failed")),
        "{report}"
    );
}

/// `kubectl create configmap ros2-mapper-devices --from-file=robots.yaml=<example robot>`.
fn devices_configmap() -> Value {
    let kubectl = require("kubectl", kubectl()).expect("checked by the caller");
    let example = manifests_dir().join("examples/robot/ros2-mobile-robot.yaml");
    let out = Command::new(kubectl)
        .args([
            "-n",
            "kubeedge-ros2",
            "create",
            "configmap",
            "ros2-mapper-devices",
        ])
        .arg(format!("--from-file=robots.yaml={}", example.display()))
        .args(["--dry-run=client", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `components/hub-tls` and `components/edge-tls` on the DMI overlay, with the Secrets made the
/// way the components' comments say (kubectl, from certificates made here): the hub loads its
/// certificate and the edge its CA through the environment the components set.
#[test]
fn tls_components_wire_certificates_the_bridge_accepts() {
    if !prerequisites() {
        return;
    }
    let kubectl = require("kubectl", kubectl()).unwrap();
    let out = integration_tests::out_dir("deploy_manifests");
    let dir = out.join("tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // tests/out/deploy_manifests/tls -> the workspace root is four levels up.
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources:\n  - ../../../../manifests/overlays/kubeedge-dmi\n\
         components:\n  - ../../../../manifests/components/hub-tls\n  - ../../../../manifests/components/edge-tls\n",
    )
    .unwrap();
    let r = render(&dir, &out);
    let (ok, report) = validate_k8s(&r.file);
    assert!(ok, "{report}");

    let (ca, ca_key) = certs::ca("fleet hub CA").unwrap();
    let hub = certs::issue(
        &["ros2-bridge-hub.kubeedge-ros2.svc.cluster.local"],
        &ca,
        &ca_key,
    )
    .unwrap();
    for (name, text) in [
        ("hub.crt", &hub.cert),
        ("hub.key", &hub.key),
        ("ca.crt", &ca.pem()),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let secret = |args: &[&str]| -> Value {
        let o = Command::new(&kubectl)
            .current_dir(&dir)
            .args(["-n", "kubeedge-ros2", "create", "secret"])
            .args(args)
            .args(["--dry-run=client", "-o", "json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let mut objects = r.objects;
    objects.push(secret(&[
        "tls",
        "ros2-bridge-hub-tls",
        "--cert=hub.crt",
        "--key=hub.key",
    ]));
    objects.push(secret(&[
        "generic",
        "ros2-bridge-hub-ca",
        "--from-file=ca.crt=ca.crt",
    ]));
    check_wiring("kubeedge-dmi+tls", &objects);
    check_configs("kubeedge-dmi+tls", &objects, &out);

    // The check reads the certificate: a key that is not PEM fails it.
    let tls = objects
        .iter_mut()
        .find(|o| o["metadata"]["name"] == "ros2-bridge-hub-tls")
        .unwrap();
    tls["data"]["tls.key"] = base64_of("not a key").into();
    let result = std::panic::catch_unwind(|| check_configs("kubeedge-dmi+bad-key", &objects, &out));
    let why = result.expect_err("a broken key passes --check");
    let why = why.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(why.contains("hub") && why.contains("tls"), "{why}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

// ---------------------------------------------------------------------------------------------
// How the objects fit together

fn pod_spec(o: &Value) -> &Value {
    manifests::pod_spec(o).unwrap()
}

fn workloads(objects: &[Value]) -> impl Iterator<Item = &Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "DaemonSet" || o["kind"] == "Deployment")
}

fn matches(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("a selector map");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn check_wiring(overlay: &str, objects: &[Value]) {
    let names = |kind: &str| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (configmaps, secrets, accounts) =
        (names("ConfigMap"), names("Secret"), names("ServiceAccount"));
    for w in workloads(objects) {
        let ctx = format!("{overlay}: {}", key(w));
        let spec = pod_spec(w);
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(
            matches(&w["spec"]["selector"]["matchLabels"], labels),
            "{ctx}: selector does not select the pod template"
        );
        assert_eq!(w["metadata"]["namespace"], "kubeedge-ros2", "{ctx}");
        let sa = spec["serviceAccountName"].as_str().unwrap();
        assert!(accounts.contains(sa), "{ctx}: no ServiceAccount {sa}");
        for v in spec["volumes"].as_array().unwrap() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(configmaps.contains(cm), "{ctx}: no ConfigMap {cm}");
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(secrets.contains(s), "{ctx}: no Secret {s}");
            }
        }
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in spec["containers"].as_array().unwrap() {
            let ctx = format!("{ctx} container {}", c["name"]);
            for probe in ["livenessProbe", "readinessProbe"] {
                assert!(c[probe]["httpGet"]["path"].is_string(), "{ctx}: {probe}");
            }
            assert!(c["resources"]["requests"]["memory"].is_string(), "{ctx}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{ctx}");
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{ctx}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{ctx}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{ctx}"
            );
        }
        if w["kind"] == "DaemonSet" {
            // DDS on the host network, cluster DNS for the cloud side.
            assert_eq!(spec["hostNetwork"], true, "{ctx}");
            assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet", "{ctx}");
            if overlay.starts_with("kubeedge") {
                assert_eq!(
                    spec["nodeSelector"]["node-role.kubernetes.io/edge"], "",
                    "{ctx}"
                );
                let tolerated = spec["tolerations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["key"] == "node-role.kubernetes.io/edge");
                assert!(tolerated, "{ctx}: tolerates the edge taint");
            } else {
                assert!(
                    spec["nodeSelector"].is_null(),
                    "{ctx}: a K3s node has no edge role"
                );
            }
        }
    }
    // The kube backend's account is the one the RBAC binds, and only K3s mounts its token.
    let mapper = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet" && o["metadata"]["name"] == "ros2-mapper");
    if let Some(mapper) = mapper {
        let automount = pod_spec(mapper)["automountServiceAccountToken"] == true;
        assert_eq!(
            automount,
            overlay.starts_with("k3s"),
            "{overlay}: mapper token mount"
        );
        if overlay.starts_with("k3s") {
            let b = find(objects, "ClusterRoleBinding", "kubeedge-ros2-mapper");
            assert_eq!(
                b["subjects"][0]["name"],
                pod_spec(mapper)["serviceAccountName"]
            );
            assert_eq!(b["subjects"][0]["namespace"], "kubeedge-ros2");
        }
        let mounts_kubeedge = pod_spec(mapper)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == "/etc/kubeedge");
        assert_eq!(
            mounts_kubeedge,
            overlay.starts_with("kubeedge-dmi"),
            "{overlay}: /etc/kubeedge"
        );
    }
    // The Service and the PDB select the hub's pods.
    if let Some(hub) = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "ros2-bridge-hub")
    {
        let labels = &hub["spec"]["template"]["metadata"]["labels"];
        let svc = find(objects, "Service", "ros2-bridge-hub");
        assert!(
            matches(&svc["spec"]["selector"], labels),
            "{overlay}: Service selector"
        );
        let pdb = find(objects, "PodDisruptionBudget", "ros2-bridge-hub");
        assert!(
            matches(&pdb["spec"]["selector"]["matchLabels"], labels),
            "{overlay}: PDB selector"
        );
        assert!(
            hub["spec"]["replicas"].as_u64().unwrap() >= 2,
            "{overlay}: replicas"
        );
        let ports: BTreeSet<&str> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(ports, BTreeSet::from(["link", "http"]));
    }
}

// ---------------------------------------------------------------------------------------------
// The mounted configs pass the binaries' own validation

/// Writes what kubelet would mount for `container` of workload `w` under `root`, and returns
/// (mountPath -> host dir) for path rewriting.
fn materialize_mounts(
    objects: &[Value],
    w: &Value,
    container: &Value,
    root: &Path,
) -> BTreeMap<String, PathBuf> {
    let volumes = pod_spec(w)["volumes"].as_array().unwrap();
    let mut map = BTreeMap::new();
    for m in container["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let mount = m["mountPath"].as_str().unwrap().to_owned();
        let v = volumes.iter().find(|v| v["name"] == name).unwrap();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let data: BTreeMap<String, String> = if let Some(cm) = v["configMap"]["name"].as_str() {
            serde_json::from_value(find(objects, "ConfigMap", cm)["data"].clone()).unwrap()
        } else if let Some(s) = v["secret"]["secretName"].as_str() {
            secret_files(find(objects, "Secret", s))
        } else {
            BTreeMap::new() // hostPath: an empty directory stands in
        };
        for (k, text) in data {
            std::fs::write(dir.join(k), text).unwrap();
        }
        map.insert(mount, dir);
    }
    map
}

/// A Secret's files as kubelet writes them: `data` (base64) and `stringData`.
fn secret_files(secret: &Value) -> BTreeMap<String, String> {
    use base64::Engine;
    let mut files: BTreeMap<String, String> =
        serde_json::from_value(secret["stringData"].clone()).unwrap_or_default();
    let data: BTreeMap<String, String> =
        serde_json::from_value(secret["data"].clone()).unwrap_or_default();
    for (k, v) in data {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).unwrap();
        files.insert(k, String::from_utf8(bytes).unwrap());
    }
    files
}

fn check_configs(overlay: &str, objects: &[Value], out: &Path) {
    for w in workloads(objects) {
        for c in pod_spec(w)["containers"].as_array().unwrap() {
            let root = out.join(format!(
                "{overlay}-{}",
                w["metadata"]["name"].as_str().unwrap()
            ));
            let _ = std::fs::remove_dir_all(&root);
            let mounts = materialize_mounts(objects, w, c, &root);
            // Rewrite mount paths inside the mounted files and the args (longest first).
            let mut by_len: Vec<(&String, &PathBuf)> = mounts.iter().collect();
            by_len.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
            let rewrite = |s: &str| {
                by_len.iter().fold(s.to_owned(), |acc, (m, dir)| {
                    acc.replace(m.as_str(), &dir.display().to_string())
                })
            };
            for dir in mounts.values() {
                for f in std::fs::read_dir(dir).unwrap() {
                    let p = f.unwrap().path();
                    let text = std::fs::read_to_string(&p).unwrap();
                    std::fs::write(&p, rewrite(&text)).unwrap();
                }
            }
            let args: Vec<String> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| rewrite(a.as_str().unwrap()))
                .collect();
            let bin = if c["name"] == "mapper" {
                mapper_bin()
            } else {
                bridge_built().unwrap()
            };
            let status = Command::new(&bin)
                .args(&args)
                .arg("--check")
                .envs(
                    manifests::env(c, |f| (f == "spec.nodeName").then(|| "robot1".to_owned()))
                        .unwrap()
                        .into_iter()
                        .map(|(k, v)| (k, rewrite(&v))),
                )
                .env_remove("ROS_DOMAIN_ID")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr)
            );
            assert!(
                status.status.success(),
                "{overlay}: {} {args:?} --check failed:\n{text}",
                bin.display()
            );
        }
    }
    // Every robot the hub knows has a token on both sides, and the same one.
    let hub_tokens = objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "ros2-bridge-hub-tokens");
    let edge_tokens = objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "ros2-bridge-edge-tokens");
    if let (Some(h), Some(e)) = (hub_tokens, edge_tokens) {
        assert_eq!(
            h["stringData"], e["stringData"],
            "{overlay}: hub and edge tokens differ"
        );
    }
}

fn write_stream(file: &Path, objects: &[Value]) {
    let text: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect();
    std::fs::write(file, text.join("---\n")).unwrap();
}
