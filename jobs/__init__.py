"""Gridloop's background work, framework-free: the embedded ticker, the rq timer scheduler and
workers, and outbox delivery (digests and fan-outs will join them).

Why a package of its own: background work needs the database, the engine runtime, the clock and
Redis, and nothing of a web request. When it lived in webapp/, the ticker and every rq job built a
Flask app and pushed its context only to reach them. Here one composition root (`root.py`) builds
those once per process, every job takes that root, and the web server and the command line are
adapters: `gridloop serve` hands the app's root to the embedded ticker, `gridloop worker` builds a
root and runs rq on it. Like engine/, nothing here imports Flask.

    root.py       the composition root: session factory, Runtime, clock and Redis, built once
    ticker.py     the embedded ticker (timers each second, the outbox every five), and catch-up
    outbox.py     one delivery run of the outbox, as the ticker and the worker run it
    scheduler.py  TimerScheduler: due timers onto rq, cases batched into jobs, a lease per case
    worker.py     the rq job (fire_cases), workers and their supervisor: `gridloop worker`
    status.py     how far behind: `gridloop timers status` and the queues on /admin/ops
    __main__.py   `python -m jobs`: one rq worker process, as the supervisor starts them
"""
