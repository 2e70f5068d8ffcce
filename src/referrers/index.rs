//! The referrers index as the OCI distribution spec v1.1 defines it ("Listing
//! Referrers" and "Referrers Tag Schema"): an image index whose `manifests` are the
//! descriptors of the manifests that name a subject. Pure logic: parsing with limits,
//! merging and removing by digest, `artifactType` filtering, and the descriptor a
//! pushed manifest contributes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oci::Digest;

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const IMAGE_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Most referrers one subject's index may list: an index past this is refused rather
/// than rewritten, so a flood of referrers cannot make every push slower.
pub const MAX_REFERRERS: usize = 10_000;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("referrers index is not valid JSON: {0}")]
    Json(String),
    #[error("referrers index lists more than {MAX_REFERRERS} manifests")]
    TooMany,
    #[error("referrers index entry has an invalid digest `{0}`")]
    Digest(String),
}

/// One entry of a referrers index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutIndex<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: &'a [ReferrerDescriptor],
}

/// The tag the referrers tag schema keeps a subject's index under: `<alg>-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm().as_str(), subject.encoded())
}

/// Whether `tag` is a referrers-schema tag (`sha256-<64 hex>`, `sha512-<128 hex>`):
/// such tags are the proxy's bookkeeping and are hidden from tag lists.
pub fn is_fallback_tag(tag: &str) -> bool {
    let Some((alg, hex)) = tag.split_once('-') else {
        return false;
    };
    let want = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == want
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The descriptors of an index body; entries with duplicate digests collapse to the
/// last one (a later write describes the same manifest at least as well).
pub fn parse(body: &[u8]) -> Result<Vec<ReferrerDescriptor>, IndexError> {
    let raw: RawIndex =
        serde_json::from_slice(body).map_err(|e| IndexError::Json(e.to_string()))?;
    if raw.manifests.len() > MAX_REFERRERS {
        return Err(IndexError::TooMany);
    }
    let mut out: Vec<ReferrerDescriptor> = Vec::with_capacity(raw.manifests.len());
    for d in raw.manifests {
        if d.digest.parse::<Digest>().is_err() {
            return Err(IndexError::Digest(d.digest.chars().take(80).collect()));
        }
        match out.iter_mut().find(|o| o.digest == d.digest) {
            Some(o) => *o = d,
            None => out.push(d),
        }
    }
    Ok(out)
}

/// The index body for `manifests`.
pub fn render(manifests: &[ReferrerDescriptor]) -> Vec<u8> {
    serde_json::to_vec(&OutIndex {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests,
    })
    .unwrap_or_default()
}

/// Adds (or replaces, by digest) `entry`. `true` when the list changed.
pub fn upsert(list: &mut Vec<ReferrerDescriptor>, entry: &ReferrerDescriptor) -> bool {
    match list.iter_mut().find(|d| d.digest == entry.digest) {
        Some(d) if d == entry => false,
        Some(d) => {
            *d = entry.clone();
            true
        }
        None => {
            list.push(entry.clone());
            true
        }
    }
}

/// Drops the entry for `digest`. `true` when the list changed.
pub fn remove(list: &mut Vec<ReferrerDescriptor>, digest: &str) -> bool {
    let before = list.len();
    list.retain(|d| d.digest != digest);
    list.len() != before
}

/// The union of several sources (the proxy's index, an upstream's answer), by digest.
pub fn merge(
    mut base: Vec<ReferrerDescriptor>,
    other: &[ReferrerDescriptor],
) -> Vec<ReferrerDescriptor> {
    for d in other {
        if !base.iter().any(|b| b.digest == d.digest) {
            base.push(d.clone());
        }
    }
    base
}

/// Keeps the entries whose `artifactType` is `artifact_type`.
pub fn filter(list: &[ReferrerDescriptor], artifact_type: &str) -> Vec<ReferrerDescriptor> {
    list.iter()
        .filter(|d| d.artifact_type.as_deref() == Some(artifact_type))
        .cloned()
        .collect()
}

/// What a pushed manifest says about itself, for the index of its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedReferrer {
    pub subject: Digest,
    pub descriptor: ReferrerDescriptor,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<MediaTyped>,
    #[serde(default)]
    subject: Option<SubjectRef>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTyped {
    #[serde(default)]
    media_type: Option<String>,
}

#[derive(Deserialize)]
struct SubjectRef {
    digest: String,
}

/// The subject a manifest names, if it names a valid one.
pub fn subject_of(body: &[u8]) -> Option<Digest> {
    let head: ManifestHead = serde_json::from_slice(body).ok()?;
    head.subject?.digest.parse().ok()
}

/// The index entry for a manifest pushed with a `subject` (`None` without one):
/// `artifactType` is the manifest's own, else its config's media type (distribution
/// spec v1.1, "Listing Referrers"); annotations are copied; the media type is the
/// body's own, else the `Content-Type` it was pushed with.
pub fn pushed_referrer(body: &[u8], content_type: &str) -> Option<PushedReferrer> {
    let head: ManifestHead = serde_json::from_slice(body).ok()?;
    let subject: Digest = head.subject?.digest.parse().ok()?;
    let media_type = head
        .media_type
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| content_type.to_owned());
    let artifact_type = head.artifact_type.filter(|a| !a.is_empty()).or_else(|| {
        (media_type != INDEX_MEDIA_TYPE)
            .then(|| head.config.and_then(|c| c.media_type))
            .flatten()
    });
    Some(PushedReferrer {
        subject,
        descriptor: ReferrerDescriptor {
            media_type,
            digest: Digest::sha256_of(body).to_string(),
            size: body.len() as u64,
            artifact_type,
            annotations: head.annotations,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn desc(digest_seed: &[u8], at: Option<&str>) -> ReferrerDescriptor {
        ReferrerDescriptor {
            media_type: IMAGE_MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::sha256_of(digest_seed).to_string(),
            size: 10,
            artifact_type: at.map(str::to_owned),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn fallback_tags_follow_the_tag_schema() {
        let d: Digest = S.parse().expect("digest");
        let tag = fallback_tag(&d);
        assert_eq!(tag, format!("sha256-{}", d.encoded()));
        assert!(is_fallback_tag(&tag));
        assert!(crate::oci::path::valid_tag(&tag));
        assert!(!is_fallback_tag(&format!("{tag}.sig")));
        assert!(!is_fallback_tag("sha256-abc"));
        assert!(!is_fallback_tag("md5-0123456789abcdef0123456789abcdef"));
        assert!(!is_fallback_tag(&tag.to_uppercase()));
        assert!(!is_fallback_tag("latest"));
    }

    #[test]
    fn upsert_and_remove_dedupe_by_digest() {
        let mut list = vec![desc(b"a", Some("x"))];
        assert!(!upsert(&mut list, &desc(b"a", Some("x"))));
        assert!(upsert(&mut list, &desc(b"a", Some("y"))));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].artifact_type.as_deref(), Some("y"));
        assert!(upsert(&mut list, &desc(b"b", None)));
        assert_eq!(list.len(), 2);
        assert!(remove(&mut list, &desc(b"a", None).digest));
        assert!(!remove(&mut list, &desc(b"a", None).digest));
        assert_eq!(list, vec![desc(b"b", None)]);
    }

    #[test]
    fn parse_render_round_trip_and_duplicates_collapse() {
        let list = vec![desc(b"a", Some("x")), desc(b"b", None)];
        let body = render(&list);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], INDEX_MEDIA_TYPE);
        assert_eq!(parse(&body).expect("parse"), list);
        let dup = render(&[desc(b"a", Some("x")), desc(b"a", Some("z"))]);
        let parsed = parse(&dup).expect("parse");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].artifact_type.as_deref(), Some("z"));
        assert_eq!(render(&[]), br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#);
    }

    #[test]
    fn parse_refuses_bad_input() {
        assert!(matches!(parse(b"not json"), Err(IndexError::Json(_))));
        let bad = br#"{"manifests":[{"mediaType":"m","digest":"sha256:nothex","size":1}]}"#;
        assert!(matches!(parse(bad), Err(IndexError::Digest(_))));
        let many: Vec<ReferrerDescriptor> = (0..=MAX_REFERRERS as u32)
            .map(|i| desc(&i.to_be_bytes(), None))
            .collect();
        assert_eq!(parse(&render(&many)), Err(IndexError::TooMany));
        // An index without `manifests` is empty, not an error.
        assert_eq!(parse(b"{}").expect("parse"), vec![]);
    }

    #[test]
    fn merge_and_filter() {
        let a = vec![desc(b"a", Some("x"))];
        let b = vec![desc(b"a", Some("x")), desc(b"b", Some("y"))];
        let m = merge(a, &b);
        assert_eq!(m.len(), 2);
        assert_eq!(filter(&m, "y"), vec![desc(b"b", Some("y"))]);
        assert!(filter(&m, "nope").is_empty());
    }

    #[test]
    fn pushed_referrer_takes_artifact_type_from_manifest_or_config() {
        let with_at = format!(
            r#"{{"schemaVersion":2,"mediaType":"{IMAGE_MANIFEST_MEDIA_TYPE}","artifactType":"application/x.sbom",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{S}","size":2}},
            "layers":[],"subject":{{"mediaType":"{IMAGE_MANIFEST_MEDIA_TYPE}","digest":"{S}","size":3}},
            "annotations":{{"k":"v"}}}}"#
        );
        let r = pushed_referrer(with_at.as_bytes(), "ignored").expect("referrer");
        assert_eq!(r.subject.to_string(), S);
        assert_eq!(
            r.descriptor.artifact_type.as_deref(),
            Some("application/x.sbom")
        );
        assert_eq!(
            r.descriptor.annotations.get("k").map(String::as_str),
            Some("v")
        );
        assert_eq!(
            r.descriptor.digest,
            Digest::sha256_of(with_at.as_bytes()).to_string()
        );
        assert_eq!(r.descriptor.size, with_at.len() as u64);
        assert_eq!(r.descriptor.media_type, IMAGE_MANIFEST_MEDIA_TYPE);

        let by_config = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/x.config","digest":"{S}","size":2}},
            "layers":[],"subject":{{"mediaType":"{IMAGE_MANIFEST_MEDIA_TYPE}","digest":"{S}","size":3}}}}"#
        );
        let r = pushed_referrer(by_config.as_bytes(), IMAGE_MANIFEST_MEDIA_TYPE).expect("referrer");
        assert_eq!(
            r.descriptor.artifact_type.as_deref(),
            Some("application/x.config")
        );
        assert_eq!(r.descriptor.media_type, IMAGE_MANIFEST_MEDIA_TYPE);
        assert!(r.descriptor.annotations.is_empty());

        assert_eq!(
            pushed_referrer(br#"{"schemaVersion":2,"layers":[]}"#, "x"),
            None
        );
        assert_eq!(
            pushed_referrer(br#"{"subject":{"digest":"sha256:zz"}}"#, "x"),
            None
        );
        assert_eq!(pushed_referrer(b"\xff", "x"), None);
        assert_eq!(
            subject_of(by_config.as_bytes())
                .map(|d| d.to_string())
                .as_deref(),
            Some(S)
        );
    }
}
