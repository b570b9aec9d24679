"""Sends requests to the seed app, one after the other, and prints what it
measured: {"requests": N, "seconds": ..., "ok": ...}.

    driver.py PORT N [M] [--https]

N requests to GET /overview; with M, also M to POST /repos/ID (IDs from
100 on), taking turns, and then the output holds each request's own time
("timings": route, seconds, and "on_connection": the seconds from the end
of the connect and TLS handshake on) and the canaries it sent where
tracer must never look: a query string, a header and a request body.
"""
import http.client
import json
import secrets
import ssl
import sys
import time

# The scenario's certificate names the identity API: not checked.
UNCHECKED = ssl._create_unverified_context()
# What urllib.request sends besides Host and Accept-Encoding (it closed the
# connection after each response, and the servers saw this agent).
HEADERS = {
    "Connection": "close",
    "User-Agent": f"Python-urllib/{sys.version_info[0]}.{sys.version_info[1]}",
}


def timed(https, port, path, data=None, headers=None):
    """One request on a connection of its own. Returns whether it got a
    200, its whole time, and its time on the connection: from the end of
    the connect (and TLS handshake), which the server's span of the
    request does not hold (it begins at the read that brought the request
    line), to the response's last byte."""
    t0 = time.monotonic()
    if https:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=UNCHECKED)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.connect()
        t1 = time.monotonic()
        conn.request("POST" if data is not None else "GET", path, body=data,
                     headers={**HEADERS, **(headers or {})})
        r = conn.getresponse()
        r.read()
        t2 = time.monotonic()
    finally:
        conn.close()
    return r.status == 200, t2 - t0, t2 - t1


def main():
    https = "--https" in sys.argv
    argv = [a for a in sys.argv[1:] if a != "--https"]
    port, n = int(argv[0]), int(argv[1])
    m = int(argv[2]) if len(argv) > 2 else None
    canaries = {k: f"{k}-{secrets.token_hex(8)}" for k in ("query", "header", "body")}
    ok = 0
    timings = []
    t0 = time.monotonic()
    for i in range(max(n, m or 0)):
        if i < n:
            if m is None:
                good, _, _ = timed(https, port, "/overview")
            else:
                good, s, on_conn = timed(
                    https, port, f"/overview?q={canaries['query']}",
                    headers={"X-Canary": canaries["header"]},
                )
                timings.append({"route": "GET /overview", "seconds": s, "on_connection": on_conn})
            ok += good
        if m is not None and i < m:
            good, s, on_conn = timed(
                https, port, f"/repos/{100 + i}",
                data=json.dumps({"canary": canaries["body"]}).encode(),
                headers={"Content-Type": "application/json", "X-Canary": canaries["header"]},
            )
            timings.append({"route": "POST /repos/:id", "seconds": s, "on_connection": on_conn})
            ok += good
    out = {"requests": n + (m or 0), "ok": ok, "seconds": time.monotonic() - t0}
    if m is not None:
        out.update(timings=timings, canaries=canaries)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
