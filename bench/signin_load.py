"""What a storm of sign-ins costs the server's memory: the bound on concurrent argon2 checks
(engine/signin.py) against no bound, in the same run.

Run on demand (not a test):
    .venv/bin/python bench/signin_load.py [--clients 48] [--seconds 10]

For each mode a server process is started on 127.0.0.1 (werkzeug, threaded, as `gridloop serve`
runs) on a fresh SQLite database with one person whose password is hashed at argon2's default
cost (64 MiB per check). `--clients` threads then post the right password to POST /api/v1/tokens
as fast as they are answered for `--seconds`; right passwords, so the failure throttle never
answers in their place and every request costs one argon2 check. The server's resident memory
(VmRSS, sampled every 50 ms) is reported idle and at its peak, with the answers by status.

  bounded    the default: two checks at a time, a third waits up to 5 s for a turn, else 503
  unbounded  as many checks at once as requests (the bound set to --clients): the baseline
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ORG = """\
town: {code: XDK, name: 小渡口镇}
villages:
  - code: V01
    name: 一村
    secretary: {username: vs1, name: 赵书记, password: a-real-password}
"""

SERVER = r"""
import sys
from werkzeug.serving import make_server
from engine.org import import_org
from engine.passwords import Passwords
from engine.signin import SignIn
from engine.storage import create_schema
from webapp import create_app, services
from webapp.extensions import db

url, port, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = create_app({"SQLALCHEMY_DATABASE_URI": url})
with app.app_context():
    create_schema(db.engine)
    import_org(db.session, sys.stdin.read(), Passwords())
    db.session.commit()
svc = services(app)
svc.signin = SignIn(svc.passwords, concurrent_checks=bound)
server = make_server("127.0.0.1", port, app, threaded=True)
print("ready", flush=True)
server.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(mode: str, bound: int, clients: int, seconds: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="gl-signin-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLOOP_")}
    env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, f"sqlite:///{folder}/bench.sqlite", str(port), str(bound)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # werkzeug's request log
        env=env,
        text=True,
    )
    server.stdin.write(ORG)
    server.stdin.close()
    assert server.stdout.readline().strip() == "ready"
    try:
        time.sleep(0.5)  # let the process settle before the idle reading
        idle = rss_mb(server.pid)
        peak, stop = idle, time.monotonic() + seconds
        answers: Counter[int] = Counter()
        lock = threading.Lock()
        body = json.dumps({"username": "vs1", "password": "a-real-password"}).encode()

        def client() -> None:
            while time.monotonic() < stop:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/tokens",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status = response.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                with lock:
                    answers[status] += 1

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mb(server.pid))
            time.sleep(0.05)
        return {"mode": mode, "idle": idle, "peak": peak, "answers": dict(answers)}
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    results = [
        run("unbounded", args.clients, args.clients, args.seconds),
        run("bounded", 2, args.clients, args.seconds),
    ]
    base = results[0]["peak"] - results[0]["idle"]
    print(f"{args.clients} clients, {args.seconds:g} s, POST /api/v1/tokens, argon2 default cost")
    print(f"{'mode':<10} {'idle MB':>8} {'peak MB':>8} {'growth MB':>10} {'vs base':>8}  answers")
    for r in results:
        growth = r["peak"] - r["idle"]
        ratio = growth / base if base > 0 else float("nan")
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["answers"].items()))
        print(
            f"{r['mode']:<10} {r['idle']:>8.0f} {r['peak']:>8.0f} {growth:>10.0f} "
            f"{ratio:>7.2f}x  {answers}"
        )


if __name__ == "__main__":
    main()
