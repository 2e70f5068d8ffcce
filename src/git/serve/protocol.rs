//! `git-upload-pack` over smart HTTP, stateless (gitprotocol-http, gitprotocol-v2,
//! gitprotocol-pack): ref advertisement, `ls-refs`, and `fetch` with wants, haves,
//! `done`, shallow (`deepen N`) and side-band-64k, answered from a [`History`] held in
//! memory. Negotiation is simple because the server knows every object: a want must be
//! a commit it advertises, the client's haves (and its shallow boundary) only shrink
//! the pack, and the server is "ready" as soon as one have is common.

use std::collections::{HashSet, VecDeque};

use gix_hash::ObjectId;
use gix_object::Kind;

use super::history::{History, MAIN};
use super::pack::{self, Object};
use super::pktline::{self, Packet};

/// `agent=` of the advertisements.
const AGENT: &str = concat!("margo-proxy/", env!("CARGO_PKG_VERSION"));
/// Most `want`/`have`/`shallow` lines read from one request.
const MAX_LINES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Pkt(#[from] pktline::PktError),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("not our ref {0}")]
    NotOurRef(String),
    #[error("{0} is not supported by this server")]
    Unsupported(String),
    #[error("the pack would be {bytes} bytes, more than git.max_response_bytes ({limit}); try a shallow clone (--depth 1)")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("{0}")]
    Pack(String),
}

impl ProtocolError {
    /// The answer git shows as `remote error: …` (an `ERR` pkt-line, status 200).
    pub fn to_err_pkt(&self) -> Vec<u8> {
        let mut out = Vec::new();
        pktline::text(&mut out, &format!("ERR {self}"));
        out
    }
}

/// `GET …/info/refs?service=git-upload-pack` for protocol v0/v1: the service line and
/// every ref with the capabilities.
pub fn advertise_v0(h: &History) -> Vec<u8> {
    let mut out = Vec::new();
    pktline::text(&mut out, "# service=git-upload-pack");
    pktline::flush(&mut out);
    let caps = format!(
        "multi_ack_detailed side-band-64k shallow no-progress symref=HEAD:{MAIN} object-format=sha1 agent={AGENT}"
    );
    let mut refs: Vec<(String, ObjectId)> = Vec::new();
    if let Some(head) = h.head() {
        refs.push(("HEAD".into(), head));
    }
    refs.extend(h.refs.iter().cloned());
    match refs.split_first() {
        None => pktline::line(
            &mut out,
            format!(
                "{} capabilities^{{}}\0{caps}\n",
                ObjectId::null(gix_hash::Kind::Sha1)
            )
            .as_bytes(),
        ),
        Some(((name, id), rest)) => {
            pktline::line(&mut out, format!("{id} {name}\0{caps}\n").as_bytes());
            for (name, id) in rest {
                pktline::text(&mut out, &format!("{id} {name}"));
            }
        }
    }
    pktline::flush(&mut out);
    out
}

/// `GET …/info/refs?service=git-upload-pack` with `Git-Protocol: version=2`.
pub fn advertise_v2() -> Vec<u8> {
    let mut out = Vec::new();
    for l in [
        "version 2",
        &format!("agent={AGENT}"),
        "ls-refs",
        "fetch=shallow",
        "object-format=sha1",
    ] {
        pktline::text(&mut out, l);
    }
    pktline::flush(&mut out);
    out
}

/// A protocol v2 request (`POST …/git-upload-pack`).
pub fn handle_v2(h: &History, body: &[u8], max_bytes: u64) -> Result<Vec<u8>, ProtocolError> {
    let packets = pktline::parse(body)?;
    let mut it = packets.iter();
    let mut command = None;
    for p in it.by_ref() {
        match p {
            Packet::Line(l) => {
                if let Some(c) = l.strip_prefix(b"command=") {
                    command = Some(String::from_utf8_lossy(c).into_owned());
                }
            }
            Packet::Delim | Packet::Flush => break,
            Packet::ResponseEnd => {}
        }
    }
    let args: Vec<&[u8]> = it
        .take_while(|p| !matches!(p, Packet::Flush))
        .filter_map(|p| match p {
            Packet::Line(l) => Some(*l),
            _ => None,
        })
        .take(MAX_LINES)
        .collect();
    match command.as_deref() {
        Some("ls-refs") => Ok(ls_refs(h, &args)),
        Some("fetch") => fetch_v2(h, &args, max_bytes),
        Some(other) => Err(ProtocolError::Unsupported(format!(
            "command `{}`",
            other.chars().take(40).collect::<String>()
        ))),
        None => Err(ProtocolError::Malformed("no command".into())),
    }
}

fn ls_refs(h: &History, args: &[&[u8]]) -> Vec<u8> {
    let symrefs = args.iter().any(|a| *a == b"symrefs");
    let prefixes: Vec<&[u8]> = args
        .iter()
        .filter_map(|a| a.strip_prefix(b"ref-prefix "))
        .collect();
    let wanted =
        |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.as_bytes().starts_with(p));
    let mut out = Vec::new();
    if let Some(head) = h.head() {
        if wanted("HEAD") {
            let target = if symrefs {
                format!(" symref-target:{MAIN}")
            } else {
                String::new()
            };
            pktline::text(&mut out, &format!("{head} HEAD{target}"));
        }
    }
    for (name, id) in &h.refs {
        if wanted(name) {
            pktline::text(&mut out, &format!("{id} {name}"));
        }
    }
    pktline::flush(&mut out);
    out
}

/// What a fetch asks for, in either protocol version.
#[derive(Debug, Default)]
struct Fetch {
    wants: Vec<ObjectId>,
    haves: Vec<ObjectId>,
    shallows: Vec<ObjectId>,
    depth: Option<u32>,
    done: bool,
    sideband: bool,
}

fn oid(line: &[u8], prefix: &[u8]) -> Result<Option<ObjectId>, ProtocolError> {
    let Some(rest) = line.strip_prefix(prefix) else {
        return Ok(None);
    };
    let hex = rest.get(..40).ok_or_else(|| {
        ProtocolError::Malformed(format!(
            "short object id after `{}`",
            String::from_utf8_lossy(prefix)
        ))
    })?;
    ObjectId::from_hex(hex)
        .map(Some)
        .map_err(|_| ProtocolError::Malformed("bad object id".into()))
}

/// Reads one argument line common to both versions into `f`; `false` when unknown.
fn fetch_arg(f: &mut Fetch, line: &[u8]) -> Result<bool, ProtocolError> {
    if let Some(id) = oid(line, b"want ")? {
        f.wants.push(id);
    } else if let Some(id) = oid(line, b"have ")? {
        f.haves.push(id);
    } else if let Some(id) = oid(line, b"shallow ")? {
        f.shallows.push(id);
    } else if let Some(n) = line.strip_prefix(b"deepen ") {
        let n = std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| ProtocolError::Malformed("bad deepen".into()))?;
        f.depth = Some(n);
    } else if line.starts_with(b"deepen-since") || line.starts_with(b"deepen-not") {
        return Err(ProtocolError::Unsupported(
            "--shallow-since/--shallow-exclude (use --depth)".into(),
        ));
    } else if line == b"done" {
        f.done = true;
    } else {
        return Ok(false);
    }
    Ok(true)
}

fn fetch_v2(h: &History, args: &[&[u8]], max_bytes: u64) -> Result<Vec<u8>, ProtocolError> {
    let mut f = Fetch {
        sideband: true,
        ..Fetch::default()
    };
    for a in args {
        if !fetch_arg(&mut f, a)? && a.starts_with(b"filter") {
            return Err(ProtocolError::Unsupported("filter".into()));
        }
    }
    let sel = select(h, &f)?;
    let mut out = Vec::new();
    if !f.done {
        pktline::text(&mut out, "acknowledgments");
        let common: Vec<&ObjectId> = f
            .haves
            .iter()
            .filter(|id| h.commits.contains_key(*id))
            .collect();
        if common.is_empty() {
            pktline::text(&mut out, "NAK");
        }
        for id in common {
            pktline::text(&mut out, &format!("ACK {id}"));
        }
        pktline::text(&mut out, "ready");
        pktline::delim(&mut out);
    }
    if f.depth.is_some() {
        pktline::text(&mut out, "shallow-info");
        shallow_lines(&mut out, &sel);
        pktline::delim(&mut out);
    }
    let pack = sel.pack(h, max_bytes)?;
    pktline::text(&mut out, "packfile");
    pktline::band(&mut out, 1, &pack);
    pktline::flush(&mut out);
    Ok(out)
}

/// A protocol v0 request, stateless (each `POST` holds the wants again).
pub fn handle_v0(h: &History, body: &[u8], max_bytes: u64) -> Result<Vec<u8>, ProtocolError> {
    let packets = pktline::parse(body)?;
    let mut f = Fetch::default();
    let mut it = packets.iter().take(MAX_LINES);
    let mut first = true;
    for p in it.by_ref() {
        match p {
            Packet::Line(l) => {
                if first {
                    first = false;
                    let caps = l.get(46..).unwrap_or_default();
                    f.sideband = caps
                        .split(|b| *b == b' ')
                        .any(|c| c == b"side-band-64k" || c == b"side-band");
                    let l = l.get(..45).unwrap_or(l);
                    fetch_arg(&mut f, l)?;
                } else {
                    fetch_arg(&mut f, l)?;
                }
            }
            _ => break,
        }
    }
    // The haves section ends at the first flush (one round per request).
    let mut haves_section = false;
    for p in it {
        match p {
            Packet::Line(l) => {
                haves_section = true;
                fetch_arg(&mut f, l)?;
                if f.done {
                    break;
                }
            }
            _ => {
                haves_section = true;
                break;
            }
        }
    }
    if f.wants.is_empty() {
        return Ok(Vec::new());
    }
    let sel = select(h, &f)?;
    let mut out = Vec::new();
    if f.depth.is_some() {
        shallow_lines(&mut out, &sel);
        pktline::flush(&mut out);
    }
    let mut last_common = None;
    for id in &f.haves {
        if h.commits.contains_key(id) {
            pktline::text(&mut out, &format!("ACK {id} common"));
            last_common = Some(*id);
        }
    }
    if !f.done {
        if haves_section {
            if let Some(id) = last_common {
                pktline::text(&mut out, &format!("ACK {id} ready"));
            }
            pktline::text(&mut out, "NAK");
        }
        return Ok(out);
    }
    match last_common {
        Some(id) => pktline::text(&mut out, &format!("ACK {id}")),
        None => pktline::text(&mut out, "NAK"),
    }
    let pack = sel.pack(h, max_bytes)?;
    if f.sideband {
        pktline::band(&mut out, 1, &pack);
        pktline::flush(&mut out);
    } else {
        out.extend_from_slice(&pack);
    }
    Ok(out)
}

fn shallow_lines(out: &mut Vec<u8>, sel: &Selection) {
    for id in &sel.shallow {
        pktline::text(out, &format!("shallow {id}"));
    }
    for id in &sel.unshallow {
        pktline::text(out, &format!("unshallow {id}"));
    }
}

/// The commits to send and the client's new shallow boundary.
#[derive(Debug, Default)]
struct Selection {
    commits: Vec<ObjectId>,
    /// Objects the client has (reachable from its common haves, within its boundary).
    had: HashSet<ObjectId>,
    shallow: Vec<ObjectId>,
    unshallow: Vec<ObjectId>,
}

fn select(h: &History, f: &Fetch) -> Result<Selection, ProtocolError> {
    for w in &f.wants {
        if !h.commits.contains_key(w) {
            return Err(ProtocolError::NotOurRef(w.to_string()));
        }
    }
    let client_shallow: HashSet<ObjectId> = f.shallows.iter().copied().collect();
    // What the client has: its common haves and their ancestors, up to its boundary.
    let mut had_commits = HashSet::new();
    for have in &f.haves {
        let mut at = Some(*have);
        while let Some(id) = at {
            let Some(c) = h.commits.get(&id) else { break };
            if !had_commits.insert(id) || client_shallow.contains(&id) {
                break;
            }
            at = c.parent;
        }
    }
    let mut had = HashSet::new();
    for id in &had_commits {
        had.insert(*id);
        if let Some(t) = h.commits.get(id).and_then(|c| h.trees.get(&c.tree)) {
            had.extend(t.objects.iter().map(|o| o.id));
        }
    }
    let mut sel = Selection::default();
    let mut seen = HashSet::new();
    let mut queue: VecDeque<(ObjectId, u32)> = f.wants.iter().map(|w| (*w, 1)).collect();
    while let Some((id, depth)) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        let Some(c) = h.commits.get(&id) else {
            continue;
        };
        match f.depth {
            Some(max) => {
                sel.commits.push(id);
                match c.parent {
                    Some(_) if depth >= max => sel.shallow.push(id),
                    Some(p) => {
                        if client_shallow.contains(&id) {
                            sel.unshallow.push(id);
                        }
                        queue.push_back((p, depth + 1));
                    }
                    None => {}
                }
            }
            None => {
                if had_commits.contains(&id) || client_shallow.contains(&id) {
                    continue;
                }
                sel.commits.push(id);
                if let Some(p) = c.parent {
                    queue.push_back((p, depth + 1));
                }
            }
        }
    }
    sel.had = had;
    Ok(sel)
}

impl Selection {
    /// The pack of the selected commits, their trees and blobs, less what the client
    /// has.
    fn pack(&self, h: &History, max_bytes: u64) -> Result<Vec<u8>, ProtocolError> {
        let mut sent = HashSet::new();
        let mut objects = Vec::new();
        let mut bytes = 0u64;
        for id in &self.commits {
            let Some(c) = h.commits.get(id) else { continue };
            if sent.insert(c.id) {
                objects.push(Object {
                    kind: Kind::Commit,
                    data: &c.data,
                });
                bytes += c.data.len() as u64;
            }
            let Some(tree) = h.trees.get(&c.tree) else {
                continue;
            };
            for o in &tree.objects {
                if !self.had.contains(&o.id) && sent.insert(o.id) {
                    objects.push(Object {
                        kind: o.kind,
                        data: &o.data,
                    });
                    bytes += o.data.len() as u64;
                }
            }
            if bytes > max_bytes {
                return Err(ProtocolError::TooLarge {
                    bytes,
                    limit: max_bytes,
                });
            }
        }
        pack::write(&objects).map_err(|e| ProtocolError::Pack(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::{assemble, build_tree, PackageVersion};
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn history(n: usize) -> History {
        let versions = (0..n)
            .map(|i| PackageVersion {
                version: format!("1.{i}.0").parse().unwrap(),
                manifest: crate::oci::Digest::sha256_of(&[i as u8]),
                created: i as i64,
                tree: Arc::new(
                    build_tree(&[("margo.yaml".into(), Bytes::from(format!("v{i}\n")))]).unwrap(),
                ),
            })
            .collect();
        assemble("apps/x", versions).unwrap()
    }

    fn req(lines: &[&str], end_flush: bool) -> Vec<u8> {
        let mut b = Vec::new();
        for l in lines {
            if *l == "|" {
                pktline::delim(&mut b);
            } else if *l == "-" {
                pktline::flush(&mut b);
            } else {
                pktline::text(&mut b, l);
            }
        }
        if end_flush {
            pktline::flush(&mut b);
        }
        b
    }

    fn pack_count(out: &[u8]) -> u32 {
        let at = out.windows(4).position(|w| w == b"PACK").unwrap();
        u32::from_be_bytes(out[at + 8..at + 12].try_into().unwrap())
    }

    #[test]
    fn ls_refs_lists_head_with_symref_and_tags() {
        let h = history(2);
        let out = handle_v2(
            &h,
            &req(
                &[
                    "command=ls-refs",
                    "|",
                    "symrefs",
                    "ref-prefix HEAD",
                    "ref-prefix refs/tags/",
                ],
                true,
            ),
            1 << 20,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(&format!(
            "{} HEAD symref-target:refs/heads/main",
            h.head().unwrap()
        )));
        assert!(text.contains("refs/tags/1.0.0") && text.contains("refs/tags/1.1.0"));
        assert!(
            !text.contains(" refs/heads/main\n"),
            "no prefix asked for heads"
        );
    }

    #[test]
    fn fetch_sends_only_what_the_client_lacks_and_shallow_cuts() {
        let h = history(3);
        let head = h.head().unwrap();
        let full = handle_v2(
            &h,
            &req(
                &["command=fetch", "|", &format!("want {head}"), "done"],
                true,
            ),
            1 << 20,
        )
        .unwrap();
        assert_eq!(pack_count(&full), 3 * 3); // commit, tree, blob per version
        let old = h.commits[&head].parent.unwrap();
        let inc = handle_v2(
            &h,
            &req(
                &[
                    "command=fetch",
                    "|",
                    &format!("want {head}"),
                    &format!("have {old}"),
                ],
                true,
            ),
            1 << 20,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&inc);
        assert!(text.contains(&format!("ACK {old}")) && text.contains("ready"));
        assert_eq!(pack_count(&inc), 3);
        let shallow = handle_v2(
            &h,
            &req(
                &[
                    "command=fetch",
                    "|",
                    &format!("want {head}"),
                    "deepen 1",
                    "done",
                ],
                true,
            ),
            1 << 20,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&shallow).contains(&format!("shallow {head}")));
        assert_eq!(pack_count(&shallow), 3);
    }

    #[test]
    fn refusals() {
        let h = history(1);
        let unknown = "1111111111111111111111111111111111111111";
        assert_eq!(
            handle_v2(
                &h,
                &req(
                    &["command=fetch", "|", &format!("want {unknown}"), "done"],
                    true
                ),
                1 << 20
            ),
            Err(ProtocolError::NotOurRef(unknown.into()))
        );
        let head = h.head().unwrap();
        assert!(matches!(
            handle_v2(
                &h,
                &req(
                    &["command=fetch", "|", &format!("want {head}"), "done"],
                    true
                ),
                10
            ),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            handle_v2(&h, &req(&["command=push"], true), 1 << 20),
            Err(ProtocolError::Unsupported(_))
        ));
        assert!(handle_v2(&h, b"00zz", 1 << 20).is_err());
        assert!(handle_v0(&h, &req(&["want 12"], true), 1 << 20).is_err());
        let e = ProtocolError::NotOurRef("x".into()).to_err_pkt();
        assert_eq!(&e[4..], b"ERR not our ref x\n");
    }

    #[test]
    fn v0_advertisement_and_stateless_rounds() {
        let h = history(2);
        let head = h.head().unwrap();
        let adv = advertise_v0(&h);
        assert!(String::from_utf8_lossy(&adv)
            .contains(&format!("{head} HEAD\0multi_ack_detailed side-band-64k")));
        let empty = advertise_v0(&History::default());
        assert!(String::from_utf8_lossy(&empty).contains("capabilities^{}"));
        let old = h.commits[&head].parent.unwrap();
        let round = handle_v0(
            &h,
            &req(
                &[
                    &format!("want {head} side-band-64k"),
                    "-",
                    &format!("have {old}"),
                ],
                true,
            ),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&round),
            format!("0038ACK {old} common\n0037ACK {old} ready\n0008NAK\n")
        );
        let last = handle_v0(
            &h,
            &req(
                &[
                    &format!("want {head} side-band-64k"),
                    "-",
                    &format!("have {old}"),
                    "done",
                ],
                false,
            ),
            1 << 20,
        )
        .unwrap();
        assert_eq!(pack_count(&last), 3);
        let deep = handle_v0(
            &h,
            &req(
                &[&format!("want {head} side-band-64k"), "deepen 1", "-"],
                false,
            ),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&deep),
            format!("0035shallow {head}\n0000")
        );
    }
}
