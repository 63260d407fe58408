//! Kubernetes RBAC (`rbac.authorization.k8s.io/v1`) as the API server's
//! authorizer applies it, for the fake API server ([`crate::fake_kube`]):
//! request attributes from a request (verb, API group, resource,
//! subresource, namespace, name), roles and bindings fed as objects, and a
//! pure [`Rbac::authorize`] over them.
//!
//! # What it reproduces
//! - Request attributes as `RequestInfoFactory` derives them: `GET` on a
//!   collection is `list`, on an object `get`, either with `?watch=true` is
//!   `watch`; `POST` `create`, `PUT` `update`, `PATCH` `patch` (merge, apply, …),
//!   `DELETE` on an object `delete`, on a collection `deletecollection`;
//!   `list`/`watch` with `fieldSelector=metadata.name=X` carry the name `X`
//!   (so `resourceNames` can allow them); a path outside
//!   `/api/v1/…` / `/apis/G/V/…` is a non-resource request (verb = method).
//! - Rules: `verbs`, `apiGroups`, `resources` (`res`, `res/sub`, `*`,
//!   `*/sub`), `resourceNames` (empty = all), `nonResourceURLs` (exact or
//!   `prefix*`), `*` wherever the API server accepts it.
//! - Bindings: ClusterRoleBinding -> ClusterRole (everywhere); RoleBinding ->
//!   Role or ClusterRole (that namespace only). Subjects `User`, `Group`,
//!   `ServiceAccount` (an empty subject namespace in a RoleBinding means the
//!   binding's namespace). A binding to a missing role grants nothing.
//! - Service account users: `system:serviceaccount:<ns>:<name>` with groups
//!   `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`.
//! - The `Forbidden` message of a real server ([`forbidden_message`]).
//!
//! Not reproduced: `aggregationRule` (aggregated ClusterRoles), escalation
//! checks on writes of RBAC objects, impersonation, the default system roles.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Errors of feeding RBAC objects.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// An RBAC object does not decode.
    #[error("{kind} {name:?}: {source}")]
    Decode {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// A namespaced RBAC object without `metadata.namespace`.
    #[error("{kind} {name:?} has no metadata.namespace")]
    NoNamespace { kind: String, name: String },
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// e.g. `system:serviceaccount:kubeedge-ros2:ros2-mapper`.
    pub name: String,
    /// e.g. `system:serviceaccounts`, `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user a service account's token authenticates as.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// What a request asks for, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection` (resource requests) or the lower-case HTTP method.
    pub verb: String,
    /// Whether this is a resource request (else `path` is what is asked for).
    pub resource_request: bool,
    /// `""` for the core group.
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    /// `""` when none.
    pub subresource: String,
    /// `""` at the cluster scope.
    pub namespace: String,
    /// `""` when none (collections, create).
    pub name: String,
    /// The URL path.
    pub path: String,
}

impl Attributes {
    /// From an HTTP request: method, path and query parameters.
    pub fn from_request(method: &str, path: &str, query: &BTreeMap<String, String>) -> Self {
        let method_lc = method.to_ascii_lowercase();
        let non_resource = || Attributes {
            verb: method_lc.clone(),
            resource_request: false,
            api_group: String::new(),
            api_version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: path.to_owned(),
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", v, rest),
            ["apis", g, v, rest @ ..] => (g, v, rest),
            _ => return non_resource(),
        };
        if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
            return non_resource();
        }
        let (namespace, rest): (&str, &[&str]) = match rest {
            // /namespaces/{ns}: the namespace object itself (its namespace is its name).
            ["namespaces", ns] => (ns, rest),
            ["namespaces", ns, tail @ ..] => (ns, tail),
            _ => ("", rest),
        };
        let (resource, name, subresource) = match rest {
            [r] => (*r, "", ""),
            [r, n] => (*r, *n, ""),
            [r, n, s, ..] => (*r, *n, *s),
            [] => return non_resource(),
        };
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (method, name.is_empty()) {
            ("GET" | "HEAD", _) if watch => "watch",
            ("GET" | "HEAD", true) => "list",
            ("GET" | "HEAD", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            _ => method_lc.as_str(),
        }
        .to_owned();
        let mut name = name.to_owned();
        if name.is_empty() && (verb == "list" || verb == "watch") {
            // A single-object list/watch names its object (resourceNames apply).
            if let Some(sel) = query.get("fieldSelector") {
                let terms: Vec<&str> = sel.split(',').map(str::trim).collect();
                if let [term] = terms.as_slice() {
                    if let Some(n) = term
                        .strip_prefix("metadata.name==")
                        .or_else(|| term.strip_prefix("metadata.name="))
                    {
                        name = n.to_owned();
                    }
                }
            }
        }
        Attributes {
            verb,
            resource_request: true,
            api_group: group.to_owned(),
            api_version: version.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name,
            path: path.to_owned(),
        }
    }

    /// `resource` or `resource/subresource`.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The message of a real API server's 403 (`Status.message`).
pub fn forbidden_message(user: &str, a: &Attributes) -> String {
    if !a.resource_request {
        return format!(
            "forbidden: User {user:?} cannot {} path {:?}",
            a.verb, a.path
        );
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let what = if a.name.is_empty() {
        format!("{qualified} is forbidden")
    } else {
        format!("{qualified} {:?} is forbidden", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    format!(
        "{what}: User {user:?} cannot {} resource {:?} in API group {:?} {scope}",
        a.verb,
        a.full_resource(),
        a.api_group
    )
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl PolicyRule {
    /// Whether this rule allows the request (the API server's `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.api_group) {
            return false;
        }
        let full = a.full_resource();
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == full
                || (!a.subresource.is_empty()
                    && r.strip_prefix("*/") == Some(a.subresource.as_str()))
        });
        resource_ok && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }
}

/// A subject of a binding.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The role a binding grants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub api_group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleObj {
    metadata: Meta,
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingObj {
    metadata: Meta,
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Vec<Subject>,
}

/// A ClusterRoleBinding (`namespace` = `None`) or RoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub namespace: Option<String>,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl Binding {
    fn applies_to(&self, user: &UserInfo) -> bool {
        self.subjects.iter().any(|s| match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.groups.contains(&s.name),
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .or(self.namespace.as_deref())
                    .unwrap_or("");
                !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
            }
            _ => false,
        })
    }
}

/// Roles, ClusterRoles and their bindings.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    bindings: Vec<Binding>,
}

/// The RBAC kinds [`Rbac::add_object`] takes.
pub const RBAC_KINDS: &[&str] = &["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"];

/// Whether an object is an `rbac.authorization.k8s.io` Role/ClusterRole/binding.
pub fn is_rbac(obj: &Value) -> bool {
    let api = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    api.starts_with("rbac.authorization.k8s.io/") && RBAC_KINDS.contains(&kind)
}

impl Rbac {
    /// Takes a Role, ClusterRole, RoleBinding or ClusterRoleBinding (replacing
    /// one of the same name); returns `false` for anything else.
    pub fn add_object(&mut self, obj: &Value) -> Result<bool, RbacError> {
        if !is_rbac(obj) {
            return Ok(false);
        }
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let decode = |e| RbacError::Decode {
            kind: kind.clone(),
            name: name.clone(),
            source: e,
        };
        let namespace = || -> Result<String, RbacError> {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| RbacError::NoNamespace {
                    kind: kind.clone(),
                    name: name.clone(),
                })
        };
        match kind.as_str() {
            "ClusterRole" => {
                let r: RoleObj = serde_json::from_value(obj.clone()).map_err(decode)?;
                self.cluster_roles.insert(r.metadata.name, r.rules);
            }
            "Role" => {
                let ns = namespace()?;
                let r: RoleObj = serde_json::from_value(obj.clone()).map_err(decode)?;
                self.roles.insert((ns, r.metadata.name), r.rules);
            }
            _ => {
                let ns = if kind == "RoleBinding" {
                    Some(namespace()?)
                } else {
                    None
                };
                let b: BindingObj = serde_json::from_value(obj.clone()).map_err(decode)?;
                let binding = Binding {
                    name: b.metadata.name,
                    namespace: ns.or(b.metadata.namespace.filter(|_| kind == "RoleBinding")),
                    role_ref: b.role_ref,
                    subjects: b.subjects,
                };
                self.bindings
                    .retain(|x| !(x.name == binding.name && x.namespace == binding.namespace));
                self.bindings.push(binding);
            }
        }
        Ok(true)
    }

    fn role_rules(&self, b: &Binding) -> &[PolicyRule] {
        let rules = match (b.role_ref.kind.as_str(), &b.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&b.role_ref.name),
            ("Role", Some(ns)) => self.roles.get(&(ns.clone(), b.role_ref.name.clone())),
            _ => None,
        };
        rules.map(Vec::as_slice).unwrap_or(&[])
    }

    /// The rules that apply to `user` for a request in `namespace` (`""`:
    /// cluster scope), each with the binding that grants it.
    pub fn rules_for<'a>(
        &'a self,
        user: &UserInfo,
        namespace: &str,
    ) -> Vec<(&'a Binding, &'a PolicyRule)> {
        self.bindings
            .iter()
            .filter(|b| match &b.namespace {
                None => true,
                Some(ns) => !namespace.is_empty() && ns == namespace,
            })
            .filter(|b| b.applies_to(user))
            .flat_map(|b| self.role_rules(b).iter().map(move |r| (b, r)))
            .collect()
    }

    /// Whether `user` may do `a` (RBAC only denies by not allowing).
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> bool {
        self.rules_for(user, &a.namespace)
            .iter()
            .any(|(_, r)| r.allows(a))
    }

    /// Every rule of every binding that names `user`, wherever it applies.
    pub fn all_rules_of(&self, user: &UserInfo) -> Vec<(&Binding, &PolicyRule)> {
        self.bindings
            .iter()
            .filter(|b| b.applies_to(user))
            .flat_map(|b| self.role_rules(b).iter().map(move |r| (b, r)))
            .collect()
    }

    /// A ClusterRole's rules.
    pub fn cluster_role(&self, name: &str) -> Option<&[PolicyRule]> {
        self.cluster_roles.get(name).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn attrs(method: &str, path: &str) -> Attributes {
        Attributes::from_request(method, path, &BTreeMap::new())
    }

    fn sa() -> UserInfo {
        UserInfo::service_account("kubeedge-ros2", "ros2-mapper")
    }

    fn rbac(objs: &[Value]) -> Rbac {
        let mut r = Rbac::default();
        for o in objs {
            assert!(r.add_object(o).unwrap(), "{o}");
        }
        r
    }

    fn mapper_role(rules: Value) -> Vec<Value> {
        vec![
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "mapper"}, "rules": rules}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "mapper"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mapper"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ros2-mapper", "namespace": "kubeedge-ros2"}]}),
        ]
    }

    const DEV: &str = "/apis/devices.kubeedge.io/v1beta1";

    #[test]
    fn verbs_as_the_api_server_derives_them() {
        let cases = [
            ("GET", format!("{DEV}/devices"), q(&[]), "list", "", ""),
            (
                "GET",
                format!("{DEV}/devices"),
                q(&[("watch", "true")]),
                "watch",
                "",
                "",
            ),
            (
                "GET",
                format!("{DEV}/namespaces/default/devices/robot1"),
                q(&[]),
                "get",
                "default",
                "robot1",
            ),
            (
                "GET",
                format!("{DEV}/namespaces/default/devices"),
                q(&[("watch", "1"), ("fieldSelector", "metadata.name=robot1")]),
                "watch",
                "default",
                "robot1",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/events".into(),
                q(&[]),
                "create",
                "default",
                "",
            ),
            (
                "PUT",
                format!("{DEV}/namespaces/default/devices/robot1"),
                q(&[]),
                "update",
                "default",
                "robot1",
            ),
            (
                "PATCH",
                format!("{DEV}/namespaces/default/devices/robot1/status"),
                q(&[]),
                "patch",
                "default",
                "robot1",
            ),
            (
                "DELETE",
                format!("{DEV}/namespaces/default/devices/robot1"),
                q(&[]),
                "delete",
                "default",
                "robot1",
            ),
            (
                "DELETE",
                format!("{DEV}/namespaces/default/devices"),
                q(&[]),
                "deletecollection",
                "default",
                "",
            ),
        ];
        for (method, path, query, verb, ns, name) in cases {
            let a = Attributes::from_request(method, &path, &query);
            assert!(a.resource_request, "{path}");
            assert_eq!(
                (a.verb.as_str(), a.namespace.as_str(), a.name.as_str()),
                (verb, ns, name),
                "{method} {path} {query:?}"
            );
        }
        let a = attrs(
            "PATCH",
            &format!("{DEV}/namespaces/default/devices/robot1/status"),
        );
        assert_eq!(
            (a.api_group.as_str(), a.full_resource().as_str()),
            ("devices.kubeedge.io", "devices/status")
        );
        let a = attrs("GET", "/api/v1/namespaces/kube-system");
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        for p in [
            "/version",
            "/apis",
            "/apis/devices.kubeedge.io/v1beta1",
            "/healthz",
        ] {
            assert!(!attrs("GET", p).resource_request, "{p}");
        }
    }

    #[test]
    fn the_forbidden_message_is_a_real_servers() {
        let a = attrs(
            "PATCH",
            &format!("{DEV}/namespaces/default/devices/robot1/status"),
        );
        assert_eq!(
            forbidden_message(&sa().name, &a),
            r#"devices.devices.kubeedge.io "robot1" is forbidden: User "system:serviceaccount:kubeedge-ros2:ros2-mapper" cannot patch resource "devices/status" in API group "devices.kubeedge.io" in the namespace "default""#
        );
        let a = attrs("GET", &format!("{DEV}/devices"));
        assert_eq!(
            forbidden_message("u", &a),
            r#"devices.devices.kubeedge.io is forbidden: User "u" cannot list resource "devices" in API group "devices.kubeedge.io" at the cluster scope"#
        );
        let a = attrs("POST", "/api/v1/namespaces/default/events");
        assert_eq!(
            forbidden_message("u", &a),
            r#"events is forbidden: User "u" cannot create resource "events" in API group "" in the namespace "default""#
        );
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let r = rbac(&mapper_role(json!([
            {"apiGroups": ["devices.kubeedge.io"], "resources": ["devices", "devicemodels"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["devices.kubeedge.io"], "resources": ["devices/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["only-this"], "verbs": ["*"]},
        ])));
        let user = sa();
        let ok = |m: &str, p: &str, query: &[(&str, &str)]| {
            r.authorize(&user, &Attributes::from_request(m, p, &q(query)))
        };
        assert!(ok("GET", &format!("{DEV}/devices"), &[]));
        assert!(ok("GET", &format!("{DEV}/devices"), &[("watch", "true")]));
        assert!(ok("GET", &format!("{DEV}/devicemodels"), &[]));
        assert!(ok(
            "GET",
            &format!("{DEV}/namespaces/default/devices/robot1"),
            &[]
        ));
        assert!(ok(
            "PATCH",
            &format!("{DEV}/namespaces/default/devices/robot1/status"),
            &[]
        ));
        assert!(ok("POST", "/api/v1/namespaces/default/events", &[]));
        // A subresource is not its resource, nor the other way round.
        assert!(!ok(
            "PATCH",
            &format!("{DEV}/namespaces/default/devices/robot1"),
            &[]
        ));
        assert!(!ok(
            "GET",
            &format!("{DEV}/namespaces/default/devices/robot1/status"),
            &[]
        ));
        // Other verbs, groups, resources.
        assert!(!ok(
            "DELETE",
            &format!("{DEV}/namespaces/default/devices/robot1"),
            &[]
        ));
        assert!(!ok(
            "POST",
            &format!("{DEV}/namespaces/default/devicestatuses"),
            &[]
        ));
        assert!(!ok(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            &[]
        ));
        assert!(!ok("GET", "/api/v1/namespaces/default/secrets", &[]));
        // resourceNames: that object only; a list is allowed only when it names it.
        assert!(ok(
            "DELETE",
            "/api/v1/namespaces/x/configmaps/only-this",
            &[]
        ));
        assert!(!ok("GET", "/api/v1/namespaces/x/configmaps/other", &[]));
        assert!(!ok("GET", "/api/v1/namespaces/x/configmaps", &[]));
        assert!(ok(
            "GET",
            "/api/v1/namespaces/x/configmaps",
            &[("fieldSelector", "metadata.name=only-this")]
        ));
        // Another user gets nothing.
        let other = UserInfo::service_account("default", "ros2-mapper");
        assert!(!r.authorize(&other, &attrs("GET", &format!("{DEV}/devices"))));
    }

    #[test]
    fn wildcards() {
        let r = rbac(&mapper_role(json!([
            {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]},
            {"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]},
        ])));
        let user = sa();
        let ok = |m: &str, p: &str| r.authorize(&user, &attrs(m, p));
        assert!(ok(
            "PATCH",
            &format!("{DEV}/namespaces/a/devicestatuses/x/status")
        ));
        assert!(ok("PATCH", "/api/v1/namespaces/a/pods/p/status"));
        assert!(!ok("PATCH", "/api/v1/namespaces/a/pods/p"));
        assert!(ok("DELETE", "/apis/apps/v1/namespaces/a/daemonsets"));
        assert!(ok(
            "PATCH",
            "/apis/apps/v1/namespaces/a/deployments/d/scale"
        ));
        assert!(!ok("GET", "/apis/batch/v1/jobs"));
        assert!(ok("GET", "/healthz"));
        assert!(ok("GET", "/metrics/cadvisor"));
        assert!(!ok("POST", "/healthz"));
        assert!(!ok("GET", "/version"));
    }

    #[test]
    fn role_bindings_are_namespaced_and_subjects_match_by_kind() {
        let r = rbac(&[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "status-writer", "namespace": "robots"},
                   "rules": [{"apiGroups": ["devices.kubeedge.io"], "resources": ["devices/status"], "verbs": ["patch"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "reader"},
                   "rules": [{"apiGroups": ["devices.kubeedge.io"], "resources": ["devices"], "verbs": ["get", "list"]}]}),
            // No subject namespace: the binding's.
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "w", "namespace": "robots"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "status-writer"},
                   "subjects": [{"kind": "ServiceAccount", "name": "m"}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "r", "namespace": "robots"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                   "subjects": [{"kind": "Group", "name": "system:serviceaccounts:other"},
                                {"kind": "User", "name": "alice"}]}),
            // A binding to a missing role grants nothing.
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "dangling"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nope"},
                   "subjects": [{"kind": "User", "name": "alice"}]}),
        ]);
        let m = UserInfo::service_account("robots", "m");
        let patch = |ns: &str| attrs("PATCH", &format!("{DEV}/namespaces/{ns}/devices/d/status"));
        assert!(r.authorize(&m, &patch("robots")));
        assert!(!r.authorize(&m, &patch("default")));
        assert!(!r.authorize(&UserInfo::service_account("default", "m"), &patch("robots")));
        // A ClusterRole through a RoleBinding: that namespace only, never the cluster scope.
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        };
        let other_sa = UserInfo::service_account("other", "x");
        for u in [&alice, &other_sa] {
            assert!(r.authorize(
                u,
                &attrs("GET", &format!("{DEV}/namespaces/robots/devices"))
            ));
            assert!(!r.authorize(
                u,
                &attrs("GET", &format!("{DEV}/namespaces/default/devices"))
            ));
            assert!(!r.authorize(u, &attrs("GET", &format!("{DEV}/devices"))));
        }
        assert_eq!(r.all_rules_of(&alice).len(), 1);
    }

    #[test]
    fn non_rbac_objects_are_not_taken_and_bad_ones_are_errors() {
        let mut r = Rbac::default();
        assert!(!r
            .add_object(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
            )
            .unwrap());
        assert!(r
            .add_object(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "x"}}))
            .is_err());
        assert!(r
            .add_object(
                &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                "metadata": {"name": "x"}, "rules": [{"verbs": "get"}]})
            )
            .is_err());
    }
}
