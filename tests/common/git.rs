//! Git repositories for the Git upstream tests: built with the real `git` CLI
//! (Debian's), served over smart HTTP by `git http-backend` behind a tiny CGI host
//! (`tests/python/git_http.py`), on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{free_port, repo_root, Proc};

/// Runs `git` in `dir` with no user or system config and fixed identities and dates,
/// so that the same commands give the same objects.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e} (Debian's git is required)"));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
    c
}

/// A work tree (`work/`) pushing to a bare repository (`<root>/<name>.git`).
pub struct Repo {
    pub work: PathBuf,
    pub bare: PathBuf,
}

impl Repo {
    pub fn new(root: &Path, name: &str) -> Repo {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(&work).unwrap();
        git(
            root,
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { work, bare }
    }

    /// Commits the work tree and tags it (annotated when `annotated`), then pushes.
    pub fn commit_and_tag(&self, tag: &str, annotated: bool) {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", tag]);
        if annotated {
            git(&self.work, &["tag", "-a", "-m", tag, tag]);
        } else {
            git(&self.work, &["tag", tag]);
        }
        git(&self.work, &["push", "-q", "origin", "main", "--tags"]);
    }
}

/// The example Helm app (`examples/packages/line-monitor`) at `version`, into `dir`.
pub fn write_app(dir: &Path, version: &str, metadata_version: &str) {
    let src = repo_root().join("examples/packages/line-monitor");
    std::fs::create_dir_all(dir.join("resources")).unwrap();
    let yaml = std::fs::read_to_string(src.join("margo.yaml")).unwrap();
    assert!(yaml.contains("  version: 1.4.0\n"));
    std::fs::write(
        dir.join("margo.yaml"),
        yaml.replace(
            "  version: 1.4.0\n",
            &format!("  version: {metadata_version}\n"),
        ),
    )
    .unwrap();
    for f in ["icon.png", "description.md", "license.txt"] {
        std::fs::copy(src.join("resources").join(f), dir.join("resources").join(f)).unwrap();
    }
    std::fs::write(
        dir.join("resources/release-notes.md"),
        format!("# {version}\n\nRelease notes of {version}.\n"),
    )
    .unwrap();
}

/// `git http-backend` over HTTP(S) for the bare repositories under `root`.
pub struct GitHttp {
    pub port: u16,
    pub tls: bool,
    _proc: Proc,
}

impl GitHttp {
    pub fn start(root: &Path, tls: bool, token: Option<&str>) -> GitHttp {
        let port = free_port();
        let mut cmd = Command::new(repo_root().join(".venv/bin/python"));
        cmd.arg(repo_root().join("tests/python/git_http.py")).args([
            "--root",
            root.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ]);
        if tls {
            let t = repo_root().join("tests/fixtures/tls");
            cmd.arg("--cert").arg(t.join("server.crt"));
            cmd.arg("--key").arg(t.join("server.key"));
        }
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        GitHttp {
            port,
            tls,
            _proc: Proc::spawn_public(cmd, port, "git http-backend host"),
        }
    }

    pub fn url(&self, repo: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{repo}.git", self.port)
    }
}
