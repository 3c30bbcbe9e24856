"""The composition root of background work: what a process's jobs share, built once.

Every job needs the same four things: a session factory on the configured database, the engine's
Runtime (parsed specs and recently used workflows, worth keeping from one job to the next), the
clock, and, when GRIDLOOP_REDIS_URL is set, a Redis connection. `build_root` makes each of them
once per process and reads the environment for them here and nowhere else, so the ticker, the
scheduler, the rq job and the status readers all take a Root, never a framework's app or context.

Who builds one: the web app factory builds its root over Flask-SQLAlchemy's engine and the app's
clock, so requests and the embedded ticker share one connection pool and one Runtime;
`gridloop worker` and its worker processes build theirs from the environment
(`jobs.worker.worker_root`); the `gridloop timers` commands build one per command.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.clock import Clock, SystemClock
from engine.runtime import Runtime
from engine.storage import make_engine, make_sessionmaker

if TYPE_CHECKING:
    from redis import Redis

REDIS_URL_ENV = "GRIDLOOP_REDIS_URL"
# Seconds a Redis command may take before it fails: the operations page must render, and
# `gridloop timers status` answer, when Redis hangs. rq workers wait on Redis for minutes by design,
# so their processes' roots have no such limit (`jobs.worker.worker_root`); rq sets its own.
REDIS_TIMEOUT = 2.0
REDIS_CONNECT_TIMEOUT = 5.0
_FROM_ENVIRONMENT: Any = object()


def redis_url_from_env() -> str | None:
    """GRIDLOOP_REDIS_URL, or None when it is unset or empty: then the embedded ticker fires
    timers, and nothing uses Redis."""
    return os.environ.get(REDIS_URL_ENV) or None


@dataclass(eq=False)
class Root:
    """A process's shared parts, shared by its threads: the session factory makes a session per
    job, the Runtime is shared the way the web server's request threads always shared it, and the
    Redis client is a connection pool."""

    clock: Clock
    runtime: Runtime
    engine: Engine
    sessions: sessionmaker[Session]
    redis_url: str | None
    redis_timeout: float | None = REDIS_TIMEOUT
    owns_engine: bool = False  # built here (disposed by close), not handed in by the app
    _redis: Redis | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def redis(self) -> Redis:
        """The process's one Redis client, made at first use. RuntimeError without a Redis URL:
        callers look at `redis_url` first."""
        if self.redis_url is None:
            raise RuntimeError(f"{REDIS_URL_ENV} is not set: no Redis to connect to")
        with self._lock:
            if self._redis is None:
                from redis import Redis

                self._redis = Redis.from_url(
                    self.redis_url,
                    socket_timeout=self.redis_timeout,
                    socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                )
            return self._redis

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for one job, closed after it. The job's steps commit or roll back
        themselves (one transaction per step); closing only returns the connection."""
        session = self.sessions()
        try:
            yield session
        finally:
            session.close()

    def close(self) -> None:
        """Let go of Redis, and of the database engine if this root built it."""
        with self._lock:
            redis, self._redis = self._redis, None
        if redis is not None:
            redis.close()
        if self.owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def build_root(
    *,
    engine: Engine | None = None,
    database_url: str | None = None,
    clock: Clock | None = None,
    redis_url: str | None = _FROM_ENVIRONMENT,
    redis_timeout: float | None = REDIS_TIMEOUT,
) -> Root:
    """The root for this process. The database is `engine` if given (the web app's), else a new
    engine on `database_url`, by default GRIDLOOP_DATABASE_URL or the repository's SQLite file
    (engine.storage.database_url). The clock defaults to the system clock; the Redis URL to
    GRIDLOOP_REDIS_URL (pass None for none)."""
    owns = engine is None
    if engine is None:
        engine = make_engine(database_url)
    clock = clock or SystemClock()
    return Root(
        clock=clock,
        runtime=Runtime(clock),
        engine=engine,
        sessions=make_sessionmaker(engine),
        redis_url=redis_url_from_env() if redis_url is _FROM_ENVIRONMENT else redis_url,
        redis_timeout=redis_timeout,
        owns_engine=owns,
    )
