//! Actions, resource scopes and the permissions a token carries.
//!
//! Vocabulary follows the distribution token spec: a *scope* is
//! `type:name:actions` (`repository:apps/x:pull,push`, `registry:catalog:*`).
//! Permissions are deny-by-default: a principal can do exactly what some
//! grant (token claim or config rule) gives it, nothing more.

use std::collections::HashMap;
use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Deserializer};

/// A registry action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs, put manifests.
    Push,
    /// Delete manifests, blobs, tags.
    Delete,
    /// Every action (`*`).
    All,
}

impl Action {
    /// Parse an action as written in scopes and config; unknown actions are
    /// `None` so that a grant naming a future action grants nothing.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pull" => Some(Self::Pull),
            "push" => Some(Self::Push),
            "delete" => Some(Self::Delete),
            "*" => Some(Self::All),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::Pull => ActionSet::PULL.0,
            Self::Push => ActionSet::PUSH.0,
            Self::Delete => ActionSet::DELETE.0,
            Self::All => ActionSet::ALL.0,
        }
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Action::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown action {s:?} (expected pull, push, delete or *)"
            ))
        })
    }
}

/// A set of actions (a bit set: cheap to copy and intersect on hot paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u8);

impl ActionSet {
    /// No action.
    pub const NONE: Self = Self(0);
    /// `pull`.
    pub const PULL: Self = Self(1);
    /// `push`.
    pub const PUSH: Self = Self(2);
    /// `delete`.
    pub const DELETE: Self = Self(4);
    /// `*`.
    pub const ALL: Self = Self(7);

    /// Union.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    /// Whether every action of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// Remove actions.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
    /// Empty set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Parse a comma-separated action list, ignoring unknown actions.
    pub fn parse_list(s: &str) -> Self {
        s.split(',').filter_map(Action::parse).collect()
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, a| acc | a.bits()))
    }
}

impl fmt::Display for ActionSet {
    /// `pull,push,delete` order, as clients expect in challenges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (bit, name) in [(1u8, "pull"), (2, "push"), (4, "delete")] {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The kind of resource a scope names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// `repository:<name>`.
    Repository,
    /// `registry:catalog`.
    Registry,
}

/// One `type:name:actions` scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Resource type.
    pub resource_type: ResourceType,
    /// Repository name, or `catalog` for the registry type.
    pub name: String,
    /// Actions.
    pub actions: ActionSet,
}

impl Scope {
    /// `repository:<name>:<actions>`.
    pub fn repository(name: impl Into<String>, actions: ActionSet) -> Self {
        Self {
            resource_type: ResourceType::Repository,
            name: name.into(),
            actions,
        }
    }

    /// `registry:catalog:*`.
    pub fn catalog() -> Self {
        Self {
            resource_type: ResourceType::Registry,
            name: "catalog".to_owned(),
            actions: ActionSet::ALL,
        }
    }

    /// Parse one scope string. The name may itself contain `:` (a registry
    /// host with a port), so the type ends at the first colon and the actions
    /// start after the last one, as distribution parses it. A resource class
    /// (`repository(plugin)`) is accepted and ignored.
    pub fn parse(s: &str) -> Option<Self> {
        let (ty, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let ty = ty.split_once('(').map_or(ty, |(t, _)| t);
        let resource_type = match ty {
            "repository" => ResourceType::Repository,
            "registry" => ResourceType::Registry,
            _ => return None,
        };
        if name.is_empty() {
            return None;
        }
        let actions = ActionSet::parse_list(actions);
        if actions.is_empty() {
            return None;
        }
        Some(Self {
            resource_type,
            name: name.to_owned(),
            actions,
        })
    }

    /// Parse a space-separated OAuth `scope` string, dropping the entries
    /// that are not registry scopes (`openid`, `profile`...).
    pub fn parse_many(s: &str) -> Vec<Self> {
        s.split_ascii_whitespace().filter_map(Self::parse).collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.resource_type {
            ResourceType::Repository => write!(f, "repository:{}:{}", self.name, self.actions),
            // The catalog is always asked for as `*`, which is what
            // distribution token servers understand.
            ResourceType::Registry => write!(f, "registry:{}:*", self.name),
        }
    }
}

/// One entry of the distribution `access` claim.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Resource name.
    pub name: String,
    /// Action names.
    #[serde(default)]
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// As a scope; unknown types or no known action give `None`.
    pub fn to_scope(&self) -> Option<Scope> {
        let actions = self
            .actions
            .iter()
            .filter_map(|a| Action::parse(a))
            .collect::<ActionSet>();
        Scope::parse(&format!(
            "{}:{}:{}",
            self.resource_type,
            self.name,
            if actions.is_empty() {
                String::new()
            } else if actions == ActionSet::ALL {
                "*".to_owned()
            } else {
                actions.to_string()
            }
        ))
    }
}

/// Compile a repository glob: `*` stays within one path segment, `**`
/// crosses segments, matching is case-sensitive like repository names.
pub fn compile_pattern(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .case_insensitive(false)
        .build()?
        .compile_matcher())
}

/// What a principal may do. Exact grants (from token claims) are a hash
/// lookup; pattern grants (from config rules) are a short linear scan.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    exact: HashMap<(ResourceType, String), ActionSet>,
    patterns: Vec<(ResourceType, GlobMatcher, ActionSet)>,
    /// Actions removed from everything (read-only principals).
    mask: ActionSet,
}

impl Permissions {
    /// No permission at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Grant an exact scope.
    pub fn grant(&mut self, scope: &Scope) {
        let e = self
            .exact
            .entry((scope.resource_type.clone(), scope.name.clone()))
            .or_default();
        *e = e.union(scope.actions);
    }

    /// Grant actions on every name matching a compiled pattern.
    pub fn grant_pattern(&mut self, ty: ResourceType, m: GlobMatcher, actions: ActionSet) {
        self.patterns.push((ty, m, actions));
    }

    /// Make read-only: `push` and `delete` are never allowed afterwards,
    /// whatever other grants say.
    pub fn restrict_to_read_only(&mut self) {
        self.mask = self.mask.union(ActionSet::PUSH.union(ActionSet::DELETE));
    }

    /// Actions allowed on a resource.
    pub fn allowed(&self, ty: &ResourceType, name: &str) -> ActionSet {
        let mut acc = self
            .exact
            .get(&(ty.clone(), name.to_owned()))
            .copied()
            .unwrap_or_default();
        for (pty, m, actions) in &self.patterns {
            if pty == ty && m.is_match(name) {
                acc = acc.union(*actions);
            }
        }
        acc.without(self.mask)
    }

    /// Whether the whole scope is allowed.
    pub fn allows(&self, scope: &Scope) -> bool {
        let needed = match scope.resource_type {
            // `registry:catalog:*` is read-only listing; any grant on it
            // (which a read-only principal keeps as `pull`) is enough.
            ResourceType::Registry => ActionSet::PULL,
            ResourceType::Repository => scope.actions,
        };
        self.allowed(&scope.resource_type, &scope.name)
            .contains(needed)
    }
}

/// What a request addresses, as derived by the proxy from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/v2/`: only needs a valid identity (or anonymous access).
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// Anything under `/v2/<name>/...`; `mount_from` is the `from` query
    /// parameter of a cross-repository mount.
    Repository {
        /// Repository name.
        name: &'a str,
        /// Source repository of a mount.
        mount_from: Option<&'a str>,
    },
}

/// The scopes a request needs. Unknown methods need every action: deny by
/// default rather than guess that an exotic verb is harmless.
pub fn required_scopes(method: &http::Method, target: &Target<'_>) -> Vec<Scope> {
    use http::Method;
    match target {
        Target::Base => Vec::new(),
        Target::Catalog => vec![Scope::catalog()],
        Target::Repository { name, mount_from } => {
            let actions = match *method {
                Method::GET | Method::HEAD => ActionSet::PULL,
                Method::POST | Method::PUT | Method::PATCH => {
                    ActionSet::PULL.union(ActionSet::PUSH)
                }
                Method::DELETE => ActionSet::DELETE,
                _ => ActionSet::ALL,
            };
            let mut v = vec![Scope::repository(*name, actions)];
            if let Some(from) = mount_from {
                if *method == Method::POST && from != name {
                    v.push(Scope::repository(*from, ActionSet::PULL));
                }
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn scope_strings_parse_and_render() {
        let s = Scope::parse("repository:apps/x:pull,push").unwrap();
        assert_eq!(s.name, "apps/x");
        assert_eq!(s.actions, ActionSet::PULL.union(ActionSet::PUSH));
        assert_eq!(s.to_string(), "repository:apps/x:pull,push");
        let h = Scope::parse("repository:localhost:5000/a:pull").unwrap();
        assert_eq!(h.name, "localhost:5000/a");
        let c = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(c.to_string(), "registry:catalog:*");
        assert_eq!(Scope::parse("repository(plugin):p:pull").unwrap().name, "p");
        assert!(Scope::parse("openid").is_none());
        assert!(Scope::parse("repository:x:frobnicate").is_none());
        assert!(Scope::parse("repository::pull").is_none());
        assert_eq!(
            Scope::parse_many("openid repository:a:pull profile").len(),
            1
        );
    }

    #[test]
    fn access_claim_entries() {
        let e: AccessEntry = serde_json::from_value(serde_json::json!(
            {"type": "repository", "name": "apps/x", "actions": ["pull", "weird"]}
        ))
        .unwrap();
        assert_eq!(e.to_scope().unwrap().actions, ActionSet::PULL);
        let none: AccessEntry = serde_json::from_value(serde_json::json!(
            {"type": "repository", "name": "apps/x", "actions": []}
        ))
        .unwrap();
        assert!(none.to_scope().is_none());
    }

    #[test]
    fn required_scopes_per_method() {
        let t = Target::Repository {
            name: "apps/x",
            mount_from: None,
        };
        assert_eq!(
            required_scopes(&Method::GET, &t)[0].actions,
            ActionSet::PULL
        );
        assert_eq!(
            required_scopes(&Method::HEAD, &t)[0].actions,
            ActionSet::PULL
        );
        assert_eq!(
            required_scopes(&Method::PATCH, &t)[0].to_string(),
            "repository:apps/x:pull,push"
        );
        assert_eq!(
            required_scopes(&Method::DELETE, &t)[0].actions,
            ActionSet::DELETE
        );
        assert_eq!(
            required_scopes(&Method::OPTIONS, &t)[0].actions,
            ActionSet::ALL
        );
        let m = Target::Repository {
            name: "apps/x",
            mount_from: Some("apps/y"),
        };
        let s = required_scopes(&Method::POST, &m);
        assert_eq!(s[1].to_string(), "repository:apps/y:pull");
        assert_eq!(
            required_scopes(&Method::GET, &Target::Catalog)[0].to_string(),
            "registry:catalog:*"
        );
        assert!(required_scopes(&Method::GET, &Target::Base).is_empty());
    }

    #[test]
    fn patterns_and_read_only_mask() {
        let mut p = Permissions::none();
        p.grant_pattern(
            ResourceType::Repository,
            compile_pattern("apps/**").unwrap(),
            ActionSet::ALL,
        );
        p.grant_pattern(
            ResourceType::Repository,
            compile_pattern("one/*").unwrap(),
            ActionSet::PULL,
        );
        assert!(p.allows(&Scope::repository("apps/a/b", ActionSet::PUSH)));
        assert!(p.allows(&Scope::repository("one/a", ActionSet::PULL)));
        assert!(!p.allows(&Scope::repository("one/a/b", ActionSet::PULL)));
        assert!(!p.allows(&Scope::repository("other", ActionSet::PULL)));
        p.restrict_to_read_only();
        assert!(!p.allows(&Scope::repository("apps/a", ActionSet::PUSH)));
        assert!(p.allows(&Scope::repository("apps/a", ActionSet::PULL)));
    }
}
