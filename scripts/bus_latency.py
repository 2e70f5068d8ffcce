#!/usr/bin/env python3
"""Invalidation latency: push a new manifest under one tag at PUSH (a replica or the
upstream itself), then poll every OBSERVER replica with HEAD until it answers the new
digest; the time from the push's 201 to each replica's first new answer, over N pushes.
Keep-alive connections, so one poll costs a few hundred microseconds.

usage: bus_latency.py PUSH_HOSTPORT OBSERVER_HOSTPORT[,...] N LABEL
"""
import hashlib, http.client, json, statistics, sys, time

push, observers, n, label = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
REPO, TAG = "bench/bus", "moving"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"

def conn(hostport):
    host, port = hostport.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)

def blob(c, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    c.request("POST", f"/v2/{REPO}/blobs/uploads/")
    r = c.getresponse(); r.read()
    loc = r.getheader("Location")
    loc = loc[loc.index("/v2/"):] if "/v2/" in loc else loc
    sep = "&" if "?" in loc else "?"
    c.request("PUT", f"{loc}{sep}digest={digest}", body=data, headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
    return digest

def manifest(layer, i):
    return json.dumps({
        "schemaVersion": 2, "mediaType": ACCEPT,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
        "annotations": {"n": str(i)},
    }).encode()

def head(c):
    c.request("HEAD", f"/v2/{REPO}/manifests/{TAG}", headers={"Accept": ACCEPT})
    r = c.getresponse(); r.read()
    return r.getheader("Docker-Content-Digest")

p = conn(push)
blob(p, b"{}")
layer = blob(p, b"hello")
obs = [conn(o) for o in observers]
lat = []
for i in range(n + 1):
    body = manifest(layer, time.time_ns() + i)
    want = "sha256:" + hashlib.sha256(body).hexdigest()
    p.request("PUT", f"/v2/{REPO}/manifests/{TAG}", body=body, headers={"Content-Type": ACCEPT})
    r = p.getresponse(); r.read()
    assert r.status == 201, r.status
    t0 = time.perf_counter()
    pending = set(range(len(obs)))
    while pending:
        for k in list(pending):
            if head(obs[k]) == want:
                pending.discard(k)
                if i > 0:  # push 0 only warms every replica's cache
                    lat.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - t0 > 30:
            sys.exit(f"{label}: replicas did not converge within 30 s")
lat.sort()
q = lambda f: lat[min(len(lat) - 1, round((len(lat) - 1) * f))]
print(f"| {label} | {len(lat)} | {statistics.median(lat):.1f} | {q(0.9):.1f} | {q(0.99):.1f} | {lat[-1]:.1f} |")
