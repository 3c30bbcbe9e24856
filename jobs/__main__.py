"""`python -m jobs [--burst] [--log-level L]`: one rq worker process and no scheduler, as
`gridloop worker --workers N` starts N of them. It needs no web app, so it loads none: the
process holds the engine and rq only. People run `gridloop worker --no-scheduler` instead."""

from __future__ import annotations

import argparse
import sys

from .root import REDIS_URL_ENV
from .worker import serve, worker_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__.split(":")[0])
    parser.add_argument("--burst", action="store_true", help="drain the queue, then exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    from redis.exceptions import RedisError

    with worker_root() as root:
        if root.redis_url is None:
            print(f"{REDIS_URL_ENV} is not set", file=sys.stderr)
            return 1
        try:
            return serve(
                root, workers=1, scheduler=False, burst=args.burst, log_level=args.log_level
            )
        except RedisError as exc:
            print(f"Redis at {root.redis_url}: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
