"""Reads the cProfile files Werkzeug's ProfilerMiddleware wrote (one per
request) and prints the seed's categories as JSON: for each, calls and
cumulative seconds, and the share of the total profiled time.

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


def main():
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
