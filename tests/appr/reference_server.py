"""Runs the appr 0.7.4 reference server (`appr run-server`'s Flask app) on Python 3
with the redis backend, for the side-by-side test in tests/appr.rs.

Usage: reference_server.py PORT REDIS_PORT

Shims: each adapts a Python 2 idiom the code relies on, never what it does.
- `dict.iteritems()` and list-valued `dict.keys()` (models/kv/models_index_base.py,
  package_kv_base.py): the index documents are loaded with a dict subclass that
  behaves like Python 2's dict.
- `str` was bytes and text at once: redis answers are decoded (`decode_responses`), so
  the base64 blob the server stores comes back as the text it stored.
- `redis_client` is made for the port the test gives (the module hard-codes 6379).
- `gevent.wsgi` (gone from gevent): not needed, the Flask app is served by Werkzeug's
  threaded server instead of `appr run-server`'s GeventApp wrapper.
Left as they are (the test records them): `ValueError.message` in
PackageBase.get_release (a malformed release query answers 500), a push without
`release` or with a blob that is not a tar.gz (500).
"""
import json
import os
import sys

port, redis_port = int(sys.argv[1]), int(sys.argv[2])
os.environ["APPR_DB_CLASS"] = "redis"

import redis  # noqa: E402


class Py2Dict(dict):
    """Python 2's dict: `keys()`/`values()`/`items()` are lists (list_packages
    serializes `keys()`), and the `iter*` forms exist."""

    def keys(self):
        return list(dict.keys(self))

    def values(self):
        return list(dict.values(self))

    def items(self):
        return list(dict.items(self))

    def iteritems(self):
        return iter(self.items())

    def itervalues(self):
        return iter(self.values())


import appr.models.kv.redis as appr_redis  # noqa: E402

appr_redis.redis_client = redis.StrictRedis(
    host="127.0.0.1", port=redis_port, db=0, decode_responses=True)
import appr.models.kv.redis.models_index as mi  # noqa: E402

mi.redis_client = appr_redis.redis_client
import appr.models.kv.models_index_base as mib  # noqa: E402

_orig_fetch = mib.ModelsIndexBase._fetch_data


def _fetch_data(self, key):
    return json.loads(self._fetch_raw_data(key), object_hook=Py2Dict)


mib.ModelsIndexBase._fetch_data = _fetch_data
_orig_packages_data = mib.ModelsIndexBase.packages_data.fget


def _packages_data(self):
    # The empty index is made as a plain dict literal: the same Python 2 dict.
    d = _orig_packages_data(self)
    if not isinstance(d, Py2Dict):
        self._packages = d = json.loads(json.dumps(d), object_hook=Py2Dict)
    return d


mib.ModelsIndexBase.packages_data = property(_packages_data)

from appr.api.app import create_app  # noqa: E402
from werkzeug.serving import run_simple  # noqa: E402

print("listening", flush=True)
run_simple("127.0.0.1", port, create_app(), threaded=True)
