//! Behaviour tests of [`ManifestCache`], without network: fetchers and probes
//! are closures that count their calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;

use super::accept::OCI_MANIFEST;
use super::entry::DOCKER_CONTENT_DIGEST;
use super::*;

fn manifest(seed: &str) -> (String, Bytes, HeaderMap) {
    let body = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"annotations\":{{\"seed\":\"{seed}\"}}}}"
    ));
    let digest = sha256_digest(&body);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
    headers.insert(
        &DOCKER_CONTENT_DIGEST,
        HeaderValue::from_str(&digest).expect("ascii digest"),
    );
    (digest, body, headers)
}

fn config() -> CacheConfig {
    CacheConfig::default()
}

fn cache(cfg: &CacheConfig) -> Arc<ManifestCache> {
    Arc::new(ManifestCache::new(cfg).expect("valid config"))
}

fn repo() -> RepoKey {
    RepoKey::new("hub", "apps/web")
}

#[derive(Debug, PartialEq, Eq)]
struct Boom;

// Set-up and inspection shortcuts that skip the coalescing front doors
// (`get_or_fetch`, `resolve_tag`), built on the same private steps.

async fn insert_manifest(
    c: &ManifestCache,
    ticket: FetchTicket,
    key: &DigestKey,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<Admission, ManifestError> {
    let admission = c.admit(ticket, key, body, headers)?;
    if let Admission::Cached(m) = &admission {
        let k = Key::Digest(key.clone());
        c.inner
            .insert(k.clone(), Value::Manifest(Arc::clone(m)))
            .await;
        c.undo_if_invalidated(ticket, &k).await;
    }
    Ok(admission)
}

async fn insert_tag(c: &ManifestCache, ticket: FetchTicket, key: &TagKey, digest: &str) {
    if !c.ticket_valid(ticket) {
        return;
    }
    let k = Key::Tag(key.clone());
    let entry = TagEntry::new(digest, std::time::Instant::now());
    c.inner.insert(k.clone(), Value::Tag(entry)).await;
    c.undo_if_invalidated(ticket, &k).await;
}

async fn insert_not_found(c: &ManifestCache, ticket: FetchTicket, key: &DigestKey) {
    if c.negative_ttl.is_zero() || !c.ticket_valid(ticket) {
        return;
    }
    let k = Key::Digest(key.clone());
    c.inner.insert(k.clone(), Value::NotFound).await;
    c.undo_if_invalidated(ticket, &k).await;
}

async fn lookup_tag(c: &ManifestCache, key: &TagKey) -> TagLookup {
    let value = c.inner.get(&Key::Tag(key.clone())).await;
    c.tag_lookup(value, std::time::Instant::now())
}

async fn fetch_ok(calls: &AtomicUsize, body: Bytes, headers: HeaderMap) -> Result<Fetched, Boom> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(Fetched::Manifest { body, headers })
}

#[tokio::test]
async fn from_config_respects_enabled() {
    let off = CacheConfig {
        enabled: false,
        ..config()
    };
    assert!(matches!(ManifestCache::from_config(&off), Ok(None)));
    assert!(matches!(ManifestCache::from_config(&config()), Ok(Some(_))));
    let broken = CacheConfig {
        max_bytes: 1,
        ..config()
    };
    assert!(ManifestCache::from_config(&broken).is_err());
}

#[tokio::test]
async fn miss_then_hit_serves_the_upstream_answer() {
    let c = cache(&config());
    let (digest, body, headers) = manifest("a");
    let key = repo().digest(digest.as_str());
    let calls = AtomicUsize::new(0);
    assert!(matches!(c.get_manifest(&key).await, Lookup::Miss));

    let first = c
        .get_or_fetch(&key, || fetch_ok(&calls, body.clone(), headers.clone()))
        .await
        .expect("fetched");
    let second = c
        .get_or_fetch(&key, || fetch_ok(&calls, body.clone(), headers.clone()))
        .await
        .expect("cached");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(second.body(), &body);
    assert_eq!(second.content_type(), OCI_MANIFEST);
    assert!(matches!(c.get_manifest(&key).await, Lookup::Hit(_)));
    // Same digest in another repository or upstream is a different entry.
    assert!(!c.contains_digest(&RepoKey::new("hub", "apps/other").digest(digest.as_str())));
    assert!(!c.contains_digest(&RepoKey::new("mirror", "apps/web").digest(digest.as_str())));

    let s = c.stats();
    assert_eq!((s.misses, s.hits), (1, 2));
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    const N: usize = 32;
    let c = cache(&config());
    let (digest, body, headers) = manifest("coalesce");
    let key = repo().digest(digest.as_str());
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(N));

    let mut tasks = Vec::new();
    for _ in 0..N {
        let (c, key, calls, barrier) = (c.clone(), key.clone(), calls.clone(), barrier.clone());
        let (body, headers) = (body.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            c.get_or_fetch(&key, || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, Boom>(Fetched::Manifest { body, headers })
            })
            .await
            .map(|m| m.digest().to_owned())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("task").ok().as_deref(),
            Some(digest.as_str())
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "fetcher must run exactly once"
    );
    let s = c.stats();
    assert_eq!(s.misses, 1);
    assert_eq!(s.coalesced + s.hits, (N - 1) as u64);
}

#[tokio::test]
async fn coalesced_errors_are_shared_and_not_cached() {
    const N: usize = 8;
    let c = cache(&config());
    let (digest, body, headers) = manifest("err");
    let key = repo().digest(digest.as_str());
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let (c, key, calls, barrier) = (c.clone(), key.clone(), calls.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            c.get_or_fetch(&key, || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<Fetched, _>(Boom)
            })
            .await
        }));
    }
    for t in tasks {
        match t.await.expect("task") {
            Err(FetchError::Upstream(e)) => assert_eq!(*e, Boom),
            other => panic!("expected upstream error, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!c.contains_digest(&key));
    // The next request tries again.
    let calls = AtomicUsize::new(0);
    assert!(c
        .get_or_fetch(&key, || fetch_ok(&calls, body, headers))
        .await
        .is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lying_upstream_is_refused_and_never_cached() {
    let c = cache(&config());
    let (digest, _, headers) = manifest("asked");
    let (_, other_body, _) = manifest("served");
    let key = repo().digest(digest.as_str());
    let calls = AtomicUsize::new(0);
    let res = c
        .get_or_fetch(&key, || {
            fetch_ok(&calls, other_body.clone(), headers.clone())
        })
        .await;
    assert!(matches!(
        res,
        Err(FetchError::Invalid(ManifestError::Digest(
            DigestError::Mismatch { .. }
        )))
    ));
    assert!(!c.contains_digest(&key));
    assert_eq!(c.stats().rejections, 1);

    // The non-coalesced insert refuses it too.
    let ticket = c.ticket(key.repo());
    assert!(insert_manifest(&c, ticket, &key, other_body, &headers)
        .await
        .is_err());
    assert!(!c.contains_digest(&key));

    // A response without Content-Type cannot be negotiated, so it is refused.
    let (digest, body, _) = manifest("no-ct");
    let key = repo().digest(digest.as_str());
    let res = c
        .get_or_fetch(&key, || fetch_ok(&calls, body, HeaderMap::new()))
        .await;
    assert!(matches!(
        res,
        Err(FetchError::Invalid(ManifestError::MissingContentType))
    ));
}

#[tokio::test]
async fn oversized_and_unverifiable_manifests_are_served_uncached() {
    let cfg = CacheConfig {
        max_manifest_bytes: 16,
        ..config()
    };
    let c = cache(&cfg);
    let (digest, body, headers) = manifest("big");
    let key = repo().digest(digest.as_str());
    let calls = AtomicUsize::new(0);
    match c
        .get_or_fetch(&key, || fetch_ok(&calls, body.clone(), headers.clone()))
        .await
    {
        Err(FetchError::Uncacheable {
            reason: UncacheableReason::TooLarge,
            manifest,
        }) => assert_eq!(manifest.body(), &body),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!c.contains_digest(&key));

    let c = cache(&config());
    let key = repo().digest("blake3:0123abcd");
    let res = c
        .get_or_fetch(&key, || fetch_ok(&calls, body.clone(), headers.clone()))
        .await;
    assert!(matches!(
        res,
        Err(FetchError::Uncacheable {
            reason: UncacheableReason::UnsupportedAlgorithm,
            ..
        })
    ));
    assert!(!c.contains_digest(&key));
    assert_eq!(c.stats().uncacheable, 1);

    // A malformed digest is refused outright.
    let key = repo().digest("sha256:nothex");
    let res = c
        .get_or_fetch(&key, || fetch_ok(&calls, body, headers))
        .await;
    assert!(matches!(
        res,
        Err(FetchError::Invalid(ManifestError::Digest(
            DigestError::Malformed(_)
        )))
    ));
}

#[tokio::test]
async fn sha512_digests_are_verified_and_cached() {
    let c = cache(&config());
    let (_, body, headers) = manifest("512");
    let digest = format!("sha512:{}", DigestAlgorithm::Sha512.hash_hex(&body));
    let key = repo().digest(digest.as_str());
    let ticket = c.ticket(key.repo());
    let admitted = insert_manifest(&c, ticket, &key, body, &headers)
        .await
        .expect("valid");
    assert!(matches!(admitted, Admission::Cached(_)));
    assert!(matches!(c.get_manifest(&key).await, Lookup::Hit(_)));
}

#[tokio::test]
async fn not_found_is_not_cached_by_default() {
    let c = cache(&config());
    let key = repo().digest(sha256_digest(b"missing").as_str());
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        let res = c
            .get_or_fetch(&key, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Boom>(Fetched::NotFound)
            })
            .await;
        assert!(matches!(res, Err(FetchError::NotFound { cached: false })));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let ticket = c.ticket(key.repo());
    insert_not_found(&c, ticket, &key).await;
    assert!(!c.contains_digest(&key));
}

#[tokio::test]
async fn negative_entries_expire_and_are_dropped_by_a_push() {
    let cfg = CacheConfig {
        negative_ttl: Duration::from_millis(150),
        ..config()
    };
    let c = cache(&cfg);
    let (digest, body, headers) = manifest("later");
    let key = repo().digest(digest.as_str());
    let calls = AtomicUsize::new(0);
    let not_found = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Boom>(Fetched::NotFound)
    };
    assert!(matches!(
        c.get_or_fetch(&key, not_found).await,
        Err(FetchError::NotFound { cached: false })
    ));
    assert!(matches!(
        c.get_or_fetch(&key, not_found).await,
        Err(FetchError::NotFound { cached: true })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(c.get_manifest(&key).await, Lookup::NotFound));

    // Expiry.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(c.get_manifest(&key).await, Lookup::Miss));
    assert!(matches!(
        c.get_or_fetch(&key, not_found).await,
        Err(FetchError::NotFound { cached: false })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A push of that digest drops the 404 at once.
    c.on_manifest_put(key.repo(), &digest).await;
    let fetches = AtomicUsize::new(0);
    assert!(c
        .get_or_fetch(&key, || fetch_ok(&fetches, body, headers))
        .await
        .is_ok());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Tag 404s work the same way.
    let tag = repo().tag("nope");
    let res = c
        .resolve_tag(&tag, |_| async { TagProbe::<Boom>::NotFound })
        .await;
    assert!(matches!(res, Err(ResolveError::NotFound { cached: false })));
    assert_eq!(lookup_tag(&c, &tag).await, TagLookup::NotFound);
    let res = c
        .resolve_tag(&tag, |_| async { TagProbe::<Boom>::Found(digest.clone()) })
        .await;
    assert!(matches!(res, Err(ResolveError::NotFound { cached: true })));
    c.on_manifest_put(tag.repo(), "nope").await;
    assert_eq!(lookup_tag(&c, &tag).await, TagLookup::Miss);
}

fn tag_config(ttl_ms: u64, grace_ms: u64) -> CacheConfig {
    CacheConfig {
        tag_ttl: Duration::from_millis(ttl_ms),
        stale_grace: Duration::from_millis(grace_ms),
        ..config()
    }
}

#[tokio::test]
async fn tag_is_fresh_then_revalidated_then_moved() {
    let c = cache(&tag_config(100, 10_000));
    let tag = repo().tag("v1");
    let (d1, ..) = manifest("one");
    let (d2, ..) = manifest("two");
    let probes = AtomicUsize::new(0);
    let probe = |answer: String| {
        let probes = &probes;
        move |_known: Option<Arc<str>>| async move {
            probes.fetch_add(1, Ordering::SeqCst);
            TagProbe::<Boom>::Found(answer)
        }
    };

    let r = c
        .resolve_tag(&tag, probe(d1.clone()))
        .await
        .expect("resolved");
    assert_eq!((&*r.digest, r.source), (d1.as_str(), TagSource::Fetched));
    let r = c
        .resolve_tag(&tag, probe(d2.clone()))
        .await
        .expect("resolved");
    assert_eq!((&*r.digest, r.source), (d1.as_str(), TagSource::Fresh));
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    assert_eq!(
        lookup_tag(&c, &tag).await,
        TagLookup::Fresh(Arc::from(d1.as_str()))
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        lookup_tag(&c, &tag).await,
        TagLookup::Revalidate(Arc::from(d1.as_str()))
    );
    let r = c
        .resolve_tag(&tag, probe(d1.clone()))
        .await
        .expect("resolved");
    assert_eq!(
        (&*r.digest, r.source),
        (d1.as_str(), TagSource::Revalidated)
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = c
        .resolve_tag(&tag, probe(d2.clone()))
        .await
        .expect("resolved");
    assert_eq!((&*r.digest, r.source), (d2.as_str(), TagSource::Fetched));
    assert_eq!(probes.load(Ordering::SeqCst), 3);
    let s = c.stats();
    assert_eq!(s.revalidations, 2);
}

#[tokio::test]
async fn stale_tag_covers_an_unreachable_upstream_within_grace() {
    let c = cache(&tag_config(50, 400));
    let tag = repo().tag("latest");
    let (d1, ..) = manifest("stable");
    let probes = AtomicUsize::new(0);
    let down = |_known: Option<Arc<str>>| async {
        probes.fetch_add(1, Ordering::SeqCst);
        TagProbe::Unreachable(Boom)
    };

    // Nothing cached and the upstream is down: error.
    assert!(matches!(
        c.resolve_tag(&tag, down).await,
        Err(ResolveError::Upstream(Boom))
    ));
    let ticket = c.ticket(tag.repo());
    insert_tag(&c, ticket, &tag, &d1).await;

    tokio::time::sleep(Duration::from_millis(80)).await;
    let r = c.resolve_tag(&tag, down).await.expect("stale served");
    assert_eq!((&*r.digest, r.source), (d1.as_str(), TagSource::Stale));
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    // Within the backoff the dead upstream is not asked again.
    let r = c.resolve_tag(&tag, down).await.expect("stale served");
    assert_eq!(r.source, TagSource::Stale);
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    assert_eq!(
        lookup_tag(&c, &tag).await,
        TagLookup::ServeStale(Arc::from(d1.as_str()))
    );

    // Non-network failures are never covered by stale data.
    let r = c
        .resolve_tag(&tag, |_| async { TagProbe::Failed("401") })
        .await;
    assert!(r.is_ok(), "within backoff the probe is skipped: {r:?}");

    // Past TTL + grace the entry is gone and the error surfaces.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(lookup_tag(&c, &tag).await, TagLookup::Miss);
    assert!(matches!(
        c.resolve_tag(&tag, down).await,
        Err(ResolveError::Upstream(Boom))
    ));
    assert!(c.stats().stale_serves >= 3);
}

#[tokio::test]
async fn a_malformed_digest_from_a_probe_is_never_stored() {
    let c = cache(&tag_config(30, 1_000));
    let other = repo().tag("weird");
    let r = c
        .resolve_tag(&other, |_| async {
            TagProbe::<Boom>::Found("not a digest".into())
        })
        .await;
    assert!(r.is_ok());
    assert!(!c.contains_tag(&other));
}

#[tokio::test]
async fn concurrent_stale_tag_requests_make_one_head() {
    const N: usize = 16;
    let c = cache(&tag_config(200, 60_000));
    let tag = repo().tag("fleet");
    let (d1, ..) = manifest("fleet");
    let probes = Arc::new(AtomicUsize::new(0));
    for round in 0..2 {
        // Round 0: cold miss; round 1: stale entry.
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (c, tag, probes, barrier, d1) = (
                c.clone(),
                tag.clone(),
                probes.clone(),
                barrier.clone(),
                d1.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                c.resolve_tag(&tag, |_| async move {
                    probes.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    TagProbe::<Boom>::Found(d1)
                })
                .await
                .map(|r| r.digest.to_string())
                .ok()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task").as_deref(), Some(d1.as_str()));
        }
        assert_eq!(probes.load(Ordering::SeqCst), round + 1, "round {round}");
    }
}

#[tokio::test]
async fn digest_delete_drops_manifest_and_tags_pointing_at_it() {
    let c = cache(&config());
    let r = repo();
    let elsewhere = RepoKey::new("hub", "apps/api");
    let (d, body, headers) = manifest("gone");
    let (keep, ..) = manifest("kept");
    let key = r.digest(d.as_str());
    let t = c.ticket(&r);
    assert!(insert_manifest(&c, t, &key, body, &headers).await.is_ok());
    for tag in ["a", "b"] {
        insert_tag(&c, t, &r.tag(tag), &d).await;
    }
    insert_tag(&c, t, &r.tag("c"), &keep).await;
    insert_tag(&c, c.ticket(&elsewhere), &elsewhere.tag("a"), &d).await;

    c.on_manifest_delete(&r, &d).await;
    assert!(!c.contains_digest(&key));
    assert!(!c.contains_tag(&r.tag("a")));
    assert!(!c.contains_tag(&r.tag("b")));
    assert!(c.contains_tag(&r.tag("c")));
    assert!(
        c.contains_tag(&elsewhere.tag("a")),
        "other repositories are untouched"
    );

    // Tag delete and tag push drop just that tag.
    c.on_manifest_delete(&r, "c").await;
    assert!(!c.contains_tag(&r.tag("c")));
    c.on_manifest_put(&elsewhere, "a").await;
    assert!(!c.contains_tag(&elsewhere.tag("a")));
}

#[tokio::test]
async fn answers_fetched_across_an_invalidation_are_not_kept() {
    let c = cache(&config());
    let r = repo();
    let (d, body, headers) = manifest("race");
    let key = r.digest(d.as_str());

    let ticket = c.ticket(&r);
    c.on_manifest_delete(&r, &d).await; // lands while "the fetch" is in flight
    match insert_manifest(&c, ticket, &key, body.clone(), &headers).await {
        Ok(Admission::Uncached {
            reason: UncacheableReason::InvalidatedDuringFetch,
            ..
        }) => {}
        other => panic!("expected InvalidatedDuringFetch, got {other:?}"),
    }
    assert!(!c.contains_digest(&key));
    insert_tag(&c, ticket, &r.tag("t"), &d).await;
    assert!(!c.contains_tag(&r.tag("t")));

    // Same through the coalescing path: the invalidation happens inside the fetch.
    let c2 = c.clone();
    let r2 = r.clone();
    let d2 = d.clone();
    let res = c
        .get_or_fetch(&key, || async move {
            c2.on_manifest_delete(&r2, &d2).await;
            Ok::<_, Boom>(Fetched::Manifest { body, headers })
        })
        .await;
    assert!(matches!(
        res,
        Err(FetchError::Uncacheable {
            reason: UncacheableReason::InvalidatedDuringFetch,
            ..
        })
    ));
    assert!(!c.contains_digest(&key));

    // A fresh ticket works again.
    let (d3, body3, headers3) = manifest("after");
    let k3 = r.digest(d3.as_str());
    assert!(matches!(
        insert_manifest(&c, c.ticket(&r), &k3, body3, &headers3).await,
        Ok(Admission::Cached(_))
    ));
}

#[tokio::test]
async fn capacity_is_bounded_by_bytes_and_evictions_are_counted() {
    let cfg = CacheConfig {
        max_bytes: 64 * 1024,
        max_manifest_bytes: 8 * 1024,
        ..config()
    };
    let c = cache(&cfg);
    let r = repo();
    for i in 0..64 {
        let body = Bytes::from(format!("{{\"pad\":\"{}\",\"i\":{i}}}", "x".repeat(4000)));
        let d = sha256_digest(&body);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
        let admitted = insert_manifest(&c, c.ticket(&r), &r.digest(d.as_str()), body, &h).await;
        assert!(matches!(admitted, Ok(Admission::Cached(_))));
    }
    c.run_pending_tasks().await;
    let s = c.stats();
    assert!(s.weighted_bytes <= cfg.max_bytes, "{s:?}");
    assert!(s.entries < 64 && s.entries > 0, "{s:?}");
    assert!(s.evictions > 0, "{s:?}");
    assert_eq!(s.entries + s.evictions, 64, "{s:?}");
}

#[tokio::test]
async fn cached_headers_and_accept_decide_what_a_hit_may_answer() {
    let c = cache(&config());
    let (d, body, mut headers) = manifest("neg");
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(accept::DOCKER_MANIFEST),
    );
    let key = repo().digest(d.as_str());
    let m = match insert_manifest(&c, c.ticket(key.repo()), &key, body, &headers).await {
        Ok(Admission::Cached(m)) => m,
        other => panic!("expected cached, got {other:?}"),
    };
    let mut oci_only = HeaderMap::new();
    oci_only.insert(http::header::ACCEPT, HeaderValue::from_static(OCI_MANIFEST));
    assert_eq!(negotiate(&oci_only, m.content_type()), Negotiation::Bypass);
    let mut docker = HeaderMap::new();
    docker.insert(http::header::ACCEPT, HeaderValue::from_static(FULL_ACCEPT));
    assert_eq!(negotiate(&docker, m.content_type()), Negotiation::Serve);
    assert_eq!(
        m.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()),
        Some(m.body().len().to_string().as_str())
    );
}

#[tokio::test]
async fn a_tag_carries_its_manifest_until_the_mapping_changes() {
    let c = cache(&config());
    let r = repo();
    let tag = r.tag("v1");
    let (d1, body, headers) = manifest("one");
    let (d2, ..) = manifest("two");
    let calls = AtomicUsize::new(0);
    let found = |d: String| move |_: Option<Arc<str>>| async move { TagProbe::<Boom>::Found(d) };

    let first = c.resolve_tag(&tag, found(d1.clone())).await.expect("tag");
    assert!(first.manifest.is_none(), "nothing attached before a serve");
    let m = c
        .get_or_fetch(&r.digest(d1.as_str()), || {
            fetch_ok(&calls, body.clone(), headers.clone())
        })
        .await
        .expect("manifest");
    c.attach_manifest(&tag, &m).await;
    let hit = c.resolve_tag(&tag, found(d2.clone())).await.expect("tag");
    assert_eq!(hit.source, TagSource::Fresh);
    assert!(
        hit.manifest.as_ref().is_some_and(|a| Arc::ptr_eq(a, &m)),
        "a fresh tag answers with the attached manifest"
    );

    // A digest delete drops the tag and with it the shortcut.
    c.on_manifest_delete(&r, &d1).await;
    assert!(!c.contains_tag(&tag));
    c.attach_manifest(&tag, &m).await;
    assert!(!c.contains_tag(&tag), "attaching never resurrects a tag");

    // A tag that moved to another digest is not given the old manifest.
    insert_tag(&c, c.ticket(&r), &tag, &d2).await;
    c.attach_manifest(&tag, &m).await;
    let moved = c.resolve_tag(&tag, found(d2.clone())).await.expect("tag");
    assert_eq!(&*moved.digest, d2.as_str());
    assert!(moved.manifest.is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_thread_front_serves_fresh_tags_and_forgets_them_at_once() {
    let c = cache(&tag_config(300, 10_000));
    let r = repo();
    let tag = r.tag("v1");
    let (d1, body, headers) = manifest("front");
    let calls = AtomicUsize::new(0);
    let found = |d: String| move |_: Option<Arc<str>>| async move { TagProbe::<Boom>::Found(d) };
    let front = |c: &ManifestCache| c.front_hit("hub", "apps/web", &["v1"]);
    // Serve once through the tag (attach), then once more: that fills the front.
    let warm = |c: Arc<ManifestCache>| {
        let (tag, found, d1, calls) = (tag.clone(), found(d1.clone()), d1.clone(), &calls);
        let (body, headers) = (body.clone(), headers.clone());
        async move {
            c.resolve_tag(&tag, found).await.expect("tag");
            let m = c
                .get_or_fetch(&repo().digest(d1.as_str()), || {
                    fetch_ok(calls, body, headers)
                })
                .await
                .expect("manifest");
            c.attach_manifest(&tag, &m).await;
            assert!(front(&c).is_none(), "filled only by a fresh lookup");
            let r = c
                .resolve_tag(&tag, |_| async { TagProbe::<Boom>::NotFound })
                .await;
            assert!(r.expect("fresh").manifest.is_some());
        }
    };

    warm(c.clone()).await;
    let before = c.stats().hits;
    let hit = front(&c).expect("front hit");
    assert_eq!((hit.digest(), hit.body()), (d1.as_str(), &body));
    assert_eq!(
        c.stats().hits,
        before + 2,
        "tag and manifest both count as hits"
    );
    assert!(
        front(&cache(&config())).is_none(),
        "another cache's entries are not served"
    );
    assert!(c.front_hit("hub", "apps/web", &["v2"]).is_none());

    // A push of the tag through the proxy voids it at once.
    c.on_manifest_put(&r, "v1").await;
    assert!(front(&c).is_none());

    // So does a delete of the digest it points at.
    warm(c.clone()).await;
    assert!(front(&c).is_some());
    c.on_manifest_delete(&r, &d1).await;
    assert!(front(&c).is_none());

    // And the mapping's TTL ends front hits too.
    warm(c.clone()).await;
    assert!(front(&c).is_some());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(front(&c).is_none());
}

#[tokio::test]
async fn the_thread_front_serves_digests_until_they_are_deleted() {
    let c = cache(&config());
    let r = repo();
    let (d, body, headers) = manifest("front-digest");
    let key = r.digest(d.as_str());
    let (algorithm, encoded) = d.split_once(':').expect("digest");
    let parts = [algorithm, ":", encoded];
    let calls = AtomicUsize::new(0);
    let get = || c.get_or_fetch(&key, || fetch_ok(&calls, body.clone(), headers.clone()));

    get().await.expect("miss");
    assert!(
        c.front_hit("hub", "apps/web", &parts).is_none(),
        "a miss fills nothing"
    );
    get().await.expect("hit");
    let before = c.stats().hits;
    let hit = c.front_hit("hub", "apps/web", &parts).expect("front hit");
    assert_eq!((hit.digest(), hit.body()), (d.as_str(), &body));
    assert_eq!(c.stats().hits, before + 1);
    assert!(c.front_hit("hub", "apps/other", &parts).is_none());
    assert!(c.front_hit("mirror", "apps/web", &parts).is_none());

    c.on_manifest_delete(&r, &d).await;
    assert!(c.front_hit("hub", "apps/web", &parts).is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
