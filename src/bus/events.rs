//! Upstream registries' own notifications of pushes and deletes, turned into
//! [`Invalidation`]s: a push made straight at the upstream then reaches every
//! replica without waiting for the tag TTL.
//!
//! Shapes read (the fields used; everything else is ignored):
//! - CNCF distribution `notifications.endpoints`: the envelope
//!   `application/vnd.docker.distribution.events.v1+json`, `{"events": [{"action",
//!   "target": {"repository", "digest", "tag", "mediaType"}}]}`.
//! - Harbor webhooks (default payload format): `{"type": "PUSH_ARTIFACT" |
//!   "DELETE_ARTIFACT", "event_data": {"repository": {"repo_full_name"},
//!   "resources": [{"digest", "tag"}]}}`; and Harbor's CloudEvents format
//!   (`harbor.artifact.pushed` / `harbor.artifact.deleted`, same `data`).
//! - Zot's events extension (CloudEvents 1.0 over HTTP, binary or structured mode):
//!   types ending `image.updated`, `image.deleted`, `repository.created`, data
//!   `{"name", "reference", "digest"}`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::message::Invalidation;

/// Largest event body read.
pub const MAX_EVENT_BODY: usize = 1 << 20;
/// More invalidations than this for one repository in one delivery become one
/// repository flush: a flood costs one cache scan, not thousands.
const COALESCE_PER_REPOSITORY: usize = 16;

/// Which registry's event shape a delivery uses (the endpoint path says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Distribution,
    Harbor,
    Zot,
}

impl EventFormat {
    pub fn from_path_segment(s: &str) -> Option<Self> {
        Some(match s {
            "distribution" => Self::Distribution,
            "harbor" => Self::Harbor,
            "zot" => Self::Zot,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Distribution => "distribution",
            Self::Harbor => "harbor",
            Self::Zot => "zot",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event body larger than {MAX_EVENT_BODY} bytes")]
    TooLarge,
    #[error("event body is not JSON of the expected shape: {0}")]
    Malformed(String),
}

/// What a delivery asks for: the invalidations, and how many events it held that
/// need none (pulls, scans, blob uploads).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub invalidations: Vec<Invalidation>,
    pub ignored: usize,
}

/// Reads one delivery for `upstream`. `ce_type` is the `ce-type` header of a
/// CloudEvents binary-mode delivery, if any.
pub fn parse(
    format: EventFormat,
    upstream: &str,
    ce_type: Option<&str>,
    body: &[u8],
) -> Result<Parsed, EventError> {
    if body.len() > MAX_EVENT_BODY {
        return Err(EventError::TooLarge);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
    let mut out = Collector::new(upstream);
    match format {
        EventFormat::Distribution => distribution(&value, &mut out)?,
        EventFormat::Harbor => harbor(&value, ce_type, &mut out)?,
        EventFormat::Zot => zot(&value, ce_type, &mut out)?,
    }
    Ok(out.finish())
}

/// Gathers invalidations, dropping duplicates and malformed names.
struct Collector<'a> {
    upstream: &'a str,
    by_repo: BTreeMap<String, BTreeSet<(bool, String)>>,
    ignored: usize,
}

impl<'a> Collector<'a> {
    fn new(upstream: &'a str) -> Self {
        Self {
            upstream,
            by_repo: BTreeMap::new(),
            ignored: 0,
        }
    }

    /// `deleted`: a delete rather than a push. An empty reference means "the
    /// repository changed".
    fn add(&mut self, repository: &str, deleted: bool, reference: &str) {
        let name_ok = crate::oci::RepoName::parse(repository).is_ok();
        let ref_ok = reference.is_empty() || crate::oci::Reference::parse(reference).is_ok();
        if !name_ok || !ref_ok {
            self.ignored += 1;
            return;
        }
        self.by_repo
            .entry(repository.to_owned())
            .or_default()
            .insert((deleted, reference.to_owned()));
    }

    fn finish(self) -> Parsed {
        let mut invalidations = Vec::new();
        for (repository, refs) in self.by_repo {
            let whole =
                refs.len() > COALESCE_PER_REPOSITORY || refs.iter().any(|(_, r)| r.is_empty());
            if whole {
                invalidations.push(Invalidation::Repository {
                    upstream: self.upstream.to_owned(),
                    repository,
                });
                continue;
            }
            for (deleted, reference) in refs {
                let (upstream, repository) = (self.upstream.to_owned(), repository.clone());
                invalidations.push(if deleted {
                    Invalidation::ManifestDelete {
                        upstream,
                        repository,
                        reference,
                    }
                } else {
                    Invalidation::ManifestPut {
                        upstream,
                        repository,
                        reference,
                    }
                });
            }
        }
        Parsed {
            invalidations,
            ignored: self.ignored,
        }
    }
}

fn is_manifest_media_type(mt: &str) -> bool {
    mt.contains("manifest") || mt.contains("image.index") || mt.contains("artifact.manifest")
}

#[derive(Deserialize)]
struct DistEnvelope {
    events: Vec<DistEvent>,
}

#[derive(Deserialize)]
struct DistEvent {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: DistTarget,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DistTarget {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
}

fn distribution(value: &Value, out: &mut Collector<'_>) -> Result<(), EventError> {
    let env: DistEnvelope =
        serde_json::from_value(value.clone()).map_err(|e| EventError::Malformed(e.to_string()))?;
    for e in env.events {
        let t = &e.target;
        match e.action.as_str() {
            // A manifest push names the tag it was pushed under (if any) and its
            // digest; blob uploads carry a layer media type and change no manifest.
            "push" if is_manifest_media_type(&t.media_type) || !t.tag.is_empty() => {
                if !t.tag.is_empty() {
                    out.add(&t.repository, false, &t.tag);
                }
                if !t.digest.is_empty() {
                    out.add(&t.repository, false, &t.digest);
                }
            }
            // Distribution sends a tag delete with the tag, a manifest delete with its
            // digest; a blob delete (digest only) invalidates nothing cached as a
            // manifest, and dropping it is harmless.
            "delete" => {
                if !t.tag.is_empty() {
                    out.add(&t.repository, true, &t.tag);
                } else if !t.digest.is_empty() {
                    out.add(&t.repository, true, &t.digest);
                } else {
                    out.add(&t.repository, true, "");
                }
            }
            _ => out.ignored += 1,
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    resources: Vec<HarborResource>,
    repository: HarborRepository,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    tag: String,
}

#[derive(Deserialize)]
struct HarborRepository {
    repo_full_name: String,
}

/// `true` for a push, `false` for a delete, `None` for events that change nothing.
fn harbor_kind(event_type: &str) -> Option<bool> {
    match event_type {
        "PUSH_ARTIFACT" | "harbor.artifact.pushed" => Some(true),
        "DELETE_ARTIFACT" | "harbor.artifact.deleted" => Some(false),
        _ => None,
    }
}

fn harbor(value: &Value, ce_type: Option<&str>, out: &mut Collector<'_>) -> Result<(), EventError> {
    // Default format: {type, event_data}; CloudEvents: {type, data} or a binary-mode
    // body that is the data itself.
    let (event_type, data) = match (ce_type, value.get("type").and_then(Value::as_str)) {
        (Some(t), _) => (t.to_owned(), value),
        (None, Some(t)) => (
            t.to_owned(),
            value
                .get("event_data")
                .or_else(|| value.get("data"))
                .ok_or_else(|| EventError::Malformed("no event_data".into()))?,
        ),
        (None, None) => return Err(EventError::Malformed("no event type".into())),
    };
    let Some(pushed) = harbor_kind(&event_type) else {
        out.ignored += 1;
        return Ok(());
    };
    let data: HarborData =
        serde_json::from_value(data.clone()).map_err(|e| EventError::Malformed(e.to_string()))?;
    let repo = &data.repository.repo_full_name;
    if data.resources.is_empty() {
        out.add(repo, !pushed, "");
    }
    for r in &data.resources {
        for reference in [&r.tag, &r.digest] {
            if !reference.is_empty() {
                out.add(repo, !pushed, reference);
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct ZotData {
    name: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    digest: String,
}

fn zot(value: &Value, ce_type: Option<&str>, out: &mut Collector<'_>) -> Result<(), EventError> {
    let (event_type, data) = match (ce_type, value.get("type").and_then(Value::as_str)) {
        (Some(t), _) => (t.to_owned(), value),
        (None, Some(t)) => (
            t.to_owned(),
            value
                .get("data")
                .ok_or_else(|| EventError::Malformed("no data".into()))?,
        ),
        (None, None) => return Err(EventError::Malformed("no CloudEvents type".into())),
    };
    // Zot's `typePrefix` setting replaces `zotregistry`: match on the suffix.
    let kind = ["image.updated", "image.deleted", "repository.created"]
        .into_iter()
        .find(|k| event_type.ends_with(&format!(".{k}")));
    let Some(kind) = kind else {
        out.ignored += 1;
        return Ok(());
    };
    let data: ZotData =
        serde_json::from_value(data.clone()).map_err(|e| EventError::Malformed(e.to_string()))?;
    match kind {
        "image.updated" => {
            for reference in [&data.reference, &data.digest] {
                if !reference.is_empty() {
                    out.add(&data.name, false, reference);
                }
            }
        }
        "image.deleted" => {
            if data.reference.is_empty() {
                out.add(&data.name, true, &data.digest);
            } else {
                out.add(&data.name, true, &data.reference);
            }
        }
        _ => out.add(&data.name, false, ""),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    fn put(repo: &str, r: &str) -> Invalidation {
        Invalidation::ManifestPut {
            upstream: "hub".into(),
            repository: repo.into(),
            reference: r.into(),
        }
    }

    fn del(repo: &str, r: &str) -> Invalidation {
        Invalidation::ManifestDelete {
            upstream: "hub".into(),
            repository: repo.into(),
            reference: r.into(),
        }
    }

    #[test]
    fn distribution_envelope() {
        // The shape of distribution's notifications (docs: "Notifications", event
        // envelope application/vnd.docker.distribution.events.v1+json).
        let body = format!(
            r#"{{"events":[
              {{"id":"1","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","repository":"apps/x","tag":"1.0.0","size":10}}}},
              {{"id":"2","action":"push","target":{{"mediaType":"application/octet-stream","digest":"{D}","repository":"apps/x"}}}},
              {{"id":"3","action":"pull","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","repository":"apps/x","tag":"1.0.0"}}}},
              {{"id":"4","action":"delete","target":{{"digest":"{D}","repository":"apps/y"}}}},
              {{"id":"5","action":"delete","target":{{"tag":"old","repository":"apps/y"}}}}
            ]}}"#
        );
        let p = parse(EventFormat::Distribution, "hub", None, body.as_bytes()).expect("parses");
        assert_eq!(
            p.invalidations,
            vec![
                put("apps/x", "1.0.0"),
                put("apps/x", D),
                del("apps/y", "old"),
                del("apps/y", D)
            ]
        );
        assert_eq!(p.ignored, 2);
    }

    #[test]
    fn harbor_webhook_default_and_cloudevents() {
        let body = format!(
            r#"{{"type":"PUSH_ARTIFACT","occur_at":1,"operator":"admin","event_data":{{
              "resources":[{{"digest":"{D}","tag":"v1","resource_url":"h/library/app:v1"}}],
              "repository":{{"name":"app","namespace":"library","repo_full_name":"library/app","repo_type":"private"}}}}}}"#
        );
        let p = parse(EventFormat::Harbor, "hub", None, body.as_bytes()).expect("parses");
        assert_eq!(
            p.invalidations,
            vec![put("library/app", D), put("library/app", "v1")]
        );
        let ce = format!(
            r#"{{"resources":[{{"digest":"{D}","tag":""}}],"repository":{{"repo_full_name":"library/app"}}}}"#
        );
        let p = parse(
            EventFormat::Harbor,
            "hub",
            Some("harbor.artifact.deleted"),
            ce.as_bytes(),
        )
        .expect("parses");
        assert_eq!(p.invalidations, vec![del("library/app", D)]);
        let scan =
            r#"{"type":"SCANNING_COMPLETED","event_data":{"repository":{"repo_full_name":"a"}}}"#;
        let p = parse(EventFormat::Harbor, "hub", None, scan.as_bytes()).expect("parses");
        assert!(p.invalidations.is_empty());
        assert_eq!(p.ignored, 1);
    }

    #[test]
    fn zot_cloudevents_binary_and_structured() {
        let data =
            format!(r#"{{"name":"apps/z","reference":"2.0.0","digest":"{D}","mediaType":"m"}}"#);
        let p = parse(
            EventFormat::Zot,
            "hub",
            Some("zotregistry.image.updated"),
            data.as_bytes(),
        )
        .expect("parses");
        assert_eq!(
            p.invalidations,
            vec![put("apps/z", "2.0.0"), put("apps/z", D)]
        );
        let structured = format!(
            r#"{{"specversion":"1.0","type":"com.example.image.deleted","source":"s","id":"1","data":{data}}}"#
        );
        let p = parse(EventFormat::Zot, "hub", None, structured.as_bytes()).expect("parses");
        assert_eq!(p.invalidations, vec![del("apps/z", "2.0.0")]);
    }

    #[test]
    fn floods_coalesce_and_bad_names_are_dropped() {
        let events: Vec<String> = (0..5_000)
            .map(|i| {
                format!(
                    r#"{{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"apps/flood","tag":"t{i}"}}}}"#
                )
            })
            .chain([r#"{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"Bad Name","tag":"x"}}"#.to_owned()])
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        let p = parse(EventFormat::Distribution, "hub", None, body.as_bytes()).expect("parses");
        assert_eq!(
            p.invalidations,
            vec![Invalidation::Repository {
                upstream: "hub".into(),
                repository: "apps/flood".into()
            }]
        );
        assert_eq!(p.ignored, 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&b"{"[..], b"[]", b"{\"events\":3}", b"null", &[0xff, 0xfe]] {
            for f in [
                EventFormat::Distribution,
                EventFormat::Harbor,
                EventFormat::Zot,
            ] {
                assert!(parse(f, "hub", None, body).is_err(), "{f:?} {body:?}");
            }
        }
        let big = vec![b' '; MAX_EVENT_BODY + 1];
        assert_eq!(
            parse(EventFormat::Zot, "hub", None, &big),
            Err(EventError::TooLarge)
        );
    }
}
