"""The HTTPS services the seed app calls, on loopback in the scenario's
network namespace, with a self-signed certificate:

    services.py identity CERT KEY PORT
        an identity API (the Stormpath of the seed): small JSON answers
    services.py code CERT KEY PORT RECORD_BYTES RECORDS_PER_PAGE BURST DELAY_MS
        a code-hosting API: each page is RECORDS_PER_PAGE TLS records of
        RECORD_BYTES, sent BURST records at a time with DELAY_MS between
        bursts, so that one page costs hundreds of SSL reads

Both speak HTTP/1.1 with keep-alive. Prints {"listening": PORT}.
"""
import json
import socket
import ssl
import sys
import threading
import time


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def identity(conn, path):
    body = [{"id": 1, "name": "admin"}] if path.endswith("/groups") else {"id": 1, "name": "ada"}
    payload = json.dumps(body).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )


def code(conn, path, size, records, burst, delay):
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size * records}\r\n\r\n"
    )
    conn.sendall(head.encode())
    record = b"r" * size
    for i in range(records):
        if delay and i % burst == 0:
            time.sleep(delay)
        conn.sendall(record)


def serve(conn, handler):
    try:
        while True:
            line = read_request(conn)
            if line is None:
                return
            handler(conn, line.split()[1])
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def main():
    kind, cert, key, port = sys.argv[1:5]
    if kind == "identity":
        handler = identity
    else:
        size, records, burst, delay_ms = map(int, sys.argv[5:9])
        handler = lambda c, p: code(c, p, size, records, burst, delay_ms / 1000)  # noqa: E731
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(port)))
    srv.listen(64)
    print(json.dumps({"listening": srv.getsockname()[1]}), flush=True)
    while True:
        raw, _ = srv.accept()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(conn, handler), daemon=True).start()


if __name__ == "__main__":
    main()
