//! The CNCF App Registry API (appr/CNR: `/cnr/api/v1/...`, `/cnr/version`,
//! `/.well-known/app-registry-uri.json`), served from the OCI upstream with no state of
//! its own, for any package and for Margo application packages.
//!
//! - [`route`]: the reference server's routes;
//! - [`mapping`]: packages, releases and channels as OCI artifacts;
//! - [`tarball`]: deterministic Margo tarballs, bounded unpacking of pushed ones;
//! - [`service`]: the answers, over a [`store::Store`] (the proxy glue implements it
//!   over the one upstream client, with admission and policies on release pushes);
//! - [`error`]: the reference's error shape and codes.

pub mod config;
pub mod error;
pub mod mapping;
pub mod route;
pub mod service;
pub mod store;
pub mod tarball;

pub use config::ApprConfig;
