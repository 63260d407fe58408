//! ROS 2 names and their DDS forms.
//!
//! ROS 2 maps its graph names onto DDS topic names with a prefix per kind
//! (`rt/` topics, `rq/…Request` and `rr/…Reply` services) and its interface
//! type names onto DDS type names (`pkg/msg/Name` <-> `pkg::msg::dds_::Name_`).
//! Actions are three services and two topics under `<action>/_action/`.

use std::fmt;

/// DDS topic names longer than this are rejected by DDS implementations.
pub const MAX_DDS_TOPIC_LEN: usize = 255;

/// A name that is not a valid ROS 2 name, type name or DDS mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid ROS name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid ROS interface type name {name:?}: {reason}")]
    InvalidType { name: String, reason: &'static str },
    #[error("DDS topic {name:?} is not a ROS 2 topic, service or action name: {reason}")]
    NotRos { name: String, reason: &'static str },
    #[error("DDS type {name:?} is not a ROS 2 type name: expected pkg::msg::dds_::Name_ (or srv/action)")]
    NotRosType { name: String },
    #[error(
        "ROS name {name:?} maps to a DDS topic of {len} characters (limit {MAX_DDS_TOPIC_LEN})"
    )]
    TooLong { name: String, len: usize },
}

/// A validated, fully qualified ROS 2 graph name such as `/robot1/odom`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RosName(String);

impl RosName {
    /// Parses a fully qualified name (it must start with `/`).
    pub fn parse(name: &str) -> Result<Self, NameError> {
        validate_absolute(name)?;
        Ok(Self(name.to_owned()))
    }

    /// Resolves a possibly relative name against a namespace: `odom` in
    /// namespace `/robot1` is `/robot1/odom`; absolute names stay as they are.
    /// `~` (private names) needs a node name and is rejected here.
    pub fn resolve(name: &str, namespace: &str) -> Result<Self, NameError> {
        if name.starts_with('~') {
            return Err(NameError::InvalidName {
                name: name.to_owned(),
                reason: "private names (~) need a node name and are not supported here",
            });
        }
        if name.starts_with('/') {
            return Self::parse(name);
        }
        let ns = Namespace::parse(namespace)?;
        if name.is_empty() {
            return Err(invalid(name, "must not be empty"));
        }
        Self::parse(&format!("{}/{}", ns.0.trim_end_matches('/'), name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefixes this name with a namespace: `/odom` under `/robot1` is `/robot1/odom`.
    pub fn prefixed(&self, ns: &Namespace) -> Self {
        if ns.is_root() {
            return self.clone();
        }
        Self(format!("{}{}", ns.0, self.0))
    }

    /// Strips a namespace prefix: `/robot1/odom` without `/robot1` is `/odom`.
    /// `None` when the name is not inside the namespace.
    pub fn strip_namespace(&self, ns: &Namespace) -> Option<Self> {
        if ns.is_root() {
            return Some(self.clone());
        }
        let rest = self.0.strip_prefix(ns.0.as_str())?;
        rest.starts_with('/').then(|| Self(rest.to_owned()))
    }

    /// The DDS topic of this name used as a topic: `/chatter` -> `rt/chatter`.
    pub fn to_dds_topic(&self) -> Result<String, NameError> {
        self.dds_with("rt", "")
    }

    /// The DDS request topic of this name used as a service.
    pub fn to_dds_request(&self) -> Result<String, NameError> {
        self.dds_with("rq", "Request")
    }

    /// The DDS reply topic of this name used as a service.
    pub fn to_dds_reply(&self) -> Result<String, NameError> {
        self.dds_with("rr", "Reply")
    }

    fn dds_with(&self, prefix: &str, suffix: &str) -> Result<String, NameError> {
        let s = format!("{prefix}{}{suffix}", self.0);
        if s.len() > MAX_DDS_TOPIC_LEN {
            return Err(NameError::TooLong {
                name: self.0.clone(),
                len: s.len(),
            });
        }
        Ok(s)
    }
}

impl fmt::Display for RosName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RosName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A validated namespace: `/` or `/a/b` (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// Parses `/`, `/robot1`, `robot1` (taken as `/robot1`) or `/fleet/a/`.
    pub fn parse(ns: &str) -> Result<Self, NameError> {
        if ns.is_empty() || ns == "/" {
            return Ok(Self("/".into()));
        }
        let abs = if ns.starts_with('/') {
            ns.to_owned()
        } else {
            format!("/{ns}")
        };
        let abs = abs.strip_suffix('/').map(str::to_owned).unwrap_or(abs);
        validate_absolute(&abs)?;
        Ok(Self(abs))
    }

    pub fn root() -> Self {
        Self("/".into())
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(name: &str, reason: &'static str) -> NameError {
    NameError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// The rules of `rmw_validate_full_topic_name`: starts with `/`, only
/// alphanumerics, `_` and `/`, no `//`, no trailing `/`, no token that starts
/// with a digit.
fn validate_absolute(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    if !name.starts_with('/') {
        return Err(invalid(name, "must be absolute (start with '/')"));
    }
    if name == "/" {
        return Err(invalid(name, "must name something below the root '/'"));
    }
    if name.ends_with('/') {
        return Err(invalid(name, "must not end with '/'"));
    }
    if name
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '/'))
    {
        return Err(invalid(
            name,
            "may contain only letters, digits, '_' and '/'",
        ));
    }
    for token in name[1..].split('/') {
        if token.is_empty() {
            return Err(invalid(name, "must not contain '//'"));
        }
        if token.as_bytes()[0].is_ascii_digit() {
            return Err(invalid(name, "a token must not start with a digit"));
        }
    }
    Ok(())
}

/// What a DDS topic name means in ROS 2 terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdsTopic {
    /// `rt/<name>`
    Topic(RosName),
    /// `rq/<name>Request`
    ServiceRequest(RosName),
    /// `rr/<name>Reply`
    ServiceReply(RosName),
    /// A topic or service below `<action>/_action/`.
    Action { action: RosName, part: ActionPart },
}

/// The parts of a ROS 2 action on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionPart {
    SendGoalRequest,
    SendGoalReply,
    CancelGoalRequest,
    CancelGoalReply,
    GetResultRequest,
    GetResultReply,
    Feedback,
    Status,
}

impl ActionPart {
    pub const ALL: [ActionPart; 8] = [
        ActionPart::SendGoalRequest,
        ActionPart::SendGoalReply,
        ActionPart::CancelGoalRequest,
        ActionPart::CancelGoalReply,
        ActionPart::GetResultRequest,
        ActionPart::GetResultReply,
        ActionPart::Feedback,
        ActionPart::Status,
    ];

    /// `(DDS prefix, sub-name, DDS suffix)` of this part.
    fn wire(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::SendGoalRequest => ("rq", "send_goal", "Request"),
            Self::SendGoalReply => ("rr", "send_goal", "Reply"),
            Self::CancelGoalRequest => ("rq", "cancel_goal", "Request"),
            Self::CancelGoalReply => ("rr", "cancel_goal", "Reply"),
            Self::GetResultRequest => ("rq", "get_result", "Request"),
            Self::GetResultReply => ("rr", "get_result", "Reply"),
            Self::Feedback => ("rt", "feedback", ""),
            Self::Status => ("rt", "status", ""),
        }
    }

    /// The DDS type of this part for action type `pkg/action/Name`.
    pub fn type_name(self, action_type: &TypeName) -> TypeName {
        let n = &action_type.name;
        let (pkg, kind, name) = match self {
            Self::SendGoalRequest => (
                action_type.package.as_str(),
                InterfaceKind::Action,
                format!("{n}_SendGoal_Request"),
            ),
            Self::SendGoalReply => (
                action_type.package.as_str(),
                InterfaceKind::Action,
                format!("{n}_SendGoal_Response"),
            ),
            Self::GetResultRequest => (
                action_type.package.as_str(),
                InterfaceKind::Action,
                format!("{n}_GetResult_Request"),
            ),
            Self::GetResultReply => (
                action_type.package.as_str(),
                InterfaceKind::Action,
                format!("{n}_GetResult_Response"),
            ),
            Self::Feedback => (
                action_type.package.as_str(),
                InterfaceKind::Action,
                format!("{n}_FeedbackMessage"),
            ),
            Self::CancelGoalRequest => (
                "action_msgs",
                InterfaceKind::Srv,
                "CancelGoal_Request".to_owned(),
            ),
            Self::CancelGoalReply => (
                "action_msgs",
                InterfaceKind::Srv,
                "CancelGoal_Response".to_owned(),
            ),
            Self::Status => (
                "action_msgs",
                InterfaceKind::Msg,
                "GoalStatusArray".to_owned(),
            ),
        };
        TypeName {
            package: pkg.to_owned(),
            kind,
            name,
        }
    }
}

impl DdsTopic {
    /// Interprets a DDS topic name.
    pub fn parse(dds: &str) -> Result<Self, NameError> {
        let not_ros = |reason| NameError::NotRos {
            name: dds.to_owned(),
            reason,
        };
        let (prefix, rest) = dds
            .split_once('/')
            .ok_or_else(|| not_ros("no rt/, rq/ or rr/ prefix"))?;
        let body = match prefix {
            "rt" => rest,
            "rq" => rest
                .strip_suffix("Request")
                .ok_or_else(|| not_ros("rq/ topic must end in 'Request'"))?,
            "rr" => rest
                .strip_suffix("Reply")
                .ok_or_else(|| not_ros("rr/ topic must end in 'Reply'"))?,
            _ => return Err(not_ros("prefix must be rt/, rq/ or rr/")),
        };
        let name = RosName::parse(&format!("/{body}"))?;
        if let Some((action, sub)) = name.0.rsplit_once("/_action/") {
            for part in ActionPart::ALL {
                let (p, s, _) = part.wire();
                if p == prefix && s == sub {
                    return Ok(Self::Action {
                        action: RosName::parse(action)?,
                        part,
                    });
                }
            }
        }
        Ok(match prefix {
            "rt" => Self::Topic(name),
            "rq" => Self::ServiceRequest(name),
            _ => Self::ServiceReply(name),
        })
    }

    /// The DDS topic name of this ROS entity.
    pub fn to_dds(&self) -> Result<String, NameError> {
        match self {
            Self::Topic(n) => n.to_dds_topic(),
            Self::ServiceRequest(n) => n.to_dds_request(),
            Self::ServiceReply(n) => n.to_dds_reply(),
            Self::Action { action, part } => {
                let (p, s, suffix) = part.wire();
                let full = RosName(format!("{}/_action/{s}", action.0));
                full.dds_with(p, suffix)
            }
        }
    }

    /// The ROS name this DDS topic belongs to (the action name for actions).
    pub fn ros_name(&self) -> &RosName {
        match self {
            Self::Topic(n) | Self::ServiceRequest(n) | Self::ServiceReply(n) => n,
            Self::Action { action, .. } => action,
        }
    }
}

/// Which kind of interface a type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InterfaceKind {
    Msg,
    Srv,
    Action,
}

impl InterfaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Msg => "msg",
            Self::Srv => "srv",
            Self::Action => "action",
        }
    }
}

/// A ROS 2 interface type name such as `sensor_msgs/msg/BatteryState` or
/// `example_interfaces/srv/AddTwoInts_Request`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeName {
    pub package: String,
    pub kind: InterfaceKind,
    pub name: String,
}

impl TypeName {
    pub fn new(package: &str, kind: InterfaceKind, name: &str) -> Result<Self, NameError> {
        let full = format!("{package}/{}/{name}", kind.as_str());
        validate_package(package, &full)?;
        validate_type_ident(name, &full)?;
        Ok(Self {
            package: package.to_owned(),
            kind,
            name: name.to_owned(),
        })
    }

    /// Parses `pkg/msg/Name`, `pkg/srv/Name_Request`, `pkg/action/Name_Goal`,
    /// or the short form `pkg/Name` (a message).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = |reason| NameError::InvalidType {
            name: s.to_owned(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [pkg, name] => Self::new(pkg, InterfaceKind::Msg, name),
            [pkg, kind, name] => {
                let kind = match *kind {
                    "msg" => InterfaceKind::Msg,
                    "srv" => InterfaceKind::Srv,
                    "action" => InterfaceKind::Action,
                    _ => return Err(bad("the middle part must be msg, srv or action")),
                };
                Self::new(pkg, kind, name)
            }
            _ => Err(bad("expected pkg/msg/Name or pkg/Name")),
        }
    }

    /// The DDS type name: `sensor_msgs::msg::dds_::BatteryState_`.
    pub fn to_dds(&self) -> String {
        format!(
            "{}::{}::dds_::{}_",
            self.package,
            self.kind.as_str(),
            self.name
        )
    }

    /// Parses a DDS type name produced by a ROS 2 rmw.
    pub fn from_dds(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::NotRosType { name: s.to_owned() };
        let parts: Vec<&str> = s.split("::").collect();
        let [pkg, kind, "dds_", name] = parts.as_slice() else {
            return Err(bad());
        };
        let name = name.strip_suffix('_').ok_or_else(bad)?;
        Self::parse(&format!("{pkg}/{kind}/{name}")).map_err(|_| bad())
    }

    /// The request type of service `pkg/srv/Name`.
    pub fn service_request(&self) -> Self {
        Self {
            package: self.package.clone(),
            kind: self.kind,
            name: format!("{}_Request", self.name),
        }
    }

    /// The response type of service `pkg/srv/Name`.
    pub fn service_response(&self) -> Self {
        Self {
            package: self.package.clone(),
            kind: self.kind,
            name: format!("{}_Response", self.name),
        }
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.package, self.kind.as_str(), self.name)
    }
}

impl std::str::FromStr for TypeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn validate_package(pkg: &str, full: &str) -> Result<(), NameError> {
    let bad = |reason| NameError::InvalidType {
        name: full.to_owned(),
        reason,
    };
    let mut chars = pkg.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return Err(bad("package name must start with a lowercase letter")),
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(bad(
            "package name may contain only lowercase letters, digits and '_'",
        ));
    }
    Ok(())
}

fn validate_type_ident(name: &str, full: &str) -> Result<(), NameError> {
    let bad = |reason| NameError::InvalidType {
        name: full.to_owned(),
        reason,
    };
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_uppercase() => {}
        _ => return Err(bad("type name must start with an uppercase letter")),
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad("type name may contain only letters, digits and '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_both_ways() {
        let n = RosName::parse("/robot1/odom").unwrap();
        assert_eq!(n.to_dds_topic().unwrap(), "rt/robot1/odom");
        assert_eq!(
            DdsTopic::parse("rt/robot1/odom").unwrap(),
            DdsTopic::Topic(n)
        );
        let s = RosName::parse("/add_two_ints").unwrap();
        assert_eq!(s.to_dds_request().unwrap(), "rq/add_two_intsRequest");
        assert_eq!(s.to_dds_reply().unwrap(), "rr/add_two_intsReply");
        assert_eq!(
            DdsTopic::parse("rr/add_two_intsReply").unwrap(),
            DdsTopic::ServiceReply(s.clone())
        );
        assert_eq!(
            DdsTopic::parse("rq/add_two_intsRequest").unwrap(),
            DdsTopic::ServiceRequest(s)
        );
    }

    #[test]
    fn action_parts_round_trip() {
        let a = RosName::parse("/navigate_to_pose").unwrap();
        for part in ActionPart::ALL {
            let t = DdsTopic::Action {
                action: a.clone(),
                part,
            };
            let dds = t.to_dds().unwrap();
            assert_eq!(DdsTopic::parse(&dds).unwrap(), t, "{dds}");
        }
        assert_eq!(
            DdsTopic::Action {
                action: a.clone(),
                part: ActionPart::SendGoalRequest
            }
            .to_dds()
            .unwrap(),
            "rq/navigate_to_pose/_action/send_goalRequest"
        );
        assert_eq!(
            DdsTopic::Action {
                action: a,
                part: ActionPart::Status
            }
            .to_dds()
            .unwrap(),
            "rt/navigate_to_pose/_action/status"
        );
        let ty = TypeName::parse("nav2_msgs/action/NavigateToPose").unwrap();
        assert_eq!(
            ActionPart::SendGoalRequest.type_name(&ty).to_dds(),
            "nav2_msgs::action::dds_::NavigateToPose_SendGoal_Request_"
        );
        assert_eq!(
            ActionPart::Status.type_name(&ty).to_string(),
            "action_msgs/msg/GoalStatusArray"
        );
    }

    #[test]
    fn type_names_map_both_ways() {
        let t = TypeName::parse("sensor_msgs/msg/BatteryState").unwrap();
        assert_eq!(t.to_dds(), "sensor_msgs::msg::dds_::BatteryState_");
        assert_eq!(
            TypeName::from_dds("sensor_msgs::msg::dds_::BatteryState_").unwrap(),
            t
        );
        assert_eq!(
            TypeName::parse("std_msgs/String").unwrap().to_string(),
            "std_msgs/msg/String"
        );
        let srv = TypeName::parse("example_interfaces/srv/AddTwoInts").unwrap();
        assert_eq!(
            srv.service_request().to_dds(),
            "example_interfaces::srv::dds_::AddTwoInts_Request_"
        );
        assert_eq!(
            TypeName::from_dds("example_interfaces::srv::dds_::AddTwoInts_Response_").unwrap(),
            srv.service_response()
        );
        assert!(TypeName::from_dds("std_msgs::msg::String").is_err());
        assert!(TypeName::parse("Std/msg/X").is_err());
        assert!(TypeName::parse("std_msgs/foo/X").is_err());
        assert!(TypeName::parse("std_msgs/msg/lower").is_err());
    }

    #[test]
    fn bad_names_are_typed_errors() {
        for bad in [
            "", "/", "odom", "/odom/", "//odom", "/a//b", "/1odom", "/od om", "/odöm", "/a/-b",
        ] {
            let err = RosName::parse(bad).unwrap_err();
            assert!(matches!(err, NameError::InvalidName { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("invalid ROS name"));
        }
        assert!(DdsTopic::parse("chatter").is_err());
        assert!(DdsTopic::parse("rq/fooReply").is_err());
        assert!(DdsTopic::parse("xx/foo").is_err());
        let long = format!("/{}", "a".repeat(300));
        assert!(matches!(
            RosName::parse(&long).unwrap().to_dds_topic(),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn namespaces_prefix_and_strip() {
        let ns = Namespace::parse("robot1/").unwrap();
        assert_eq!(ns.as_str(), "/robot1");
        let odom = RosName::parse("/odom").unwrap();
        let full = odom.prefixed(&ns);
        assert_eq!(full.as_str(), "/robot1/odom");
        assert_eq!(full.strip_namespace(&ns).unwrap(), odom);
        assert_eq!(
            RosName::parse("/robot10/odom")
                .unwrap()
                .strip_namespace(&ns),
            None
        );
        assert_eq!(odom.prefixed(&Namespace::root()), odom);
        assert_eq!(
            RosName::resolve("odom", "/robot1").unwrap().as_str(),
            "/robot1/odom"
        );
        assert_eq!(
            RosName::resolve("/odom", "/robot1").unwrap().as_str(),
            "/odom"
        );
        assert_eq!(RosName::resolve("odom", "/").unwrap().as_str(), "/odom");
        assert!(RosName::resolve("~/odom", "/").is_err());
    }
}
