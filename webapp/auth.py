"""Signing in and out (Flask-Login sessions), failed-login limits, and the language switch."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import delete, func, select
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from engine.models import LoginFailure, Person
from engine.org import authenticate

from .extensions import db, login_manager
from .i18n import LOCALES
from .web import now

bp = Blueprint("auth", __name__)
WINDOW = timedelta(minutes=15)
LIMITS = {"user": 5, "addr": 20}  # failures per WINDOW before logins are refused


class WebUser(UserMixin):
    def __init__(self, person: Person):
        self.person = person
        self.id = str(person.id)


@login_manager.user_loader
def load_user(user_id: str) -> WebUser | None:
    person = db.session.get(Person, int(user_id)) if user_id.isdigit() else None
    return WebUser(person) if person is not None and person.active else None


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


def _keys(username: str) -> list[str]:
    return [f"user:{username.lower()}", f"addr:{request.remote_addr or '-'}"]


def _limited(keys: list[str]) -> bool:
    since = now() - WINDOW
    for key in keys:
        count = db.session.scalar(
            select(func.count()).where(LoginFailure.key == key, LoginFailure.at > since)
        )
        if count >= LIMITS[key.split(":", 1)[0]]:
            return True
    return False


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("inbox.index"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        keys = _keys(form.username.data)
        if _limited(keys):
            error = _l("Too many failed attempts. Please wait 15 minutes and try again.")
        else:
            services = current_app.extensions["gridloop"]
            person = authenticate(
                db.session, form.username.data, form.password.data, services.passwords
            )
            if person is None:
                db.session.add_all(LoginFailure(key=k, at=now()) for k in keys)
                db.session.execute(delete(LoginFailure).where(LoginFailure.at < now() - WINDOW))
                db.session.commit()
                error = _l("Wrong username or password.")
            else:
                db.session.execute(delete(LoginFailure).where(LoginFailure.key == keys[0]))
                db.session.commit()
                login_user(WebUser(person))
                return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form, error=error), 401 if error else 200


def safe_next(target: str | None) -> str:
    """Only same-site paths: a login link must not forward to another site."""
    if target and target.startswith("/") and not target.startswith("//"):
        if not urlsplit(target).netloc:
            return target
    return url_for("inbox.index")


@bp.post("/logout")
def logout():
    logout_user()
    flash(_l("You have signed out."))
    return redirect(url_for("auth.login"))


@bp.get("/lang/<code>")
def language(code: str):
    """Switch the interface language; remembered in a cookie for a year."""
    response = redirect(safe_next(request.args.get("next")))
    if code in LOCALES:
        response.set_cookie("lang", code, max_age=365 * 24 * 3600, samesite="Lax")
    return response
