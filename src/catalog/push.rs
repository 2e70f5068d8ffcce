//! `margo-proxy push DIR REF`: packs a package directory ([`super::pack`]) and pushes
//! it with the standard OCI flow (blobs first, then the manifest), printing the
//! registry's answer: the refusal of an invalid package lists every violation.

use std::path::Path;

use super::pack::{pack_dir, Packed};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Pack(#[from] super::pack::PackError),
    #[error("reference `{0}`: expected HOST[:PORT]/NAME:TAG")]
    Reference(String),
    #[error("{0}")]
    Http(String),
    /// The registry refused; the messages of its error body.
    #[error("{status}: {messages}")]
    Refused { status: u16, messages: String },
}

/// `host:port/name:tag`, split.
pub fn split_reference(r: &str) -> Result<(String, String, String), PushError> {
    let bad = || PushError::Reference(r.to_owned());
    let (host, rest) = r.split_once('/').ok_or_else(bad)?;
    let (name, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || name.is_empty() || tag.is_empty() || name.contains(':') {
        return Err(bad());
    }
    Ok((host.to_owned(), name.to_owned(), tag.to_owned()))
}

fn refusal(status: u16, body: &[u8]) -> PushError {
    let messages = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|errs| {
                errs.iter()
                    .filter_map(|e| e.get("message")?.as_str().map(|m| format!("\n  - {m}")))
                    .collect::<String>()
            })
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(2000).collect());
    PushError::Refused { status, messages }
}

/// Pushes; returns the manifest digest the registry answered.
pub async fn push(
    dir: &Path,
    reference: &str,
    plain_http: bool,
    token: Option<&str>,
) -> Result<String, PushError> {
    let (host, name, tag) = split_reference(reference)?;
    let Packed { manifest, blobs } = pack_dir(dir)?;
    crate::install_crypto_provider();
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| PushError::Http(e.to_string()))?;
    let base = format!("{}://{host}", if plain_http { "http" } else { "https" });
    let auth = |rb: reqwest::RequestBuilder| match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    };
    let err = |e: reqwest::Error| PushError::Http(e.to_string());
    for b in &blobs {
        let head = auth(http.head(format!("{base}/v2/{name}/blobs/{}", b.digest)))
            .send()
            .await
            .map_err(err)?;
        if head.status().is_success() {
            continue;
        }
        let start = auth(http.post(format!("{base}/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .map_err(err)?;
        let status = start.status().as_u16();
        if status != 202 {
            let body = start.bytes().await.unwrap_or_default();
            return Err(refusal(status, &body));
        }
        let location = start
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| PushError::Http("upload start without Location".into()))?
            .to_owned();
        let url = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = auth(http.put(format!("{url}{sep}digest={}", b.digest)))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(b.data.clone())
            .send()
            .await
            .map_err(err)?;
        let status = put.status().as_u16();
        if status != 201 {
            let body = put.bytes().await.unwrap_or_default();
            return Err(refusal(status, &body));
        }
    }
    let resp = auth(http.put(format!("{base}/v2/{name}/manifests/{tag}")))
        .header(
            http::header::CONTENT_TYPE,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .body(manifest)
        .send()
        .await
        .map_err(err)?;
    let status = resp.status().as_u16();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.bytes().await.unwrap_or_default();
    if status != 201 {
        return Err(refusal(status, &body));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_forms() {
        assert_eq!(
            split_reference("127.0.0.1:8080/apps/x/y:1.0.0").ok(),
            Some(("127.0.0.1:8080".into(), "apps/x/y".into(), "1.0.0".into()))
        );
        for bad in ["apps/x", "host/name", "/x:1", "host/:1"] {
            assert!(split_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusal_lists_every_message() {
        let body = br#"{"errors":[{"code":"MANIFEST_INVALID","message":"a"},{"code":"MANIFEST_INVALID","message":"b"}]}"#;
        let e = refusal(400, body).to_string();
        assert!(e.contains("- a") && e.contains("- b"), "{e}");
    }
}
