//! OCI error bodies (`{"errors":[{"code","message","detail"}]}`), the only shape of
//! rejection the proxy ever sends, so every client can show the reason to its user.

use serde::Serialize;

/// Error codes of the OCI distribution spec, plus the status each one is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OciErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    Toomanyrequests,
    /// Not in the spec's table, but distribution answers it for upstream trouble; clients
    /// print it verbatim.
    Unavailable,
    /// An `n` that is not a number (distribution's code for it).
    PaginationNumberInvalid,
}

impl OciErrorCode {
    pub fn status(self) -> u16 {
        use OciErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown => 404,
            BlobUploadInvalid
            | DigestInvalid
            | ManifestBlobUnknown
            | ManifestInvalid
            | NameInvalid
            | SizeInvalid
            | PaginationNumberInvalid => 400,
            Unauthorized => 401,
            Denied => 403,
            Unsupported => 405,
            Toomanyrequests => 429,
            Unavailable => 502,
        }
    }
}

/// One entry of an OCI error body.
#[derive(Debug, Clone, Serialize)]
pub struct OciErrorEntry {
    pub code: OciErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// A complete rejection: status plus body. Several entries when several rules failed.
#[derive(Debug, Clone)]
pub struct OciError {
    pub status: u16,
    pub errors: Vec<OciErrorEntry>,
}

impl OciError {
    pub fn new(code: OciErrorCode, message: impl Into<String>) -> Self {
        OciError {
            status: code.status(),
            errors: vec![OciErrorEntry {
                code,
                message: message.into(),
                detail: serde_json::Value::Null,
            }],
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        if let Some(first) = self.errors.first_mut() {
            first.detail = detail;
        }
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn push(
        &mut self,
        code: OciErrorCode,
        message: impl Into<String>,
        detail: serde_json::Value,
    ) {
        self.errors.push(OciErrorEntry {
            code,
            message: message.into(),
            detail,
        });
    }

    pub fn code(&self) -> Option<OciErrorCode> {
        self.errors.first().map(|e| e.code)
    }

    /// The JSON body. Serialising plain structs cannot fail; the fallback keeps it total.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            errors: &'a [OciErrorEntry],
        }
        serde_json::to_vec(&Body {
            errors: &self.errors,
        })
        .unwrap_or_else(|_| br#"{"errors":[{"code":"UNKNOWN","message":"error"}]}"#.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_oci_shape() {
        let e = OciError::new(OciErrorCode::NameInvalid, "bad name")
            .with_detail(serde_json::json!({"name": "A"}));
        assert_eq!(e.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
        assert_eq!(v["errors"][0]["message"], "bad name");
        assert_eq!(v["errors"][0]["detail"]["name"], "A");
    }

    #[test]
    fn null_detail_is_omitted() {
        let e = OciError::new(OciErrorCode::Denied, "no");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["errors"][0].get("detail").is_none());
        assert_eq!(e.status, 403);
    }
}
