"""Sends requests to the seed app, one after the other, and prints what it
measured: {"requests": N, "seconds": ..., "ok": ...}.

    driver.py PORT N [M] [--https]

N requests to GET /overview; with M, also M to POST /repos/ID (IDs from
100 on), taking turns, and then the output holds each request's own time
("timings": route, seconds, "on_connection": the seconds from the end of
the connect and TLS handshake on, and "start_ns" and "closed_ns": the
CLOCK_MONOTONIC times, as tracer's, before the connect and when the server
had closed the connection) and the canaries it sent where tracer must
never look: a query string, a header and a request body.
"""
import errno
import http.client
import json
import os
import secrets
import socket
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
    200, its whole time, its time on the connection: from the end of the
    connect (and TLS handshake), which the server's span of the request
    does not hold (it begins at the read that brought the request line),
    to the response's last byte, and two CLOCK_MONOTONIC times in ns:
    before the connect, and once the server had closed the connection."""
    t0 = time.monotonic_ns()
    if https:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=UNCHECKED)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    raw = None
    try:
        conn.connect()
        t1 = time.monotonic_ns()
        # http.client lets the socket go once the response is read; a
        # descriptor of our own keeps it to read the server's close on.
        raw = socket.socket(fileno=os.dup(conn.sock.fileno()))
        conn.request("POST" if data is not None else "GET", path, body=data,
                     headers={**HEADERS, **(headers or {})})
        r = conn.getresponse()
        r.read()
        t2 = time.monotonic_ns()
        closed = closed_by_server(raw)
    finally:
        conn.close()
        if raw is not None:
            raw.close()
    return r.status == 200, (t2 - t0) / 1e9, (t2 - t1) / 1e9, t0, closed


def closed_by_server(raw):
    """Ends the client's side of the connection, as a client closing it
    would (a FIN, no TLS close_notify), and reads what is left until the
    server's FIN; returns when, in ns. Each server here closes after its
    last write has returned (gunicorn gthread's pool when the handler's
    task is done), so this comes after the end of its span of the
    request, which the last byte's arrival need not: a server thread
    preempted between the write that sent it and its return ends the span
    later. (Waiting for the server's own close, an asyncio TLS server
    waited 30 s for a close_notify.) A connection found reset or no longer
    connected (under gunicorn over TLS, once) was ended by the server too."""
    raw.settimeout(60)
    try:
        raw.shutdown(socket.SHUT_WR)
        while raw.recv(65536):
            pass
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.ECONNRESET):
            raise
    return time.monotonic_ns()


def timed_as(route, seconds, on_connection, start_ns, closed_ns):
    return {"route": route, "seconds": seconds, "on_connection": on_connection,
            "start_ns": start_ns, "closed_ns": closed_ns}


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
                good, *_ = timed(https, port, "/overview")
            else:
                good, *timing = timed(
                    https, port, f"/overview?q={canaries['query']}",
                    headers={"X-Canary": canaries["header"]},
                )
                timings.append(timed_as("GET /overview", *timing))
            ok += good
        if m is not None and i < m:
            good, *timing = timed(
                https, port, f"/repos/{100 + i}",
                data=json.dumps({"canary": canaries["body"]}).encode(),
                headers={"Content-Type": "application/json", "X-Canary": canaries["header"]},
            )
            timings.append(timed_as("POST /repos/:id", *timing))
            ok += good
    out = {"requests": n + (m or 0), "ok": ok, "seconds": time.monotonic() - t0}
    if m is not None:
        out.update(timings=timings, canaries=canaries)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
