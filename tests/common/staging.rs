//! Helpers for the staging tests: a proxy started with extra environment (the
//! fault-injection variable) and views of a repository as clients see it.

use std::process::Command;

use super::{http, Proc, Proxy};

/// [`Proxy::start`] with `env` set for the proxy process (e.g. `MARGO_PROXY_FAILPOINT`).
/// `{listen}` is the first listener; `{plain}` a second, plain-HTTP one.
pub fn proxy_with_env(config: &str, env: &[(&str, &str)]) -> (Proxy, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("proxy.yaml");
    let (proc, ports) = Proc::start("margo-proxy", 2, |ports| {
        let text = config
            .replace("{listen}", &format!("127.0.0.1:{}", ports[0]))
            .replace("{plain}", &format!("127.0.0.1:{}", ports[1]));
        std::fs::write(&config_path, text).expect("write proxy config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
        cmd.arg("serve").arg("--config").arg(&config_path);
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    });
    (
        Proxy {
            port: ports[0],
            admin_port: 0,
            proc,
            config_path,
            _dir: dir,
        },
        ports[1],
    )
}

/// What a client sees of one repository at `base` (the proxy or the upstream).
#[derive(Debug, PartialEq, Eq)]
pub struct View {
    pub in_catalog: bool,
    /// `None`: tags/list answered 404 (unknown repository).
    pub tags: Option<Vec<String>>,
    pub manifest_status: u16,
    pub blob_statuses: Vec<u16>,
}

pub fn catalog(base: &str) -> Vec<String> {
    let v: serde_json::Value = http()
        .get(format!("{base}/v2/_catalog?n=1000"))
        .send()
        .expect("catalog")
        .json()
        .expect("catalog json");
    v["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn view(base: &str, repo: &str, tag: &str, blobs: &[String]) -> View {
    let c = http();
    let tags = c
        .get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .expect("tags list");
    let tags = match tags.status().as_u16() {
        404 => None,
        200 => {
            let v: serde_json::Value = tags.json().expect("tags json");
            Some(
                v["tags"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        }
        s => panic!("tags list of {repo} at {base}: {s}"),
    };
    let manifest_status = c
        .head(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .expect("manifest HEAD")
        .status()
        .as_u16();
    let blob_statuses = blobs
        .iter()
        .map(|d| {
            c.head(format!("{base}/v2/{repo}/blobs/{d}"))
                .send()
                .expect("blob HEAD")
                .status()
                .as_u16()
        })
        .collect();
    View {
        in_catalog: catalog(base).iter().any(|r| r == repo),
        tags,
        manifest_status,
        blob_statuses,
    }
}

/// The view of a repository that was never pushed to.
pub fn untouched(blobs: usize) -> View {
    View {
        in_catalog: false,
        tags: None,
        manifest_status: 404,
        blob_statuses: vec![404; blobs],
    }
}
