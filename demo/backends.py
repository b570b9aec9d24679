"""Backends for the demo workload (not traced): an overloaded API server and
the port of a cache that is down.

The API server listens with backlog 0 and accepts only a few connections a
second, like a server whose workers are all busy: the kernel drops SYNs that
find the accept queue full, and the client's TCP retransmits them after 1 s.
Each request is then answered after 30 ms of "work". Everything is on
loopback. Prints one line, "api=PORT cache=PORT", then serves until killed.
"""
import socket
import threading
import time

ACCEPTS_PER_SECOND = 2
ANSWER_DELAY_S = 0.030


def serve(conn):
    with conn:
        conn.recv(1024)
        time.sleep(ANSWER_DELAY_S)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")


def main():
    api = socket.socket()
    api.bind(("127.0.0.1", 0))
    api.listen(0)
    cache = socket.socket()
    cache.bind(("127.0.0.1", 0))
    cache_port = cache.getsockname()[1]
    cache.close()  # nobody listens there: connects are refused
    print(f"api={api.getsockname()[1]} cache={cache_port}", flush=True)
    while True:
        conn, _ = api.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
        time.sleep(1.0 / ACCEPTS_PER_SECOND)


if __name__ == "__main__":
    main()
