"""People remember whether they still have the organisation file's initial password.

Revision ID: 0005_person_password_initial
Revises: 0004_work_item_warn_at
Create Date: 2026-11-28

A password in the organisation file (DESIGN §9) is set when the import creates a person, and again
with `org import --reset-passwords`; an administrator wrote it, and often the same one for many
people. `person.password_initial` is true while the person still has it, and the web pages then
ask for a new one before anything else; changing one's own password clears it.

People already in an upgraded database get false: nothing in the database tells an initial
password from a chosen one, and forcing every existing person through the change page at once
would stop a running township on the morning after the upgrade (and lock out whoever cannot choose
a password of the required length at that moment). An administrator who wants them asked resets
their passwords with `org import --reset-passwords`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_person_password_initial"
down_revision = "0004_work_item_warn_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "person",
        sa.Column("password_initial", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("person", "password_initial")
