//! Config rules: claims → permissions, read-only principals, anonymous pull.
//!
//! Rules are compiled once at startup (globs, claim paths) so that building a
//! principal's permissions is a few comparisons per rule.

use globset::GlobMatcher;

use crate::auth::access::{compile_pattern, ActionSet, Permissions, ResourceType};
use crate::auth::config::{AuthConfig, ClaimMatch};
use crate::auth::error::ConfigError;

#[derive(Debug, Clone)]
struct CompiledRule {
    matches: Vec<ClaimMatch>,
    grants: Vec<(ResourceType, GlobMatcher, ActionSet)>,
}

/// The compiled `rules`, `read_only` and `anonymous_pull` sections.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    read_only: Vec<ClaimMatch>,
    anonymous: Vec<GlobMatcher>,
}

/// The claim view rules are evaluated against.
pub struct ClaimView<'a> {
    /// All claims.
    pub claims: &'a serde_json::Value,
    /// Groups, already extracted with the issuer's groups claim name.
    pub groups: &'a [String],
    /// Client id (`client_id` or `azp`).
    pub client_id: Option<&'a str>,
}

impl RuleSet {
    /// Compile from the config.
    pub fn compile(cfg: &AuthConfig) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for rule in &cfg.rules {
            let mut grants = Vec::new();
            for (pattern, actions) in &rule.grant {
                let set: ActionSet = actions.iter().copied().collect();
                let (ty, pat) = match pattern.strip_prefix("registry:") {
                    Some(rest) => (ResourceType::Registry, rest),
                    None => (ResourceType::Repository, pattern.as_str()),
                };
                let m = compile_pattern(pat).map_err(|e| ConfigError::Pattern {
                    pattern: pattern.clone(),
                    reason: e.to_string(),
                })?;
                grants.push((ty, m, set));
            }
            rules.push(CompiledRule {
                matches: rule.matches.clone(),
                grants,
            });
        }
        let mut anonymous = Vec::new();
        for p in &cfg.anonymous_pull {
            anonymous.push(compile_pattern(p).map_err(|e| ConfigError::Pattern {
                pattern: p.clone(),
                reason: e.to_string(),
            })?);
        }
        Ok(Self {
            rules,
            read_only: cfg.read_only.clone(),
            anonymous,
        })
    }

    /// Add the grants of every matching rule and apply the read-only mask.
    /// Returns whether the principal is read-only.
    pub fn apply(&self, view: &ClaimView<'_>, perms: &mut Permissions) -> bool {
        for rule in &self.rules {
            if rule.matches.iter().all(|m| matches(view, m)) {
                for (ty, m, a) in &rule.grants {
                    perms.grant_pattern(ty.clone(), m.clone(), *a);
                }
            }
        }
        let read_only = self.read_only.iter().any(|m| matches(view, m));
        if read_only {
            perms.restrict_to_read_only();
        }
        read_only
    }

    /// Permissions of an anonymous caller (pull on the anonymous patterns).
    pub fn anonymous_permissions(&self) -> Permissions {
        let mut p = Permissions::none();
        for m in &self.anonymous {
            p.grant_pattern(ResourceType::Repository, m.clone(), ActionSet::PULL);
        }
        p.restrict_to_read_only();
        p
    }

    /// Whether any anonymous access is configured.
    pub fn has_anonymous(&self) -> bool {
        !self.anonymous.is_empty()
    }
}

fn matches(view: &ClaimView<'_>, m: &ClaimMatch) -> bool {
    let any = m.values.iter().any(|v| v == "*");
    let hit = |s: &str| any || m.values.iter().any(|v| v == s);
    match m.claim.as_str() {
        "groups" => view.groups.iter().any(|g| hit(g)),
        "client_id" => view.client_id.is_some_and(hit),
        path => match lookup(view.claims, path) {
            Some(serde_json::Value::String(s)) => hit(s),
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|i| i.as_str().is_some_and(hit))
            }
            Some(serde_json::Value::Bool(b)) => hit(if *b { "true" } else { "false" }),
            Some(serde_json::Value::Number(n)) => hit(&n.to_string()),
            _ => false,
        },
    }
}

/// Resolve a claim name, then a dotted path if no claim has the full name
/// (some IdPs use dots inside claim names, e.g. URLs).
fn lookup<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut cur = claims;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// Extract a string-list claim (string, or array of strings; others ignored).
pub fn string_list(claims: &serde_json::Value, name: &str) -> Vec<String> {
    match lookup(claims, name) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access::Scope;

    fn cfg() -> AuthConfig {
        serde_json::from_value(serde_json::json!({
            "realm": "r", "service": "s",
            "rules": [
                {"match": [{"claim": "groups", "values": ["wfm"]}], "grant": {"apps/**": ["pull"]}},
                {"match": [{"claim": "groups", "values": ["dev-acme"]}],
                 "grant": {"apps/acme/**": ["pull", "push"], "registry:catalog": ["*"]}},
                {"match": [{"claim": "realm_access.roles", "values": ["admin"]}], "grant": {"**": ["*"]}}
            ],
            "read_only": [{"claim": "client_id", "values": ["wfm-client"]}],
            "anonymous_pull": ["public/**"]
        }))
        .unwrap()
    }

    #[test]
    fn rules_grant_by_group_and_path_and_mask_read_only() {
        let rs = RuleSet::compile(&cfg()).unwrap();
        let claims = serde_json::json!({});
        let groups = vec!["dev-acme".to_owned()];
        let mut p = Permissions::none();
        let ro = rs.apply(
            &ClaimView {
                claims: &claims,
                groups: &groups,
                client_id: Some("dev"),
            },
            &mut p,
        );
        assert!(!ro);
        assert!(p.allows(&Scope::repository("apps/acme/x", ActionSet::PUSH)));
        assert!(!p.allows(&Scope::repository("apps/other", ActionSet::PULL)));
        assert!(p.allows(&Scope::catalog()));

        let mut p = Permissions::none();
        let ro = rs.apply(
            &ClaimView {
                claims: &claims,
                groups: &groups,
                client_id: Some("wfm-client"),
            },
            &mut p,
        );
        assert!(ro);
        assert!(!p.allows(&Scope::repository("apps/acme/x", ActionSet::PUSH)));

        let admin = serde_json::json!({"realm_access": {"roles": ["admin"]}});
        let mut p = Permissions::none();
        rs.apply(
            &ClaimView {
                claims: &admin,
                groups: &[],
                client_id: None,
            },
            &mut p,
        );
        assert!(p.allows(&Scope::repository("x/y", ActionSet::DELETE)));

        let anon = rs.anonymous_permissions();
        assert!(anon.allows(&Scope::repository("public/a", ActionSet::PULL)));
        assert!(!anon.allows(&Scope::repository("public/a", ActionSet::PUSH)));
        assert!(!anon.allows(&Scope::repository("apps/a", ActionSet::PULL)));
    }
}
