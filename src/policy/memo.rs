//! Memoised decisions. With the `time` builtins left out of regorus (see Cargo.toml), a
//! decision depends only on the bundle and the input document, so identical inputs can
//! reuse a decision: a fleet pulling the same manifest costs one evaluation, not one per
//! request. Decisions that hit a limit or an error are never reused (they may be
//! transient), and a reload changes the revision and so every key.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::policy::engine::PolicyEngine;
use crate::policy::{Decision, PolicyInput};

/// How long a memoised decision lives (also bounds how long a decision log line may be
/// skipped for a repeated identical request).
const TTL: Duration = Duration::from_secs(60);
const CAPACITY: u64 = 10_000;

pub struct DecisionMemo {
    cache: moka::sync::Cache<[u8; 32], Arc<Decision>>,
}

impl std::fmt::Debug for DecisionMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionMemo")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Default for DecisionMemo {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TTL)
                .build(),
        }
    }
}

impl DecisionMemo {
    /// The decision for `input` under `engine`, evaluated at most once per distinct
    /// (revision, input) while memoised.
    pub fn evaluate(
        &self,
        engine: &PolicyEngine,
        input: &PolicyInput,
        request_id: Option<&str>,
    ) -> Arc<Decision> {
        let Ok(bytes) = serde_json::to_vec(input) else {
            return Arc::new(engine.evaluate_for(input, request_id));
        };
        let mut h = Sha256::new();
        h.update(engine.revision().as_bytes());
        h.update([0]);
        h.update(&bytes);
        let key: [u8; 32] = h.finalize().into();
        if let Some(d) = self.cache.get(&key) {
            return d;
        }
        let decision = Arc::new(engine.evaluate_for(input, request_id));
        let clean = decision
            .packages
            .iter()
            .all(|p| p.error.is_none() && !p.limit_exceeded);
        if clean {
            self.cache.insert(key, decision.clone());
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::input::{Descriptor, Identity, PullInput, Request, INPUT_VERSION};
    use crate::policy::PolicyConfig;

    fn engine(dir: &std::path::Path, rego: &str) -> PolicyEngine {
        std::fs::write(dir.join("p.rego"), rego).unwrap();
        let config = PolicyConfig {
            directories: vec![dir.to_owned()],
            ..PolicyConfig::default()
        };
        PolicyEngine::load(&config).unwrap()
    }

    fn pull(repo: &str) -> PolicyInput {
        PolicyInput::Pull(PullInput {
            version: INPUT_VERSION,
            request: Request::new("GET", repo, "v1", crate::config::RouteKind::App),
            identity: Identity::anonymous(),
            descriptor: Descriptor::default(),
            manifest: None,
            cache_hit: true,
            signatures: Vec::new(),
        })
    }

    #[test]
    fn identical_inputs_reuse_the_decision_and_a_new_bundle_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let deny = "package margo.admission.t\ndeny contains \"no\" if { input.request.repository == \"a\" }\n";
        let e1 = engine(dir.path(), deny);
        let memo = DecisionMemo::default();
        let first = memo.evaluate(&e1, &pull("a"), None);
        assert!(first.is_denied());
        assert!(
            Arc::ptr_eq(&first, &memo.evaluate(&e1, &pull("a"), None)),
            "memoised"
        );
        assert!(
            !memo.evaluate(&e1, &pull("b"), None).is_denied(),
            "other input, own decision"
        );
        // A changed bundle has another revision: nothing stale is served.
        let e2 = engine(dir.path(), "package margo.admission.t\n");
        assert_ne!(e1.revision(), e2.revision());
        assert!(!memo.evaluate(&e2, &pull("a"), None).is_denied());
    }
}
