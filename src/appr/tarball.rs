//! Package tarballs: the deterministic `.tar.gz` a Margo package is pulled as, and the
//! bounded reading of pushed ones.
//!
//! Deterministic: the same files give the same bytes (so the same digest) on every
//! replica and every pull: entries sorted by path, mode 0644, uid/gid 0, no owner
//! names, mtime 0, ustar headers; gzip with mtime 0, no file name, OS byte 255
//! ("unknown") and a fixed compression level.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::Bytes;

/// Most entries a pushed tarball may hold.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarballError {
    #[error("the blob is not a gzip-compressed tar archive: {0}")]
    Format(String),
    #[error("the package unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the package has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("entry `{0}`: only regular files and directories are accepted")]
    EntryType(String),
    #[error("entry `{0}`: the path must be relative and stay inside the package")]
    Path(String),
}

/// Builds the tarball of `files` (path → content).
pub fn build(files: &BTreeMap<String, Bytes>) -> std::io::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, data.as_ref())?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// A relative path inside the package, `./` and empty parts dropped; `None` when it
/// climbs out or is absolute.
fn clean(path: &str) -> Option<String> {
    if path.starts_with('/') || path.contains('\\') {
        return None;
    }
    let mut parts = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The regular files of a pushed tarball, at most `max` bytes unpacked. Links, devices
/// and paths leaving the package are refused.
pub fn unpack(blob: &[u8], max: u64) -> Result<BTreeMap<String, Bytes>, TarballError> {
    let fmt = |e: std::io::Error| TarballError::Format(e.to_string());
    let gz = flate2::read::GzDecoder::new(blob);
    // One byte past the limit tells "too large" from "exactly at it".
    let mut archive = tar::Archive::new(gz.take(max.saturating_add(1 << 20)));
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    for (n, entry) in archive.entries().map_err(fmt)?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(TarballError::TooManyEntries);
        }
        let mut entry = entry.map_err(fmt)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            // pax/GNU extension headers are consumed by the reader itself.
            _ => return Err(TarballError::EntryType(raw)),
        }
        let path = clean(&raw).ok_or_else(|| TarballError::Path(raw.clone()))?;
        let size = entry.header().size().map_err(fmt)?;
        total = total.saturating_add(size);
        if total > max {
            return Err(TarballError::TooLarge(max));
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
        entry.read_to_end(&mut data).map_err(fmt)?;
        files.insert(path, Bytes::from(data));
    }
    Ok(files)
}

/// A package directory packed with a top folder (`pkg/margo.yaml`): its files with
/// that folder stripped, when every file is under it.
pub fn strip_top_folder(files: BTreeMap<String, Bytes>, marker: &str) -> BTreeMap<String, Bytes> {
    if files.contains_key(marker) {
        return files;
    }
    let Some(top) = files
        .keys()
        .next()
        .and_then(|k| k.split_once('/'))
        .map(|(t, _)| t.to_owned())
    else {
        return files;
    };
    let prefix = format!("{top}/");
    if !files.keys().all(|k| k.starts_with(&prefix))
        || !files.contains_key(&format!("{prefix}{marker}"))
    {
        return files;
    }
    files
        .into_iter()
        .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, Bytes> {
        let mut f = BTreeMap::new();
        f.insert("margo.yaml".to_owned(), Bytes::from_static(b"a: 1\n"));
        f.insert(
            "resources/icon.png".to_owned(),
            Bytes::from_static(b"\x89PNG"),
        );
        f
    }

    #[test]
    fn build_is_deterministic_and_unpacks_to_the_same_files() {
        let a = build(&files()).unwrap_or_default();
        let b = build(&files()).unwrap_or_default();
        assert!(!a.is_empty());
        assert_eq!(a, b);
        // gzip header: magic, deflate, no flags, mtime 0, OS 255.
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(unpack(&a, 1 << 20), Ok(files()));
    }

    #[test]
    fn limits_and_bad_input() {
        let a = build(&files()).unwrap_or_default();
        assert_eq!(unpack(&a, 4), Err(TarballError::TooLarge(4)));
        assert!(matches!(
            unpack(b"not gzip", 100),
            Err(TarballError::Format(_))
        ));
        assert!(matches!(
            unpack(&[], 100),
            Err(TarballError::Format(_)) | Ok(_)
        ));
    }

    #[test]
    fn paths_that_leave_the_package_are_refused() {
        for p in ["/etc/passwd", "../x", "a/../../x", "a\\b"] {
            assert_eq!(clean(p), None, "{p}");
        }
        assert_eq!(clean("./a//b").as_deref(), Some("a/b"));
        // A hand-made archive with `../evil` in it.
        let mut raw = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let name = b"../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        raw.append(&h, &b"x"[..]).unwrap_or_default();
        let tar = raw.into_inner().unwrap_or_default();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap_or_default();
        let blob = gz.finish().unwrap_or_default();
        assert_eq!(
            unpack(&blob, 1 << 20),
            Err(TarballError::Path("../evil".into()))
        );
    }

    #[test]
    fn symlinks_are_refused() {
        let mut raw = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        raw.append_link(&mut h, "l", "/etc/passwd")
            .unwrap_or_default();
        let tar = raw.into_inner().unwrap_or_default();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap_or_default();
        let blob = gz.finish().unwrap_or_default();
        assert_eq!(
            unpack(&blob, 1 << 20),
            Err(TarballError::EntryType("l".into()))
        );
    }

    #[test]
    fn top_folder_is_stripped_only_when_it_holds_everything() {
        let mut f = BTreeMap::new();
        f.insert("pkg/margo.yaml".to_owned(), Bytes::new());
        f.insert("pkg/r/x".to_owned(), Bytes::new());
        let s = strip_top_folder(f.clone(), "margo.yaml");
        assert!(s.contains_key("margo.yaml") && s.contains_key("r/x"));
        f.insert("other".to_owned(), Bytes::new());
        assert_eq!(strip_top_folder(f.clone(), "margo.yaml"), f);
    }
}
