"""Signing in and out (Flask-Login sessions), failed-login limits, changing one's password, and
the language switch.

A person who still has the organisation file's initial password (`Person.password_initial`, set by
`org import` when it creates them or resets their password) is sent to the change page on signing
in, and every other page sends them back there until they have chosen their own (one hook,
`initial_password_first`, for every page of the web interface)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import format_timedelta
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, ValidationError

from engine.models import Person
from engine.signin import Attempt

from . import services
from .extensions import db, login_manager
from .i18n import LOCALES
from .web import login_required, now

bp = Blueprint("auth", __name__)
MIN_PASSWORD = 10  # characters, for a password people choose themselves
# What a person with the initial password may still open: the change page itself, signing out,
# the language switch (to read the change page in their language) and static files. Error pages
# are not endpoints: a URL that matches no page (endpoint None) answers its 404 as usual. The
# JSON API has its own rule (webapp/api.py: the token answer says a change is required).
OPEN_WITH_INITIAL_PASSWORD = frozenset(
    {"auth.change_password", "auth.logout", "auth.language", "static"}
)


class WebUser(UserMixin):
    """The signed-in person. The session remembers the person's generation with their id, so
    signing out anywhere, a password change or reset and deactivation end every older session."""

    def __init__(self, person: Person):
        self.person = person
        self.id = f"{person.id}.{person.generation}"


@login_manager.user_loader
def load_user(user_id: str) -> WebUser | None:
    person_id, _dot, generation = user_id.partition(".")
    if not (person_id.isdigit() and generation.isdigit()):
        return None
    person = db.session.get(Person, int(person_id))
    if person is None or not person.active or person.generation != int(generation):
        return None
    return WebUser(person)


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


def refusal(attempt: Attempt) -> str:
    """Why a sign-in was not let through, in words for the page."""
    if attempt.busy:
        return _("The server is busy. Please try again in a moment.")
    if attempt.wait_seconds:
        return _(
            "Too many failed attempts. Please wait %(time)s and try again.",
            time=format_timedelta(timedelta(seconds=attempt.wait_seconds), threshold=1.1),
        )
    return _("Wrong username or password.")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("inbox.index"))
    form = LoginForm()
    error, status = None, 200
    if form.validate_on_submit():
        attempt = services(current_app).signin.attempt(
            db.session, form.username.data, form.password.data, request.remote_addr, now()
        )
        if attempt.ok:
            login_user(WebUser(attempt.person))
            if attempt.person.password_initial:
                return redirect(url_for("auth.change_password"))
            return redirect(safe_next(request.args.get("next")))
        error = refusal(attempt)
        if attempt.busy or attempt.wait_seconds:
            page = render_template("auth/login.html", form=form, error=error)
            retry = str(attempt.wait_seconds or 5)
            return page, 503 if attempt.busy else 429, {"Retry-After": retry}
        status = 401
    return render_template("auth/login.html", form=form, error=error), status


def safe_next(target: str | None) -> str:
    """Only same-site paths: a login link must not forward to another site. Browsers drop tabs
    and line breaks from a URL and read a backslash as a slash ("/\\evil.example" is
    "//evil.example"), and CR or LF cannot go into a Location header: a target holding any
    control character or a backslash is unsafe too."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("inbox.index")


@bp.before_app_request
def initial_password_first():
    """Until a person has replaced the organisation file's initial password, every page of the
    web interface but those in OPEN_WITH_INITIAL_PASSWORD sends them to the change page."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in OPEN_WITH_INITIAL_PASSWORD or request.blueprint == "api":
        return None
    if current_user.is_authenticated and current_user.person.password_initial:
        return redirect(url_for("auth.change_password"))
    return None


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        current_user.person.end_sessions()
        db.session.commit()
    logout_user()
    flash(_l("You have signed out."))
    return redirect(url_for("auth.login"))


class PasswordForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=200)])
    new = PasswordField(
        _l("New password"),
        validators=[
            DataRequired(),
            Length(
                min=MIN_PASSWORD,
                max=200,
                message=_l("At least %(count)s characters.", count=MIN_PASSWORD),
            ),
        ],
    )
    confirm = PasswordField(
        _l("New password again"),
        validators=[DataRequired(), EqualTo("new", message=_l("The two passwords differ."))],
    )

    def validate_new(self, field) -> None:
        """A new password is a new one: keeping the initial password would defeat the change."""
        if field.data and field.data == self.current.data:
            raise ValidationError(_l("The new password must differ from the current one."))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """A person changes their own password (the current one required); their other sessions and
    tokens end, and they are no longer asked to replace an initial password."""
    form = PasswordForm()
    error = None
    if form.validate_on_submit():
        person = current_user.person
        attempt = services(current_app).signin.attempt(
            db.session, person.username, form.current.data, request.remote_addr, now()
        )
        if attempt.ok:
            person.password_hash = services(current_app).passwords.hash(form.new.data)
            person.password_initial = False
            person.end_sessions()
            db.session.commit()
            login_user(WebUser(person))  # this session goes on in the new generation
            flash(_("Your password was changed. Other sessions and API tokens were signed out."))
            return redirect(url_for("inbox.index"))
        error = refusal(attempt)
        if not attempt.busy and not attempt.wait_seconds:
            error = _("The current password is not right.")
    status = 400 if error or form.errors else 200
    return render_template(
        "auth/password.html",
        form=form,
        error=error,
        min_length=MIN_PASSWORD,
        initial=current_user.person.password_initial,
    ), status


@bp.get("/lang/<code>")
def language(code: str):
    """Switch the interface language; remembered in a cookie for a year."""
    response = redirect(safe_next(request.args.get("next")))
    if code in LOCALES:
        response.set_cookie(
            "lang",
            code,
            max_age=365 * 24 * 3600,
            samesite="Lax",
            httponly=True,
            secure=current_app.config.get("SESSION_COOKIE_SECURE", False),
        )
    return response
