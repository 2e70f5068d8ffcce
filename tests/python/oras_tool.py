"""Drive the `oras` Python package (a real OCI client) from the Rust integration tests.

push: uploads files as layers and a manifest with the given artifactType through oras'
own blob and manifest calls, and prints {"status", "body", "digest"} as JSON.
pull: pulls a reference with oras' high-level pull and prints the files written.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

import oras.client
import oras.container
import oras.defaults

EMPTY = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}


def client(registry, args):
    c = oras.client.OrasClient(hostname=registry, insecure=True)
    if args.username:
        c.login(username=args.username, password=args.password, hostname=registry, insecure=True)
    return c


def push(args):
    c = client(args.registry, args)
    container = oras.container.Container(f"{args.registry}/{args.repo}:{args.tag}")
    layers = []
    for spec in args.file:
        path, media_type, *rest = spec.split("|")
        title = rest[0] if rest else os.path.basename(path)
        with open(path, "rb") as f:
            data = f.read()
        layer = {
            "mediaType": media_type,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "annotations": {"org.opencontainers.image.title": title},
        }
        for kv in args.layer_annotation or []:
            k, v = kv.split("=", 1)
            layer["annotations"][k] = v
        r = c.upload_blob(path, container, layer)
        if r.status_code not in (200, 201, 202):
            print(json.dumps({"status": r.status_code, "body": r.text, "stage": "blob"}))
            return
        layers.append(layer)
    with tempfile.TemporaryDirectory() as tmp:
        empty_path = os.path.join(tmp, "empty.json")
        with open(empty_path, "w") as f:
            f.write("{}")
        c.upload_blob(empty_path, container, dict(EMPTY))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": args.artifact_type,
        "config": dict(EMPTY),
        "layers": layers,
    }
    r = c.upload_manifest(manifest, container)
    print(json.dumps({"status": r.status_code, "body": r.text,
                      "digest": r.headers.get("Docker-Content-Digest")}))


def pull(args):
    c = client(args.registry, args)
    files = c.pull(target=f"{args.registry}/{args.repo}:{args.tag}", outdir=args.outdir)
    manifest = c.get_manifest(f"{args.registry}/{args.repo}:{args.tag}")
    print(json.dumps({"files": sorted(files), "artifactType": manifest.get("artifactType")}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("push", "pull"):
        s = sub.add_parser(name)
        s.add_argument("--registry", required=True)
        s.add_argument("--repo", required=True)
        s.add_argument("--tag", required=True)
        s.add_argument("--username")
        s.add_argument("--password")
        if name == "push":
            s.add_argument("--artifact-type", required=True)
            s.add_argument("--file", action="append", required=True, help="path|mediaType[|title]")
            s.add_argument("--layer-annotation", action="append")
        else:
            s.add_argument("--outdir", required=True)
    args = p.parse_args()
    {"push": push, "pull": pull}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
