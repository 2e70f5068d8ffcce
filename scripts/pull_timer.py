#!/usr/bin/env python3
"""Times whole package pulls for scripts/bench: each pull GETs PATH... in order on one
keep-alive connection (as a WFM refreshing one app does); prints "p50_ms p99_ms" over
N pulls after WARMUP pulls. Usage: pull_timer.py PORT N WARMUP PATH..."""
import http.client
import sys
import time


def main():
    port, n, warmup, paths = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    times = []
    for i in range(warmup + n):
        start = time.perf_counter()
        for p in paths:
            conn.request("GET", p, headers=accept)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"GET {p}: {r.status}")
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(f"{times[len(times) // 2]:.3f} {times[min(len(times) - 1, int(len(times) * 0.99))]:.3f}")


if __name__ == "__main__":
    main()
