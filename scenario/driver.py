"""Sends requests to the seed app, one after the other, and prints what it
measured: {"requests": N, "seconds": ..., "ok": ...}.

    driver.py PORT N [M] [--https]

N requests to GET /overview; with M, also M to POST /repos/ID (IDs from
100 on), taking turns, and then the output holds each request's own time
("timings": route and seconds) and the canaries it sent where tracer must
never look: a query string, a header and a request body.
"""
import json
import secrets
import ssl
import sys
import time
import urllib.request

# The scenario's certificate names the identity API: not checked.
UNCHECKED = ssl._create_unverified_context()


def timed(url, data=None, headers=None):
    t0 = time.monotonic()
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60, context=UNCHECKED) as r:
        r.read()
        return r.status == 200, time.monotonic() - t0


def main():
    https = "--https" in sys.argv
    argv = [a for a in sys.argv[1:] if a != "--https"]
    port, n = int(argv[0]), int(argv[1])
    m = int(argv[2]) if len(argv) > 2 else None
    base = f"{'https' if https else 'http'}://127.0.0.1:{port}"
    canaries = {k: f"{k}-{secrets.token_hex(8)}" for k in ("query", "header", "body")}
    ok = 0
    timings = []
    t0 = time.monotonic()
    for i in range(max(n, m or 0)):
        if i < n:
            if m is None:
                good, s = timed(f"{base}/overview")
            else:
                good, s = timed(
                    f"{base}/overview?q={canaries['query']}",
                    headers={"X-Canary": canaries["header"]},
                )
                timings.append({"route": "GET /overview", "seconds": s})
            ok += good
        if m is not None and i < m:
            good, s = timed(
                f"{base}/repos/{100 + i}",
                data=json.dumps({"canary": canaries["body"]}).encode(),
                headers={"Content-Type": "application/json", "X-Canary": canaries["header"]},
            )
            timings.append({"route": "POST /repos/:id", "seconds": s})
            ok += good
    out = {"requests": n + (m or 0), "ok": ok, "seconds": time.monotonic() - t0}
    if m is not None:
        out.update(timings=timings, canaries=canaries)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
