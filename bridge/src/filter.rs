//! Allow/deny rules over ROS names.
//!
//! A [`Pattern`] is either an exact, fully qualified ROS name (`/cmd_vel`) or, with the prefix
//! `re:`, a regular expression that must match the **whole** name (`re:^/diagnostics(/.*)?$`;
//! the anchors are optional, the pattern is anchored either way). A [`Filter`] holds an allow and
//! a deny list: deny wins, and an empty allow list allows nothing, so the default filter lets
//! nothing cross.
//!
//! Patterns may come from a remote robot, so regexes are compiled with a size limit
//! ([`REGEX_SIZE_LIMIT`]) and parse errors never panic.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The prefix that marks a pattern as a regular expression.
pub const REGEX_PREFIX: &str = "re:";

/// Compiled size limit for one regex (bytes of the compiled program and of the lazy DFA cache).
pub const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// Longest pattern text accepted (bytes), regex or exact name.
pub const MAX_PATTERN_LEN: usize = 4096;

/// A pattern that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not a valid absolute ROS name (and not a `re:` pattern).
    #[error(
        "{pattern:?} is not a valid ROS name ({reason}) (expected an absolute ROS name like \
         /cmd_vel, or re:<regex> like re:^/scan(/.*)?$)"
    )]
    InvalidName {
        /// The pattern text.
        pattern: String,
        /// Why the name is invalid.
        reason: String,
    },
    /// A `re:` pattern whose regex does not compile (syntax error or too large).
    #[error(
        "{pattern:?} is not a valid regex: {reason} (expected re:<regex>, e.g. re:^/scan(/.*)?$)"
    )]
    InvalidRegex {
        /// The pattern text (including `re:`).
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// `re:` with nothing after it.
    #[error("{pattern:?} has an empty regex (expected re:<regex>, e.g. re:^/scan(/.*)?$)")]
    EmptyRegex {
        /// The pattern text.
        pattern: String,
    },
    /// A pattern longer than [`MAX_PATTERN_LEN`].
    #[error("pattern of {len} bytes is too long (expected at most {MAX_PATTERN_LEN} bytes)")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

/// One pattern: an exact ROS name or an anchored regex (`re:` prefix).
///
/// Serialized as its text ([`as_str`](Self::as_str)); equality, hashing and ordering are by
/// that text.
#[derive(Clone)]
pub enum Pattern {
    /// An exact, fully qualified ROS name such as `/cmd_vel`.
    Exact(String),
    /// A regex matching whole names.
    Regex {
        /// The compiled regex, anchored as `^(?:…)$`.
        regex: Regex,
        /// The original text, including the `re:` prefix.
        text: String,
    },
}

impl Pattern {
    /// Parses `/exact/name` or `re:<regex>`.
    ///
    /// Exact names must be valid absolute ROS names ([`ros2::names::RosName::parse`]). A regex is
    /// first compiled on its own (so it cannot escape the anchoring with an unbalanced `)`), then
    /// as `^(?:<regex>)$`, both with [`REGEX_SIZE_LIMIT`].
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        if s.len() > MAX_PATTERN_LEN {
            return Err(FilterError::TooLong { len: s.len() });
        }
        let Some(inner) = s.strip_prefix(REGEX_PREFIX) else {
            return match ros2::names::RosName::parse(s) {
                Ok(_) => Ok(Self::Exact(s.to_owned())),
                Err(e) => Err(FilterError::InvalidName {
                    pattern: s.to_owned(),
                    reason: name_reason(&e),
                }),
            };
        };
        if inner.is_empty() {
            return Err(FilterError::EmptyRegex {
                pattern: s.to_owned(),
            });
        }
        let build = |re: &str| {
            RegexBuilder::new(re)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| FilterError::InvalidRegex {
                    pattern: s.to_owned(),
                    reason: e.to_string(),
                })
        };
        build(inner)?;
        let regex = build(&format!("^(?:{inner})$"))?;
        Ok(Self::Regex {
            regex,
            text: s.to_owned(),
        })
    }

    /// Whether `name` matches: equal to the exact name, or matched whole by the regex.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Regex { regex, .. } => regex.is_match(name),
        }
    }

    /// The original text, including `re:` for regexes.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exact(exact) => exact,
            Self::Regex { text, .. } => text,
        }
    }

    /// Whether this is a regex pattern.
    pub fn is_regex(&self) -> bool {
        matches!(self, Self::Regex { .. })
    }
}

/// The reason part of a [`ros2::names::NameError`], without repeating the name.
fn name_reason(e: &ros2::names::NameError) -> String {
    match e {
        ros2::names::NameError::InvalidName { reason, .. } => (*reason).to_owned(),
        other => other.to_string(),
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::str::FromStr for Pattern {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Allow/deny lists: a name crosses if some allow pattern matches it and no deny pattern does.
///
/// Deny wins; an empty allow list allows nothing. The default (both empty) lets nothing cross.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    /// Names that may cross (default: none).
    pub allow: Vec<Pattern>,
    /// Names that never cross, even if allowed (default: none).
    pub deny: Vec<Pattern>,
}

/// The outcome of [`Filter::decide`], naming the deciding pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Matched by an allow pattern and by no deny pattern.
    Allowed {
        /// The first allow pattern that matched.
        by: &'a Pattern,
    },
    /// Matched by a deny pattern (whether or not it is allowed).
    Denied {
        /// The first deny pattern that matched.
        by: &'a Pattern,
    },
    /// Matched by no allow pattern (and no deny pattern).
    NotAllowed,
}

impl Decision<'_> {
    /// Whether the name may cross.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowed { by } => write!(f, "allowed by {by}"),
            Self::Denied { by } => write!(f, "denied by {by}"),
            Self::NotAllowed => f.write_str("not in allow list"),
        }
    }
}

impl Filter {
    /// A filter from allow and deny lists.
    pub fn new(allow: Vec<Pattern>, deny: Vec<Pattern>) -> Self {
        Self { allow, deny }
    }

    /// Decides `name`: deny patterns first (deny wins), then allow patterns.
    pub fn decide(&self, name: &str) -> Decision<'_> {
        if let Some(by) = self.deny.iter().find(|p| p.matches(name)) {
            return Decision::Denied { by };
        }
        match self.allow.iter().find(|p| p.matches(name)) {
            Some(by) => Decision::Allowed { by },
            None => Decision::NotAllowed,
        }
    }

    /// Whether `name` may cross.
    pub fn allows(&self, name: &str) -> bool {
        self.decide(name).is_allowed()
    }

    /// Both lists empty (nothing crosses).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn exact_names() {
        let pat = p("/cmd_vel");
        assert!(!pat.is_regex());
        assert!(pat.matches("/cmd_vel"));
        assert!(!pat.matches("/cmd_vel2"));
        assert!(!pat.matches("/robot1/cmd_vel"));
        assert_eq!(pat.as_str(), "/cmd_vel");
    }

    #[test]
    fn invalid_exact_names_are_refused_with_a_hint() {
        for bad in ["cmd_vel", "", "/cmd vel", "/a//b", "/a/", "/1abc"] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(matches!(e, FilterError::InvalidName { .. }), "{bad}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("re:"), "{msg}");
        }
    }

    #[test]
    fn regexes_match_whole_names() {
        let pat = p("re:/scan.*");
        assert!(pat.is_regex());
        assert!(pat.matches("/scan"));
        assert!(pat.matches("/scan/front"));
        assert!(
            !pat.matches("/robot1/scan"),
            "must be anchored at the start"
        );
        let pat = p("re:/a|/b");
        assert!(pat.matches("/a") && pat.matches("/b"));
        assert!(!pat.matches("/ab") && !pat.matches("/xa") && !pat.matches("/b/"));
        let pat = p("re:^/diagnostics(/.*)?$");
        assert!(pat.matches("/diagnostics"));
        assert!(pat.matches("/diagnostics/agg"));
        assert!(!pat.matches("/diagnostics_agg"));
        assert_eq!(pat.as_str(), "re:^/diagnostics(/.*)?$");
    }

    #[test]
    fn regex_cannot_escape_the_anchors() {
        // Wrapped naively this would be `^(?:/a)|(/b)$`, matching anything starting with /a.
        let e = Pattern::parse("re:/a)|(/b").unwrap_err();
        assert!(matches!(e, FilterError::InvalidRegex { .. }), "{e:?}");
    }

    #[test]
    fn bad_regexes_are_errors() {
        assert!(matches!(
            Pattern::parse("re:").unwrap_err(),
            FilterError::EmptyRegex { .. }
        ));
        let e = Pattern::parse("re:/a(").unwrap_err();
        assert!(matches!(e, FilterError::InvalidRegex { .. }), "{e:?}");
        assert!(e.to_string().contains("\"re:/a(\""), "{e}");
        // Exceeds the compiled size limit.
        let e = Pattern::parse("re:(((a{100}){100}){100})").unwrap_err();
        assert!(matches!(e, FilterError::InvalidRegex { .. }), "{e:?}");
        let long = format!("re:{}", "a".repeat(MAX_PATTERN_LEN));
        assert!(matches!(
            Pattern::parse(&long).unwrap_err(),
            FilterError::TooLong { .. }
        ));
    }

    #[test]
    fn serde_as_plain_string() {
        let f: Filter =
            serde_yaml::from_str("allow: [/odom, 're:^/tf(_static)?$']\ndeny: [/secret]\n")
                .unwrap();
        assert_eq!(f.allow, vec![p("/odom"), p("re:^/tf(_static)?$")]);
        let back = serde_yaml::to_string(&f).unwrap();
        let again: Filter = serde_yaml::from_str(&back).unwrap();
        assert_eq!(f, again);
        assert_eq!(
            serde_json::to_string(&p("re:/x")).unwrap(),
            "\"re:/x\"".to_owned()
        );
    }

    #[test]
    fn serde_errors_and_unknown_keys() {
        let e = serde_yaml::from_str::<Filter>("allow: [odom]\n").unwrap_err();
        assert!(e.to_string().contains("\"odom\""), "{e}");
        let e = serde_yaml::from_str::<Filter>("allow: []\nblock: []\n").unwrap_err();
        assert!(e.to_string().contains("block"), "{e}");
        let f: Filter = serde_yaml::from_str("{}").unwrap();
        assert!(f.is_empty());
    }

    #[test]
    fn decisions() {
        let f = Filter::new(
            vec![p("re:^/scan.*$"), p("/odom"), p("/secret")],
            vec![p("/secret"), p("re:/scan/private(/.*)?")],
        );
        assert_eq!(f.decide("/odom").to_string(), "allowed by /odom");
        assert_eq!(
            f.decide("/scan/front").to_string(),
            "allowed by re:^/scan.*$"
        );
        assert_eq!(f.decide("/secret").to_string(), "denied by /secret");
        assert_eq!(
            f.decide("/scan/private/x").to_string(),
            "denied by re:/scan/private(/.*)?"
        );
        assert_eq!(f.decide("/cmd_vel"), Decision::NotAllowed);
        assert_eq!(f.decide("/cmd_vel").to_string(), "not in allow list");
        assert!(f.allows("/odom") && !f.allows("/secret") && !f.allows("/cmd_vel"));
        assert!(!f.is_empty());
    }

    #[test]
    fn default_allows_nothing() {
        let f = Filter::default();
        assert!(f.is_empty());
        assert_eq!(f.decide("/anything"), Decision::NotAllowed);
        let only_deny = Filter::new(vec![], vec![p("/x")]);
        assert!(!only_deny.allows("/y"));
    }

    fn name() -> impl Strategy<Value = String> {
        "(/[a-c]{1,2}){1,3}"
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        prop_oneof![
            name().prop_map(|n| p(&n)),
            // Prefix regexes: the name and everything below it.
            name().prop_map(|n| p(&format!("re:{}(/.*)?", regex::escape(&n)))),
            Just(p("re:.*")),
        ]
    }

    proptest! {
        #[test]
        fn deny_always_wins(
            allow in proptest::collection::vec(pattern(), 0..5),
            deny in proptest::collection::vec(pattern(), 0..5),
            n in name(),
        ) {
            let f = Filter::new(allow.clone(), deny.clone());
            let denied = deny.iter().any(|d| d.matches(&n));
            let allowed = allow.iter().any(|a| a.matches(&n));
            match f.decide(&n) {
                Decision::Denied { by } => {
                    prop_assert!(denied);
                    prop_assert!(by.matches(&n));
                }
                Decision::Allowed { by } => {
                    prop_assert!(!denied && allowed);
                    prop_assert!(by.matches(&n));
                }
                Decision::NotAllowed => prop_assert!(!denied && !allowed),
            }
            prop_assert_eq!(f.allows(&n), allowed && !denied);
            // Adding any allow pattern never lets a denied name through.
            let mut more = f.clone();
            more.allow.push(p("re:.*"));
            prop_assert_eq!(more.allows(&n), !denied);
        }

        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,40}") {
            if let Ok(pat) = Pattern::parse(&s) {
                prop_assert_eq!(pat.as_str(), s.as_str());
                prop_assert_eq!(Pattern::parse(pat.as_str()).unwrap(), pat);
            }
            let re = format!("re:{s}");
            let _ = Pattern::parse(&re);
        }
    }
}
