"""Handlers' inbox (我的待办) and task pages."""

from flask import Blueprint, render_template

from .web import login_required

bp = Blueprint("inbox", __name__)


@bp.get("/")
@login_required
def index():
    return render_template("base.html")
