"""Flask extensions, created unbound and attached by the app factory."""

from flask_sqlalchemy import SQLAlchemy

from engine.models import Base

db = SQLAlchemy(model_class=Base)
