//! The App Registry's error answers: `{"code", "message", "details"}` at the top level,
//! with the reference server's codes and statuses (appr/exception.py).

use serde_json::{json, Map, Value};

/// The reference server's error classes, by the code they answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidUsage,
    InvalidRelease,
    InvalidParams,
    PackageExists,
    PackageNotFound,
    ChannelNotFound,
    Forbidden,
    PackageReleaseNotFound,
    UnauthorizedAccess,
    Unsupported,
    ResourceInUse,
    ResourceNotFound,
    PayloadTooLarge,
    MethodNotAllowed,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidUsage => "invalid-usage",
            ErrorCode::InvalidRelease => "invalid-release",
            ErrorCode::InvalidParams => "invalid-parameters",
            ErrorCode::PackageExists => "package-exists",
            ErrorCode::PackageNotFound => "package-not-found",
            ErrorCode::ChannelNotFound => "channel-not-found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PackageReleaseNotFound => "package-release-not-found",
            ErrorCode::UnauthorizedAccess => "unauthorized-access",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::ResourceInUse => "resource-in-use",
            ErrorCode::ResourceNotFound => "resource-not-found",
            // Not in the reference (Flask answers these with HTML pages).
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::MethodNotAllowed => "method-not-allowed",
            ErrorCode::Unavailable => "upstream-unavailable",
            ErrorCode::Internal => "internal-error",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidUsage => 400,
            ErrorCode::InvalidRelease | ErrorCode::InvalidParams => 422,
            ErrorCode::PackageExists | ErrorCode::ResourceInUse => 409,
            ErrorCode::PackageNotFound
            | ErrorCode::ChannelNotFound
            | ErrorCode::PackageReleaseNotFound
            | ErrorCode::ResourceNotFound => 404,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnauthorizedAccess => 401,
            ErrorCode::Unsupported => 501,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unavailable => 502,
            ErrorCode::Internal => 500,
        }
    }
}

/// One error answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApprError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
    /// Overrides the code's status (an upstream timeout is 504).
    pub status: Option<u16>,
}

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

impl ApprError {
    pub fn new(code: ErrorCode, message: impl Into<String>, details: Value) -> Self {
        ApprError {
            code,
            message: message.into(),
            details: match details {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            status: None,
        }
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or(self.code.status())
    }

    pub fn body(&self) -> Value {
        json!({"code": self.code.as_str(), "message": self.message, "details": self.details})
    }

    /// `raise_package_not_found` of the reference: Python's `None` spelled as it prints.
    pub fn package_not_found(
        package: &str,
        release: Option<&str>,
        media_type: Option<&str>,
    ) -> Self {
        ApprError::new(
            ErrorCode::PackageNotFound,
            format!(
                "package {package} doesn't exist, v: {}, type: {}",
                release.unwrap_or("None"),
                media_type.unwrap_or("None")
            ),
            json!({"package": package, "release": opt(release), "media_type": opt(media_type)}),
        )
    }

    /// The reference's `show_channel` calls `raise_channel_not_found(channel)`, whose
    /// details hold one key, `package`; the same key here, with the package's name.
    pub fn channel_not_found(package: &str, channel: &str) -> Self {
        ApprError::new(
            ErrorCode::ChannelNotFound,
            format!("Channel '{channel}' doesn't exist for package '{package}'"),
            json!({"package": package}),
        )
    }

    pub fn release_not_found(package: &str, query: &str) -> Self {
        ApprError::new(
            ErrorCode::PackageReleaseNotFound,
            format!("No release match '{query}' for package '{package}'"),
            json!({"package": package, "release_query": query}),
        )
    }

    pub fn exists(package: &str, release: &str, media_type: &str) -> Self {
        ApprError::new(
            ErrorCode::PackageExists,
            "Package exists already",
            json!({"package": package, "release": release, "media_type": media_type}),
        )
    }

    pub fn usage(message: impl Into<String>) -> Self {
        ApprError::new(ErrorCode::InvalidUsage, message, json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_the_reference_one() {
        let e = ApprError::package_not_found("ns/q", None, None);
        assert_eq!(e.status(), 404);
        assert_eq!(
            e.body(),
            json!({"code": "package-not-found",
                   "message": "package ns/q doesn't exist, v: None, type: None",
                   "details": {"package": "ns/q", "release": null, "media_type": null}})
        );
        let e = ApprError::exists("ns/p", "1.0.0", "kpm");
        assert_eq!((e.status(), e.code.as_str()), (409, "package-exists"));
        assert_eq!(ErrorCode::InvalidRelease.status(), 422);
        assert_eq!(ErrorCode::ChannelNotFound.as_str(), "channel-not-found");
    }
}
