//! Hot reload: the current [`PolicyEngine`] behind an `RwLock<Arc<..>>`.
//!
//! A request takes the read lock only to clone the `Arc` (nanoseconds), then
//! evaluates on its own reference; a reload compiles the new set without any lock
//! and takes the write lock only to swap the pointer. In-flight evaluations finish
//! on the engine they started with, which is dropped with its last reference.
//! `std` locks are enough for this (no `arc-swap` dependency): the critical
//! sections never await and never evaluate.

use std::sync::{Arc, Mutex, RwLock};

use crate::policy::bundle::{self, Bundle};
use crate::policy::config::PolicyConfig;
use crate::policy::decision::Decision;
use crate::policy::engine::PolicyEngine;
use crate::policy::error::PolicyError;
use crate::policy::input::PolicyInput;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hash to the revision already loaded; nothing was compiled.
    Unchanged { revision: String },
    /// A new policy set is live.
    Reloaded { from: String, to: String },
}

/// The live policy set of the proxy, shared by all request handlers.
#[derive(Debug)]
pub struct PolicyService {
    config: PolicyConfig,
    current: RwLock<Arc<PolicyEngine>>,
    /// Serialises reloads (poller and SIGHUP) and remembers the last directory
    /// fingerprint the poller saw.
    reload_state: Mutex<Option<String>>,
    memo: crate::policy::memo::DecisionMemo,
}

impl PolicyService {
    /// Loads and compiles the configured directories. Fails (and the proxy should
    /// not start) when a directory is missing or a policy does not compile.
    pub fn new(config: PolicyConfig) -> Result<Self, PolicyError> {
        let fingerprint = bundle::fingerprint(&config.directories)?;
        let engine = PolicyEngine::load(&config)?;
        tracing::info!(target: "margo_proxy::policy", revision = %engine.revision(),
            packages = engine.packages().count(), "policies loaded");
        Ok(Self {
            config,
            current: RwLock::new(Arc::new(engine)),
            reload_state: Mutex::new(Some(fingerprint)),
            memo: crate::policy::memo::DecisionMemo::default(),
        })
    }

    /// The configuration the service was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The engine live right now. Hold it for the duration of one request.
    pub fn current(&self) -> Arc<PolicyEngine> {
        // A poisoned lock only means a panic elsewhere while swapping a pointer;
        // the pointer itself is always valid.
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Evaluates `input` against the live policy set (and logs the decision).
    pub fn evaluate(&self, input: &PolicyInput) -> Decision {
        self.current().evaluate(input)
    }

    /// Like [`Self::evaluate`], reusing the decision of an identical earlier input
    /// under the same bundle revision (see [`crate::policy::memo`]). For hot paths.
    pub fn evaluate_memoised(&self, input: &PolicyInput, request_id: &str) -> Arc<Decision> {
        self.memo.evaluate(&self.current(), input, Some(request_id))
    }

    /// [`Self::evaluate`] for a proxied request: its decision log line carries the id.
    pub fn evaluate_for(&self, input: &PolicyInput, request_id: &str) -> Decision {
        self.current().evaluate_for(input, Some(request_id))
    }

    /// Reloads now (SIGHUP). On failure the previous set stays live and the error
    /// says why; it is also logged. Compiles synchronously: call it from
    /// `spawn_blocking` in async code.
    pub fn reload(&self) -> Result<ReloadOutcome, PolicyError> {
        let mut state = self
            .reload_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Fingerprint first: a write landing during the read is then seen by the
        // next poll rather than missed.
        let fingerprint = bundle::fingerprint(&self.config.directories);
        let result = self.reload_locked();
        if let Ok(fp) = fingerprint {
            *state = Some(fp);
        }
        result
    }

    /// Reloads when the directories changed since the last load (poller).
    /// `Ok(None)` when nothing changed.
    pub fn reload_if_changed(&self) -> Result<Option<ReloadOutcome>, PolicyError> {
        let mut state = self
            .reload_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fingerprint = bundle::fingerprint(&self.config.directories);
        if let (Ok(fp), Some(seen)) = (&fingerprint, state.as_ref()) {
            if fp == seen {
                return Ok(None);
            }
        }
        // Record the fingerprint even when the reload fails, so a broken file is
        // reported once, not on every poll; the next edit triggers a new attempt.
        if let Ok(fp) = &fingerprint {
            *state = Some(fp.clone());
        }
        fingerprint?;
        self.reload_locked().map(Some)
    }

    fn reload_locked(&self) -> Result<ReloadOutcome, PolicyError> {
        let old = self.current();
        let result = Bundle::read(
            &self.config.directories,
            false,
            self.config.limits.max_file_bytes,
        )
        .and_then(|bundle| {
            if bundle.revision == old.revision() {
                Ok(None)
            } else {
                PolicyEngine::from_bundle(&bundle, &self.config).map(Some)
            }
        });
        match result {
            Ok(None) => Ok(ReloadOutcome::Unchanged {
                revision: old.revision().to_string(),
            }),
            Ok(Some(engine)) => {
                let outcome = ReloadOutcome::Reloaded {
                    from: old.revision().to_string(),
                    to: engine.revision().to_string(),
                };
                let engine = Arc::new(engine);
                match self.current.write() {
                    Ok(mut guard) => *guard = engine,
                    Err(poisoned) => *poisoned.into_inner() = engine,
                }
                Ok(outcome)
            }
            // Logged by the caller, once, with what triggered the reload.
            Err(err) => Err(err),
        }
    }

    /// Starts the poller on the current tokio runtime when `reload.watch` is on.
    /// The task holds only a weak reference: it ends once the service is dropped.
    pub fn spawn_watcher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.config.reload.watch {
            return None;
        }
        let weak = Arc::downgrade(self);
        let interval = self.config.reload.interval();
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                // Reading and compiling is blocking work; keep it off the reactor.
                let revision = service.current().revision().to_owned();
                let joined = tokio::task::spawn_blocking(move || service.reload_if_changed()).await;
                match joined {
                    Ok(Ok(Some(outcome))) => tracing::info!(target: "margo_proxy::reload",
                        "policy files changed: {}", crate::signals::describe(&outcome)),
                    Ok(Ok(None)) => {}
                    Ok(Err(err)) => tracing::error!(target: "margo_proxy::reload",
                        "policy files changed: reload failed, keeping revision {}: {err}",
                        revision.get(..12).unwrap_or(&revision)),
                    Err(err) => tracing::error!(target: "margo_proxy::reload",
                        "policy reload task failed: {err}"),
                }
            }
        }))
    }
}
