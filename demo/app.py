"""The demo workload: a small service that `cargo xtask demo` traces from
outside, with no change to this code. Three worker threads handle "requests";
each request tries a cache that is down, then calls an API over TCP.
Usage: app.py API_PORT CACHE_PORT
"""
import random
import socket
import sys
import threading
import time


def call_api(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /user HTTP/1.0\r\n\r\n")
        return s.recv(1024)


def try_cache(port):
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        return True
    except OSError:
        return False


def worker(api_port, cache_port):
    while True:
        try_cache(cache_port)
        call_api(api_port)
        time.sleep(random.uniform(0.2, 1.0))


def main():
    api_port, cache_port = int(sys.argv[1]), int(sys.argv[2])
    workers = [
        threading.Thread(target=worker, args=(api_port, cache_port), daemon=True)
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
