"""Brings the seed scenario up in a network namespace of its own, and down.

    seed.py --dnsfixture BIN --python VENV_PYTHON --workdir DIR
            [--dns-delay-ms 150] [--profile-dir DIR]
            [--server werkzeug|gunicorn-sync|gunicorn-gthread|waitress|uvicorn|node]
            [--tls]

Inside namespace `tracer-seed-PID` (loopback only): a DNS server that
answers after a delay (this kernel has no netem: the delay is the
server's), resolving the identity API's host name; the identity API and
the code-hosting API over HTTPS; MariaDB with its own data directory and
300,000 seeded bugs; and the Flask app. Prints one JSON line when ready:

    {"app_pid": PID, "app_pids": [PID, ...], "app_port": PORT, "netns": NAME}

(app_pids: the server's processes, gunicorn's workers with its master.)
With --tls the app serves HTTPS (gunicorn, uvicorn and node only), with the
scenario's own certificate, and the driver speaks HTTPS to it.

then takes commands on stdin, one JSON line of answer each:

    drive N [M]     send N requests to the app, one after the other (and M
                    to its second route, taking turns: scenario/driver.py)
    dns-delay MS    restart the DNS server with another delay (0: the fix)
    clear-profiles  delete the profiles written so far
    down            stop everything, delete the namespace, exit

It also stops everything if stdin closes or it gets SIGTERM/SIGINT.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IDENTITY_HOST = "identity.stormpath.test"
IDENTITY_PORT = 8443
CODE_PORT = 9443
MYSQL_PORT = 3306
# One code-hosting page: 370 records of 120 bytes, 10 at a time, 1 ms apart.
CODE_PAGE = ["120", "370", "10", "1"]

children = []
netns = f"tracer-seed-{os.getpid()}"


def log(msg):
    print(f"seed: {msg}", file=sys.stderr, flush=True)


def in_ns(*argv):
    return ["ip", "netns", "exec", netns, *argv]


def start(argv, env=None, stdout=subprocess.PIPE, log=None):
    """Starts a child; its stderr goes to the file `log`, if named."""
    stderr = open(log, "ab") if log else None
    p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
    if stderr:
        stderr.close()
    children.append(p)
    return p


def first_json_line(p, what):
    """The child's ready line. The rest of its output (the DNS server logs
    every query) is drained on a thread, so that it never blocks on a full
    pipe."""
    line = p.stdout.readline()
    if not line:
        raise SystemExit(f"seed: {what} did not start")
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return json.loads(line)


def down():
    for p in reversed(children):
        if p.poll() is None:
            p.terminate()
    for p in children:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    children.clear()
    subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    shutil.rmtree(f"/etc/netns/{netns}", ignore_errors=True)


def mariadb(workdir):
    datadir = os.path.join(workdir, "mysql")
    sock = os.path.join(workdir, "mysql.sock")
    fresh = not os.path.isdir(os.path.join(datadir, "mysql"))
    if fresh:
        shutil.rmtree(datadir, ignore_errors=True)
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    # A socket left by a server that was killed (the machine restarted, a
    # run was interrupted) would pass the wait below and refuse connections.
    if os.path.exists(sock):
        os.unlink(sock)
    start(
        in_ns(
            "mariadbd",
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={sock}",
            f"--port={MYSQL_PORT}",
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-grant-tables",
            "--skip-name-resolve",
            f"--log-error={workdir}/mysql.err",
        ),
        stdout=subprocess.DEVNULL,
        log=os.path.join(workdir, "mysql.err"),
    )
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    else:
        raise SystemExit("seed: MariaDB did not start (see mysql.err)")
    client = ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot"]
    have = subprocess.run(
        client + ["-N", "-e", "SELECT COUNT(*) FROM bugs.bugs"],
        capture_output=True,
        text=True,
    )
    if have.returncode != 0 or have.stdout.strip() != "300000":
        subprocess.run(
            client
            + [
                "-e",
                "DROP DATABASE IF EXISTS bugs; CREATE DATABASE bugs; USE bugs; "
                "CREATE TABLE bugs (id INT PRIMARY KEY AUTO_INCREMENT, title VARCHAR(200), "
                "state VARCHAR(10), body TEXT); "
                "INSERT INTO bugs (title, state, body) SELECT "
                "CONCAT('bug ', seq, IF(seq % 97 = 0, ' crash in parser', ' slow page')), "
                "IF(seq % 3 = 0, 'open', 'closed'), REPEAT('x', 200) FROM seq_1_to_300000;",
            ],
            check=True,
        )


# How each server runs the app (scenario/app.py's `app`) on APP_PORT.
SERVERS = {
    "gunicorn-sync": ["-m", "gunicorn", "--workers", "2", "--worker-class", "sync"],
    "gunicorn-gthread": ["-m", "gunicorn", "--workers", "2", "--worker-class", "gthread",
                         "--threads", "4"],
    "waitress": ["-m", "waitress", "--threads=4"],
    "uvicorn": ["-m", "uvicorn", "--loop", "asyncio", "--http", "h11", "--no-access-log",
                "--app-dir", HERE],
}
APP_PORT = 8000
GUNICORN_WORKERS = 2


def listening(pid, port):
    """Whether process `pid`'s network namespace has a TCP listener on `port`."""
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return False
    return any(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in rows)


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def serve_app(args, env):
    """Starts the app under its server; returns {"ready": PID, "pids": [the
    server's processes], "port": PORT} once it listens (and, for gunicorn,
    once its workers are forked)."""
    log_file = os.path.join(args.workdir, "app.log")
    cert, key = (os.path.join(args.workdir, n) for n in ("cert.pem", "key.pem"))
    if args.tls and args.server in ("werkzeug", "waitress"):
        raise SystemExit(f"seed: no --tls under {args.server}")
    if args.server == "werkzeug":
        app = start(in_ns(args.python, os.path.join(HERE, "app.py")), env=env, log=log_file)
        ready = first_json_line(app, "the app")
        return {"ready": ready["ready"], "pids": [ready["ready"]], "port": ready["port"]}
    argv = [args.python, *SERVERS.get(args.server, [])]
    if args.server == "node":
        argv = [shutil.which("node") or "node", os.path.join(HERE, "node_app.js"), str(APP_PORT)]
        if args.tls:
            argv += [cert, key]
    elif args.server == "waitress":
        argv += [f"--listen=127.0.0.1:{APP_PORT}", "app:app"]
    elif args.server == "uvicorn":
        argv += ["--host", "127.0.0.1", "--port", str(APP_PORT), "async_app:app"]
        if args.tls:
            argv += ["--ssl-certfile", cert, "--ssl-keyfile", key]
    else:
        argv += ["--bind", f"127.0.0.1:{APP_PORT}", "--chdir", HERE, "app:app"]
        if args.tls:
            argv += ["--certfile", cert, "--keyfile", key]
    app = subprocess.Popen(in_ns(*argv), cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=open(log_file, "ab"))
    children.append(app)
    workers = GUNICORN_WORKERS if args.server.startswith("gunicorn") else 0
    for _ in range(600):
        if app.poll() is not None:
            raise SystemExit(f"seed: {args.server} exited (see {log_file})")
        # `ip netns exec` execs the server: same PID.
        if listening(app.pid, APP_PORT) and len(children_of(app.pid)) >= workers:
            return {"ready": app.pid, "pids": [app.pid, *children_of(app.pid)],
                    "port": APP_PORT}
        time.sleep(0.05)
    raise SystemExit(f"seed: {args.server} did not listen on {APP_PORT} (see {log_file})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dnsfixture", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--dns-delay-ms", type=int, default=150)
    ap.add_argument("--profile-dir")
    ap.add_argument("--server", default="werkzeug", choices=["werkzeug", *SERVERS, "node"])
    ap.add_argument("--tls", action="store_true")
    args = ap.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    if args.profile_dir:
        args.profile_dir = os.path.abspath(args.profile_dir)
    os.makedirs(args.workdir, exist_ok=True)

    atexit.register(down)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))

    subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(in_ns("ip", "link", "set", "lo", "up"), check=True)
    os.makedirs(f"/etc/netns/{netns}", exist_ok=True)
    with open(f"/etc/netns/{netns}/resolv.conf", "w") as f:
        f.write("nameserver 127.0.0.1\n")

    cert, key = (os.path.join(args.workdir, n) for n in ("cert.pem", "key.pem"))
    if not os.path.exists(cert):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", f"/CN={IDENTITY_HOST}", "-keyout", key, "-out", cert],
            check=True,
            stderr=subprocess.DEVNULL,
        )

    def dns_server(delay_ms):
        p = start(
            in_ns(args.dnsfixture, "--listen", "127.0.0.1:53", "--delay-ms", str(delay_ms),
                  "--answer-a", "127.0.0.1", "--empty-aaaa"),
            log=os.path.join(args.workdir, "dns.log"),
        )
        first_json_line(p, "the DNS server")
        return p

    dns = dns_server(args.dns_delay_ms)
    for kind, port, extra in (("identity", IDENTITY_PORT, []), ("code", CODE_PORT, CODE_PAGE)):
        p = start(in_ns(args.python, os.path.join(HERE, "services.py"), kind, cert, key, str(port),
                        *extra), log=os.path.join(args.workdir, f"{kind}.log"))
        first_json_line(p, f"the {kind} service")
    mariadb(args.workdir)

    env = dict(os.environ)
    env.update(
        IDENTITY_URL=f"https://{IDENTITY_HOST}:{IDENTITY_PORT}",
        CODE_URL=f"https://127.0.0.1:{CODE_PORT}",
        MYSQL_HOST="127.0.0.1",
        MYSQL_PORT=str(MYSQL_PORT),
    )
    if args.profile_dir:
        shutil.rmtree(args.profile_dir, ignore_errors=True)
        os.makedirs(args.profile_dir)
        env["PROFILE_DIR"] = args.profile_dir
    ready = serve_app(args, env)
    print(json.dumps({"app_pid": ready["ready"], "app_pids": ready["pids"],
                      "app_port": ready["port"], "netns": netns}), flush=True)

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "down":
            break
        if words[0] == "drive":
            out = subprocess.run(
                in_ns(args.python, os.path.join(HERE, "driver.py"), str(ready["port"]), *words[1:3],
                      *(["--https"] if args.tls else [])),
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(json.dumps({"error": out.stderr[-2000:]}), flush=True)
            else:
                print(out.stdout.strip(), flush=True)
        elif words[0] == "dns-delay":
            dns.terminate()
            dns.wait()
            children.remove(dns)
            dns = dns_server(int(words[1]))
            print(json.dumps({"dns_delay_ms": int(words[1])}), flush=True)
        elif words[0] == "clear-profiles" and args.profile_dir:
            for f in os.listdir(args.profile_dir):
                os.remove(os.path.join(args.profile_dir, f))
            print(json.dumps({"cleared": args.profile_dir}), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
    down()


if __name__ == "__main__":
    main()
