"""Reads the cProfile files Werkzeug's ProfilerMiddleware wrote (one per
request), or the JSON timings scenario/async_app.py wrote by hand, and
prints the seed's categories as JSON: for each, calls and cumulative
seconds, and the share of the total profiled time.

    profile_stats.py PROFILE_DIR
"""
import glob
import json
import pstats
import sys

# (category, matcher on pstats' (file, line, function) key)
CATEGORIES = {
    "lookups": lambda f, l, n: n == "<built-in method _socket.getaddrinfo>",
    "ssl_reads": lambda f, l, n: n == "<method 'read' of '_ssl._SSLSocket' objects>",
    "handshakes": lambda f, l, n: n == "<method 'do_handshake' of '_ssl._SSLSocket' objects>",
    "mysql_query": lambda f, l, n: f.endswith("pymysql/connections.py") and n == "query",
    "mysql_connect": lambda f, l, n: f.endswith("pymysql/connections.py") and n == "connect",
}


def timed_by_hand(files):
    """scenario/async_app.py's own timings, one JSON file per request."""
    out = {"requests": len(files), "total_seconds": 0.0}
    sums = {name: [0, 0.0] for name in CATEGORIES}
    for f in files:
        with open(f) as fh:
            t = json.load(fh)
        out["total_seconds"] += t["request"]
        for name in CATEGORIES:
            calls, seconds = t.get(name, [0, 0.0])
            sums[name][0] += calls
            sums[name][1] += seconds
    total = out["total_seconds"]
    for name, (calls, seconds) in sums.items():
        out[name] = {"calls": calls, "seconds": seconds, "share": seconds / total if total else 0.0}
    return out


def main():
    timed = sorted(glob.glob(f"{sys.argv[1]}/*.json"))
    if timed:
        print(json.dumps(timed_by_hand(timed), indent=2))
        return
    files = sorted(glob.glob(f"{sys.argv[1]}/*.prof"))
    if not files:
        sys.exit("no profiles")
    stats = pstats.Stats(files[0])
    for f in files[1:]:
        stats.add(f)
    total = stats.total_tt
    out = {"requests": len(files), "total_seconds": total}
    for name, match in CATEGORIES.items():
        calls, cum = 0, 0.0
        for (f, l, n), (cc, nc, tt, ct, callers) in stats.stats.items():
            if match(f, l, n):
                calls += nc
                cum += ct
        out[name] = {"calls": calls, "seconds": cum, "share": cum / total if total else 0.0}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
