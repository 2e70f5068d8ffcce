//! Git repositories and OCI: Git application registries served as OCI (`source`).

pub mod source;
