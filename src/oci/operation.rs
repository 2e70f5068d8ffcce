//! What a request does, as the proxy's control flow and its metrics name it. An enum so
//! a misspelt operation is a compile error, not a branch that silently never runs.

use http::Method;

use super::path::{OciRoute, PathError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Operation {
    Ping,
    Catalog,
    ManifestGet,
    ManifestHead,
    ManifestPut,
    ManifestDelete,
    BlobGet,
    BlobHead,
    BlobDelete,
    UploadStart,
    UploadChunk,
    UploadComplete,
    UploadStatus,
    UploadCancel,
    TagsList,
    Referrers,
    /// The built-in token endpoint.
    Token,
    #[default]
    Other,
}

impl Operation {
    /// Every operation, in the order of [`crate::metrics::OPERATIONS`].
    pub const ALL: [Operation; 18] = [
        Operation::Ping,
        Operation::Catalog,
        Operation::ManifestGet,
        Operation::ManifestHead,
        Operation::ManifestPut,
        Operation::ManifestDelete,
        Operation::BlobGet,
        Operation::BlobHead,
        Operation::BlobDelete,
        Operation::UploadStart,
        Operation::UploadChunk,
        Operation::UploadComplete,
        Operation::UploadStatus,
        Operation::UploadCancel,
        Operation::TagsList,
        Operation::Referrers,
        Operation::Token,
        Operation::Other,
    ];

    /// The `operation` label value of metrics and the access log (stable: dashboards
    /// and alerts query these strings).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Ping => "ping",
            Operation::Catalog => "catalog",
            Operation::ManifestGet => "manifest_get",
            Operation::ManifestHead => "manifest_head",
            Operation::ManifestPut => "manifest_put",
            Operation::ManifestDelete => "manifest_delete",
            Operation::BlobGet => "blob_get",
            Operation::BlobHead => "blob_head",
            Operation::BlobDelete => "blob_delete",
            Operation::UploadStart => "upload_start",
            Operation::UploadChunk => "upload_chunk",
            Operation::UploadComplete => "upload_complete",
            Operation::UploadStatus => "upload_status",
            Operation::UploadCancel => "upload_cancel",
            Operation::TagsList => "tags_list",
            Operation::Referrers => "referrers",
            Operation::Token => "token",
            Operation::Other => "other",
        }
    }

    /// The operation a parsed request path and method name.
    pub fn of(route: &Result<OciRoute, PathError>, method: &Method) -> Operation {
        use Method as M;
        let Ok(route) = route else {
            return Operation::Other;
        };
        match (route, method) {
            (OciRoute::Ping, _) => Operation::Ping,
            (OciRoute::Catalog, _) => Operation::Catalog,
            (OciRoute::Manifest { .. }, &M::GET) => Operation::ManifestGet,
            (OciRoute::Manifest { .. }, &M::HEAD) => Operation::ManifestHead,
            (OciRoute::Manifest { .. }, &M::PUT) => Operation::ManifestPut,
            (OciRoute::Manifest { .. }, &M::DELETE) => Operation::ManifestDelete,
            (OciRoute::Blob { .. }, &M::GET) => Operation::BlobGet,
            (OciRoute::Blob { .. }, &M::HEAD) => Operation::BlobHead,
            (OciRoute::Blob { .. }, &M::DELETE) => Operation::BlobDelete,
            (OciRoute::UploadStart { .. }, &M::POST) => Operation::UploadStart,
            (OciRoute::UploadSession { .. }, &M::PATCH) => Operation::UploadChunk,
            (OciRoute::UploadSession { .. }, &M::PUT) => Operation::UploadComplete,
            (OciRoute::UploadSession { .. }, &M::GET) => Operation::UploadStatus,
            (OciRoute::UploadSession { .. }, &M::DELETE) => Operation::UploadCancel,
            (OciRoute::TagsList { .. }, _) => Operation::TagsList,
            (OciRoute::Referrers { .. }, _) => Operation::Referrers,
            _ => Operation::Other,
        }
    }

    /// A manifest read (GET or HEAD), which the cache may answer.
    pub fn is_manifest_read(self) -> bool {
        matches!(self, Operation::ManifestGet | Operation::ManifestHead)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_strings_are_the_metrics_operations() {
        let labels: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels, crate::metrics::OPERATIONS);
    }

    #[test]
    fn routes_and_methods_name_operations() {
        let m = OciRoute::parse("/v2/a/manifests/t");
        assert_eq!(Operation::of(&m, &Method::PUT), Operation::ManifestPut);
        assert_eq!(Operation::of(&m, &Method::POST), Operation::Other);
        assert_eq!(
            Operation::of(&OciRoute::parse("/nope"), &Method::GET),
            Operation::Other
        );
        assert!(Operation::of(&m, &Method::HEAD).is_manifest_read());
    }
}
