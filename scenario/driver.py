"""Sends N requests to the seed app, one after the other, and prints what
it measured: {"requests": N, "seconds": ..., "ok": ...}.

    driver.py PORT N
"""
import json
import sys
import time
import urllib.request


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    ok = 0
    t0 = time.monotonic()
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/overview", timeout=60) as r:
            ok += r.status == 200
            r.read()
    print(json.dumps({"requests": n, "ok": ok, "seconds": time.monotonic() - t0}), flush=True)


if __name__ == "__main__":
    main()
