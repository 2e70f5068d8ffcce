//! Admission policies written in Rego, evaluated in-process with `regorus`.
//!
//! Security teams put `.rego` files (and `data.yaml` parameter files) in the
//! configured directories. Every package below `margo.admission.` that defines
//! `deny`, `warn` or `violations` is asked at each decision point (push, pull,
//! delete, tags list); its findings are merged into one [`Decision`] according to
//! the package's [`Mode`]. The contract, the input documents and the shipped
//! policies are documented in `policies/README.md`.
//!
//! Typical use from the proxy:
//!
//! ```no_run
//! use std::sync::Arc;
//! use margo_proxy::policy::{PolicyConfig, PolicyService};
//! # fn main() -> Result<(), margo_proxy::policy::PolicyError> {
//! let service = Arc::new(PolicyService::new(PolicyConfig::default())?);
//! // inside a tokio runtime: let _watcher = service.spawn_watcher();
//! // per request: let decision = service.evaluate(&input);
//! // on SIGHUP (from spawn_blocking): service.reload()
//! # Ok(()) }
//! ```

pub mod bundle;
pub mod cli;
pub mod config;
pub mod decision;
pub mod engine;
pub mod error;
pub mod input;
mod log;
pub mod memo;
pub mod reload;

#[cfg(test)]
mod tests;

pub use config::{FailureAction, LimitsConfig, Mode, PolicyConfig, ReloadConfig};
pub use decision::{Decision, Outcome, PackageReport, Violation};
pub use engine::{PolicyEngine, NAMESPACE, PARAMS_KEY};
pub use error::PolicyError;
pub use input::{
    BuiltinResult, ComponentInput, DecisionPoint, DeleteInput, DeleteTarget, Descriptor, Identity,
    PolicyInput, PullInput, PushInput, Request, RouteKind, TagInput, INPUT_VERSION,
};
pub use log::DECISION_TARGET;
pub use reload::{PolicyService, ReloadOutcome};
