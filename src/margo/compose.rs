//! Safety check of a Compose component archive (gzip tar), streamed.
//!
//! The archive is untrusted and consumers will extract it on devices, so what matters
//! is what extraction would do: where files land (no absolute paths, no `..`, no link
//! leaving the top directory), what they are (no devices, fifos) and with which
//! permissions (no setuid/setgid/sticky). The stream is never buffered whole; the
//! compressed and decompressed byte counts and the entry count are capped so that a
//! gzip bomb costs at most the caps.

use std::collections::BTreeSet;
use std::io::{self, Read};

use flate2::read::MultiGzDecoder;
use serde::Serialize;

use crate::margo::report::{FieldPath, Report, RuleId, Violation};
use crate::oci::digest::{is_cap_error, Algorithm, CappedReader, Digest, HashingReader};

/// The only accepted compose file name.
pub const COMPOSE_FILE: &str = "compose.yaml";
/// Compose file names that Compose itself would pick up instead and that Margo refuses.
const OTHER_COMPOSE_FILES: [&str; 3] = ["compose.yml", "docker-compose.yaml", "docker-compose.yml"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Compressed bytes read from the stream.
    pub max_compressed_bytes: u64,
    /// Decompressed tar bytes (headers and contents).
    pub max_decompressed_bytes: u64,
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_compressed_bytes: 64 * 1024 * 1024,
            max_decompressed_bytes: 256 * 1024 * 1024,
            max_entries: 10_000,
        }
    }
}

/// Kind of an archive entry as reported to policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum EntryKind {
    File,
    Directory,
    Symlink {
        target: String,
    },
    HardLink {
        target: String,
    },
    /// Device, fifo or anything else (always a violation too).
    Special {
        tar_type: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveEntry {
    /// Path as in the archive, with a leading `./` removed.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveCheck {
    pub report: Report,
    /// Entries seen, in archive order (up to the entry cap).
    pub entries: Vec<ArchiveEntry>,
    /// The single top-level directory, if there was one.
    pub top_dir: Option<String>,
    /// Digest of the compressed stream as read (with the expected digest's algorithm,
    /// sha256 when none was given).
    pub digest: Digest,
    pub compressed_bytes: u64,
}

/// Counts decompressed bytes and fails past the cap.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lexically resolves `target` against directory components `base`; `None` when it
/// climbs above the root.
fn resolve(base: &[String], target: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = base.to_vec();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c.to_owned()),
        }
    }
    Some(parts)
}

struct Checker<'a> {
    report: &'a mut Report,
    entries: Vec<ArchiveEntry>,
    top: BTreeSet<String>,
    top_level_files: Vec<String>,
}

impl Checker<'_> {
    fn push(&mut self, rule: RuleId, path: &str, expected: &str) {
        self.report.push(
            Violation::new(rule, FieldPath::root().key("entries").key(path), expected)
                .with_value(serde_json::Value::String(path.to_owned())),
        );
    }

    fn entry(&mut self, raw_path: &[u8], header: &tar::Header, link: Option<Vec<u8>>) {
        let shown = lossy(raw_path);
        let path = shown.strip_prefix("./").unwrap_or(&shown).to_owned();
        let etype = header.entry_type();
        let mode = header.mode().unwrap_or(0);
        let size = header.size().unwrap_or(0);

        if path.starts_with('/') {
            self.push(RuleId::ComposeAbsolutePath, &shown, "a relative path");
        }
        let comps: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect();
        if comps.iter().any(|c| c == "..") {
            self.push(
                RuleId::ComposeParentDir,
                &shown,
                "a path without `..` components",
            );
        }
        if mode & 0o7000 != 0 {
            self.push(
                RuleId::ComposeModeBits,
                &shown,
                "no setuid, setgid or sticky bit",
            );
        }

        let kind = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Directory,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = link.as_deref().map(lossy).unwrap_or_default();
                // Symlinks resolve from the link's directory, hard links from the root.
                let base: &[String] = if etype == tar::EntryType::Symlink {
                    comps.split_last().map_or(&[], |(_, dir)| dir)
                } else {
                    &[]
                };
                let top = comps.first();
                let inside = !target.starts_with('/')
                    && resolve(base, &target)
                        .is_some_and(|r| top.is_some_and(|t| r.first() == Some(t)));
                if !inside {
                    self.push(
                        RuleId::ComposeLinkEscape,
                        &shown,
                        &format!("a link target inside the top directory (got {target:?})"),
                    );
                }
                if etype == tar::EntryType::Symlink {
                    EntryKind::Symlink { target }
                } else {
                    EntryKind::HardLink { target }
                }
            }
            other => {
                self.push(
                    RuleId::ComposeSpecialFile,
                    &shown,
                    "a regular file, directory or link (no devices, fifos or other special files)",
                );
                EntryKind::Special {
                    tar_type: other.as_byte(),
                }
            }
        };

        match comps.as_slice() {
            [] => {}
            [only] if kind != EntryKind::Directory => self.top_level_files.push(only.clone()),
            [first, ..] => {
                self.top.insert(first.clone());
            }
        }
        self.entries.push(ArchiveEntry {
            path,
            kind,
            size,
            mode,
        });
    }

    fn finish(&mut self) -> Option<String> {
        let root = FieldPath::root();
        for f in std::mem::take(&mut self.top_level_files) {
            self.push(
                RuleId::ComposeTopDir,
                &f,
                "no files beside the single top-level directory",
            );
        }
        let top: Vec<&String> = self.top.iter().collect();
        let [dir] = top.as_slice() else {
            self.report.push(
                Violation::new(
                    RuleId::ComposeTopDir,
                    root.key("entries"),
                    "exactly one top-level directory",
                )
                .with_value(serde_json::json!(top)),
            );
            return None;
        };
        let dir = (*dir).clone();
        let entries = &self.entries;
        let in_top = |name: &str| {
            entries
                .iter()
                .find(|e| {
                    let mut c = e.path.split('/').filter(|c| !c.is_empty() && *c != ".");
                    c.next() == Some(dir.as_str()) && c.next() == Some(name) && c.next().is_none()
                })
                .map(|e| e.kind.clone())
        };
        let compose = in_top(COMPOSE_FILE);
        let others: Vec<&str> = OTHER_COMPOSE_FILES
            .into_iter()
            .filter(|o| in_top(o).is_some())
            .collect();
        match compose {
            Some(EntryKind::File) => {}
            Some(_) => self.report.push(Violation::new(
                RuleId::ComposeFile,
                root.key("entries").key(&format!("{dir}/{COMPOSE_FILE}")),
                "compose.yaml as a regular file",
            )),
            None => self.report.push(Violation::new(
                RuleId::ComposeFile,
                root.key("entries").key(&format!("{dir}/{COMPOSE_FILE}")),
                "a compose.yaml in the top-level directory",
            )),
        }
        for other in others {
            let p = format!("{dir}/{other}");
            self.push(
                RuleId::ComposeFile,
                &p,
                "compose.yaml as the only compose file name",
            );
        }
        Some(dir)
    }
}

/// Checks a compose archive read from `reader`.
///
/// `expected`, when given, is the layer's digest (and size): the stream is hashed as it
/// is read and a mismatch is reported as `margo.blob.digest`. Reads the stream to its
/// end (within the compressed cap) so that the digest covers all of it. Never panics.
pub fn check_archive<R: Read>(
    reader: R,
    limits: &ArchiveLimits,
    expected: Option<(&Digest, u64)>,
) -> ArchiveCheck {
    let mut report = Report::new();
    let algorithm = expected.map_or(Algorithm::Sha256, |(d, _)| d.algorithm());
    let mut hashing = HashingReader::new(reader, limits.max_compressed_bytes, algorithm);
    let mut checker = Checker {
        report: &mut report,
        entries: Vec::new(),
        top: BTreeSet::new(),
        top_level_files: Vec::new(),
    };
    let mut fatal = false;
    {
        let gz = MultiGzDecoder::new(&mut hashing);
        let capped = CappedReader::new(gz, limits.max_decompressed_bytes);
        let mut archive = tar::Archive::new(capped);
        match archive.entries() {
            Err(e) => {
                fatal = true;
                format_error(checker.report, &e, limits);
            }
            Ok(entries) => {
                let mut n: u64 = 0;
                for entry in entries {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            fatal = true;
                            format_error(checker.report, &e, limits);
                            break;
                        }
                    };
                    n = n.saturating_add(1);
                    if n > limits.max_entries {
                        fatal = true;
                        checker.report.push(Violation::new(
                            RuleId::ComposeArchiveEntries,
                            FieldPath::root().key("entries"),
                            format!("at most {} entries", limits.max_entries),
                        ));
                        break;
                    }
                    let raw_path = entry.path_bytes().into_owned();
                    let link = entry.link_name_bytes().map(|b| b.into_owned());
                    checker.entry(&raw_path, entry.header(), link);
                }
            }
        }
        if !fatal {
            // Trailing data after the tar end (and further gzip members) still counts
            // against the caps and belongs to the digest.
            let mut rest = archive.into_inner();
            if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
                fatal = true;
                format_error(checker.report, &e, limits);
            }
        }
    }
    let top_dir = if fatal { None } else { checker.finish() };
    let entries = std::mem::take(&mut checker.entries);
    if !fatal {
        if let Err(e) = io::copy(&mut hashing, &mut io::sink()) {
            format_error(&mut report, &e, limits);
        }
    }
    let digest = hashing.digest();
    let compressed_bytes = hashing.count();
    if let Some((want, size)) = expected {
        let size_ok = fatal || compressed_bytes == size;
        let digest_ok = fatal || *want == digest;
        if !size_ok || !digest_ok {
            report.push(
                Violation::new(
                    RuleId::BlobDigest,
                    FieldPath::root(),
                    format!("content with digest {want} and size {size}"),
                )
                .with_value(serde_json::json!({"digest": digest, "size": compressed_bytes})),
            );
        }
    }
    ArchiveCheck {
        report,
        entries,
        top_dir,
        digest,
        compressed_bytes,
    }
}

fn format_error(report: &mut Report, e: &io::Error, limits: &ArchiveLimits) {
    let root = FieldPath::root();
    let v = if is_cap_error(e) {
        Violation::new(
            RuleId::ComposeArchiveSize,
            root,
            format!(
                "at most {} compressed and {} decompressed bytes",
                limits.max_compressed_bytes, limits.max_decompressed_bytes
            ),
        )
    } else {
        Violation::new(
            RuleId::ComposeArchiveFormat,
            root,
            format!("a gzip-compressed tar archive ({e})"),
        )
    };
    report.push(v);
}

#[cfg(test)]
pub(crate) mod testutil {
    use flate2::write::GzEncoder;
    use flate2::Compression;

    pub enum E<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Fifo(&'a str),
        Char(&'a str),
    }

    /// Builds a tar.gz with raw header paths (no sanitising, so hostile names are possible).
    pub fn archive(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (path, data, ty, mode, link): (&str, &[u8], tar::EntryType, u32, Option<&str>) =
                match e {
                    E::File(p, d, m) => (p, d, tar::EntryType::Regular, *m, None),
                    E::Dir(p) => (p, b"", tar::EntryType::Directory, 0o755, None),
                    E::Symlink(p, t) => (p, b"", tar::EntryType::Symlink, 0o777, Some(t)),
                    E::HardLink(p, t) => (p, b"", tar::EntryType::Link, 0o644, Some(t)),
                    E::Fifo(p) => (p, b"", tar::EntryType::Fifo, 0o644, None),
                    E::Char(p) => (p, b"", tar::EntryType::Char, 0o644, None),
                };
            h.set_entry_type(ty);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            {
                let name = &mut h.as_old_mut().name;
                let n = path.len().min(name.len());
                name[..n].copy_from_slice(&path.as_bytes()[..n]);
            }
            if let Some(t) = link {
                let ln = &mut h.as_old_mut().linkname;
                let n = t.len().min(ln.len());
                ln[..n].copy_from_slice(&t.as_bytes()[..n]);
            }
            h.set_cksum();
            let _ = b.append(&h, data);
        }
        b.into_inner()
            .and_then(|gz| gz.finish())
            .unwrap_or_default()
    }

    pub fn valid() -> Vec<u8> {
        archive(&[
            E::Dir("app/"),
            E::File("app/compose.yaml", b"services: {}\n", 0o644),
            E::File("app/.env", b"A=1\n", 0o644),
            E::Dir("app/config/"),
            E::File("app/config/nginx.conf", b"x", 0o644),
            E::Symlink("app/config/current", "nginx.conf"),
            E::HardLink("app/config/copy", "app/config/nginx.conf"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn check(bytes: &[u8]) -> ArchiveCheck {
        check_archive(bytes, &ArchiveLimits::default(), None)
    }

    #[test]
    fn valid_archive_lists_entries() {
        let c = check(&valid());
        assert!(c.report.is_empty(), "{:?}", c.report.violations());
        assert_eq!(c.top_dir.as_deref(), Some("app"));
        assert_eq!(c.entries.len(), 7);
        assert_eq!(
            c.entries[5].kind,
            EntryKind::Symlink {
                target: "nginx.conf".into()
            }
        );
    }

    #[test]
    fn rules_table() {
        let cases: Vec<(&str, Vec<u8>, Option<RuleId>)> = vec![
            (
                "dot-slash prefix ok",
                archive(&[
                    E::Dir("./"),
                    E::Dir("./app/"),
                    E::File("./app/compose.yaml", b"x", 0o644),
                ]),
                None,
            ),
            (
                "implicit top dir ok",
                archive(&[E::File("app/compose.yaml", b"x", 0o644)]),
                None,
            ),
            (
                "no top dir",
                archive(&[E::File("compose.yaml", b"x", 0o644)]),
                Some(RuleId::ComposeTopDir),
            ),
            (
                "two top dirs",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::File("b/x", b"x", 0o644),
                ]),
                Some(RuleId::ComposeTopDir),
            ),
            (
                "file beside top dir",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::File("README", b"x", 0o644),
                ]),
                Some(RuleId::ComposeTopDir),
            ),
            (
                "docker-compose.yml",
                archive(&[E::File("a/docker-compose.yml", b"x", 0o644)]),
                Some(RuleId::ComposeFile),
            ),
            (
                "extra compose.yml",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::File("a/compose.yml", b"x", 0o644),
                ]),
                Some(RuleId::ComposeFile),
            ),
            (
                "compose.yaml nested only",
                archive(&[E::File("a/sub/compose.yaml", b"x", 0o644)]),
                Some(RuleId::ComposeFile),
            ),
            (
                "compose.yaml is a symlink",
                archive(&[
                    E::File("a/x.yaml", b"x", 0o644),
                    E::Symlink("a/compose.yaml", "x.yaml"),
                ]),
                Some(RuleId::ComposeFile),
            ),
            (
                "absolute",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::File("/etc/passwd", b"x", 0o644),
                ]),
                Some(RuleId::ComposeAbsolutePath),
            ),
            (
                "dotdot",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::File("a/../../x", b"x", 0o644),
                ]),
                Some(RuleId::ComposeParentDir),
            ),
            (
                "symlink out",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::Symlink("a/l", "../../etc/passwd"),
                ]),
                Some(RuleId::ComposeLinkEscape),
            ),
            (
                "symlink to top dir's parent",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::Symlink("a/l", ".."),
                ]),
                Some(RuleId::ComposeLinkEscape),
            ),
            (
                "symlink absolute",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::Symlink("a/l", "/etc/passwd"),
                ]),
                Some(RuleId::ComposeLinkEscape),
            ),
            (
                "symlink inside via ..",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::Dir("a/d/"),
                    E::Symlink("a/d/l", "../compose.yaml"),
                ]),
                None,
            ),
            (
                "hardlink out",
                archive(&[
                    E::File("a/compose.yaml", b"x", 0o644),
                    E::HardLink("a/l", "etc/passwd"),
                ]),
                Some(RuleId::ComposeLinkEscape),
            ),
            (
                "fifo",
                archive(&[E::File("a/compose.yaml", b"x", 0o644), E::Fifo("a/p")]),
                Some(RuleId::ComposeSpecialFile),
            ),
            (
                "char device",
                archive(&[E::File("a/compose.yaml", b"x", 0o644), E::Char("a/null")]),
                Some(RuleId::ComposeSpecialFile),
            ),
            (
                "setuid",
                archive(&[E::File("a/compose.yaml", b"x", 0o4755)]),
                Some(RuleId::ComposeModeBits),
            ),
            (
                "setgid",
                archive(&[E::File("a/compose.yaml", b"x", 0o2755)]),
                Some(RuleId::ComposeModeBits),
            ),
            (
                "sticky",
                archive(&[E::File("a/compose.yaml", b"x", 0o1755)]),
                Some(RuleId::ComposeModeBits),
            ),
            (
                "not gzip",
                b"plain text".to_vec(),
                Some(RuleId::ComposeArchiveFormat),
            ),
            (
                "empty stream",
                Vec::new(),
                Some(RuleId::ComposeArchiveFormat),
            ),
            ("empty archive", archive(&[]), Some(RuleId::ComposeTopDir)),
        ];
        for (name, bytes, want) in cases {
            let c = check(&bytes);
            match want {
                None => assert!(c.report.is_empty(), "{name}: {:?}", c.report.violations()),
                Some(rule) => assert!(
                    c.report.has_rule(rule),
                    "{name}: want {rule}, got {:?}",
                    c.report.rule_ids()
                ),
            }
        }
    }

    #[test]
    fn gzip_bomb_hits_decompressed_cap() {
        let big = vec![0u8; 4 * 1024 * 1024];
        let bytes = archive(&[E::File("a/compose.yaml", &big, 0o644)]);
        assert!(bytes.len() < 64 * 1024, "compresses well");
        let limits = ArchiveLimits {
            max_decompressed_bytes: 1024 * 1024,
            ..ArchiveLimits::default()
        };
        let c = check_archive(&bytes[..], &limits, None);
        assert!(
            c.report.has_rule(RuleId::ComposeArchiveSize),
            "{:?}",
            c.report.rule_ids()
        );
    }

    #[test]
    fn caps_compressed_bytes_and_entries() {
        let bytes = valid();
        let limits = ArchiveLimits {
            max_compressed_bytes: 10,
            ..ArchiveLimits::default()
        };
        assert!(check_archive(&bytes[..], &limits, None)
            .report
            .has_rule(RuleId::ComposeArchiveSize));
        let limits = ArchiveLimits {
            max_entries: 3,
            ..ArchiveLimits::default()
        };
        let c = check_archive(&bytes[..], &limits, None);
        assert!(c.report.has_rule(RuleId::ComposeArchiveEntries));
    }

    #[test]
    fn digest_is_verified_on_the_stream() {
        let bytes = valid();
        let d = Digest::sha256_of(&bytes);
        let ok = check_archive(
            &bytes[..],
            &ArchiveLimits::default(),
            Some((&d, bytes.len() as u64)),
        );
        assert!(ok.report.is_empty(), "{:?}", ok.report.violations());
        assert_eq!(ok.digest, d);
        let other = Digest::sha256_of(b"other");
        let bad = check_archive(
            &bytes[..],
            &ArchiveLimits::default(),
            Some((&other, bytes.len() as u64)),
        );
        assert!(bad.report.has_rule(RuleId::BlobDigest));
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"junk");
        let t = check_archive(
            &trailing[..],
            &ArchiveLimits::default(),
            Some((&d, bytes.len() as u64)),
        );
        assert!(
            t.report.has_rule(RuleId::BlobDigest)
                || t.report.has_rule(RuleId::ComposeArchiveFormat)
        );
    }
}
