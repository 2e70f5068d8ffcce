//! Parsing `/v2/...` request paths into the operation they name.
//!
//! Repository names may contain `/`, so the path is read from its end: the last segments
//! say which endpoint it is, everything before them is the name.

use super::digest::{Digest, DigestError};
use super::name::{NameError, RepoName};

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.contains(':') {
            return Ok(Reference::Digest(s.parse()?));
        }
        if valid_tag(s) {
            Ok(Reference::Tag(s.to_owned()))
        } else {
            Err(PathError::BadTag(s.chars().take(140).collect()))
        }
    }

    pub fn as_tag(&self) -> Option<&str> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    pub fn as_digest(&self) -> Option<&Digest> {
        match self {
            Reference::Digest(d) => Some(d),
            Reference::Tag(_) => None,
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The endpoint a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciRoute {
    /// `/v2/`
    Ping,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<session>`
    UploadSession { name: RepoName, session: String },
    /// `/v2/<name>/tags/list`
    TagsList { name: RepoName },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: RepoName, digest: Digest },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("not an OCI distribution API path")]
    NotOci,
    #[error("invalid repository name: {0}")]
    Name(#[from] NameError),
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    #[error("invalid tag `{0}`")]
    BadTag(String),
}

impl OciRoute {
    /// Parses the path part of a request URI (no query string).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let rest = match path {
            "/v2" | "/v2/" => return Ok(OciRoute::Ping),
            p => p.strip_prefix("/v2/").ok_or(PathError::NotOci)?,
        };
        if rest == "_catalog" {
            return Ok(OciRoute::Catalog);
        }
        // Routes are decided by the last two or three segments; the name is everything
        // before them, sliced, not re-joined (no allocation on the hot path).
        let name_of = |head: &str| -> Result<RepoName, PathError> {
            if head.is_empty() {
                return Err(PathError::NotOci);
            }
            Ok(RepoName::parse(head)?)
        };
        let Some((head1, last)) = rest.rsplit_once('/') else {
            return Err(PathError::NotOci);
        };
        let (head2, kind) = head1.rsplit_once('/').unwrap_or(("", head1));
        if kind == "uploads" {
            if let Some(name) = head2
                .strip_suffix("/blobs")
                .or_else(|| (head2 == "blobs").then_some(""))
            {
                let name = name_of(name)?;
                return Ok(match last {
                    "" => OciRoute::UploadStart { name },
                    session if valid_session(session) => OciRoute::UploadSession {
                        name,
                        session: session.to_owned(),
                    },
                    _ => return Err(PathError::NotOci),
                });
            }
        }
        match kind {
            "tags" if last == "list" => Ok(OciRoute::TagsList {
                name: name_of(head2)?,
            }),
            "manifests" => {
                let reference = Reference::parse(&percent_decode_colon(last))?;
                Ok(OciRoute::Manifest {
                    name: name_of(head2)?,
                    reference,
                })
            }
            "blobs" if last == "uploads" => Ok(OciRoute::UploadStart {
                name: name_of(head2)?,
            }),
            "blobs" => {
                let digest = percent_decode_colon(last).parse()?;
                Ok(OciRoute::Blob {
                    name: name_of(head2)?,
                    digest,
                })
            }
            "referrers" => {
                let digest = percent_decode_colon(last).parse()?;
                Ok(OciRoute::Referrers {
                    name: name_of(head2)?,
                    digest,
                })
            }
            _ => Err(PathError::NotOci),
        }
    }

    pub fn name(&self) -> Option<&RepoName> {
        match self {
            OciRoute::Ping | OciRoute::Catalog => None,
            OciRoute::Manifest { name, .. }
            | OciRoute::Blob { name, .. }
            | OciRoute::UploadStart { name }
            | OciRoute::UploadSession { name, .. }
            | OciRoute::TagsList { name }
            | OciRoute::Referrers { name, .. } => Some(name),
        }
    }
}

/// Upload session ids are opaque to clients but come from the registry: allow what
/// registries use (UUIDs, base64url) and nothing that could change the path's meaning.
fn valid_session(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'.' | b'~'))
        && s != "."
        && s != ".."
}

/// Clients may send the `:` of a digest percent-encoded.
fn percent_decode_colon(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('%') {
        std::borrow::Cow::Owned(s.replace("%3A", ":").replace("%3a", ":"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn parses_every_endpoint() {
        let cases: Vec<(String, OciRoute)> = vec![
            ("/v2/".into(), OciRoute::Ping),
            ("/v2".into(), OciRoute::Ping),
            ("/v2/_catalog".into(), OciRoute::Catalog),
            (
                "/v2/apps/a/manifests/1.0.0".into(),
                OciRoute::Manifest {
                    name: name("apps/a"),
                    reference: Reference::Tag("1.0.0".into()),
                },
            ),
            (
                format!("/v2/a/manifests/{}", D.replace(':', "%3A")),
                OciRoute::Manifest {
                    name: name("a"),
                    reference: Reference::Digest(D.parse().unwrap()),
                },
            ),
            (
                format!("/v2/x/y/blobs/{D}"),
                OciRoute::Blob {
                    name: name("x/y"),
                    digest: D.parse().unwrap(),
                },
            ),
            (
                "/v2/x/blobs/uploads/".into(),
                OciRoute::UploadStart { name: name("x") },
            ),
            (
                "/v2/x/blobs/uploads".into(),
                OciRoute::UploadStart { name: name("x") },
            ),
            (
                "/v2/x/blobs/uploads/3f1c-aa_b=".into(),
                OciRoute::UploadSession {
                    name: name("x"),
                    session: "3f1c-aa_b=".into(),
                },
            ),
            (
                "/v2/x/tags/list".into(),
                OciRoute::TagsList { name: name("x") },
            ),
            (
                format!("/v2/x/referrers/{D}"),
                OciRoute::Referrers {
                    name: name("x"),
                    digest: D.parse().unwrap(),
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(OciRoute::parse(&path), Ok(want), "{path}");
        }
    }

    #[test]
    fn names_that_look_like_endpoints_still_parse() {
        // A repository literally named `manifests/x` is legal.
        assert_eq!(
            OciRoute::parse("/v2/manifests/x/tags/list"),
            Ok(OciRoute::TagsList {
                name: name("manifests/x")
            })
        );
    }

    #[test]
    fn refuses_bad_paths() {
        assert_eq!(OciRoute::parse("/healthz"), Err(PathError::NotOci));
        assert_eq!(OciRoute::parse("/v2/x/unknown"), Err(PathError::NotOci));
        assert_eq!(OciRoute::parse("/v2/manifests/1"), Err(PathError::NotOci));
        assert!(matches!(
            OciRoute::parse("/v2/UPPER/tags/list"),
            Err(PathError::Name(_))
        ));
        assert!(matches!(
            OciRoute::parse("/v2/x/manifests/-bad"),
            Err(PathError::BadTag(_))
        ));
        assert!(matches!(
            OciRoute::parse("/v2/x/blobs/sha256:zz"),
            Err(PathError::Digest(_))
        ));
        assert_eq!(
            OciRoute::parse("/v2/x/blobs/uploads/.."),
            Err(PathError::NotOci)
        );
        assert!(OciRoute::parse("/v2/../x/tags/list").is_err());
    }

    #[test]
    fn tags_follow_grammar() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_x.y-z"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(".a"));
        assert!(!valid_tag(""));
    }
}
