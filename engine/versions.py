"""Diagram versions as administrators handle them: deploy (validated), activate, list, diff.

Every deploy and activation is recorded in the administration log (engine/admin_log.py) in the
same transaction. (Interface stub: deploy_bundle and activate; list and diff to come.)"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import admin_log
from .models import DiagramVersion
from .specs import Bundle, SpecRegistry, deploy
from .validation import BundleInvalid, validate


def deploy_bundle(
    session: Session,
    registry: SpecRegistry,
    bundle: Bundle,
    actor: str,
    now: datetime,
    comment: str = "",
    activate: bool = True,
) -> tuple[DiagramVersion, bool]:
    """Validate and store the bundle; raises BundleInvalid (the live version unchanged). Returns
    (version, created). An existing hash is returned as it is (activated if asked). Does not
    commit."""
    existing = session.scalars(
        select(DiagramVersion).where(DiagramVersion.sha256 == bundle.sha256)
    ).first()
    if existing is not None:
        if activate and existing.activated_at is None:
            activate_version(session, existing, actor, now, comment)
        return existing, False
    problems = validate(bundle)
    if problems:
        raise BundleInvalid(problems)
    version, created = deploy(session, registry, bundle, actor, now, comment, activate)
    admin_log.record(
        session,
        now,
        actor,
        "diagram_deployed",
        {
            "hash": version.sha256,
            "process": version.process_id,
            "comment": comment,
            "live": activate,
        },
    )
    return version, created


def activate_version(
    session: Session, version: DiagramVersion, actor: str, now: datetime, comment: str = ""
) -> DiagramVersion:
    """Make `version` the live one of its process: new cases start on it. Does not commit."""
    version.activated_at = now
    admin_log.record(
        session,
        now,
        actor,
        "diagram_activated",
        {"hash": version.sha256, "process": version.process_id, "comment": comment},
    )
    session.flush()
    return version
