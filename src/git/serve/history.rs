//! Package versions as Git history, computed from the manifests alone so that every
//! replica and every restart gives the same object ids.
//!
//! - A version's **tree** holds `margo.yaml` (the description layer) and each resource
//!   layer at the path of its `org.opencontainers.image.title`.
//! - Its **commit** has a fixed author and committer (`margo-proxy
//!   <margo-proxy@localhost>`), dated by the manifest's `org.opencontainers.image.created`
//!   annotation (the Unix epoch when absent or unreadable), and a message naming the
//!   repository, the version and the manifest digest.
//! - Its **parent** is the highest lower SemVer version whose creation date is not later
//!   than its own. Each commit so depends only on lower versions: adding a version at the
//!   end never changes an existing commit, and neither does a version inserted in the
//!   middle of SemVer order later in time (a backported patch): it branches off the
//!   version below it instead. Only when creation dates are missing (all at the epoch)
//!   is the history the plain SemVer chain, where a version inserted in the middle
//!   changes the commits above it (`git fetch --tags --force` then moves the tags).
//! - Refs: `refs/tags/<version>` for every version, `refs/heads/main` (and `HEAD`) at the
//!   highest version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use gix_hash::ObjectId;
use gix_object::bstr::BString;
use gix_object::{Kind, WriteTo};

use super::pack::{object_id, PackError};
use crate::oci::Digest;

/// The branch `HEAD` points at.
pub const MAIN: &str = "refs/heads/main";
const AUTHOR: &str = "margo-proxy";
const EMAIL: &str = "margo-proxy@localhost";
/// Longest path of a file in a package, and deepest directory nesting.
const MAX_PATH: usize = 1024;
const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("file path `{path}` is not a safe relative path: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("two files at `{0}`")]
    Duplicate(String),
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// An object with its id and encoded content.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub id: ObjectId,
    pub kind: Kind,
    pub data: Bytes,
}

/// The tree of one package version, with every tree and blob under it.
#[derive(Debug)]
pub struct BuiltTree {
    pub root: ObjectId,
    pub objects: Vec<StoredObject>,
}

impl BuiltTree {
    /// Bytes held, for the cache's weigher.
    pub fn weight(&self) -> u64 {
        self.objects.iter().map(|o| o.data.len() as u64 + 64).sum()
    }
}

/// Checks a resource title as a path inside the package: relative, no `.`/`..`/empty
/// components, nothing Git refuses (`.git`), no backslashes or control characters.
pub fn check_path(path: &str) -> Result<Vec<&str>, TreeError> {
    let bad = |why| TreeError::BadPath {
        path: path.chars().take(200).collect(),
        why,
    };
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(bad("empty or too long"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute"));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("control character or backslash"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(bad("too deep"));
    }
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err(bad("empty, `.` or `..` component"));
        }
        if p.eq_ignore_ascii_case(".git") {
            return Err(bad("`.git` component"));
        }
    }
    Ok(parts)
}

enum Node {
    File(ObjectId),
    Dir(BTreeMap<String, Node>),
}

/// The tree of `files` (path, content); paths are checked with [`check_path`].
pub fn build_tree(files: &[(String, Bytes)]) -> Result<BuiltTree, TreeError> {
    let mut objects = Vec::new();
    let mut root = BTreeMap::new();
    for (path, data) in files {
        let parts = check_path(path)?;
        let id = object_id(Kind::Blob, data)?;
        objects.push(StoredObject {
            id,
            kind: Kind::Blob,
            data: data.clone(),
        });
        let mut dir = &mut root;
        let (last, dirs) = parts.split_last().ok_or(TreeError::BadPath {
            path: path.clone(),
            why: "empty",
        })?;
        for d in dirs {
            let node = dir
                .entry((*d).to_owned())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            dir = match node {
                Node::Dir(m) => m,
                Node::File(_) => return Err(TreeError::Duplicate(path.clone())),
            };
        }
        if dir.insert((*last).to_owned(), Node::File(id)).is_some() {
            return Err(TreeError::Duplicate(path.clone()));
        }
    }
    let root = write_dir(&root, &mut objects)?;
    Ok(BuiltTree { root, objects })
}

fn write_dir(
    dir: &BTreeMap<String, Node>,
    objects: &mut Vec<StoredObject>,
) -> Result<ObjectId, TreeError> {
    let mut entries = Vec::with_capacity(dir.len());
    for (name, node) in dir {
        let (mode, oid) = match node {
            Node::File(id) => (gix_object::tree::EntryKind::Blob, *id),
            Node::Dir(sub) => (gix_object::tree::EntryKind::Tree, write_dir(sub, objects)?),
        };
        entries.push(gix_object::tree::Entry {
            mode: mode.into(),
            filename: BString::from(name.as_str()),
            oid,
        });
    }
    // Git's order: a tree sorts as if its name ended in `/`.
    entries.sort();
    let tree = gix_object::Tree { entries };
    let data = encode(&tree)?;
    let id = object_id(Kind::Tree, &data)?;
    objects.push(StoredObject {
        id,
        kind: Kind::Tree,
        data: Bytes::from(data),
    });
    Ok(id)
}

fn encode(o: &dyn WriteTo) -> Result<Vec<u8>, PackError> {
    let mut out = Vec::with_capacity(o.size() as usize);
    o.write_to(&mut out)?;
    Ok(out)
}

/// One version, ready to become a commit.
#[derive(Debug, Clone)]
pub struct PackageVersion {
    pub version: semver::Version,
    pub manifest: Digest,
    /// Seconds since the epoch (from `org.opencontainers.image.created`, else 0).
    pub created: i64,
    pub tree: Arc<BuiltTree>,
}

/// The seconds of an RFC 3339 `created` annotation; 0 when absent or unreadable.
pub fn created_seconds(annotation: Option<&str>) -> i64 {
    annotation
        .and_then(|s| gix_object::date::parse(s.trim(), None).ok())
        .map(|t| t.seconds)
        .unwrap_or(0)
}

/// A commit and where it sits.
#[derive(Debug, Clone)]
pub struct CommitNode {
    pub id: ObjectId,
    pub tree: ObjectId,
    pub parent: Option<ObjectId>,
    pub data: Bytes,
}

/// The whole repository a client sees.
#[derive(Debug, Default)]
pub struct History {
    /// Refs in the order they are advertised (`refs/heads/main`, then tags by version).
    pub refs: Vec<(String, ObjectId)>,
    pub commits: HashMap<ObjectId, CommitNode>,
    /// Trees and blobs of each root tree.
    pub trees: HashMap<ObjectId, Arc<BuiltTree>>,
}

impl History {
    /// The commit `HEAD` points at (`None`: no version, an empty repository).
    pub fn head(&self) -> Option<ObjectId> {
        self.refs.iter().find(|(n, _)| n == MAIN).map(|(_, id)| *id)
    }
}

/// Builds the history of `versions` of repository `repo` (see the module doc).
pub fn assemble(repo: &str, mut versions: Vec<PackageVersion>) -> Result<History, PackError> {
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    versions.dedup_by(|a, b| a.version == b.version);
    let mut h = History::default();
    let mut ids: Vec<ObjectId> = Vec::with_capacity(versions.len());
    for (i, v) in versions.iter().enumerate() {
        let parent = (0..i)
            .rev()
            .find(|&j| versions[j].created <= v.created)
            .map(|j| ids[j]);
        let time = gix_object::date::Time::new(v.created, 0);
        let sig = gix_actor::Signature {
            name: AUTHOR.into(),
            email: EMAIL.into(),
            time,
        };
        let commit = gix_object::Commit {
            tree: v.tree.root,
            parents: parent.into_iter().collect(),
            author: sig.clone(),
            committer: sig,
            encoding: None,
            message: format!(
                "{repo} {}\n\nMargo application package {repo}:{}\nOCI manifest {}\n",
                v.version, v.version, v.manifest
            )
            .into(),
            extra_headers: Vec::new(),
        };
        let data = encode(&commit)?;
        let id = object_id(Kind::Commit, &data)?;
        ids.push(id);
        h.commits.insert(
            id,
            CommitNode {
                id,
                tree: v.tree.root,
                parent,
                data: Bytes::from(data),
            },
        );
        h.trees.insert(v.tree.root, v.tree.clone());
    }
    if let Some(top) = ids.last() {
        h.refs.push((MAIN.to_owned(), *top));
    }
    for (v, id) in versions.iter().zip(&ids) {
        h.refs.push((format!("refs/tags/{}", v.version), *id));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: &str, created: i64, content: &str) -> PackageVersion {
        let tree = build_tree(&[("margo.yaml".into(), Bytes::from(content.to_owned()))]).unwrap();
        PackageVersion {
            version: v.parse().unwrap(),
            manifest: Digest::sha256_of(content.as_bytes()),
            created,
            tree: Arc::new(tree),
        }
    }

    fn tag(h: &History, v: &str) -> ObjectId {
        h.refs
            .iter()
            .find(|(n, _)| *n == format!("refs/tags/{v}"))
            .unwrap()
            .1
    }

    #[test]
    fn nested_tree_matches_git() {
        // `git mktree` of margo.yaml ("a\n") and resources/icon.png ("b\n") gives these.
        let t = build_tree(&[
            ("margo.yaml".into(), Bytes::from_static(b"a\n")),
            ("resources/icon.png".into(), Bytes::from_static(b"b\n")),
        ])
        .unwrap();
        assert_eq!(t.objects.len(), 4);
        let sub = t
            .objects
            .iter()
            .find(|o| o.kind == Kind::Tree && o.id != t.root)
            .unwrap();
        // tree with one entry "icon.png" -> blob of "b\n"
        let mut want = b"100644 icon.png\0".to_vec();
        want.extend_from_slice(
            ObjectId::from_hex(b"61780798228d17af2d34fce4cfbdf35556832472")
                .unwrap()
                .as_slice(),
        );
        assert_eq!(&sub.data[..], &want[..]);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            ".git/config",
            "a/.GIT/x",
            "./a",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_path(p).is_err(), "{p:?}");
        }
        assert!(check_path("resources/icon.png").is_ok());
        let dup = build_tree(&[("a".into(), Bytes::new()), ("a/b".into(), Bytes::new())]);
        assert!(matches!(dup, Err(TreeError::Duplicate(_))));
    }

    #[test]
    fn appending_a_version_keeps_every_commit() {
        let one = assemble(
            "apps/x",
            vec![version("1.0.0", 10, "a"), version("1.1.0", 20, "b")],
        )
        .unwrap();
        let two = assemble(
            "apps/x",
            vec![
                version("1.1.0", 20, "b"),
                version("2.0.0", 30, "c"),
                version("1.0.0", 10, "a"),
            ],
        )
        .unwrap();
        assert_eq!(tag(&one, "1.0.0"), tag(&two, "1.0.0"));
        assert_eq!(tag(&one, "1.1.0"), tag(&two, "1.1.0"));
        let top = &two.commits[&tag(&two, "2.0.0")];
        assert_eq!(top.parent, Some(tag(&two, "1.1.0")));
        assert_eq!(two.head(), Some(tag(&two, "2.0.0")));
        assert_eq!(two.commits[&tag(&two, "1.0.0")].parent, None);
    }

    #[test]
    fn a_later_backport_branches_off_instead_of_rewriting() {
        let before = assemble(
            "r",
            vec![version("1.0.0", 10, "a"), version("2.0.0", 20, "b")],
        )
        .unwrap();
        let after = assemble(
            "r",
            vec![
                version("1.0.0", 10, "a"),
                version("2.0.0", 20, "b"),
                version("1.0.1", 30, "c"),
            ],
        )
        .unwrap();
        assert_eq!(tag(&before, "2.0.0"), tag(&after, "2.0.0"));
        assert_eq!(
            after.commits[&tag(&after, "1.0.1")].parent,
            Some(tag(&after, "1.0.0"))
        );
        assert_eq!(after.head(), Some(tag(&after, "2.0.0")));
    }

    #[test]
    fn without_dates_history_is_the_semver_chain() {
        let h = assemble(
            "r",
            vec![
                version("2.0.0", 0, "b"),
                version("1.0.0", 0, "a"),
                version("1.5.0", 0, "c"),
            ],
        )
        .unwrap();
        assert_eq!(h.commits[&tag(&h, "2.0.0")].parent, Some(tag(&h, "1.5.0")));
        assert_eq!(h.commits[&tag(&h, "1.5.0")].parent, Some(tag(&h, "1.0.0")));
    }

    #[test]
    fn created_annotation_parsing() {
        assert_eq!(created_seconds(Some("2024-01-02T03:04:05Z")), 1704164645);
        assert_eq!(created_seconds(Some("not a date")), 0);
        assert_eq!(created_seconds(None), 0);
    }
}
