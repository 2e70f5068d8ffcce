//! Blob redirects to object storage. A registry on S3/GCS/Azure (distribution's
//! `redirect` setting, ECR, Harbor on S3) answers blob GETs with `307` to a presigned
//! URL. By default the client follows it (the `Location` passes untouched: its query
//! string is the signature). `blob_redirects: follow` is for sites whose clients cannot
//! reach the storage: the proxy fetches it itself, with these limits:
//!
//! - at most [`MAX_REDIRECTS`] hops, each an absolute or relative `http(s)` URL, never
//!   from `https` down to `http`;
//! - no `Authorization` (neither the proxy's nor the client's) and no client headers but
//!   `Range`: the presigned URL is the whole credential;
//! - each hop's head within the upstream's read timeout, the body within
//!   [`BLOB_DEADLINE`] and never idle longer than the read timeout.

use std::time::Duration;

use serde::Deserialize;

use crate::config::Timeouts;

/// Most redirects followed for one blob.
pub const MAX_REDIRECTS: usize = 5;
/// A followed blob's whole transfer.
pub const BLOB_DEADLINE: Duration = Duration::from_secs(3600);

/// `upstreams[].blob_redirects`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobRedirects {
    /// The client gets the redirect, untouched.
    #[default]
    Pass,
    /// The proxy follows it and streams the blob (and can cache it).
    Follow,
}

/// Marks an answer the proxy fetched from object storage itself.
pub const FOLLOWED_HEADER: &str = "x-margo-blob-redirect";

/// Headers of a blob answer that describe the blob and go to the client; the storage's
/// own (`x-amz-*`, `Server`, cookies) do not.
const RELAYED: [http::HeaderName; 8] = [
    http::header::CONTENT_LENGTH,
    http::header::CONTENT_TYPE,
    http::header::CONTENT_RANGE,
    http::header::CONTENT_ENCODING,
    http::header::ACCEPT_RANGES,
    http::header::ETAG,
    http::header::LAST_MODIFIED,
    http::header::WWW_AUTHENTICATE,
];

/// The headers of `headers` a client gets with a followed blob.
pub fn relayed_headers(headers: &http::HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out: Vec<_> = RELAYED
        .iter()
        .filter_map(|k| Some((k.clone(), headers.get(k)?.clone())))
        .collect();
    if let Some(d) = headers.get(&crate::oci::headers::DOCKER_CONTENT_DIGEST) {
        out.push((
            crate::oci::headers::DOCKER_CONTENT_DIGEST.clone(),
            d.clone(),
        ));
    }
    out
}

/// The client for object storage.
pub fn storage_client(timeouts: &Timeouts, verify: bool) -> Result<reqwest::Client, String> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .pool_idle_timeout(timeouts.idle)
        .redirect(reqwest::redirect::Policy::none())
        .tls_danger_accept_invalid_certs(!verify)
        .user_agent(concat!("margo-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Where a redirect from `from` to `location` goes, or why it is not followed.
pub fn next_hop(from: &url::Url, location: &str) -> Result<url::Url, String> {
    let to = from
        .join(location)
        .map_err(|e| format!("redirect to an unusable Location: {e}"))?;
    match (from.scheme(), to.scheme()) {
        ("https", "http") => Err("redirect from https down to http refused".into()),
        (_, "http" | "https") => {
            if to.username().is_empty() && to.password().is_none() {
                Ok(to)
            } else {
                Err("redirect to a URL with credentials refused".into())
            }
        }
        (_, other) => Err(format!(
            "redirect to a {other}: URL refused (http/https only)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_hops_without_downgrade_or_credentials() {
        let from = url::Url::parse("http://127.0.0.1:5000/v2/a/blobs/sha256:00").unwrap();
        let presigned = "http://127.0.0.1:9000/bucket/docker/registry/v2/blobs/sha256/ab/abcd/data?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=deadbeef%2B";
        let to = next_hop(&from, presigned).unwrap();
        // The signature's encoding is kept byte for byte.
        assert_eq!(to.as_str(), presigned);
        assert_eq!(
            next_hop(&from, "/other?x=1").unwrap().as_str(),
            "http://127.0.0.1:5000/other?x=1"
        );
        let https = url::Url::parse("https://reg.example/v2/").unwrap();
        assert!(next_hop(&https, "https://s3.example/b?sig=1").is_ok());
        assert!(next_hop(&https, "http://s3.example/b").is_err());
        assert!(next_hop(&from, "file:///etc/passwd").is_err());
        assert!(next_hop(&from, "ftp://x/y").is_err());
        assert!(next_hop(&from, "http://user:pw@s3.example/b").is_err());
        assert!(next_hop(&from, "http://[::1").is_err());
    }

    #[test]
    fn storage_headers_stay_behind() {
        let mut h = http::HeaderMap::new();
        h.insert("content-length", "42".parse().unwrap());
        h.insert("etag", "\"abc\"".parse().unwrap());
        h.insert("x-amz-request-id", "r1".parse().unwrap());
        h.insert("set-cookie", "a=b".parse().unwrap());
        h.insert("server", "AmazonS3".parse().unwrap());
        let names: Vec<String> = relayed_headers(&h)
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(names, ["content-length", "etag"]);
    }

    #[test]
    fn the_option_reads_pass_or_follow() {
        let v: BlobRedirects = serde_json::from_str("\"follow\"").unwrap();
        assert_eq!(v, BlobRedirects::Follow);
        assert_eq!(BlobRedirects::default(), BlobRedirects::Pass);
        assert!(serde_json::from_str::<BlobRedirects>("\"chase\"").is_err());
    }
}
