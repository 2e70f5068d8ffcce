//! Puts the git commit of the build into `MARGO_PROXY_GIT_SHA` (the `build_info` metric,
//! `--version`). Uses the `git` command rather than `vergen`: one value is needed, and
//! vergen would bring a git library into every build for it. Without git or a `.git`
//! (a source tarball), the value is `unknown`, or whatever `MARGO_PROXY_GIT_SHA` says in
//! the build's environment (packagers set it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=MARGO_PROXY_GIT_SHA");
    println!("cargo:rerun-if-changed=build.rs");
    let sha = std::env::var("MARGO_PROXY_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: the HEAD file (a checkout) and the branch it names (a commit).
    if let Some(dir) = git(&["rev-parse", "--path-format=absolute", "--git-dir"]) {
        let head = Path::new(&dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let (Ok(text), Some(common)) = (
            std::fs::read_to_string(&head),
            git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
        ) {
            if let Some(reference) = text.trim().strip_prefix("ref: ") {
                let common = Path::new(&common);
                for f in [common.join(reference), common.join("packed-refs")] {
                    if f.exists() {
                        println!("cargo:rerun-if-changed={}", f.display());
                    }
                }
            }
        }
    }
    println!("cargo:rustc-env=MARGO_PROXY_GIT_SHA={sha}");
}
