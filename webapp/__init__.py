"""Gridloop's web layer: an app factory and one blueprint per audience.

It validates input, checks who may do what, calls engine/ and renders the result. It holds no
process logic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from engine.clock import Clock, SystemClock
from engine.passwords import Passwords
from engine.runtime import Runtime
from engine.storage import configure_engine, database_url

from .extensions import db

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Services:
    """What every request shares: the engine runtime (parsed specs, hot workflows) and hashing."""

    runtime: Runtime
    passwords: Passwords
    root: Path


def create_app(config: dict | None = None, clock: Clock | None = None) -> Flask:
    app = Flask(__name__, instance_path=str(REPO_ROOT / "instance"))
    app.config.update(
        SECRET_KEY=os.environ.get("GRIDLOOP_SECRET_KEY", "dev-only-change-me"),
        SQLALCHEMY_DATABASE_URI=database_url(),
        GRIDLOOP_CHEAP_PASSWORDS=os.environ.get("GRIDLOOP_CHEAP_PASSWORDS") == "1",
        GRIDLOOP_TOKEN_HOURS=24 * 30,
        GRIDLOOP_ROOT=str(REPO_ROOT),
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False
    app.config.update(config or {})
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 15}})
    db.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
    app.extensions["gridloop"] = Services(
        runtime=Runtime(clock or SystemClock()),
        passwords=Passwords(cheap=app.config["GRIDLOOP_CHEAP_PASSWORDS"]),
        root=Path(app.config["GRIDLOOP_ROOT"]),
    )

    from . import api

    app.register_blueprint(api.bp)
    return app


def services(app: Flask) -> Services:
    return app.extensions["gridloop"]
