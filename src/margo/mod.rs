//! Margo admission logic: pure functions over bytes, no network, no Pingora.
//!
//! The proxy calls these on a push; `margo-proxy validate` calls the same functions
//! offline. Everything that takes bytes takes untrusted bytes: sizes are capped, YAML
//! and regexes are budgeted, and nothing panics on any input (see `fuzz_smoke`).
//!
//! - [`yaml`]: budgeted YAML parsing into a positioned [`node::Node`] tree.
//! - [`model`]: the typed Application Description (every LinkML class).
//! - [`validate`]: every violation of a `margo.yaml`, with rule id, path and position.
//! - [`manifest`]: package and component manifest rules, description cross-check, tags.
//! - [`compose`]: streamed compose archive safety check.
//! - [`admission`]: the one admission driver (push and `validate`) over a [`admission::BlobSource`].
//! - [`report`]: [`report::Violation`], [`report::Report`], [`report::RuleId`].
//! - [`offline`]: the `validate PATH` command's engine and renderers.

pub mod admission;
pub mod compose;
pub mod manifest;
pub mod model;
pub mod node;
pub mod offline;
pub mod report;
pub mod resources;
pub mod validate;
pub mod yaml;
mod yaml_hint;

#[cfg(test)]
mod fuzz_smoke;

pub use report::{FieldPath, Location, Report, RuleId, Violation};
