"""The seed app's shape on an event loop: an ASGI app for uvicorn. Per
request to /overview (any path but /repos/ID), as scenario/app.py: two HTTPS requests to the identity API by host
name (each with its own lookup and handshake), three pages from the
code-hosting API over one kept connection, and the MySQL query (pymysql in
the loop's executor, as a synchronous driver is used from asyncio). Per
request to /repos/ID: the two identity requests and one page, no database.

Configured by environment as scenario/app.py. With PROFILE_DIR, it times
what each request awaits, by hand (cProfile cannot follow coroutines), and
every getaddrinfo call as cProfile would; it writes one JSON file per
request, request-PID-N.json:

    {"request": s, "lookups": [calls, s], "ssl_reads": [awaits, s],
     "handshakes": [calls, s], "mysql_query": [calls, s],
     "mysql_connect": [calls, s]}

`request` runs from the app's call to its last response message sent.
"""
import asyncio
import itertools
import json
import os
import socket
import ssl
import time
from urllib.parse import urlsplit

import pymysql

IDENTITY = urlsplit(os.environ["IDENTITY_URL"])
CODE = urlsplit(os.environ["CODE_URL"])
MYSQL_HOST = os.environ.get("MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("MYSQL_PORT", "3306"))
PAGES = int(os.environ.get("CODE_PAGES", "3"))
PROFILE_DIR = os.environ.get("PROFILE_DIR")

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE
numbers = itertools.count(1)


class Timings:
    """What one request awaited, by category: [calls, seconds]."""

    def __init__(self):
        self.cats = {}

    def add(self, cat, t0):
        c = self.cats.setdefault(cat, [0, 0.0])
        c[0] += 1
        c[1] += time.perf_counter() - t0


# The request being served (requests come one after the other): every
# getaddrinfo call, on any thread (asyncio's executor, pymysql's connect),
# is timed as cProfile would time `_socket.getaddrinfo`.
current = None
_getaddrinfo = socket.getaddrinfo


def timed_getaddrinfo(*args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _getaddrinfo(*args, **kwargs)
    finally:
        if current is not None:
            current.add("lookups", t0)


socket.getaddrinfo = timed_getaddrinfo


async def connect(host, port, t):
    loop = asyncio.get_running_loop()
    try:
        socket.inet_aton(host)
        address = host
    except OSError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        address = infos[0][4][0]
    t0 = time.perf_counter()
    conn = await asyncio.open_connection(address, port, ssl=TLS, server_hostname=host)
    t.add("handshakes", t0)
    return conn


async def get(reader, writer, host, path, t):
    """One GET over the connection; returns the body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    t0 = time.perf_counter()
    head = await reader.readuntil(b"\r\n\r\n")
    t.add("ssl_reads", t0)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = b""
    while len(body) < length:
        t0 = time.perf_counter()
        chunk = await reader.read(length - len(body))
        t.add("ssl_reads", t0)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        body += chunk
    return body


async def load_user(t):
    # Two HTTPS requests by host name, each with its own lookup and
    # handshake (no connection reuse, no DNS cache), as in the seed.
    user = []
    for path in ("/v1/accounts/1", "/v1/accounts/1/groups"):
        reader, writer = await connect(IDENTITY.hostname, IDENTITY.port, t)
        user.append(json.loads(await get(reader, writer, IDENTITY.hostname, path, t)))
        writer.close()
    return user


code_hosting = None


async def code_page(page, t):
    global code_hosting
    if code_hosting is None:
        code_hosting = await connect(CODE.hostname, CODE.port, t)
    reader, writer = code_hosting
    return len(await get(reader, writer, CODE.hostname, f"/repos?page={page}", t))


async def get_repositories_data(t):
    return [await code_page(page, t) for page in range(1, PAGES + 1)]


def get_total_bug_count(t):
    t0 = time.perf_counter()
    connection = pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database="bugs"
    )
    t.add("mysql_connect", t0)
    try:
        with connection.cursor() as cursor:
            t0 = time.perf_counter()
            cursor.execute(
                "SELECT COUNT(*) FROM bugs WHERE state = 'open' AND (title LIKE %s OR body LIKE %s)",
                ("%crash%", "%segfault%"),
            )
            t.add("mysql_query", t0)
            return cursor.fetchone()[0]
    finally:
        connection.close()


async def overview(t):
    await load_user(t)
    repos = await get_repositories_data(t)
    bugs = await asyncio.get_running_loop().run_in_executor(None, get_total_bug_count, t)
    return {"repositories_bytes": sum(repos), "open_crash_bugs": bugs}


async def repository(repo_id, t):
    # The second endpoint, as scenario/app.py's: the user loader, one page
    # of the code-hosting API, no database.
    await load_user(t)
    return {"repository": repo_id, "bytes": await code_page(repo_id % PAGES + 1, t)}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    global current
    t0 = time.perf_counter()
    t = current = Timings()
    route = scope["path"].split("/")
    if len(route) == 3 and route[1] == "repos" and route[2].isdigit():
        body = json.dumps(await repository(int(route[2]), t)).encode()
    else:
        body = json.dumps(await overview(t)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
    current = None
    if PROFILE_DIR:
        out = {"request": time.perf_counter() - t0, **t.cats}
        name = f"request-{os.getpid()}-{next(numbers):06d}.json"
        with open(os.path.join(PROFILE_DIR, name), "w") as f:
            json.dump(out, f)
