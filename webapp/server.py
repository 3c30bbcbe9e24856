"""`gridloop serve --workers N` with N > 1: gunicorn, run in this process, with N web processes.

- **gthread workers**, THREADS threads each. The app is built for a threaded server: it is tested
  under werkzeug's threaded one, and its per-process parts are shared by request threads on
  purpose (the Runtime's parsed specs and hot workflows, the bound on concurrent argon2 checks
  in engine/signin.py, which only bites when requests in one process overlap). A sync worker
  would also hold a whole process for each slow client (a phone on a weak mobile network) and
  keep no connection alive, which suits only a buffering proxy in front; gthread threads wait on
  such clients instead, and keep-alive works.
- **The app is built in each worker, after the fork** (no preloading): no database connection,
  pool or Runtime is shared between processes. Each worker's app has its own root, which runs no
  background work.
- **The background work runs once, in the master** (the arbiter): the embedded Ticker, on a root
  of its own (`jobs.root.build_root()`), started when gunicorn is ready and stopped on exit. It
  fires timers when GRIDLOOP_REDIS_URL is unset (with Redis, `gridloop worker` does), and always
  delivers the outbox and makes the daily digest, as `gridloop serve` does in one process. The
  master forks a new worker whenever one dies, while the ticker's threads run; so the master's
  engine keeps no connection between jobs (NullPool): there is no idle pooled connection for a
  child to inherit (closing an inherited SQLite handle, or a driver that closes an inherited
  PostgreSQL one when collected, would harm the master's). A connection in use by a ticker
  thread at the moment of a fork is never touched by the child: the child has no such thread,
  and what that thread's frames hold is never freed there.
- **Stopping**: SIGTERM and SIGINT (Ctrl-C) both stop gracefully: no new connections, requests
  in progress finish (up to GRACEFUL_TIMEOUT seconds), then the ticker stops. Workers ignore
  SIGINT, so a Ctrl-C that the terminal sends to the whole process group still leaves the stop
  to the master. Each step is one transaction either way: a killed request never leaves half a
  step.
- **Logs go to stderr**: gunicorn's own, and one access line per request as with werkzeug.
- X-Forwarded-* headers are trusted only as the app is told (GRIDLOOP_TRUSTED_PROXIES, see
  webapp/security.py): gunicorn's own trust of loopback proxies is turned off.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

THREADS = 4  # request threads per worker process
GRACEFUL_TIMEOUT = 15  # seconds requests in progress may take to finish on a stop


class _Logger(glogging.Logger):
    """gunicorn's logger with the access lines on stderr too, beside its error log."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if cfg.accesslog == "-":
            self._set_handler(
                self.access_log, "-", logging.Formatter(self.access_fmt), stream=sys.stderr
            )


class _Arbiter(Arbiter):
    def handle_int(self) -> None:
        """Ctrl-C stops as SIGTERM does, gracefully (gunicorn's own SIGINT is a quick stop that
        cuts requests in progress)."""
        raise StopIteration


def _ignore_sigint(_worker) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server(BaseApplication):
    """gunicorn with Gridloop's app in N gthread workers and the ticker in the master."""

    def __init__(self, host: str, port: int, workers: int, echo: Callable[[str], None] = print):
        self.host, self.port, self.workers, self.echo = host, port, workers, echo
        self.root = None
        self.ticker = None
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": [bind_address(self.host, self.port)],
            "workers": self.workers,
            "worker_class": "gthread",
            "threads": THREADS,
            "preload_app": False,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "proc_name": "gridloop",
            "errorlog": "-",
            "accesslog": "-",
            "logger_class": _Logger,
            "forwarded_allow_ips": "",
            "when_ready": self._when_ready,
            "on_exit": self._on_exit,
            "post_worker_init": _ignore_sigint,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self):
        """The WSGI app, built in each worker process after the fork."""
        from . import create_app

        return create_app()

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:  # as BaseApplication.run: gunicorn's own start-up errors
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)

    # -------------------------------------------------------------- the master's background work

    def _when_ready(self, server) -> None:
        from sqlalchemy.pool import NullPool

        from engine.storage import make_engine
        from jobs.root import build_root
        from jobs.ticker import Ticker

        self.root = build_root(engine=make_engine(poolclass=NullPool))
        self.ticker = Ticker(self.root)
        self.ticker.start()
        work = "notifications and the daily digest"
        if self.ticker.fires_timers:
            work = "timers, " + work
        else:
            work += " (rq workers fire timers: `gridloop worker`)"
        server.log.info("Gridloop's ticker runs in the master (pid %s): %s", os.getpid(), work)
        self.echo(
            f"Gridloop is serving on http://{self.host}:{self.port}/ with {self.workers} worker "
            "processes (Ctrl-C stops it)"
        )

    def _on_exit(self, _server) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        if self.root is not None:
            self.root.close()
            self.root.engine.dispose()


def serve(host: str, port: int, workers: int, echo: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or SIGINT; exits with gunicorn's status when it cannot start."""
    if not os.environ.get("GRIDLOOP_SECRET_KEY"):
        # Made here, once, before the workers start: each reads the same key, and none races
        # another to create it (sessions signed by one worker must open in every other).
        from . import _instance_secret

        _instance_secret()
    Server(host, port, workers, echo).run()
