//! The disk tier: larger blobs, one file each, in a byte-bounded LRU directory.
//!
//! Layout under the configured directory:
//! - `blobs/<algorithm>/<hex>`: `MPB1`, a little-endian `u32` header length, the
//!   [`BlobHead`] as JSON, then the blob's bytes;
//! - `tmp/`: fills in progress. A fill is written there, fsynced, renamed into
//!   `blobs/` (atomic on one file system) and the directory fsynced, so a crash
//!   leaves either nothing or a complete, verified blob; `tmp/` is emptied at start.
//!
//! At start the directory is re-indexed (headers only, never whole blobs): files
//! whose size or header does not match are deleted. Recency starts from the files'
//! modification times, then follows hits.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::head::BlobHead;
use super::stats::Counters;
use crate::oci::Digest;

const MAGIC: &[u8; 4] = b"MPB1";
/// Largest header read back (a head is a few hundred bytes).
const MAX_HEADER: u32 = 16 * 1024;

/// A cached blob opened for reading: the file, positioned nowhere in particular,
/// and where the blob's bytes start in it.
#[derive(Debug)]
pub struct DiskBlob {
    pub head: Arc<BlobHead>,
    pub file: File,
    pub data_offset: u64,
}

struct Slot {
    size: u64,
    tick: u64,
    head: Arc<BlobHead>,
    data_offset: u64,
}

#[derive(Default)]
struct Lru {
    slots: HashMap<String, Slot>,
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: u64,
}

impl Lru {
    fn touch(&mut self, digest: &str) -> Option<(Arc<BlobHead>, u64)> {
        let tick = self.next_tick;
        let slot = self.slots.get_mut(digest)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, digest.to_owned());
        self.next_tick += 1;
        Some((slot.head.clone(), slot.data_offset))
    }

    fn remove(&mut self, digest: &str) -> Option<Slot> {
        let slot = self.slots.remove(digest)?;
        self.order.remove(&slot.tick);
        self.bytes -= slot.size;
        Some(slot)
    }

    /// Inserts as most recent; returns the digests evicted to stay within `max`.
    fn insert(&mut self, digest: String, slot: Slot, max: u64) -> Vec<String> {
        self.remove(&digest);
        let mut evicted = Vec::new();
        while self.bytes + slot.size > max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(s) = self.slots.remove(&oldest) {
                self.bytes -= s.size;
            }
            evicted.push(oldest);
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        self.bytes += slot.size;
        self.order.insert(tick, digest.clone());
        self.slots.insert(digest, Slot { tick, ..slot });
        evicted
    }
}

pub struct DiskTier {
    dir: PathBuf,
    max_bytes: u64,
    lru: Mutex<Lru>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier").field("dir", &self.dir).finish()
    }
}

fn encode_header(head: &BlobHead) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(head)?;
    let n = u32::try_from(json.len()).map_err(|_| io::Error::other("header too large"))?;
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Reads a blob file's header: (head, offset of the data).
fn read_header(file: &mut File) -> io::Result<(BlobHead, u64)> {
    let mut fixed = [0u8; 8];
    file.read_exact(&mut fixed)?;
    if &fixed[..4] != MAGIC {
        return Err(io::Error::other("not a blob file"));
    }
    let n = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    if n > MAX_HEADER {
        return Err(io::Error::other("header too large"));
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json)?;
    let head: BlobHead = serde_json::from_slice(&json)?;
    Ok((head, 8 + u64::from(n)))
}

fn lock(m: &Mutex<Lru>) -> std::sync::MutexGuard<'_, Lru> {
    // A panic while holding the lock leaves the index consistent enough to go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiskTier {
    /// Opens (creating) the directory, empties `tmp/`, re-indexes `blobs/`.
    pub fn open(dir: &Path, max_bytes: u64, counters: Arc<Counters>) -> io::Result<Self> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let mut found = Vec::new();
        for alg in ["sha256", "sha512"] {
            let sub = dir.join("blobs").join(alg);
            fs::create_dir_all(&sub)?;
            for entry in fs::read_dir(&sub)? {
                let entry = entry?;
                let path = entry.path();
                match Self::index_one(alg, &path) {
                    Some((digest, slot, mtime)) => found.push((mtime, digest, slot)),
                    None => {
                        tracing::warn!(path = %path.display(), "blob cache: removing an unreadable file");
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|(mtime, _, _)| *mtime);
        let tier = Self {
            dir: dir.to_owned(),
            max_bytes,
            lru: Mutex::new(Lru::default()),
            counters,
        };
        let mut evicted = Vec::new();
        {
            let mut lru = lock(&tier.lru);
            for (_, digest, slot) in found {
                evicted.extend(lru.insert(digest, slot, max_bytes));
            }
        }
        tier.delete(evicted);
        Ok(tier)
    }

    fn index_one(alg: &str, path: &Path) -> Option<(String, Slot, SystemTime)> {
        let name = path.file_name()?.to_str()?;
        let digest: Digest = format!("{alg}:{name}").parse().ok()?;
        let mut file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        let (head, data_offset) = read_header(&mut file).ok()?;
        if head.digest != digest.to_string() || meta.len() != data_offset + head.len {
            return None;
        }
        let slot = Slot {
            size: meta.len(),
            tick: 0,
            head: Arc::new(head),
            data_offset,
        };
        Some((digest.to_string(), slot, meta.modified().ok()?))
    }

    fn path_of(&self, digest: &str) -> Option<PathBuf> {
        let (alg, hex) = digest.split_once(':')?;
        Some(self.dir.join("blobs").join(alg).join(hex))
    }

    fn delete(&self, digests: Vec<String>) {
        for d in digests {
            self.counters.disk_evictions.bump();
            if let Some(p) = self.path_of(&d) {
                let _ = fs::remove_file(p);
            }
        }
    }

    /// Whether a blob of `len` bytes could be kept at all.
    pub fn fits(&self, len: u64) -> bool {
        len.saturating_add(u64::from(MAX_HEADER)) <= self.max_bytes
    }

    /// Opens a cached blob (and marks it recently used).
    pub fn get(&self, digest: &str) -> Option<DiskBlob> {
        let (head, data_offset) = lock(&self.lru).touch(digest)?;
        match File::open(self.path_of(digest)?) {
            Ok(file) => Some(DiskBlob {
                head,
                file,
                data_offset,
            }),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "blob cache: indexed file vanished");
                lock(&self.lru).remove(digest);
                None
            }
        }
    }

    /// (entries, bytes on disk).
    pub fn size(&self) -> (u64, u64) {
        let lru = lock(&self.lru);
        (lru.slots.len() as u64, lru.bytes)
    }

    /// Starts writing a fill in `tmp/`.
    pub fn writer(self: &Arc<Self>, digest: &Digest, head: BlobHead) -> io::Result<DiskWriter> {
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}",
            digest.encoded(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = File::create(&tmp)?;
        let header = encode_header(&head)?;
        file.write_all(&header)?;
        Ok(DiskWriter {
            tier: Arc::clone(self),
            tmp,
            file: Some(file),
            digest: digest.to_string(),
            data_offset: header.len() as u64,
            head,
            written: 0,
        })
    }
}

/// One fill being written; dropped without [`DiskWriter::commit`], it deletes its file.
pub struct DiskWriter {
    tier: Arc<DiskTier>,
    tmp: PathBuf,
    file: Option<File>,
    digest: String,
    data_offset: u64,
    head: BlobHead,
    written: u64,
}

impl DiskWriter {
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("closed"))?;
        file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Makes the blob visible: only complete fills (the caller verified the digest of
    /// exactly these bytes) get here.
    pub fn commit(mut self) -> io::Result<()> {
        if self.written != self.head.len {
            return Err(io::Error::other("fill length differs from the blob's"));
        }
        let file = self.file.take().ok_or_else(|| io::Error::other("closed"))?;
        file.sync_all()?;
        drop(file);
        let dest = self
            .tier
            .path_of(&self.digest)
            .ok_or_else(|| io::Error::other("bad digest"))?;
        fs::rename(&self.tmp, &dest)?;
        if let Some(parent) = dest.parent() {
            File::open(parent)?.sync_all()?;
        }
        let slot = Slot {
            size: self.data_offset + self.written,
            tick: 0,
            head: Arc::new(self.head.clone()),
            data_offset: self.data_offset,
        };
        let evicted = lock(&self.tier.lru).insert(self.digest.clone(), slot, self.tier.max_bytes);
        // The blob just written is never its own eviction victim: `fits` was checked.
        self.tier.delete(evicted);
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn head(data: &[u8]) -> (Digest, BlobHead) {
        let d = Digest::sha256_of(data);
        let h = BlobHead {
            content_type: "application/octet-stream".into(),
            digest: d.to_string(),
            etag: None,
            len: data.len() as u64,
        };
        (d, h)
    }

    fn put(tier: &Arc<DiskTier>, data: &[u8]) -> Digest {
        let (d, h) = head(data);
        let mut w = tier.writer(&d, h).expect("writer");
        w.write(data).expect("write");
        w.commit().expect("commit");
        d
    }

    fn read(tier: &DiskTier, d: &Digest) -> Vec<u8> {
        let mut b = tier.get(&d.to_string()).expect("cached");
        b.file.seek(SeekFrom::Start(b.data_offset)).expect("seek");
        let mut out = Vec::new();
        b.file.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn survives_a_restart_and_drops_partial_fills() {
        let dir = tempfile::tempdir().expect("tmp");
        let counters = Arc::new(Counters::default());
        let tier = Arc::new(DiskTier::open(dir.path(), 1 << 20, counters.clone()).expect("open"));
        let d = put(&tier, b"kept across restarts");
        // A fill that never commits (crash or failure) leaves nothing behind once dropped...
        let (d2, h2) = head(b"never finished");
        let mut w = tier.writer(&d2, h2.clone()).expect("writer");
        w.write(b"never").expect("write");
        drop(w);
        assert!(tier.get(&d2.to_string()).is_none());
        // ...and one interrupted by a crash (file left in tmp/) is not served after restart.
        let crash = tier.writer(&d2, h2).expect("writer");
        std::mem::forget(crash);
        // A corrupt file in blobs/ is removed at start.
        let (d3, _) = head(b"corrupt");
        fs::write(
            dir.path().join("blobs/sha256").join(d3.encoded()),
            b"MPB1junk",
        )
        .expect("w");
        drop(tier);
        let tier = DiskTier::open(dir.path(), 1 << 20, counters).expect("reopen");
        assert_eq!(read(&tier, &d), b"kept across restarts");
        assert!(tier.get(&d2.to_string()).is_none());
        assert!(tier.get(&d3.to_string()).is_none());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        assert_eq!(tier.size().0, 1);
    }

    #[test]
    fn commit_refuses_a_short_fill() {
        let dir = tempfile::tempdir().expect("tmp");
        let tier = Arc::new(
            DiskTier::open(dir.path(), 1 << 20, Arc::new(Counters::default())).expect("open"),
        );
        let (d, h) = head(b"twelve bytes");
        let mut w = tier.writer(&d, h).expect("writer");
        w.write(b"twelve").expect("write");
        assert!(w.commit().is_err());
        assert!(tier.get(&d.to_string()).is_none());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let dir = tempfile::tempdir().expect("tmp");
        let counters = Arc::new(Counters::default());
        // Room for about two 40 KiB blobs with their headers.
        let tier = Arc::new(DiskTier::open(dir.path(), 90 * 1024, counters.clone()).expect("open"));
        let a = put(&tier, &[1u8; 40 * 1024]);
        let b = put(&tier, &[2u8; 40 * 1024]);
        assert!(tier.get(&a.to_string()).is_some()); // a is now more recent than b
        let c = put(&tier, &[3u8; 40 * 1024]);
        assert!(tier.get(&b.to_string()).is_none());
        assert_eq!(read(&tier, &a), vec![1u8; 40 * 1024]);
        assert_eq!(read(&tier, &c), vec![3u8; 40 * 1024]);
        assert!(tier.size().1 <= 90 * 1024);
        assert_eq!(counters.disk_evictions.get(), 1);
        assert!(!dir.path().join("blobs/sha256").join(b.encoded()).exists());
        assert!(!tier.fits(90 * 1024));
    }
}
