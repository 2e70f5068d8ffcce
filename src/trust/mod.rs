//! Supply-chain trust: a route can require that a manifest carries a valid signature
//! from a trusted identity before it is served.
//!
//! - [`config`]: `trust:` policies;
//! - [`keys`]: public keys and signature checks;
//! - [`cosign`]: cosign's tag layout and Sigstore bundles (key-based);
//! - [`notary`]: Notary Project JWS signatures against an x509 trust store;
//! - [`verdict`]: what the checks found;
//! - this file: finding a manifest's signatures (referrers and the cosign tag),
//!   checking them, remembering the verdict per digest, and the metrics.
//!
//! Only manifests are refused: blobs are content-addressed, so a client holding a blob
//! digest already got it from a manifest, and refusing the manifest is what keeps an
//! unsigned package from being installed.

pub mod config;
pub mod cosign;
pub mod keys;
pub mod notary;
pub mod verdict;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::GlobMatcher;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::oci::Digest;
use crate::referrers::{index::ReferrerDescriptor, ReferrerService, RegistryIo};
pub use config::{TrustConfig, TrustMode, TrustPolicyConfig};
use cosign::NamedKey;

thread_local! {
    /// Verdict lookups build their key here.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}
use notary::NotaryTrust;
pub use verdict::{Format, Outcome, SignatureCheck, Verdict};

/// Largest signature manifest read.
const MAX_SIGNATURE_MANIFEST: u64 = 256 << 10;
/// Largest signature blob (payload, bundle, envelope) read.
const MAX_SIGNATURE_BLOB: u64 = 1 << 20;
/// Most signatures checked for one manifest: the rest are ignored, so a flood of
/// referrers cannot make a pull arbitrarily slow.
const MAX_SIGNATURES: usize = 16;

/// One policy, ready to apply.
pub struct TrustPolicy {
    pub name: String,
    patterns: Vec<Pattern>,
    /// `allow`, `audit`, `deny` counters, resolved once (a labelled lookup per pull costs
    /// a hash and a lock on the warm-cache path).
    decided: [IntCounter; 3],
    pub mode: TrustMode,
    formats: Vec<Format>,
    keys: Vec<NamedKey>,
    notary: NotaryTrust,
}

/// A repository glob; `prefix/**` and `**` (what configs use) by string comparison.
enum Pattern {
    Any,
    Under(String),
    Glob(GlobMatcher),
}

impl Pattern {
    fn new(p: &str) -> Result<Self, String> {
        let plain = |s: &str| !s.contains(['*', '?', '[', ']', '{', '}', '\\']);
        Ok(match p.strip_suffix("/**") {
            _ if p == "**" => Pattern::Any,
            Some(prefix) if plain(prefix) && !prefix.is_empty() => {
                Pattern::Under(format!("{prefix}/"))
            }
            _ => Pattern::Glob(crate::upstream::routing::compile_pattern(p)?),
        })
    }

    fn is_match(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Under(prefix) => name.starts_with(prefix.as_str()),
            Pattern::Glob(g) => g.is_match(name),
        }
    }
}

impl TrustPolicy {
    fn from_config(c: &TrustPolicyConfig, metrics: &TrustMetrics) -> Result<Self, String> {
        let err = |m: String| format!("trust policy `{}`: {m}", c.name);
        let patterns = c
            .patterns
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| err(format!("match `{p}`: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = Vec::new();
        for k in &c.keys {
            let pem = std::fs::read_to_string(&k.path)
                .map_err(|e| err(format!("key `{}`: {}: {e}", k.name, k.path.display())))?;
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
                .map_err(|_| err(format!("key `{}`: not PEM", k.name)))?;
            if p.label != "PUBLIC KEY" {
                return Err(err(format!("key `{}`: not a PEM PUBLIC KEY", k.name)));
            }
            keys.push(
                NamedKey::new(&k.name, &p.contents)
                    .map_err(|e| err(format!("key `{}`: {e}", k.name)))?,
            );
        }
        let mut anchors = Vec::new();
        for path in &c.trust_store {
            let pem = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
            let before = anchors.len();
            for p in x509_parser::pem::Pem::iter_from_buffer(&pem) {
                let p = p.map_err(|e| err(format!("{}: {e}", path.display())))?;
                if p.label == "CERTIFICATE" {
                    anchors.push(p.contents);
                }
            }
            if anchors.len() == before {
                return Err(err(format!("{}: no certificate", path.display())));
            }
        }
        if c.mode != TrustMode::Off && keys.is_empty() && anchors.is_empty() {
            return Err(err(
                "neither `keys` nor `trust_store`: nothing could ever verify".into(),
            ));
        }
        let counter = |d: &str| metrics.decisions.with_label_values(&[c.name.as_str(), d]);
        Ok(TrustPolicy {
            name: c.name.clone(),
            patterns,
            decided: [counter("allow"), counter("audit"), counter("deny")],
            mode: c.mode,
            formats: c.formats.clone(),
            keys,
            notary: NotaryTrust {
                anchors,
                identities: c.trusted_identities.clone(),
            },
        })
    }

    fn accepts(&self, f: Format) -> bool {
        self.formats.contains(&f)
    }
}

struct TrustMetrics {
    verifications: IntCounterVec,
    decisions: IntCounterVec,
    latency: HistogramVec,
}

impl TrustMetrics {
    fn new(registry: &prometheus::Registry) -> Result<Self, String> {
        let p = crate::metrics::PREFIX;
        let verifications = IntCounterVec::new(
            Opts::new(
                format!("{p}_trust_verifications_total"),
                "Signatures checked, by format and result",
            ),
            &["format", "result"],
        )
        .map_err(|e| e.to_string())?;
        let decisions = IntCounterVec::new(
            Opts::new(
                format!("{p}_trust_decisions_total"),
                "Trust policy decisions on manifest pulls",
            ),
            &["policy", "decision"],
        )
        .map_err(|e| e.to_string())?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                format!("{p}_trust_verification_seconds"),
                "Time to find and check a manifest's signatures (cache misses)",
            )
            .buckets(crate::metrics::LATENCY_BUCKETS.to_vec()),
            &["result"],
        )
        .map_err(|e| e.to_string())?;
        for c in [&verifications, &decisions] {
            // A registry already holding the families (a second service in tests) is fine.
            let _ = registry.register(Box::new(c.clone()));
        }
        let _ = registry.register(Box::new(latency.clone()));
        for f in Format::ALL {
            verifications.with_label_values(&[f.as_str(), "verified"]);
        }
        Ok(TrustMetrics {
            verifications,
            decisions,
            latency,
        })
    }
}

/// The trust policies and what they found, shared by all requests.
pub struct TrustService {
    policies: Vec<TrustPolicy>,
    verdicts: moka::future::Cache<String, Arc<Verdict>>,
    metrics: TrustMetrics,
}

/// Per-entry lifetime: verified digests for `verified_ttl`, refusals for `refused_ttl`.
struct VerdictExpiry {
    verified: Duration,
    refused: Duration,
}

impl moka::Expiry<String, Arc<Verdict>> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _k: &String,
        v: &Arc<Verdict>,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(if v.allows() && v.incomplete.is_none() {
            self.verified
        } else {
            self.refused
        })
    }
}

/// What a trust policy did with a pull (the `decision` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow = 0,
    Audit = 1,
    Deny = 2,
}

/// Where the signatures of one manifest are looked for.
pub struct Subject<'a> {
    /// Upstream index in the config and name (for the referrers service).
    pub upstream_idx: usize,
    pub upstream: &'a str,
    /// The repository at the upstream.
    pub repository: &'a str,
    pub digest: &'a Digest,
    /// The manifest's bytes (what a bundle's message signature signs).
    pub manifest: &'a [u8],
}

impl TrustService {
    pub fn from_config(cfg: &TrustConfig, registry: &prometheus::Registry) -> Result<Self, String> {
        let metrics = TrustMetrics::new(registry)?;
        let policies = cfg
            .policies
            .iter()
            .map(|p| TrustPolicy::from_config(p, &metrics))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustService {
            policies,
            verdicts: moka::future::Cache::builder()
                .max_capacity(100_000)
                .expire_after(VerdictExpiry {
                    verified: cfg.verified_ttl,
                    refused: cfg.refused_ttl,
                })
                .build(),
            metrics,
        })
    }

    /// The policy for a client repository name, unless it is off.
    pub fn policy_for(&self, repository: &str) -> Option<&TrustPolicy> {
        self.policies
            .iter()
            .find(|p| p.patterns.iter().any(|g| g.is_match(repository)))
            .filter(|p| p.mode != TrustMode::Off)
    }

    /// Counts a decision (`allow`, `deny`, `audit`).
    pub fn count_decision(&self, policy: &TrustPolicy, decision: Decision) {
        policy.decided[decision as usize].inc();
    }

    fn key(policy: &TrustPolicy, s: &Subject<'_>) -> String {
        let mut key = String::new();
        Self::write_key(&mut key, policy, s);
        key
    }

    /// `<policy>\n<upstream>/<repository>@<digest>`, written without `fmt`.
    fn write_key(key: &mut String, policy: &TrustPolicy, s: &Subject<'_>) {
        key.clear();
        for part in [
            policy.name.as_str(),
            "\n",
            s.upstream,
            "/",
            s.repository,
            "@",
            s.digest.algorithm().as_str(),
            ":",
            s.digest.encoded(),
        ] {
            key.push_str(part);
        }
    }

    /// The verdict for `subject` under `policy`, from the cache or found now.
    pub async fn verdict(
        &self,
        policy: &TrustPolicy,
        referrers: &ReferrerService,
        io: &dyn RegistryIo,
        subject: &Subject<'_>,
    ) -> Arc<Verdict> {
        // Hits (nearly every pull) skip building the init future, and look up with a
        // key built in a reused buffer (taken from this thread, put back after): no
        // allocation once the buffers exist.
        let mut buf = KEY.with(|k| std::mem::take(&mut *k.borrow_mut()));
        Self::write_key(&mut buf, policy, subject);
        let hit = self.verdicts.get(buf.as_str()).await;
        KEY.with(|k| *k.borrow_mut() = buf);
        if let Some(v) = hit {
            return v;
        }
        let key = Self::key(policy, subject);
        self.verdicts
            .get_with(key, async {
                if crate::referrers::index::subject_of(subject.manifest).is_some() {
                    return Arc::new(Verdict {
                        exempt: true,
                        ..Verdict::default()
                    });
                }
                let started = Instant::now();
                let v = self.find_and_check(policy, referrers, io, subject).await;
                let result = if v.verified() { "verified" } else { "refused" };
                self.metrics
                    .latency
                    .with_label_values(&[result])
                    .observe(started.elapsed().as_secs_f64());
                if v.checks.is_empty() && v.incomplete.is_none() {
                    self.metrics
                        .verifications
                        .with_label_values(&["none", "no_signature"])
                        .inc();
                }
                for c in &v.checks {
                    self.metrics
                        .verifications
                        .with_label_values(&[c.format.as_str(), c.outcome.as_str()])
                        .inc();
                }
                Arc::new(v)
            })
            .await
    }

    /// Forgets every verdict about `digest` in `repository` (a referrer or cosign
    /// signature for it was pushed): the next pull looks again.
    pub async fn invalidate(&self, upstream: &str, repository: &str, digest: &Digest) {
        for p in &self.policies {
            let key = format!("{}\n{upstream}/{repository}@{digest}", p.name);
            self.verdicts.invalidate(&key).await;
        }
    }

    async fn find_and_check(
        &self,
        policy: &TrustPolicy,
        referrers: &ReferrerService,
        io: &dyn RegistryIo,
        s: &Subject<'_>,
    ) -> Verdict {
        let mut v = Verdict::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if policy.accepts(Format::Notary) || policy.accepts(Format::CosignBundle) {
            match referrers
                .list(s.upstream_idx, s.upstream, io, s.repository, s.digest, None)
                .await
            {
                Ok(listing) => {
                    for d in listing.manifests.iter().take(MAX_SIGNATURES) {
                        if let Some(c) = self.check_referrer(policy, io, s, d, now).await {
                            v.checks.push(c);
                        }
                    }
                }
                Err(e) => v.incomplete = Some(e.to_string()),
            }
        }
        if policy.accepts(Format::Cosign) {
            self.check_cosign_tag(policy, io, s, &mut v).await;
        }
        v
    }

    /// One referrer, if it is a signature of an accepted format.
    async fn check_referrer(
        &self,
        policy: &TrustPolicy,
        io: &dyn RegistryIo,
        s: &Subject<'_>,
        d: &ReferrerDescriptor,
        now: u64,
    ) -> Option<SignatureCheck> {
        let at = d.artifact_type.as_deref()?;
        let format = if at == notary::ARTIFACT_TYPE {
            Format::Notary
        } else if at.starts_with(cosign::BUNDLE_MEDIA_TYPE_PREFIX) {
            Format::CosignBundle
        } else {
            return None;
        };
        if !policy.accepts(format) {
            return None;
        }
        let fail = |o: Outcome, why: String| Some(SignatureCheck::new(format, o, &d.digest, why));
        let manifest = match io
            .get_manifest(s.repository, &d.digest, MAX_SIGNATURE_MANIFEST)
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(e) => {
                return fail(
                    Outcome::Malformed,
                    format!("signature manifest unreadable: {e}"),
                )
            }
        };
        let Ok(digest) = d.digest.parse::<Digest>() else {
            return fail(Outcome::Malformed, "invalid digest".into());
        };
        if !digest.verifies(&manifest.body) {
            return fail(
                Outcome::Malformed,
                "signature manifest does not match its digest".into(),
            );
        }
        let parsed: serde_json::Value = serde_json::from_slice(&manifest.body).ok()?;
        if crate::referrers::index::subject_of(&manifest.body).as_ref() != Some(s.digest) {
            return fail(
                Outcome::WrongDigest,
                "its subject is another manifest".into(),
            );
        }
        let layer = parsed.get("layers")?.as_array()?.first()?;
        let media_type = layer.get("mediaType")?.as_str()?;
        let blob_digest: Digest = layer.get("digest")?.as_str()?.parse().ok()?;
        let blob = match io
            .get_blob(s.repository, &blob_digest, MAX_SIGNATURE_BLOB)
            .await
        {
            Ok(Some(b)) if blob_digest.verifies(&b) => b,
            Ok(Some(_)) => {
                return fail(
                    Outcome::Malformed,
                    "signature blob does not match its digest".into(),
                )
            }
            Ok(None) => return fail(Outcome::Malformed, "signature blob missing".into()),
            Err(e) => {
                return fail(
                    Outcome::Malformed,
                    format!("signature blob unreadable: {e}"),
                )
            }
        };
        Some(match format {
            Format::Notary if media_type == notary::JWS_MEDIA_TYPE => {
                notary::verify_jws(&blob, s.digest, &policy.notary, now, &d.digest)
            }
            Format::Notary if media_type == notary::COSE_MEDIA_TYPE => {
                notary::verify_cose(&blob, s.digest, &policy.notary, now, &d.digest)
            }
            Format::Notary => SignatureCheck::new(
                format,
                Outcome::Malformed,
                &d.digest,
                "envelope media type unknown",
            ),
            _ => cosign::verify_bundle(&blob, s.digest, s.manifest, &policy.keys, &d.digest),
        })
    }

    /// cosign's `sha256-<hex>.sig` tag: every simple-signing layer in it.
    async fn check_cosign_tag(
        &self,
        policy: &TrustPolicy,
        io: &dyn RegistryIo,
        s: &Subject<'_>,
        v: &mut Verdict,
    ) {
        let tag = cosign::signature_tag(s.digest);
        let manifest = match io
            .get_manifest(s.repository, &tag, MAX_SIGNATURE_MANIFEST)
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                v.incomplete = Some(format!("{tag}: {e}"));
                return;
            }
        };
        let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&manifest.body) else {
            v.checks.push(SignatureCheck::new(
                Format::Cosign,
                Outcome::Malformed,
                &tag,
                "not a manifest",
            ));
            return;
        };
        let layers = parsed
            .get("layers")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        for layer in layers.iter().take(MAX_SIGNATURES) {
            if layer.get("mediaType").and_then(|m| m.as_str())
                != Some(cosign::SIMPLE_SIGNING_MEDIA_TYPE)
            {
                continue;
            }
            let sig = layer
                .get("annotations")
                .and_then(|a| a.get(cosign::SIGNATURE_ANNOTATION))
                .and_then(|s| s.as_str());
            let digest = layer
                .get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| d.parse::<Digest>().ok());
            let (Some(sig), Some(digest)) = (sig, digest) else {
                v.checks.push(SignatureCheck::new(
                    Format::Cosign,
                    Outcome::Malformed,
                    &tag,
                    "layer without signature annotation or digest",
                ));
                continue;
            };
            let check = match io.get_blob(s.repository, &digest, MAX_SIGNATURE_BLOB).await {
                Ok(Some(payload)) if digest.verifies(&payload) => {
                    cosign::verify_simple_signing(&payload, sig, s.digest, &policy.keys, &tag)
                }
                Ok(_) => SignatureCheck::new(
                    Format::Cosign,
                    Outcome::Malformed,
                    &tag,
                    "payload blob missing or altered",
                ),
                Err(e) => SignatureCheck::new(
                    Format::Cosign,
                    Outcome::Malformed,
                    &tag,
                    format!("payload unreadable: {e}"),
                ),
            };
            v.checks.push(check);
        }
    }
}

/// Tags of signatures and indexes of signatures (`sha256-<hex>`, `.sig`, `.att`,
/// `.sbom`) are never refused for want of a signature: verifiers must be able to read
/// them. (Referrers pulled by digest are exempt through their verdict, see
/// [`Verdict::exempt`].)
pub fn exempt_tag(tag: &str) -> bool {
    if crate::referrers::is_fallback_tag(tag) {
        return true;
    }
    match tag.rsplit_once('.') {
        Some((base, suffix)) => {
            matches!(suffix, "sig" | "att" | "sbom") && crate::referrers::is_fallback_tag(base)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_fast_shapes_agree_with_globs() {
        for (p, name) in [
            ("**", "a"),
            ("**", "a/b"),
            ("apps/**", "apps/x"),
            ("apps/**", "apps/x/y"),
            ("apps/**", "apps"),
            ("apps/**", "apps/"),
            ("apps/**", "appsx/y"),
            ("a*/**", "ab/c"),
        ] {
            let fast = Pattern::new(p).expect("pattern").is_match(name);
            let glob = crate::upstream::routing::compile_pattern(p)
                .expect("glob")
                .is_match(name);
            assert_eq!(fast, glob, "{p} on {name}");
        }
    }

    #[test]
    fn signature_tags_are_exempt() {
        let d = Digest::sha256_of(b"x");
        let fallback = crate::referrers::fallback_tag(&d);
        assert!(exempt_tag(&fallback));
        assert!(exempt_tag(&format!("{fallback}.sig")));
        assert!(exempt_tag(&format!("{fallback}.att")));
        assert!(!exempt_tag("1.0.0"));
        assert!(!exempt_tag("x.sig"));
    }
}
