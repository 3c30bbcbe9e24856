"""Gridloop's web layer: an app factory and one blueprint per audience.

It validates input, checks who may do what, calls engine/ and renders the result. It holds no
process logic.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from flask import Flask, request

from engine.clock import TOWN_ZONE_NAME, Clock, SystemClock
from engine.passwords import Passwords
from engine.runtime import Runtime
from engine.signin import SignIn
from engine.storage import INSTANCE_DIR, configure_engine, database_url
from jobs.root import Root, build_root

from . import security
from .extensions import babel, csrf, db, login_manager
from .i18n import DEFAULT_LOCALE, LOCALES, compile_catalogs

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Services:
    """What every request shares: the engine runtime (parsed specs, hot workflows) and hashing,
    and the background work's composition root, whose runtime it is (the ticker shares it)."""

    runtime: Runtime
    passwords: Passwords
    signin: SignIn  # every password check: throttled, and a few at a time
    root: Path
    jobs: Root


def create_app(config: dict | None = None, clock: Clock | None = None) -> Flask:
    app = Flask(__name__, instance_path=str(INSTANCE_DIR))
    app.config.update(
        SECRET_KEY=os.environ.get("GRIDLOOP_SECRET_KEY") or _instance_secret(),
        SQLALCHEMY_DATABASE_URI=database_url(),
        GRIDLOOP_CHEAP_PASSWORDS=os.environ.get("GRIDLOOP_CHEAP_PASSWORDS") == "1",
        GRIDLOOP_TOKEN_HOURS=24 * 30,
        GRIDLOOP_ROOT=str(REPO_ROOT),
        JSON_AS_ASCII=False,
    )
    # Cookies, the request size limit and trusted proxies (GRIDLOOP_SECURE_COOKIES,
    # GRIDLOOP_TRUSTED_PROXIES): see security.py.
    app.config.update(security.defaults(os.environ))
    app.json.ensure_ascii = False
    app.config.update(config or {})
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 15}})
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", TOWN_ZONE_NAME)
    app.config.setdefault(
        "BABEL_TRANSLATION_DIRECTORIES",
        str(compile_catalogs(Path(app.instance_path) / "translations")),
    )
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the session's lifetime is the limit
    db.init_app(app)
    with app.app_context():
        engine = configure_engine(db.engine)
    # One root per app: the embedded ticker and the requests share its Runtime and the engine.
    jobs = build_root(engine=engine, clock=clock or SystemClock())
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_locale)
    passwords = Passwords(cheap=app.config["GRIDLOOP_CHEAP_PASSWORDS"])
    app.extensions["gridloop"] = Services(
        runtime=jobs.runtime,
        passwords=passwords,
        signin=SignIn(passwords),
        root=Path(app.config["GRIDLOOP_ROOT"]),
        jobs=jobs,
    )

    # delegation, audit, dossier and figures add routes to api.bp: imported before it is
    # registered.
    from . import (  # noqa: F401
        admin_log_pages,
        api,
        audit,
        auth,
        campaign_api,
        delegation,
        diagrams,
        dossier,
        errors,
        figures,
        households,
        migrations,
        web,
    )

    csrf.exempt(api.bp)  # token-authenticated, no cookies: nothing to forge
    app.register_blueprint(api.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(delegation.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(dossier.bp)
    for name in (
        "inbox",
        "cases",
        "admin",
        "photos",
        "steps",
        "board",
        "dashboards",
        "calendar_pages",
        "admin_log_pages",
        "diagrams",
        "editor",
        "migrations",
        "org_pages",
        "households",
        "campaign_walk",
        "campaign_pages",
    ):
        module = import_module(f"webapp.{name}")
        app.register_blueprint(module.bp)
    web.register_filters(app)
    errors.register(app)
    security.init_app(app)
    return app


def _instance_secret() -> str:
    """Without GRIDLOOP_SECRET_KEY, a random key kept in instance/: sessions survive restarts,
    and no two installations share a key."""
    path = INSTANCE_DIR / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _locale() -> str:
    chosen = request.cookies.get("lang")
    return chosen if chosen in LOCALES else DEFAULT_LOCALE


def services(app: Flask) -> Services:
    return app.extensions["gridloop"]
