"""One way to build a test app: a SQLite file, the repository's bundle deployed and an
organisation imported. The web, API and browser tests differ only in their organisation file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from flask import Flask

from engine.clock import Clock
from engine.org import import_org
from engine.passwords import Passwords
from engine.specs import Bundle, deploy, load_bundle
from engine.storage import create_schema
from webapp import create_app, services
from webapp.extensions import db

REPO = Path(__file__).resolve().parents[1]


def build_app(
    database: Path,
    org_yaml: str,
    clock: Clock | None = None,
    *,
    csrf: bool = False,
    bundle: Bundle | None = None,
    deployed: bool = True,
) -> Flask:
    config = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
        "GRIDLOOP_CHEAP_PASSWORDS": True,
        "TESTING": True,
        "WTF_CSRF_ENABLED": csrf,
    }
    app = create_app(config, clock=clock)
    with app.app_context():
        create_schema(db.engine)
        if deployed:
            now = clock.now() if clock else datetime.now(UTC)
            runtime = services(app).runtime
            deploy(db.session, runtime.registry, bundle or load_bundle(REPO), "system", now)
            db.session.commit()
        import_org(db.session, org_yaml, Passwords(cheap=True))
        db.session.commit()
        db.session.remove()
    return app


def dispose_app(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
