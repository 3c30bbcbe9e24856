"""Diagram versions as administrators handle them: deploy (validated), activate, list, diff.

A version is immutable and named by its bundle's hash (engine/specs.py). The live version of a
process is the one activated last; rollback is activating an older one. Cases stay on the version
they started on, so activating changes only what new cases start on.

Every deploy and activation is recorded in the administration log (engine/admin_log.py) in the
same transaction as the change; nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lxml import etree
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, undefer

from . import admin_log
from .case_search import CLOSED
from .clock import iso
from .diagram_diff import BPMN_MODEL, BundleDiff, diff_bundles
from .errors import NotFound
from .models import Case, DiagramVersion
from .specs import PROCESS_ID, Bundle, SpecRegistry, deploy, live_version
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
    (version, created). An existing hash is returned as it is, made live if asked and it is not
    the live one (deploying the files of an older version is a rollback to it). Does not
    commit."""
    existing = session.scalars(
        select(DiagramVersion).where(DiagramVersion.sha256 == bundle.sha256)
    ).first()
    if existing is not None:
        if activate and not is_live(session, existing):
            activate_version(session, existing, actor, now, comment)
        return existing, False
    problems = validate(bundle, now=now)
    if problems:
        raise BundleInvalid(problems)
    moment = _activation_time(session, PROCESS_ID, now) if activate else now
    version, created = deploy(session, registry, bundle, actor, now, comment, activate)
    if activate:
        version.activated_at = moment
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
    session.flush()
    return version, created


def activate_version(
    session: Session, version: DiagramVersion, actor: str, now: datetime, comment: str = ""
) -> DiagramVersion:
    """Make `version` the live one of its process: new cases start on it. Activating the live
    version changes nothing and records nothing. Does not commit."""
    if is_live(session, version):
        return version
    version.activated_at = _activation_time(session, version.process_id, now)
    admin_log.record(
        session,
        now,
        actor,
        "diagram_activated",
        {"hash": version.sha256, "process": version.process_id, "comment": comment},
    )
    session.flush()
    return version


def _activation_time(session: Session, process_id: str, now: datetime) -> datetime:
    """`now`, or just after the live version's activation if that is not earlier: the live
    version is the one activated last, so an activation must come last even when the clock
    stands still (a test's) or an earlier activation ran on a clock set ahead."""
    live = live_version(session, process_id)
    if live is not None and live.activated_at is not None and live.activated_at >= now:
        return live.activated_at + timedelta(microseconds=1)
    return now


def is_live(session: Session, version: DiagramVersion) -> bool:
    live = live_version(session, version.process_id)
    return live is not None and live.id == version.id


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class VersionInfo:
    """A version as the list shows it: who deployed it and when, whether it is live, and how
    many cases run on it (open) and ever started on it or moved to it (total)."""

    version: DiagramVersion
    processes: tuple[str, ...]
    live: bool
    cases_open: int
    cases_total: int

    @property
    def hash(self) -> str:
        return self.version.sha256

    @property
    def titles(self) -> tuple[str, ...]:
        """The processes by the names people read (the diagram's process names)."""
        names = process_names(self.version.files)
        return tuple(names.get(p, p) for p in self.processes)

    def as_json(self, files: bool = False) -> dict[str, Any]:
        v = self.version
        found: dict[str, Any] = {
            "hash": v.sha256,
            "processes": list(self.processes),
            "deployed_at": iso(v.deployed_at),
            "deployed_by": v.deployed_by,
            "comment": v.comment or "",
            "live": self.live,
            "activated_at": iso(v.activated_at),
            "cases_open": self.cases_open,
            "cases_total": self.cases_total,
        }
        if files:
            found["files"] = dict(v.files)
        return found


def list_versions(session: Session) -> list[VersionInfo]:
    """Every version, newest deployed first."""
    rows = list(
        session.scalars(
            select(DiagramVersion)
            .options(undefer(DiagramVersion.files))
            .order_by(DiagramVersion.deployed_at.desc(), DiagramVersion.id.desc())
        )
    )
    return _infos(session, rows)


def version_info(session: Session, version: DiagramVersion) -> VersionInfo:
    return _infos(session, [version])[0]


def _infos(session: Session, rows: list[DiagramVersion]) -> list[VersionInfo]:
    if not rows:
        return []
    counts = {
        diagram_id: (int(open_ or 0), int(total))
        for diagram_id, open_, total in session.execute(
            select(
                Case.diagram_id,
                func.sum(case((Case.status.not_in(CLOSED), 1), else_=0)),
                func.count(),
            )
            .where(Case.diagram_id.in_([v.id for v in rows]))
            .group_by(Case.diagram_id)
        )
    }
    live_ids = {}
    for process_id in {v.process_id for v in rows}:
        live = live_version(session, process_id)
        live_ids[process_id] = live.id if live is not None else None
    return [
        VersionInfo(
            version=v,
            processes=processes(v.files),
            live=live_ids.get(v.process_id) == v.id,
            cases_open=counts.get(v.id, (0, 0))[0],
            cases_total=counts.get(v.id, (0, 0))[1],
        )
        for v in rows
    ]


def processes(files: dict[str, str]) -> tuple[str, ...]:
    """The executable processes the bundle's BPMN files define, by id."""
    return tuple(sorted(process_names(files)))


def process_names(files: dict[str, str]) -> dict[str, str]:
    """The executable processes the bundle's BPMN files define: id -> the name people read
    (the process's `name`, else its id)."""
    found: dict[str, str] = {}
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
    for path, text in files.items():
        if not path.endswith(".bpmn"):
            continue
        try:
            root = etree.fromstring(text.encode("utf-8"), parser)
        except etree.XMLSyntaxError:
            continue
        for node in root.iterchildren(f"{{{BPMN_MODEL}}}process"):
            if node.get("isExecutable", "false").lower() == "true" and node.get("id"):
                found[node.get("id")] = node.get("name") or node.get("id")
    return found


def find_version(session: Session, sha: str) -> DiagramVersion:
    """The version with this hash (the full 64 hex digits), else NotFound."""
    version = None
    if len(sha) == 64 and all(c in "0123456789abcdef" for c in sha):
        version = session.scalars(
            select(DiagramVersion).where(DiagramVersion.sha256 == sha)
        ).first()
    if version is None:
        raise NotFound("no such diagram version")
    return version


def diff_versions(session: Session, old_sha: str, new_sha: str) -> BundleDiff:
    """What changed from version `old_sha` to version `new_sha`."""
    old, new = find_version(session, old_sha), find_version(session, new_sha)
    return diff_bundles(old.files, new.files)
