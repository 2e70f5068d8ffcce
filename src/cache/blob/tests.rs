use std::time::Duration;

use bytes::Bytes;

use super::*;

fn cache(disk: Option<&std::path::Path>, max_blob: u64) -> Arc<BlobCache> {
    let cfg = BlobCacheConfig {
        memory_max_bytes: 8 << 20,
        max_blob_bytes: max_blob,
        disk: disk.map(|d| DiskConfig {
            dir: d.to_owned(),
            max_bytes: 64 << 20,
        }),
    };
    Arc::new(
        BlobCache::from_config(&cfg)
            .expect("config")
            .expect("some tier"),
    )
}

fn head_for(data: &[u8]) -> (Digest, BlobHead) {
    let d = Digest::sha256_of(data);
    let head = BlobHead {
        content_type: "application/octet-stream".into(),
        digest: d.to_string(),
        etag: None,
        len: data.len() as u64,
    };
    (d, head)
}

fn leader(c: &BlobCache, d: &Digest) -> LeadGuard {
    match c.lead(&d.to_string()) {
        Lead::Leader(g) => g,
        Lead::Follower(_) => panic!("expected to lead"),
    }
}

/// Feeds `chunks` through the fill; returns what the client received and the outcome.
fn stream(fill: &mut Fill, chunks: &[&[u8]]) -> (Vec<u8>, Result<(), FillError>) {
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let end = i + 1 == chunks.len();
        let mut body = Some(Bytes::copy_from_slice(c));
        let r = fill.on_body(&mut body, end);
        if let Some(b) = body {
            out.extend_from_slice(&b);
        }
        if r.is_err() || end {
            return (out, r);
        }
    }
    (out, Ok(()))
}

#[test]
fn a_verified_fill_streams_everything_and_is_kept() {
    let c = cache(None, 1 << 20);
    let data = b"0123456789abcdef".repeat(100);
    let (d, head) = head_for(&data);
    let mut fill = c
        .fill(leader(&c, &d), d.clone(), head)
        .expect("memory fill");
    let (sent, r) = stream(&mut fill, &[&data[..500], &data[500..1000], &data[1000..]]);
    assert_eq!(r, Ok(()));
    assert_eq!(sent, data);
    drop(fill);
    let Some(Cached::Memory(m)) = c.get(&d.to_string()) else {
        panic!("kept in memory")
    };
    assert_eq!(&m.body[..], &data[..]);
    let s = c.stats();
    assert_eq!((s.memory_fills, s.failed_fills), (1, 0));
    // The lead ended with the fill.
    assert!(matches!(c.lead(&d.to_string()), Lead::Leader(_)));
}

#[test]
fn wrong_bytes_are_never_kept_nor_fully_sent() {
    let c = cache(None, 1 << 20);
    let data = b"the real blob, twice as long as one chunk".to_vec();
    let (d, head) = head_for(&data);
    let mut lie = data.clone();
    lie[30] ^= 1;
    let mut fill = c.fill(leader(&c, &d), d.clone(), head).expect("fill");
    let (sent, r) = stream(&mut fill, &[&lie[..20], &lie[20..]]);
    assert!(matches!(r, Err(FillError::Mismatch(_))));
    // The client got the first chunk only: its body is short, so it knows it failed.
    assert_eq!(sent, lie[..20].to_vec());
    drop(fill);
    assert!(c.get(&d.to_string()).is_none());
    assert_eq!(c.stats().failed_fills, 1);
}

#[test]
fn short_and_long_bodies_keep_nothing() {
    let c = cache(None, 1 << 20);
    let data = b"exactly this".to_vec();
    let (d, head) = head_for(&data);
    let mut fill = c
        .fill(leader(&c, &d), d.clone(), head.clone())
        .expect("fill");
    let (_, r) = stream(&mut fill, &[&data[..5]]);
    assert_eq!(r, Err(FillError::Short { got: 5, want: 12 }));
    drop(fill);
    let mut fill = c.fill(leader(&c, &d), d.clone(), head).expect("fill");
    let mut body = Some(Bytes::from(b"exactly this and more".to_vec()));
    assert_eq!(fill.on_body(&mut body, false), Err(FillError::TooLong(12)));
    drop(fill);
    // A fill dropped mid-way (upstream connection lost) keeps nothing either.
    let (d2, h2) = head_for(b"lost");
    let mut fill = c.fill(leader(&c, &d2), d2.clone(), h2).expect("fill");
    let _ = stream(&mut fill, &[b"lo", b"s"]);
    drop(fill);
    assert!(c.get(&d.to_string()).is_none());
    assert!(c.get(&d2.to_string()).is_none());
    assert_eq!(c.stats().failed_fills, 3);
}

#[test]
fn blobs_above_every_tier_are_not_filled() {
    let c = cache(None, 16);
    let (d, head) = head_for(&[7u8; 17]);
    assert!(c.fill(leader(&c, &d), d.clone(), head).is_none());
    // The lead was dropped with the refusal: the next miss may lead.
    assert!(matches!(c.lead(&d.to_string()), Lead::Leader(_)));
}

#[tokio::test]
async fn large_blobs_fill_the_disk_tier_and_followers_wait_for_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = cache(Some(dir.path()), 1024);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (d, head) = head_for(&data);
    let key = d.to_string();
    let mut fill = c.fill(leader(&c, &d), d.clone(), head).expect("disk fill");
    let Lead::Follower(rx) = c.lead(&key) else {
        panic!("a second miss follows")
    };
    let waiter = tokio::spawn(inflight::wait(rx));
    let chunks: Vec<&[u8]> = data.chunks(64 * 1024).collect();
    let (sent, r) = stream(&mut fill, &chunks);
    assert_eq!(r, Ok(()));
    assert_eq!(sent, data);
    drop(fill);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("follower woke")
        .expect("joined");
    // Visible as soon as the follower wakes.
    let Some(Cached::Disk(mut blob)) = c.get(&key) else {
        panic!("on disk")
    };
    use std::io::{Read, Seek, SeekFrom};
    blob.file
        .seek(SeekFrom::Start(blob.data_offset))
        .expect("seek");
    let mut back = Vec::new();
    blob.file.read_to_end(&mut back).expect("read");
    assert_eq!(back, data);
    assert_eq!(c.stats().disk_fills, 1);
    // And after a restart.
    drop(c);
    let c = cache(Some(dir.path()), 1024);
    assert!(matches!(c.get(&key), Some(Cached::Disk(_))));
}

#[tokio::test]
async fn a_failed_disk_fill_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = cache(Some(dir.path()), 1024);
    let data = vec![9u8; 200_000];
    let (d, head) = head_for(&data);
    let mut fill = c.fill(leader(&c, &d), d.clone(), head).expect("disk fill");
    let mut lie = data.clone();
    lie[199_999] = 0;
    let chunks: Vec<&[u8]> = lie.chunks(64 * 1024).collect();
    let (_, r) = stream(&mut fill, &chunks);
    assert!(matches!(r, Err(FillError::Mismatch(_))));
    drop(fill);
    // The writer thread deletes its temporary file once the queue closes.
    for _ in 0..100 {
        if std::fs::read_dir(dir.path().join("tmp"))
            .expect("tmp")
            .count()
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
    assert!(c.get(&d.to_string()).is_none());
}
