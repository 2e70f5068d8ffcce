"""The same scripted App Registry calls against the appr 0.7.4 reference server and
margo-proxy (tests/appr.rs starts both): status codes, JSON key sets and value types
must agree for every call (ids, digests and dates are compared by type only). Where
the reference itself is broken on Python 3 the recorded reason replaces the
comparison. Then `appr.client.ApprClient` drives margo-proxy (push, pull, show, list,
channels), and concurrent channel updates must all survive.

Usage: side_by_side.py REFERENCE_URL PROXY_URL
       side_by_side.py login PROXY_URL USER PASSWORD NAMESPACE
Prints one line per call and exits 1 when any disagrees.
"""
import base64
import gzip
import io
import json
import os
import sys
import tarfile
import tempfile
import threading

import requests

REF, PROXY = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
if REF == "login":
    REF = None
API = "/cnr/api/v1/packages"


def tgz(files):
    """The same files give the same bytes (gzip and tar times fixed): runs compare them."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


BLOB = tgz({"manifest.yaml": b"name: ns/p\nversion: 1.0.0\n", "README.md": b"hello\n"})
BLOB2 = tgz({"manifest.yaml": b"name: ns/p\nversion: 1.1.0\n"})
B64, B64_2 = base64.b64encode(BLOB).decode(), base64.b64encode(BLOB2).decode()

# (name, method, path, json body, reason the reference cannot be compared or None)
BROKEN_E_MESSAGE = "reference: PackageBase.get_release reads ValueError.message (Python 2 only): 500"
SCRIPT = [
    ("version", "GET", "/cnr/version", None, None),
    ("discovery", "GET", "/.well-known/app-registry-uri.json", None,
     "reference: has no discovery document (404); margo-proxy answers {uri}"),
    ("login without a token endpoint", "POST", API.replace("packages", "users/login"),
     {"user": {"username": "u", "password": "p"}},
     "reference: has no login route (404, Quay's API); margo-proxy: 501 without auth.token_endpoint"),
    ("list empty", "GET", API, None, None),
    ("show missing package", "GET", API + "/ns/p", None, None),
    ("push", "POST", API + "/ns/p", {"release": "1.0.0", "media_type": "kpm", "blob": B64}, None),
    ("push again", "POST", API + "/ns/p", {"release": "1.0.0", "media_type": "kpm", "blob": B64}, None),
    ("push forced", "POST", API + "/ns/p?force=true", {"release": "1.0.0", "media_type": "kpm", "blob": B64}, None),
    ("push second release", "POST", API + "/ns/p", {"release": "1.1.0", "media_type": "kpm", "blob": B64_2}, None),
    ("push bad release", "POST", API + "/ns/p", {"release": "one", "media_type": "kpm", "blob": B64}, None),
    ("push without release", "POST", API + "/ns/p", {"media_type": "kpm", "blob": B64},
     "reference: values['release'] raises KeyError: 500; margo-proxy: 400 invalid-usage"),
    ("push a blob that is not a tar.gz", "POST", API + "/ns/p",
     {"release": "2.0.0", "media_type": "kpm", "blob": base64.b64encode(b"nope").decode()},
     "reference: tarfile raises ReadError: 500; margo-proxy: 400 invalid-usage"),
    ("list", "GET", API, None, None),
    ("list namespace", "GET", API + "?namespace=ns", None, None),
    ("list other namespace", "GET", API + "?namespace=zz", None, None),
    ("list media type", "GET", API + "?media_type=kpm", None, None),
    ("list query", "GET", API + "?query=p", None, None),
    ("search", "GET", API + "/search?q=ns", None, None),
    ("search nothing", "GET", API + "/search?q=zzz", None, None),
    ("releases", "GET", API + "/ns/p", None, None),
    ("releases of a media type", "GET", API + "/ns/p?media_type=kpm", None, None),
    ("manifests of a release", "GET", API + "/ns/p/1.0.0", None, None),
    ("manifests of a missing release", "GET", API + "/ns/p/9.9.9", None, None),
    ("show", "GET", API + "/ns/p/1.0.0/kpm", None, None),
    ("show default", "GET", API + "/ns/p/default/kpm", None, None),
    ("show range", "GET", API + "/ns/p/%3E%3D1.0.0,%3C1.1.0/kpm", None, None),
    ("show missing release", "GET", API + "/ns/p/9.9.9/kpm", None, None),
    ("show other media type", "GET", API + "/ns/p/1.0.0/helm", None, None),
    ("show malformed release query", "GET", API + "/ns/p/@@/kpm", None, BROKEN_E_MESSAGE),
    ("pull", "GET", API + "/ns/p/1.0.0/kpm/pull", None, None),
    ("pull json", "GET", API + "/ns/p/1.0.0/kpm/pull/json", None, None),
    ("pull format=json", "GET", API + "/ns/p/1.0.0/kpm/pull?format=json", None, None),
    ("pull missing", "GET", API + "/ns/q/1.0.0/kpm/pull", None, None),
    ("blob", "GET", API + "/ns/p/blobs/sha256/{digest}", None, None),
    ("blob json", "GET", API + "/ns/p/blobs/sha256/{digest}/json", None, None),
    ("blob absent", "GET", API + "/ns/p/blobs/sha256/" + "0" * 64, None, None),
    ("channels none", "GET", API + "/ns/p/channels", None, None),
    ("channels of a missing package", "GET", API + "/ns/q/channels", None, None),
    ("channel missing", "GET", API + "/ns/p/channels/stable", None, None),
    ("channel add", "POST", API + "/ns/p/channels/stable/1.0.0", None, None),
    ("channel add second", "POST", API + "/ns/p/channels/stable/1.1.0", None, None),
    ("channel add missing release", "POST", API + "/ns/p/channels/stable/9.9.9", None, None),
    ("channel add to a missing package", "POST", API + "/ns/q/channels/stable/1.0.0", None, None),
    ("channel add malformed release", "POST", API + "/ns/p/channels/stable/abc", None, BROKEN_E_MESSAGE),
    ("channel show", "GET", API + "/ns/p/channels/stable", None, None),
    ("channels", "GET", API + "/ns/p/channels", None, None),
    ("show with channel", "GET", API + "/ns/p/1.1.0/kpm", None, None),
    ("channel remove release", "DELETE", API + "/ns/p/channels/stable/1.1.0", None, None),
    ("channel remove from a missing channel", "DELETE", API + "/ns/p/channels/beta/1.0.0", None, None),
    ("channel remove a missing release", "DELETE", API + "/ns/p/channels/stable/9.9.9", None, None),
    ("channel delete", "DELETE", API + "/ns/p/channels/stable", None, None),
    ("channel delete again", "DELETE", API + "/ns/p/channels/stable", None, None),
    ("delete", "DELETE", API + "/ns/p/1.1.0/kpm", None, None),
    ("delete again", "DELETE", API + "/ns/p/1.1.0/kpm", None, None),
    ("delete other media type", "DELETE", API + "/ns/p/1.0.0/helm", None, None),
    ("releases after delete", "GET", API + "/ns/p", None, None),
    ("wrong method", "PUT", API + "/ns/p", None, None),
    ("unknown route", "GET", "/cnr/api/v1/nothing", None, None),
]

IGNORED_VALUES = {"created_at", "digest", "blob", "size", "filename", "uri"}


def shape(v, key=None):
    """Keys and value types, values only where they are not ids/dates/sizes."""
    if isinstance(v, dict):
        return {k: shape(x, k) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [shape(x, key) for x in v]
    if key in IGNORED_VALUES or key == "message":
        return type(v).__name__
    return type(v).__name__


def call(base, method, path, body, state):
    path = path.replace("{digest}", state.get("digest", "none"))
    r = requests.request(method, base + path, data=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"}, timeout=30)
    try:
        j = r.json()
    except ValueError:
        j = None
    if path.endswith("/ns/p/1.0.0/kpm") and method == "GET" and r.status_code == 200:
        state["digest"] = j["content"]["digest"]
    return r, j


def compare():
    ref_state, proxy_state = {}, {}
    failures = 0
    for name, method, path, body, broken in SCRIPT:
        rr, rj = call(REF, method, path, body, ref_state)
        pr, pj = call(PROXY, method, path, body, proxy_state)
        if broken:
            print("RECORDED %-40s reference %s, margo-proxy %s: %s" % (name, rr.status_code, pr.status_code, broken))
            continue
        problems = []
        if rr.status_code != pr.status_code:
            problems.append("status %s vs %s" % (rr.status_code, pr.status_code))
        if rj is not None or pj is not None:
            if rj is None and rr.status_code in (404, 405):
                pass  # Flask's HTML pages for unknown routes and methods: status only.
            elif shape(rj) != shape(pj):
                problems.append("shape %s vs %s" % (json.dumps(shape(rj)), json.dumps(shape(pj))))
            elif isinstance(rj, dict) and "code" in rj and rj.get("code") != pj.get("code"):
                problems.append("code %s vs %s" % (rj.get("code"), pj.get("code")))
        if path.endswith("/pull") or "/blobs/" in path and not path.endswith("/json"):
            if rr.status_code == 200:
                if rr.content != pr.content or pr.content != BLOB:
                    problems.append("pulled bytes differ")
                if rr.headers.get("Content-Disposition") != pr.headers.get("Content-Disposition") and "/blobs/" not in path:
                    problems.append("Content-Disposition %s vs %s" % (
                        rr.headers.get("Content-Disposition"), pr.headers.get("Content-Disposition")))
        if problems:
            failures += 1
            print("DIFFER   %-40s %s\n   reference: %s\n   proxy:     %s" % (
                name, "; ".join(problems), rr.text[:400], pr.text[:400]))
        else:
            print("SAME     %-40s %s" % (name, rr.status_code))
    return failures


def client():
    """appr's own client library against margo-proxy."""
    os.environ["HOME"] = tempfile.mkdtemp()
    from appr.client import ApprClient
    c = ApprClient(PROXY)
    assert c.version() == {"appr-api": "0.7.4"}, c.version()
    blob = tgz({"manifest.yaml": b"name: cli/app\n"})
    b64 = base64.b64encode(blob).decode()
    assert c.push("cli/app", {"release": "0.1.0", "media_type": "kpm", "blob": b64}) == {"status": "ok"}
    assert c.push("cli/app", {"release": "0.2.0", "media_type": "kpm", "blob": b64}, force=True) == {"status": "ok"}
    # show_package without a media type asks for the release's manifests (a list).
    shown = c.show_package("cli/app", "0.1.0", "kpm")
    assert len(shown) == 1 and shown[0]["release"] == "0.1.0" and shown[0]["package"] == "cli/app", shown
    shown = shown[0]
    listed = c.list_packages({"namespace": "cli"})
    assert [p["name"] for p in listed] == ["cli/app"] and listed[0]["default"] == "0.2.0", listed
    assert c.pull("cli/app", {"key": "version", "value": "0.1.0"}, "kpm") == blob
    assert c.pull_json("cli/app", {"key": "version", "value": "0.1.0"}, "kpm")["blob"] == b64
    ch = c.create_channel_release("cli/app", "stable", "0.1.0")
    assert ch == {"releases": ["0.1.0"], "name": "stable", "current": "0.1.0"}, ch
    assert c.show_channels("cli/app")[0]["name"] == "stable"
    assert c.show_channels("cli/app", "stable")["current"] == "0.1.0"
    assert c.pull("cli/app", {"key": "channel", "value": "stable"}, "kpm") == blob
    digest = shown["content"]["digest"]
    assert c.pull("cli/app", {"key": "digest", "value": digest}, "kpm") == blob
    assert c.delete_channel_release("cli/app", "stable", "0.1.0")["status"] == "deleted"
    assert c.show_channels("cli/app") == []
    assert c.delete_package("cli/app", "0.2.0", "kpm")["status"] == "deleted"
    try:
        c.show_package("cli/app", "0.2.0", "kpm")
        raise AssertionError("deleted release still shown")
    except requests.HTTPError as e:
        assert e.response.status_code == 404
    print("CLIENT   appr.client.ApprClient: version, push, push --force, show, list, pull (version, channel, digest), pull_json, channels, delete: ok")


def concurrent_channels():
    requests.post(PROXY + API + "/cc/pkg", data=json.dumps({"release": "1.0.0", "blob": B64}))
    names = ["c%d" % i for i in range(6)]
    errors = []

    def add(n):
        r = requests.post(PROXY + API + "/cc/pkg/channels/%s/1.0.0" % n)
        if r.status_code != 200:
            errors.append((n, r.status_code, r.text))

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    [t.start() for t in threads]
    [t.join() for t in threads]
    got = sorted(c["name"] for c in requests.get(PROXY + API + "/cc/pkg/channels").json())
    assert not errors, errors
    assert got == names, "lost channel updates: %s" % got
    print("CONCURRENT 6 channel adds at once: all kept")


def main():
    if sys.argv[1] == "login":
        login_main(*sys.argv[2:6])
        return
    failures = compare()
    client()
    concurrent_channels()
    if failures:
        print("%d calls differ" % failures)
        sys.exit(1)
    print("ALL SAME")


def login_main(proxy, user, password, namespace):
    """`appr login` through margo-proxy's token bridge, then a push and a pull with the
    token appr stored; prints what happened, one word per step."""
    os.environ["HOME"] = tempfile.mkdtemp()
    from appr.client import ApprClient
    c = ApprClient(proxy)
    result = c.login(user, password)
    assert result["token"].startswith("Bearer "), "no token"
    blob = tgz({"manifest.yaml": b"name: x\n"})
    try:
        c.push(namespace + "/app", {"release": "1.0.0", "media_type": "kpm",
                                   "blob": base64.b64encode(blob).decode()})
        print("push ok")
    except requests.HTTPError as e:
        print("push %d %s" % (e.response.status_code, e.response.json().get("code")))
    try:
        assert c.pull(namespace + "/app", {"key": "version", "value": "1.0.0"}, "kpm") == blob
        print("pull ok")
    except requests.HTTPError as e:
        print("pull %d" % e.response.status_code)


if __name__ == "__main__":
    main()
