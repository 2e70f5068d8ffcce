//! The OCI Distribution v1.1 vocabulary: request paths, repository names, digests and the
//! error body every registry client understands. Pure logic, no I/O.

pub mod digest;
pub mod error;
pub mod headers;
pub mod name;
pub mod operation;
pub mod path;

pub use digest::Digest;
pub use error::{OciError, OciErrorCode};
pub use name::RepoName;
pub use operation::Operation;
pub use path::{OciRoute, Reference};

/// Media types of manifests a registry serves; used for `Accept` on side-channel fetches.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.artifact.manifest.v1+json";
