"""Case pages: a case, the cases I accepted (我首接的案件), and opening a new case."""

from flask import Blueprint, render_template

from .web import login_required

bp = Blueprint("cases", __name__)


@bp.get("/cases/mine")
@login_required
def mine():
    return render_template("base.html")


@bp.get("/cases/new")
@login_required
def new():
    return render_template("base.html")
