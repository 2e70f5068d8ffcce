//! One look at the repository: every tag that names an application version, turned
//! into a Margo Application Package (an OCI image manifest and its blobs), checked by
//! the one admission driver, and either served or refused with its reasons.
//!
//! Deterministic by construction: the manifest is built from the Git tree only (file
//! bytes, their paths, the description's resource order), never from times or the
//! order refs were listed in, so every replica and every restart serves the same
//! digests for the same tree.
//!
//! Safety: only files inside the package directory are read, and only the ones
//! `margo.yaml` names; a package with a symlink, a submodule, an entry named `..`, `.`
//! or `.git`, more than `max_files` entries, or a file over `max_file_bytes` is refused
//! before any file is read (sizes come from object headers, not from reading).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use gix::objs::tree::EntryKind;
use gix::ObjectId;
use serde::Serialize;
use serde_json::json;

use super::config::{GitConfig, Layout};
use crate::catalog::pack::{format_of, RESOURCE_ANNOTATION};
use crate::margo::admission::{self, AdmissionLimits, BlobError, BlobSource, Verdict};
use crate::margo::manifest::package::{ARTIFACT_TYPE, DESCRIPTION_MEDIA_TYPE};
use crate::margo::manifest::{Descriptor, Reference, RouteKind};
use crate::margo::report::Violation;
use crate::margo::resources::{normalize_relative, ResourceRefs};
use crate::margo::yaml::{self, YamlLimits};
use crate::oci::digest::EMPTY_JSON_DIGEST;
use crate::oci::Digest;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Largest tree object decoded (a directory listing); bigger ones refuse the package.
const MAX_TREE_BYTES: u64 = 8 << 20;
/// Deepest directory nesting walked in a package.
const MAX_DEPTH: usize = 32;
/// Most distinct blob bytes one snapshot holds in memory (all versions together);
/// versions past it are refused rather than grow the proxy without bound.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Why a version is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("git: {0}")]
    Git(String),
    #[error("the package directory `{0}` does not exist at this tag")]
    NoDirectory(String),
    #[error("`{0}` is a symbolic link: symlinks are not served")]
    Symlink(String),
    #[error("`{0}` is a submodule: submodules are not served")]
    Submodule(String),
    #[error("entry `{0}` has a forbidden name (`..`, `.`, `.git`, or a path separator)")]
    BadName(String),
    #[error("the package directory has more than {0} entries")]
    TooManyFiles(usize),
    #[error("the package directory nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("`{path}` is {size} bytes, more than max_file_bytes ({cap}); it was not read")]
    FileTooLarge { path: String, size: u64, cap: u64 },
    #[error("the package is {size} bytes, more than max_package_bytes ({cap})")]
    PackageTooLarge { size: u64, cap: u64 },
    #[error("directory `{0}` is too large to list")]
    TreeTooLarge(String),
    #[error("margo.yaml is missing")]
    NoDescription,
    #[error("margo.yaml: {0}")]
    Description(String),
    #[error("resource `{0}`: {1}")]
    Resource(String, String),
    #[error("tag `{0}` gives `{1}`, which is not a valid OCI tag")]
    BadTag(String, String),
    #[error("admission: {0}")]
    Admission(String),
    #[error("admission refused the package ({0} violations)")]
    Violations(usize),
    #[error("the mirror already holds {MAX_SNAPSHOT_BYTES} bytes of packages; this version is not loaded")]
    SnapshotFull,
}

impl PackageError {
    /// The `reason` label of the refusal metric (low cardinality).
    pub fn reason(&self) -> &'static str {
        match self {
            PackageError::Git(_) => "git",
            PackageError::NoDirectory(_) | PackageError::NoDescription => "missing",
            PackageError::Symlink(_) => "symlink",
            PackageError::Submodule(_) => "submodule",
            PackageError::BadName(_) => "bad_name",
            PackageError::TooManyFiles(_) | PackageError::TooDeep => "too_many_files",
            PackageError::FileTooLarge { .. } | PackageError::TreeTooLarge(_) => "file_too_large",
            PackageError::PackageTooLarge { .. } | PackageError::SnapshotFull => {
                "package_too_large"
            }
            PackageError::Description(_) | PackageError::Resource(..) => "resource",
            PackageError::BadTag(..) => "bad_tag",
            PackageError::Admission(_) | PackageError::Violations(_) => "admission",
        }
    }
}

/// A version that is not served, as the log, the metrics and the catalog show it.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub repository: String,
    pub git_tag: String,
    /// The OCI tag it would have had.
    pub tag: String,
    pub reason: String,
    /// The `reason` label of the metric.
    pub code: &'static str,
    /// Admission violations (empty for safety refusals).
    pub violations: Vec<Violation>,
    /// The synthesized manifest, when it got that far (the catalog lists it).
    #[serde(skip)]
    pub manifest: Option<(Digest, Bytes)>,
}

/// A served manifest.
#[derive(Debug, Clone)]
pub struct ServedManifest {
    pub digest: Digest,
    pub bytes: Bytes,
}

/// One repository's versions.
#[derive(Debug, Clone, Default)]
pub struct RepoVersions {
    /// OCI tag → manifest digest.
    pub tags: BTreeMap<String, Digest>,
    /// Blobs its served manifests name.
    pub blobs: HashSet<Digest>,
}

/// Everything served from one look at the repository.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub repos: BTreeMap<String, RepoVersions>,
    pub manifests: HashMap<Digest, Bytes>,
    /// Blob bytes by digest (served and refused packages'; served only through `repos`).
    pub blobs: HashMap<Digest, Bytes>,
    pub refused: Vec<Refusal>,
    /// The commit each tag pointed at (for logs and change detection).
    pub tag_commits: BTreeMap<String, ObjectId>,
}

/// An application version a Git tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTag {
    pub repository: String,
    /// The package directory (`""`: the repository root).
    pub directory: String,
    /// The OCI tag: the SemVer version, `+` written as `_`.
    pub tag: String,
}

/// What a Git tag means under `layout`: `v1.2.3`/`1.2.3`, or `<app>/v1.2.3` with
/// directories. `None`: not an application version (ignored).
pub fn version_tag(layout: Layout, single_name: &str, git_tag: &str) -> Option<VersionTag> {
    let (repository, directory, version) = match layout {
        Layout::Repository => (single_name.to_owned(), String::new(), git_tag),
        Layout::Directories => {
            let (app, v) = git_tag.split_once('/')?;
            crate::oci::RepoName::parse(app).ok()?;
            (app.to_owned(), app.to_owned(), v)
        }
    };
    let version = version.strip_prefix('v').unwrap_or(version);
    semver::Version::parse(version).ok()?;
    Some(VersionTag {
        repository,
        directory,
        tag: version.replace('+', "_"),
    })
}

/// A package directory's files, by path relative to it.
type Files = HashMap<String, (ObjectId, u64)>;

fn git_err(e: impl std::fmt::Display) -> PackageError {
    PackageError::Git(e.to_string())
}

fn tree_of(repo: &gix::Repository, id: ObjectId, shown: &str) -> Result<Vec<u8>, PackageError> {
    let header = repo.find_header(id).map_err(git_err)?;
    if header.size() > MAX_TREE_BYTES {
        return Err(PackageError::TreeTooLarge(shown.to_owned()));
    }
    let obj = repo.find_object(id).map_err(git_err)?;
    Ok(obj.data.clone())
}

fn check_name(name: &[u8], parent: &str) -> Result<String, PackageError> {
    let s = String::from_utf8_lossy(name).into_owned();
    let shown = if parent.is_empty() {
        s.clone()
    } else {
        format!("{parent}/{s}")
    };
    if s.is_empty()
        || s == "."
        || s == ".."
        || s.eq_ignore_ascii_case(".git")
        || s.contains(['/', '\\', '\0'])
    {
        return Err(PackageError::BadName(shown));
    }
    Ok(shown)
}

/// Lists the package directory at `root` (bounded), refusing what must not be served.
fn list_files(
    repo: &gix::Repository,
    root: ObjectId,
    max_files: usize,
) -> Result<Files, PackageError> {
    let mut files = Files::new();
    let mut entries = 0usize;
    let mut stack = vec![(root, String::new(), 0usize)];
    while let Some((id, dir, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(PackageError::TooDeep);
        }
        let data = tree_of(repo, id, if dir.is_empty() { "." } else { &dir })?;
        let tree = gix::objs::TreeRef::from_bytes(&data, repo.object_hash()).map_err(git_err)?;
        for e in tree.entries {
            entries += 1;
            if entries > max_files {
                return Err(PackageError::TooManyFiles(max_files));
            }
            let path = check_name(e.filename, &dir)?;
            match e.mode.kind() {
                EntryKind::Tree => stack.push((e.oid.to_owned(), path, depth + 1)),
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    let size = repo.find_header(e.oid.to_owned()).map_err(git_err)?.size();
                    files.insert(path, (e.oid.to_owned(), size));
                }
                EntryKind::Link => return Err(PackageError::Symlink(path)),
                EntryKind::Commit => return Err(PackageError::Submodule(path)),
            }
        }
    }
    Ok(files)
}

/// The tree of `dir` inside the commit's root tree (`""`: the root itself).
fn package_root(
    repo: &gix::Repository,
    commit: ObjectId,
    dir: &str,
) -> Result<ObjectId, PackageError> {
    let commit = repo
        .find_object(commit)
        .map_err(git_err)?
        .try_into_commit()
        .map_err(git_err)?;
    let root = commit.tree_id().map_err(git_err)?.detach();
    if dir.is_empty() {
        return Ok(root);
    }
    let data = tree_of(repo, root, ".")?;
    let tree = gix::objs::TreeRef::from_bytes(&data, repo.object_hash()).map_err(git_err)?;
    let entry = tree
        .entries
        .iter()
        .find(|e| e.filename == dir.as_bytes())
        .ok_or_else(|| PackageError::NoDirectory(dir.to_owned()))?;
    match entry.mode.kind() {
        EntryKind::Tree => Ok(entry.oid.to_owned()),
        EntryKind::Link => Err(PackageError::Symlink(dir.to_owned())),
        _ => Err(PackageError::NoDirectory(dir.to_owned())),
    }
}

/// A built package, before admission.
struct Built {
    manifest: Bytes,
    digest: Digest,
    blobs: Vec<(Digest, Bytes)>,
}

fn read_file(
    repo: &gix::Repository,
    files: &Files,
    path: &str,
    cfg: &GitConfig,
    total: &mut u64,
) -> Result<Option<Bytes>, PackageError> {
    let Some((id, size)) = files.get(path) else {
        return Ok(None);
    };
    if *size > cfg.max_file_bytes {
        return Err(PackageError::FileTooLarge {
            path: path.to_owned(),
            size: *size,
            cap: cfg.max_file_bytes,
        });
    }
    *total += size;
    if *total > cfg.max_package_bytes {
        return Err(PackageError::PackageTooLarge {
            size: *total,
            cap: cfg.max_package_bytes,
        });
    }
    let obj = repo.find_object(*id).map_err(git_err)?;
    Ok(Some(Bytes::from(obj.data.clone())))
}

fn descriptor(
    media_type: &str,
    digest: &Digest,
    size: usize,
    annotations: serde_json::Value,
) -> serde_json::Value {
    json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": size,
        "annotations": annotations,
    })
}

/// The package at `root`, laid out as the registry rules say (as `margo-proxy push`
/// packs a directory): empty config, description layer, one layer per local resource.
fn build(repo: &gix::Repository, root: ObjectId, cfg: &GitConfig) -> Result<Built, PackageError> {
    let files = list_files(repo, root, cfg.max_files)?;
    let mut total = 0u64;
    let description = read_file(repo, &files, "margo.yaml", cfg, &mut total)?
        .ok_or(PackageError::NoDescription)?;
    let tree = yaml::parse(&description, &YamlLimits::default())
        .map_err(|e| PackageError::Description(e.to_string()))?;
    let refs = ResourceRefs::from_node(&tree);
    let desc_digest = Digest::sha256_of(&description);
    let mut layers = vec![descriptor(
        DESCRIPTION_MEDIA_TYPE,
        &desc_digest,
        description.len(),
        json!({ "org.opencontainers.image.title": "margo.yaml" }),
    )];
    let mut blobs = vec![(desc_digest, description)];
    for r in refs.local() {
        let rel = normalize_relative(&r.reference)
            .map_err(|e| PackageError::Resource(r.reference.clone(), e.to_string()))?;
        let data = read_file(repo, &files, &rel, cfg, &mut total)?.ok_or_else(|| {
            PackageError::Resource(rel.clone(), "no such file in the package directory".into())
        })?;
        let digest = Digest::sha256_of(&data);
        let media_type = format!(
            "application/vnd.margo.app.{}.v1+{}",
            r.kind.as_str(),
            format_of(&rel)
        );
        layers.push(descriptor(
            &media_type,
            &digest,
            data.len(),
            json!({
                "org.opencontainers.image.title": rel,
                RESOURCE_ANNOTATION: r.kind.as_str(),
            }),
        ));
        blobs.push((digest, data));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": EMPTY_JSON_DIGEST,
            "size": 2,
            "data": "e30="
        },
        "layers": layers,
    });
    let manifest = Bytes::from(
        serde_json::to_vec(&manifest).map_err(|e| PackageError::Description(e.to_string()))?,
    );
    blobs.push((Digest::sha256_of(b"{}"), Bytes::from_static(b"{}")));
    Ok(Built {
        digest: Digest::sha256_of(&manifest),
        manifest,
        blobs,
    })
}

/// Admission reads the description from what was just built.
struct BuiltBlobs<'a>(&'a Built);

#[async_trait::async_trait]
impl BlobSource for BuiltBlobs<'_> {
    async fn fetch(&self, d: &Descriptor) -> Result<Bytes, BlobError> {
        self.0
            .blobs
            .iter()
            .find(|(digest, _)| digest == &d.digest)
            .map(|(_, b)| b.clone())
            .ok_or(BlobError::NotFound {
                digest: d.digest.clone(),
            })
    }
}

/// Every tag of the repository, read into a snapshot.
pub fn read(
    repo: &gix::Repository,
    cfg: &GitConfig,
    single_name: &str,
) -> Result<Snapshot, String> {
    let limits = AdmissionLimits::default();
    let policy = admission::RoutePolicy::default_for(RouteKind::App, Default::default());
    let mut snap = Snapshot::default();
    let refs = repo.references().map_err(|e| e.to_string())?;
    let tags = refs.tags().map_err(|e| e.to_string())?;
    let mut versions: BTreeMap<String, (VersionTag, ObjectId)> = BTreeMap::new();
    let mut held = 0u64;
    for (n, r) in tags.enumerate() {
        if n >= cfg.max_tags {
            tracing::warn!(
                max_tags = cfg.max_tags,
                "git: more tags than max_tags; the rest are ignored"
            );
            break;
        }
        let Ok(mut r) = r else { continue };
        let name = r.name().shorten().to_string();
        let Some(v) = version_tag(cfg.layout, single_name, &name) else {
            continue;
        };
        match r.peel_to_id() {
            Ok(id) => {
                versions.insert(name, (v, id.detach()));
            }
            Err(e) => tracing::warn!(tag = %name, error = %e, "git: cannot peel tag"),
        }
    }
    for (git_tag, (v, commit)) in versions {
        snap.tag_commits.insert(git_tag.clone(), commit);
        let refuse = |snap: &mut Snapshot, e: PackageError, violations, manifest| {
            snap.refused.push(Refusal {
                repository: v.repository.clone(),
                git_tag: git_tag.clone(),
                tag: v.tag.clone(),
                reason: e.to_string(),
                code: e.reason(),
                violations,
                manifest,
            });
            e
        };
        if !crate::oci::path::valid_tag(&v.tag) {
            refuse(
                &mut snap,
                PackageError::BadTag(git_tag.clone(), v.tag.clone()),
                vec![],
                None,
            );
            continue;
        }
        let built = match package_root(repo, commit, &v.directory)
            .and_then(|root| build(repo, root, cfg))
        {
            Ok(b) => b,
            Err(e) => {
                refuse(&mut snap, e, vec![], None);
                continue;
            }
        };
        let decision = futures::executor::block_on(admission::admit(
            &built.manifest,
            &Reference::Tag(v.tag.clone()),
            &policy,
            &BuiltBlobs(&built),
            &limits,
        ));
        let new_bytes: u64 = built
            .blobs
            .iter()
            .filter(|(d, _)| !snap.blobs.contains_key(d))
            .map(|(_, b)| b.len() as u64)
            .sum();
        if held + new_bytes > MAX_SNAPSHOT_BYTES {
            refuse(&mut snap, PackageError::SnapshotFull, vec![], None);
            continue;
        }
        held += new_bytes;
        let accepted = match decision {
            Ok(d) if d.verdict == Verdict::Accept => Ok(()),
            Ok(d) => Err((
                PackageError::Violations(d.report.violations().len()),
                d.report.into_violations(),
            )),
            Err(e) => Err((PackageError::Admission(e.to_string()), vec![])),
        };
        for (d, b) in &built.blobs {
            snap.blobs.entry(d.clone()).or_insert_with(|| b.clone());
        }
        match accepted {
            Ok(()) => {
                let repo_entry = snap.repos.entry(v.repository.clone()).or_default();
                repo_entry.tags.insert(v.tag.clone(), built.digest.clone());
                repo_entry
                    .blobs
                    .extend(built.blobs.iter().map(|(d, _)| d.clone()));
                snap.manifests
                    .insert(built.digest.clone(), built.manifest.clone());
            }
            Err((e, violations)) => {
                refuse(
                    &mut snap,
                    e,
                    violations,
                    Some((built.digest.clone(), built.manifest.clone())),
                );
            }
        }
    }
    // Refused packages' blobs stay only if some served or refused manifest needs them:
    // they are all from this snapshot, so nothing to drop.
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_by_layout() {
        let v = version_tag(Layout::Repository, "demo", "v1.2.3").expect("a version");
        assert_eq!((v.repository.as_str(), v.tag.as_str()), ("demo", "1.2.3"));
        assert_eq!(
            version_tag(Layout::Repository, "demo", "1.0.0+b.7").map(|v| v.tag),
            Some("1.0.0_b.7".into())
        );
        assert_eq!(version_tag(Layout::Repository, "demo", "release"), None);
        assert_eq!(version_tag(Layout::Repository, "demo", "a/v1.0.0"), None);
        let d = version_tag(Layout::Directories, "x", "line-monitor/v2.0.0").expect("a version");
        assert_eq!(
            (d.repository.as_str(), d.directory.as_str(), d.tag.as_str()),
            ("line-monitor", "line-monitor", "2.0.0")
        );
        assert_eq!(version_tag(Layout::Directories, "x", "v1.0.0"), None);
        assert_eq!(version_tag(Layout::Directories, "x", "../v1.0.0"), None);
        assert_eq!(version_tag(Layout::Directories, "x", "Bad/v1.0.0"), None);
    }

    fn git(dir: &std::path::Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "a")
            .env("GIT_AUTHOR_EMAIL", "a@b")
            .env("GIT_COMMITTER_NAME", "a")
            .env("GIT_COMMITTER_EMAIL", "a@b")
            .args(args)
            .status()
            .expect("git (Debian's) is required")
            .success();
        assert!(ok, "git {args:?}");
    }

    fn config(yaml: &str) -> GitConfig {
        serde_saphyr::from_str(yaml).expect("config")
    }

    /// The example package at two tags (one with a disagreeing metadata.version), read
    /// twice: the same digests, the layers the registry rules ask for, the bad one
    /// refused by admission.
    #[test]
    fn snapshots_are_deterministic_and_admitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path();
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packages/line-monitor");
        git(work, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(work.join("resources")).expect("mkdir");
        for f in [
            "margo.yaml",
            "resources/icon.png",
            "resources/description.md",
            "resources/license.txt",
            "resources/release-notes.md",
        ] {
            std::fs::copy(example.join(f), work.join(f)).expect("copy");
        }
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", "1.4.0"]);
        git(work, &["tag", "v1.4.0"]);
        git(work, &["tag", "-a", "-m", "wrong", "v1.5.0"]);
        let cfg = config(&format!("remote: {}\n", work.display()));
        let repo = gix::open(work).expect("open");
        let a = read(&repo, &cfg, "app").expect("snapshot");
        let b = read(&repo, &cfg, "app").expect("snapshot");
        let tags = &a.repos["app"].tags;
        assert_eq!(tags.keys().collect::<Vec<_>>(), ["1.4.0"]);
        assert_eq!(tags, &b.repos["app"].tags);
        let m: serde_json::Value =
            serde_json::from_slice(&a.manifests[&tags["1.4.0"]]).expect("json");
        assert_eq!(m["artifactType"], ARTIFACT_TYPE);
        assert_eq!(m["config"]["digest"], EMPTY_JSON_DIGEST);
        let titles: Vec<&str> = m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(titles[0], "margo.yaml");
        assert_eq!(titles.len(), 5, "{titles:?}");
        assert_eq!(a.refused.len(), 1);
        assert_eq!(a.refused[0].git_tag, "v1.5.0");
        assert_eq!(a.refused[0].code, "admission");
        assert!(a.refused[0]
            .violations
            .iter()
            .any(|v| v.rule.as_str() == "margo.manifest.tag"));
    }

    #[test]
    fn forbidden_names() {
        for n in ["..", ".", ".git", ".GIT", "", "a/b"] {
            assert!(check_name(n.as_bytes(), "d").is_err(), "{n}");
        }
        assert_eq!(check_name(b"icon.png", "res"), Ok("res/icon.png".into()));
    }
}
