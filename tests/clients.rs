//! Real OCI clients through the proxy: skopeo, the `oras` Python package and the
//! `oci-client` crate, each pushing and pulling against a real docker-registry behind it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::process::Command;

use common::*;

/// Writes a one-layer OCI image layout (what `skopeo copy oci:` reads).
fn write_oci_layout(dir: &std::path::Path, tag: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256(data);
        std::fs::write(blobs.join(&d[7..]), data).unwrap();
        d
    };
    // A gzip'd tar with one file, built in memory.
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let content = b"hello from margo-proxy\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &content[..]).unwrap();
        b.finish().unwrap();
    }
    let diff_id = sha256(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let layer_d = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {}
    }))
    .unwrap();
    let config_d = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer.len()}]
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}}]
        }))
        .unwrap(),
    )
    .unwrap();
    manifest_d
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is required (scripts/setup installs it)")
}

#[test]
fn skopeo_copies_an_image_in_and_out_with_identical_digests() {
    let reg = Registry::start();
    let proxy = Proxy::in_front_of(&reg.url());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let manifest_digest = write_oci_layout(&src, "v1");
    let dest = format!("docker://{}/skopeo/hello:v1", proxy.host());
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &dest,
    ]);
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The digest the proxy reports is the one of the manifest we wrote.
    let out = skopeo(&["inspect", "--tls-verify=false", "--raw", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), manifest_digest);
    // And the upstream holds the same thing.
    let direct = format!("docker://127.0.0.1:{}/skopeo/hello:v1", reg.port);
    let out = skopeo(&["inspect", "--tls-verify=false", "--raw", &direct]);
    assert_eq!(sha256(&out.stdout), manifest_digest);
    // Pull back out through the proxy into a fresh layout.
    let back = work.path().join("back");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert!(
        out.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], manifest_digest.as_str());
}

fn oras(args: &[&str]) -> serde_json::Value {
    let py = repo_root().join(".venv/bin/python");
    let out = Command::new(&py)
        .arg(repo_root().join("tests/python/oras_tool.py"))
        .args(args)
        .output()
        .expect("the oras venv is required (scripts/setup creates it)");
    assert!(
        out.status.success(),
        "oras_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "oras_tool output {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn oras_pushes_and_pulls_an_artifact_with_artifact_type() {
    let reg = Registry::start();
    let proxy = Proxy::in_front_of(&reg.url());
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("notes.txt");
    std::fs::write(&file, "release notes\n").unwrap();
    let host = proxy.host();
    let pushed = oras(&[
        "push",
        "--registry",
        &host,
        "--repo",
        "artifacts/notes",
        "--tag",
        "1.0.0",
        "--artifact-type",
        "application/vnd.example.notes.v1",
        "--file",
        &format!("{}|text/plain|notes.txt", file.display()),
    ]);
    assert_eq!(pushed["status"], 201, "{pushed}");
    let out = work.path().join("out");
    let pulled = oras(&[
        "pull",
        "--registry",
        &host,
        "--repo",
        "artifacts/notes",
        "--tag",
        "1.0.0",
        "--outdir",
        &out.to_string_lossy(),
    ]);
    assert_eq!(pulled["artifactType"], "application/vnd.example.notes.v1");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "release notes\n"
    );
}

#[test]
fn oci_client_crate_pushes_and_pulls() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    let reg = Registry::start();
    let proxy = Proxy::in_front_of(&reg.url());
    margo_proxy::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let reference: Reference = format!("{}/crate/test:0.1.0", proxy.host())
            .parse()
            .unwrap();
        let layer = ImageLayer::new(
            b"layer bytes".to_vec(),
            "application/vnd.example.data".into(),
            None,
        );
        let config = Config::new(
            b"{}".to_vec(),
            "application/vnd.oci.empty.v1+json".into(),
            None,
        );
        client
            .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
            .await
            .expect("push through the proxy");
        let image = client
            .pull(
                &reference,
                &RegistryAuth::Anonymous,
                vec!["application/vnd.example.data"],
            )
            .await
            .expect("pull through the proxy");
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].data.as_ref(), b"layer bytes");
        let tags = client
            .list_tags(&reference, &RegistryAuth::Anonymous, None, None)
            .await
            .expect("tags");
        assert_eq!(tags.tags, vec!["0.1.0".to_string()]);
    });
}
