"""The seed's slow Flask app, rebuilt (../../shared/seed.md): a dashboard whose
user loader fetches the user from an identity API over HTTPS by host name
(as Stormpath did), and whose `overview` view pages through a code-hosting
API over HTTPS, then counts bugs in MySQL with a fresh connection.

Configured by environment: IDENTITY_URL, CODE_URL, MYSQL_HOST, MYSQL_PORT,
and PROFILE_DIR to run under Werkzeug's ProfilerMiddleware (cProfile), as
the seed's author did. Run as a program, it serves under Werkzeug's
threaded server and prints {"ready": PID, "port": PORT} when listening;
other servers import `app` (scenario/seed.py --server).
"""
import json
import os
import sys

import pymysql
import requests
import urllib3
from flask import Flask
from flask_login import LoginManager, UserMixin, login_required

urllib3.disable_warnings()

IDENTITY_URL = os.environ["IDENTITY_URL"]
CODE_URL = os.environ["CODE_URL"]
MYSQL_HOST = os.environ.get("MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("MYSQL_PORT", "3306"))
PAGES = int(os.environ.get("CODE_PAGES", "3"))

app = Flask(__name__)
app.secret_key = "seed"
login_manager = LoginManager(app)
# The code-hosting API client keeps its connection (one handshake in all).
code_hosting = requests.Session()


class User(UserMixin):
    def __init__(self, account, groups):
        self.id = account["id"]
        self.name = account["name"]
        self.groups = groups


@login_manager.request_loader
def load_user(request):
    # Every request asks the identity API who the user is, and in which
    # groups: two HTTPS requests by host name, each with its own lookup
    # and handshake (no connection reuse, no DNS cache).
    account = requests.get(f"{IDENTITY_URL}/v1/accounts/1", verify=False).json()
    groups = requests.get(f"{IDENTITY_URL}/v1/accounts/1/groups", verify=False).json()
    return User(account, groups)


def get_repositories_data():
    repos = []
    for page in range(1, PAGES + 1):
        response = code_hosting.get(f"{CODE_URL}/repos?page={page}", verify=False)
        repos.append(len(response.content))
    return repos


def get_total_bug_count():
    connection = pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database="bugs"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM bugs WHERE state = 'open' AND (title LIKE %s OR body LIKE %s)",
                ("%crash%", "%segfault%"),
            )
            return cursor.fetchone()[0]
    finally:
        connection.close()


@app.route("/overview")
@login_required
def overview():
    repos = get_repositories_data()
    bugs = get_total_bug_count()
    return {"repositories_bytes": sum(repos), "open_crash_bugs": bugs}


@app.route("/repos/<int:repo_id>", methods=["GET", "POST"])
@login_required
def repository(repo_id):
    # The second endpoint (per-endpoint reports): the same user loader,
    # one page of the code-hosting API, no database.
    response = code_hosting.get(f"{CODE_URL}/repos?page={repo_id % PAGES + 1}", verify=False)
    return {"repository": repo_id, "bytes": len(response.content)}


def profiled(wsgi_app):
    """Under Werkzeug's ProfilerMiddleware when PROFILE_DIR is set: one
    cProfile file per request, named by process (gunicorn has several)."""
    if not os.environ.get("PROFILE_DIR"):
        return wsgi_app
    import itertools

    from werkzeug.middleware.profiler import ProfilerMiddleware

    # Werkzeug's default file name has the time in whole seconds and
    # milliseconds taken: two quick requests can share it. Number them.
    numbers = itertools.count(1)
    return ProfilerMiddleware(
        wsgi_app,
        profile_dir=os.environ["PROFILE_DIR"],
        stream=None,
        filename_format=lambda env: f"request-{os.getpid()}-{next(numbers):06d}.prof",
    )


app.wsgi_app = profiled(app.wsgi_app)


def main():
    """Werkzeug's threaded server (the seed's), on a free port."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(json.dumps({"ready": os.getpid(), "port": server.server_port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
