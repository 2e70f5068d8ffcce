//! Header names the proxy reads or writes, spelled once: a typo in a string literal
//! would silently drop a header, a typo in a constant name does not compile.

use http::HeaderName;

/// Correlates one request across the client, the proxy's logs and the upstream's.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Registries send it on every answer; clients use it to tell a registry from a web server.
pub static DOCKER_DISTRIBUTION_API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
/// The value of [`DOCKER_DISTRIBUTION_API_VERSION`].
pub const API_VERSION_VALUE: &str = "registry/2.0";
/// The digest of the manifest or blob answered.
pub static DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// Set by the upstream when a pushed manifest has a `subject` (OCI 1.1 referrers).
pub static OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// Names the policy rule that denied a request (HEAD answers carry no body).
pub static X_MARGO_POLICY_DENIED: HeaderName = HeaderName::from_static("x-margo-policy-denied");
/// How the manifest cache answered (`miss`, `stale`; absent on a hit).
pub static X_MARGO_CACHE: HeaderName = HeaderName::from_static("x-margo-cache");
/// Which blob cache tier answered a hit (`memory`, `disk`).
pub static X_MARGO_CACHE_TIER: HeaderName = HeaderName::from_static("x-margo-cache-tier");
/// The chain of client addresses a request passed through.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `http` or `https`, as the client reached the proxy.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `Host` the client used.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
