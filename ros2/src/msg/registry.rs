//! The type registry: message definitions by name, resolved into layouts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{
    bundled_files, parse_action, parse_message, parse_service, ArrayKind, BaseType, Constant,
    MessageDef, MsgError, Primitive,
};
use crate::names::{InterfaceKind, TypeName};
use crate::value::{FieldPath, PathSegment, Value};

/// The name ROS 2 gives the one member of an otherwise empty message.
pub const EMPTY_MEMBER: &str = "structure_needs_at_least_one_member";

/// A message type resolved for the codec: nested types inlined.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub type_name: TypeName,
    pub fields: Vec<LayoutField>,
    pub constants: Vec<Constant>,
}

/// One field of a [`Layout`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutField {
    pub name: Arc<str>,
    pub ty: LayoutType,
    pub array: ArrayKind,
    pub default: Option<Value>,
}

/// The element type of a [`LayoutField`].
#[derive(Debug, Clone, PartialEq)]
pub enum LayoutType {
    Primitive(Primitive),
    String { bound: Option<usize> },
    WString { bound: Option<usize> },
    Struct(Arc<Layout>),
}

impl std::fmt::Display for LayoutType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Primitive(p) => f.write_str(p.name()),
            Self::String { bound: None } => f.write_str("string"),
            Self::String { bound: Some(b) } => write!(f, "string<={b}"),
            Self::WString { bound: None } => f.write_str("wstring"),
            Self::WString { bound: Some(b) } => write!(f, "wstring<={b}"),
            Self::Struct(l) => write!(f, "{}", l.type_name),
        }
    }
}

/// What a field path leads to inside a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PathTarget {
    pub ty: LayoutType,
    /// `Single` for an element reached by index or a scalar field.
    pub array: ArrayKind,
}

impl Layout {
    /// The DDS type name (`pkg::msg::dds_::Name_`).
    pub fn dds_type_name(&self) -> String {
        self.type_name.to_dds()
    }

    pub fn field(&self, name: &str) -> Option<(usize, &LayoutField)> {
        self.fields
            .iter()
            .enumerate()
            .find(|(_, f)| &*f.name == name)
    }

    /// The value of a new message: defaults where the definition gives them,
    /// zero / empty elsewhere.
    pub fn default_value(&self) -> Value {
        Value::Struct(
            self.fields
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        f.default.clone().unwrap_or_else(|| f.zero_value()),
                    )
                })
                .collect(),
        )
    }

    /// Checks a field path against this type and says what it leads to.
    pub fn resolve_path(&self, path: &FieldPath) -> Result<PathTarget, String> {
        let mut nested: Option<Arc<Layout>> = None;
        let mut target: Option<PathTarget> = None;
        for seg in path.segments() {
            match seg {
                PathSegment::Field(name) => {
                    if let Some(t) = &target {
                        if t.array.is_array() {
                            return Err(format!(
                                "{path}: field {name:?} follows an array; index it first"
                            ));
                        }
                        match &t.ty {
                            LayoutType::Struct(l) => nested = Some(l.clone()),
                            other => return Err(format!("{path}: {other} has no field {name:?}")),
                        }
                    }
                    let layout = nested.as_deref().unwrap_or(self);
                    let (_, f) = layout.field(name).ok_or_else(|| {
                        format!("{path}: {} has no field {name:?}", layout.type_name)
                    })?;
                    target = Some(PathTarget {
                        ty: f.ty.clone(),
                        array: f.array,
                    });
                }
                PathSegment::Index(i) => {
                    let t = target
                        .as_mut()
                        .ok_or_else(|| format!("{path}: a path must start with a field name"))?;
                    match t.array {
                        ArrayKind::Single => {
                            return Err(format!("{path}: [{i}] indexes a non-array"))
                        }
                        ArrayKind::Fixed(n) if *i >= n => {
                            return Err(format!(
                                "{path}: index {i} is outside the fixed array of {n}"
                            ))
                        }
                        ArrayKind::Bounded(n) if *i >= n => {
                            return Err(format!("{path}: index {i} is outside the bound {n}"))
                        }
                        _ => t.array = ArrayKind::Single,
                    }
                }
            }
        }
        target.ok_or_else(|| "empty field path".to_owned())
    }
}

impl LayoutField {
    /// The zero value of this field: 0, false, "", empty sequence, or a
    /// fixed array of zero elements.
    pub fn zero_value(&self) -> Value {
        match self.array {
            ArrayKind::Single => self.ty.zero_value(),
            ArrayKind::Fixed(n) => match self.ty {
                LayoutType::Primitive(p) if p.is_octet() => Value::Bytes(vec![0; n]),
                _ => Value::Array((0..n).map(|_| self.ty.zero_value()).collect()),
            },
            ArrayKind::Bounded(_) | ArrayKind::Unbounded => match self.ty {
                LayoutType::Primitive(p) if p.is_octet() => Value::Bytes(Vec::new()),
                _ => Value::Array(Vec::new()),
            },
        }
    }
}

impl LayoutType {
    /// The zero (default-constructed) value of one element.
    pub fn zero_value(&self) -> Value {
        match self {
            Self::Primitive(p) => Value::zero(*p),
            Self::String { .. } | Self::WString { .. } => Value::String(String::new()),
            Self::Struct(l) => l.default_value(),
        }
    }
}

/// Message definitions by type name, and their resolved layouts.
///
/// Later additions replace earlier ones of the same name, so a user
/// directory can override a bundled definition.
#[derive(Debug, Default)]
pub struct Registry {
    messages: BTreeMap<TypeName, Arc<MessageDef>>,
    layouts: Mutex<HashMap<TypeName, Arc<Layout>>>,
}

impl Clone for Registry {
    fn clone(&self) -> Self {
        Self {
            messages: self.messages.clone(),
            layouts: Mutex::new(HashMap::new()),
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the bundled interfaces (std_msgs, geometry_msgs,
    /// sensor_msgs, nav_msgs, ...).
    pub fn bundled() -> Self {
        let mut r = Self::new();
        for (path, text) in bundled_files() {
            // The bundled files are checked by this crate's tests; a failure
            // here would be a packaging bug, so it is logged, not fatal.
            if let Err(e) = r.add_file(path, text) {
                tracing::error!(%path, error = %e, "bundled interface definition does not parse");
            }
        }
        r
    }

    /// Adds one definition given its path relative to a package root
    /// (`pkg/msg/Name.msg`, `pkg/srv/Name.srv`, `pkg/action/Name.action`).
    pub fn add_file(&mut self, rel_path: &str, text: &str) -> Result<(), MsgError> {
        let bad = |reason: &str| MsgError::BadFile {
            path: rel_path.into(),
            reason: reason.into(),
        };
        let parts: Vec<&str> = rel_path.split('/').collect();
        let [.., pkg, kind, file] = parts.as_slice() else {
            return Err(bad(
                "expected <package>/<msg|srv|action>/<Name>.<msg|srv|action>",
            ));
        };
        let (stem, ext) = file
            .rsplit_once('.')
            .ok_or_else(|| bad("file has no extension"))?;
        if ext != *kind {
            return Err(bad(
                "the extension must match the directory (msg/, srv/, action/)",
            ));
        }
        let k = match *kind {
            "msg" => InterfaceKind::Msg,
            "srv" => InterfaceKind::Srv,
            "action" => InterfaceKind::Action,
            _ => return Err(bad("directory must be msg, srv or action")),
        };
        let ty = TypeName::new(pkg, k, stem).map_err(|e| bad(&e.to_string()))?;
        match k {
            InterfaceKind::Msg => self.insert(parse_message(&ty, text)?),
            InterfaceKind::Srv => {
                let s = parse_service(&ty, text)?;
                self.insert(s.request);
                self.insert(s.response);
            }
            InterfaceKind::Action => {
                for m in parse_action(&ty, text)?.messages {
                    self.insert(m);
                }
            }
        }
        Ok(())
    }

    /// Adds a parsed message definition.
    pub fn insert(&mut self, def: MessageDef) {
        if self.messages.contains_key(&def.type_name) {
            tracing::debug!(type_name = %def.type_name, "interface definition replaced");
        }
        self.messages.insert(def.type_name.clone(), Arc::new(def));
        self.layouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Loads a directory of packages (`DIR/<pkg>/msg/*.msg`, `srv/*.srv`,
    /// `action/*.action`), or a single package directory (`DIR/msg/...`).
    /// Returns how many files were loaded.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, MsgError> {
        let io = |path: &Path, source| MsgError::Io {
            path: path.to_owned(),
            source,
        };
        let is_pkg = ["msg", "srv", "action"]
            .iter()
            .any(|k| dir.join(k).is_dir());
        let pkg_dirs: Vec<_> = if is_pkg {
            vec![dir.to_owned()]
        } else {
            let mut v: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| io(dir, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            v.sort();
            v
        };
        let mut n = 0;
        for pkg_dir in pkg_dirs {
            let pkg = pkg_dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for kind in ["msg", "srv", "action"] {
                let d = pkg_dir.join(kind);
                if !d.is_dir() {
                    continue;
                }
                let mut files: Vec<_> = std::fs::read_dir(&d)
                    .map_err(|e| io(&d, e))?
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                files.sort();
                for f in files {
                    if f.extension().and_then(|x| x.to_str()) != Some(kind) {
                        continue;
                    }
                    let text = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
                    let name = f
                        .file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.add_file(&format!("{pkg}/{kind}/{name}"), &text)
                        .map_err(|e| match e {
                            MsgError::BadFile { reason, .. } => MsgError::BadFile {
                                path: f.clone(),
                                reason,
                            },
                            other => other,
                        })?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Every type name known.
    pub fn type_names(&self) -> impl Iterator<Item = &TypeName> {
        self.messages.keys()
    }

    pub fn get(&self, ty: &TypeName) -> Option<&Arc<MessageDef>> {
        self.messages.get(ty)
    }

    /// Resolves a type (and everything it refers to) into a [`Layout`].
    pub fn layout(&self, ty: &TypeName) -> Result<Arc<Layout>, MsgError> {
        let mut cache = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        let mut stack = Vec::new();
        self.resolve(ty, None, &mut cache, &mut stack)
    }

    /// [`Registry::layout`] from a type name string (`pkg/msg/Name`).
    pub fn layout_of(&self, ty: &str) -> Result<Arc<Layout>, MsgError> {
        let t = TypeName::parse(ty).map_err(|e| MsgError::UnknownType {
            missing: e.to_string(),
            referenced_by: None,
        })?;
        self.layout(&t)
    }

    fn resolve(
        &self,
        ty: &TypeName,
        referenced_by: Option<&TypeName>,
        cache: &mut HashMap<TypeName, Arc<Layout>>,
        stack: &mut Vec<TypeName>,
    ) -> Result<Arc<Layout>, MsgError> {
        if let Some(l) = cache.get(ty) {
            return Ok(l.clone());
        }
        if stack.contains(ty) {
            let chain: Vec<String> = stack
                .iter()
                .chain(std::iter::once(ty))
                .map(|t| t.to_string())
                .collect();
            return Err(MsgError::Recursive {
                chain: chain.join(" -> "),
            });
        }
        let def = self.messages.get(ty).ok_or_else(|| MsgError::UnknownType {
            missing: ty.to_string(),
            referenced_by: referenced_by.map(|t| t.to_string()),
        })?;
        stack.push(ty.clone());
        let mut fields = Vec::with_capacity(def.fields.len().max(1));
        for f in &def.fields {
            let lt = match &f.base {
                BaseType::Primitive(p) => LayoutType::Primitive(*p),
                BaseType::String { bound } => LayoutType::String { bound: *bound },
                BaseType::WString { bound } => LayoutType::WString { bound: *bound },
                BaseType::Nested(n) => {
                    LayoutType::Struct(self.resolve(n, Some(ty), cache, stack)?)
                }
            };
            fields.push(LayoutField {
                name: f.name.as_str().into(),
                ty: lt,
                array: f.array,
                default: f.default.clone(),
            });
        }
        stack.pop();
        if fields.is_empty() {
            fields.push(LayoutField {
                name: EMPTY_MEMBER.into(),
                ty: LayoutType::Primitive(Primitive::UInt8),
                array: ArrayKind::Single,
                default: None,
            });
        }
        let layout = Arc::new(Layout {
            type_name: ty.clone(),
            fields,
            constants: def.constants.clone(),
        });
        cache.insert(ty.clone(), layout.clone());
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_type_resolves() {
        let r = Registry::bundled();
        let n = bundled_files().len();
        assert!(n >= 100, "only {n} bundled files");
        for (path, text) in bundled_files() {
            let mut one = Registry::new();
            one.add_file(path, text)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        for t in r.type_names() {
            r.layout(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        for t in [
            "sensor_msgs/msg/BatteryState",
            "sensor_msgs/msg/Imu",
            "sensor_msgs/msg/Temperature",
            "sensor_msgs/msg/Range",
            "sensor_msgs/msg/NavSatFix",
            "sensor_msgs/msg/JointState",
            "sensor_msgs/msg/LaserScan",
            "sensor_msgs/msg/PointCloud2",
            "sensor_msgs/msg/Image",
            "nav_msgs/msg/Odometry",
            "geometry_msgs/msg/Twist",
            "geometry_msgs/msg/Pose",
            "geometry_msgs/msg/PoseStamped",
            "std_msgs/msg/String",
            "builtin_interfaces/msg/Time",
            "tf2_msgs/msg/TFMessage",
            "example_interfaces/srv/AddTwoInts_Request",
            "std_srvs/srv/Trigger_Response",
        ] {
            r.layout_of(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }

    #[test]
    fn empty_message_gets_the_dummy_member() {
        let r = Registry::bundled();
        let l = r.layout_of("std_msgs/msg/Empty").unwrap();
        assert_eq!(&*l.fields[0].name, EMPTY_MEMBER);
    }

    #[test]
    fn unknown_and_recursive_types_are_errors() {
        let mut r = Registry::new();
        r.add_file("p/msg/A.msg", "B b\n").unwrap();
        r.add_file("p/msg/B.msg", "A a\n").unwrap();
        r.add_file("p/msg/C.msg", "q/Missing m\n").unwrap();
        let e = r.layout_of("p/msg/A").unwrap_err().to_string();
        assert!(
            e.contains("refers to itself") && e.contains("p/msg/A -> p/msg/B -> p/msg/A"),
            "{e}"
        );
        let e = r.layout_of("p/msg/C").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown message type q/msg/Missing (referenced by p/msg/C)"
        );
        assert!(r.layout_of("nope/msg/Nope").is_err());
        assert!(r.add_file("p/msg/X.srv", "").is_err());
    }

    #[test]
    fn user_directories_load_and_override() {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("robot_msgs/msg");
        std::fs::create_dir_all(&msg).unwrap();
        std::fs::write(
            msg.join("Cell.msg"),
            "float32 temperature\nfloat32 voltage\n",
        )
        .unwrap();
        std::fs::write(
            msg.join("Pack.msg"),
            "Cell[] cells\nsensor_msgs/BatteryState state\n",
        )
        .unwrap();
        let mut r = Registry::bundled();
        assert_eq!(r.load_dir(dir.path()).unwrap(), 2);
        let l = r.layout_of("robot_msgs/msg/Pack").unwrap();
        let t = l
            .resolve_path(&"cells[3].temperature".parse().unwrap())
            .unwrap();
        assert_eq!(t.ty, LayoutType::Primitive(Primitive::Float32));
        std::fs::write(msg.join("Bad.msg"), "float32 x y z\n").unwrap();
        let e = r.load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("robot_msgs/msg/Bad line 1"), "{e}");
    }

    #[test]
    fn paths_resolve_against_layouts() {
        let r = Registry::bundled();
        let odom = r.layout_of("nav_msgs/msg/Odometry").unwrap();
        let p = |s: &str| s.parse::<FieldPath>().unwrap();
        let t = odom.resolve_path(&p("pose.pose.position.x")).unwrap();
        assert_eq!(t.ty, LayoutType::Primitive(Primitive::Float64));
        let t = odom.resolve_path(&p("pose.covariance[35]")).unwrap();
        assert_eq!(t.array, ArrayKind::Single);
        assert!(odom.resolve_path(&p("pose.covariance[36]")).is_err());
        assert!(odom.resolve_path(&p("pose.pose.nope")).is_err());
        assert!(odom.resolve_path(&p("header.frame_id.x")).is_err());
        let q = r.layout_of("geometry_msgs/msg/Quaternion").unwrap();
        assert_eq!(q.default_value().get_path(&p("w")), Some(Value::F64(1.0)));
    }
}
