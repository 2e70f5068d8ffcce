"""Attach an artifact (SBOM, signature envelope) to a subject manifest with the `oras`
Python package: its own blob upload and manifest upload calls, the manifest carrying
`subject` (OCI image spec v1.1 "artifact usage"). Prints {"status", "digest",
"oci_subject"} as JSON.
"""
import argparse
import hashlib
import json
import os
import tempfile

import oras.client
import oras.container

EMPTY = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--subject-digest", required=True)
    p.add_argument("--subject-size", type=int, required=True)
    p.add_argument("--artifact-type", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--media-type", required=True)
    a = p.parse_args()
    c = oras.client.OrasClient(hostname=a.registry, insecure=True)
    with open(a.file, "rb") as f:
        data = f.read()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    container = oras.container.Container(f"{a.registry}/{a.repo}@{digest}")
    layer = {"mediaType": a.media_type, "digest": digest, "size": len(data),
             "annotations": {"org.opencontainers.image.title": os.path.basename(a.file)}}
    r = c.upload_blob(a.file, container, layer)
    assert r.status_code in (200, 201, 202), r.text
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty.json")
        with open(empty, "w") as f:
            f.write("{}")
        c.upload_blob(empty, container, dict(EMPTY))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": a.artifact_type,
        "config": dict(EMPTY),
        "layers": [layer],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": a.subject_digest, "size": a.subject_size},
    }
    body = json.dumps(manifest).encode()
    mdigest = "sha256:" + hashlib.sha256(body).hexdigest()
    target = oras.container.Container(f"{a.registry}/{a.repo}@{mdigest}")
    r = c.upload_manifest(manifest, target)
    print(json.dumps({"status": r.status_code, "digest": r.headers.get("Docker-Content-Digest"),
                      "oci_subject": r.headers.get("OCI-Subject"), "body": r.text}))


if __name__ == "__main__":
    main()
