//! The deployment manifests (`manifests/`, kustomize bases and overlays) as
//! objects: rendered with `kubectl kustomize`, looked up by kind and name,
//! followed the way the kubelet follows them (a container's args, env and the
//! ConfigMap file behind a mounted path), and fed to the fake API server
//! ([`crate::fake_kube::FakeKube::feed`]) exactly as rendered.
//!
//! ```ignore
//! let kubectl = require("kubectl", manifests::kubectl())?;
//! let objs = manifests::render(&kubectl, &manifests::dir().join("overlays/k3s"))?;
//! let ds = manifests::find(&objs, "DaemonSet", "ros2-mapper")?;
//! let config = manifests::mounted_file(&objs, ds, "mapper", "/etc/kubeedge-ros2/mapper.yaml")?;
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::fake_kube::FakeKube;

/// `<workspace>/manifests`.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("manifests")
}

/// `kubectl` with kustomize: `$KE_ROS2_KUBECTL`, else
/// `<workspace>/.venv-test/bin/kubectl` (installed by `scripts/test`). Use
/// with [`crate::prereq::require`].
pub fn kubectl() -> Result<PathBuf, String> {
    let k = std::env::var_os("KE_ROS2_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(".venv-test/bin/kubectl"));
    if !k.is_file() {
        return Err(format!(
            "kubectl at {} (scripts/test installs it, or set KE_ROS2_KUBECTL)",
            k.display()
        ));
    }
    match Command::new(&k).args(["version", "--client"]).output() {
        Ok(o) if o.status.success() => Ok(k),
        Ok(o) => Err(format!(
            "{} version --client failed: {}",
            k.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", k.display())),
    }
}

/// Parses multi-document YAML into objects (empty documents skipped).
pub fn parse_yaml(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).context("a YAML document")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// `kubectl kustomize <kustomization dir>`, as objects.
pub fn render(kubectl: &Path, kustomization: &Path) -> Result<Vec<Value>> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(kustomization)
        .output()
        .with_context(|| format!("running {} kustomize", kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {}: {}",
            kustomization.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_yaml(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
        format!(
            "the output of kubectl kustomize {}",
            kustomization.display()
        )
    })
}

/// An object's kind.
pub fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// An object's `metadata.name`.
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An object's `metadata.namespace` (`""` when none).
pub fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `kind/namespace/name` of every object, for messages.
pub fn summary(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| format!("{}/{}/{}", kind_of(o), namespace_of(o), name_of(o)))
        .collect()
}

/// Every object of `kind`.
pub fn all_of<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind_of(o) == kind).collect()
}

/// The one object of `kind` named `name` (an error if none or several).
pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = objs
        .iter()
        .filter(|o| kind_of(o) == kind && name_of(o) == name)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {kind} {name:?} among {:?}", summary(objs)),
        _ => bail!("{} objects {kind} {name:?}", found.len()),
    }
}

/// Feeds every object to `fake` ([`FakeKube::feed`]), in order.
pub fn feed(fake: &FakeKube, objs: &[Value]) -> Result<()> {
    for o in objs {
        fake.feed(o)
            .with_context(|| format!("feeding {} {:?}", kind_of(o), name_of(o)))?;
    }
    Ok(())
}

/// Whether the CRD of `plural.group` declares the `status` subresource in
/// version `version`; `None` if there is no such CRD or version.
pub fn crd_status_subresource(
    objs: &[Value],
    plural: &str,
    group: &str,
    version: &str,
) -> Option<bool> {
    let crd = find(
        objs,
        "CustomResourceDefinition",
        &format!("{plural}.{group}"),
    )
    .ok()?;
    let v = crd
        .pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?;
    Some(v.pointer("/subresources/status").is_some())
}

/// The pod template spec of a DaemonSet, Deployment or StatefulSet.
pub fn pod_spec(workload: &Value) -> Result<&Value> {
    workload.pointer("/spec/template/spec").ok_or_else(|| {
        anyhow!(
            "{} {:?} has no spec.template.spec",
            kind_of(workload),
            name_of(workload)
        )
    })
}

/// The container `name` of a workload.
pub fn container<'a>(workload: &'a Value, name: &str) -> Result<&'a Value> {
    pod_spec(workload)?
        .get("containers")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        })
        .ok_or_else(|| anyhow!("{} has no container {name:?}", name_of(workload)))
}

/// The workload's service account as `(namespace, name)` (`default` when unset,
/// as the API server defaults it).
pub fn service_account(workload: &Value) -> Result<(String, String)> {
    let spec = pod_spec(workload)?;
    let name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let ns = namespace_of(workload);
    if ns.is_empty() {
        bail!(
            "{} {:?} has no namespace",
            kind_of(workload),
            name_of(workload)
        );
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// A container's `args` (strings).
pub fn args(container: &Value) -> Vec<String> {
    container
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A container's `env` as the kubelet resolves it: `value`, and
/// `valueFrom.fieldRef` through `field` (e.g. `spec.nodeName` -> the node).
/// Any other `valueFrom` (secrets, config maps, resources) is an error.
pub fn env(
    container: &Value,
    field: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("env entry without name: {e}"))?;
        let value = if let Some(v) = e.get("value") {
            v.as_str().unwrap_or_default().to_owned()
        } else if let Some(path) = e
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            field(path).ok_or_else(|| anyhow!("env {name}: no value for fieldRef {path}"))?
        } else if e.get("valueFrom").is_some() {
            bail!("env {name}: unsupported valueFrom {e}");
        } else {
            String::new()
        };
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// The content of the file at `path` inside container `container` of
/// `workload`, as the kubelet would mount it: the volume mount whose
/// `mountPath` holds `path`, its volume, the ConfigMap (or Secret) it names
/// among `objs`, and the key for the rest of the path (honouring `items`
/// and `subPath`).
pub fn mounted_file(
    objs: &[Value],
    workload: &Value,
    container_name: &str,
    path: &str,
) -> Result<String> {
    let c = container(workload, container_name)?;
    let mounts = c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("container {container_name:?} mounts nothing"))?;
    let (mount, rest) = mounts
        .iter()
        .filter_map(|m| {
            let mp = m.get("mountPath")?.as_str()?.trim_end_matches('/');
            let rest = if path == mp {
                ""
            } else {
                path.strip_prefix(mp)?.strip_prefix('/')?
            };
            Some((m, rest))
        })
        .max_by_key(|(m, _)| {
            m.get("mountPath")
                .and_then(Value::as_str)
                .map_or(0, str::len)
        })
        .ok_or_else(|| anyhow!("no volume mount of container {container_name:?} holds {path}"))?;
    let volume_name = mount
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("volume mount without name"))?;
    // With subPath, the mount is one entry of the volume.
    let rel = match mount.get("subPath").and_then(Value::as_str) {
        Some(sub) if rest.is_empty() => sub.to_owned(),
        Some(sub) => format!("{sub}/{rest}"),
        None => rest.to_owned(),
    };
    let volume = pod_spec(workload)?
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(volume_name))
        })
        .ok_or_else(|| anyhow!("no volume {volume_name:?} in {}", name_of(workload)))?;
    let (source, kind, name_key) = if let Some(cm) = volume.get("configMap") {
        (cm, "ConfigMap", "name")
    } else if let Some(s) = volume.get("secret") {
        (s, "Secret", "secretName")
    } else {
        bail!("volume {volume_name:?} is neither a configMap nor a secret: {volume}");
    };
    let obj_name = source
        .get(name_key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("volume {volume_name:?} names no {kind}"))?;
    let ns = namespace_of(workload);
    let obj = objs
        .iter()
        .find(|o| kind_of(o) == kind && name_of(o) == obj_name && namespace_of(o) == ns)
        .ok_or_else(|| {
            anyhow!(
                "no {kind} {ns}/{obj_name} (volume {volume_name:?}) among {:?}",
                summary(objs)
            )
        })?;
    // `items` maps keys to paths; without it every key is a file of its name.
    let key = match source.get("items").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .find(|i| i.get("path").and_then(Value::as_str) == Some(rel.as_str()))
            .and_then(|i| i.get("key").and_then(Value::as_str))
            .ok_or_else(|| anyhow!("no item of volume {volume_name:?} has path {rel:?}"))?
            .to_owned(),
        None => rel.clone(),
    };
    if let Some(s) = obj
        .pointer("/data")
        .and_then(|d| d.get(&key))
        .and_then(Value::as_str)
    {
        if kind == "Secret" {
            bail!("{kind} {obj_name} key {key:?}: base64 data is not decoded here");
        }
        return Ok(s.to_owned());
    }
    if let Some(s) = obj
        .pointer("/stringData")
        .and_then(|d| d.get(&key))
        .and_then(Value::as_str)
    {
        return Ok(s.to_owned());
    }
    bail!("{kind} {obj_name} has no key {key:?} (for {path})")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: m, namespace: ns1}
spec:
  template:
    spec:
      serviceAccountName: sa1
      containers:
        - name: c
          args: ["--config", "/etc/app/app.yaml"]
          env:
            - {name: A, value: "1"}
            - name: NODE_NAME
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          volumeMounts:
            - {name: config, mountPath: /etc/app}
            - {name: one, mountPath: /etc/one.yaml, subPath: x.yaml}
            - {name: mapped, mountPath: /etc/mapped}
      volumes:
        - name: config
          configMap: {name: cfg-abc123}
        - name: one
          configMap: {name: cfg-abc123}
        - name: mapped
          configMap:
            name: cfg-abc123
            items: [{key: x.yaml, path: renamed.yaml}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg-abc123, namespace: ns1}
data: {app.yaml: "a: 1\n", x.yaml: "x: 2\n"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg-abc123, namespace: other}
data: {app.yaml: "wrong\n"}
"#;

    #[test]
    fn follows_a_workload_to_its_files_env_and_account() {
        let objs = parse_yaml(DS).unwrap();
        assert_eq!(objs.len(), 3);
        let ds = find(&objs, "DaemonSet", "m").unwrap();
        let c = container(ds, "c").unwrap();
        assert_eq!(args(c), ["--config", "/etc/app/app.yaml"]);
        let env = env(c, |f| (f == "spec.nodeName").then(|| "node-1".to_owned())).unwrap();
        assert_eq!(
            env,
            [
                ("A".to_owned(), "1".to_owned()),
                ("NODE_NAME".to_owned(), "node-1".to_owned())
            ]
        );
        assert!(super::env(c, |_| None).is_err());
        assert_eq!(service_account(ds).unwrap(), ("ns1".into(), "sa1".into()));
        assert_eq!(
            mounted_file(&objs, ds, "c", "/etc/app/app.yaml").unwrap(),
            "a: 1\n"
        );
        assert_eq!(
            mounted_file(&objs, ds, "c", "/etc/one.yaml").unwrap(),
            "x: 2\n"
        );
        assert_eq!(
            mounted_file(&objs, ds, "c", "/etc/mapped/renamed.yaml").unwrap(),
            "x: 2\n"
        );
        assert!(mounted_file(&objs, ds, "c", "/etc/mapped/x.yaml").is_err());
        assert!(mounted_file(&objs, ds, "c", "/etc/app/missing.yaml").is_err());
        assert!(mounted_file(&objs, ds, "c", "/elsewhere/app.yaml").is_err());
        assert!(
            find(&objs, "ConfigMap", "cfg-abc123").is_err(),
            "two namespaces"
        );
        assert!(find(&objs, "DaemonSet", "nope").is_err());
    }

    #[test]
    fn crd_status_subresource_per_version() {
        let objs = parse_yaml(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: devices.devices.kubeedge.io}
spec:
  versions:
    - {name: v1beta1, subresources: {status: {}}}
    - {name: v1alpha2}
"#,
        )
        .unwrap();
        let s = |v| crd_status_subresource(&objs, "devices", "devices.kubeedge.io", v);
        assert_eq!(s("v1beta1"), Some(true));
        assert_eq!(s("v1alpha2"), Some(false));
        assert_eq!(s("v9"), None);
    }
}
