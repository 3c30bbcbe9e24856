"""A real Redis server for the session: Debian's redis-server on a free loopback port, with no
persistence, started once and stopped at the end. `make test` installs it (`make services`).

Import the fixtures into a test module: `from redis_fixture import redis_server, redis_url`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """The URL of a redis-server of our own. A missing server fails the tests: a skip would hide
    the gap, and `make test` installs it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `make services` (or make test) installs it")
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    workdir = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # the free port can be taken between the probe and the bind
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                break
            except RedisConnectionError:
                time.sleep(0.05)
        else:
            process.kill()
            process.wait()
            continue
        break
    else:
        pytest.fail("redis-server did not start")
    client.close()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_url(redis_server):
    """The session's server, emptied before and after each test."""
    from redis import Redis

    client = Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.flushall()
    client.close()
