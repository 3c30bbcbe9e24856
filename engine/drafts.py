"""Administrators' drafts: a bundle being edited in the browser editors, not yet deployed.

A draft is one administrator's scratch copy of one process's files. It is never validated and
never runs; it only lets an edit survive a closed tab or the end of a working day. Each
administrator has at most one draft per process (saving again replaces it), and deploying the
bundle it holds removes it: what was deployed is a version from then on, kept by engine/versions.py.
Drafts change nothing anyone else sees, so they are not entries of the administration log.

The files a browser sends are checked here for their shape only (which paths a bundle may hold),
the same shape a deploy accepts; what the files say is validation's business (engine/validation.py).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .errors import Invalid
from .models import DiagramDraft
from .specs import BUNDLE_DIRS, BUNDLE_MAX_FILES, BUNDLE_SUFFIXES

MAX_FILES = BUNDLE_MAX_FILES
MAX_PATH = 200


def check_files(files: object) -> dict[str, str]:
    """The files of a bundle as a browser sent them, {path: text}; Invalid naming each path that
    is not a bundle file: relative POSIX paths under workflows/bpmn/ or rules/, ending .bpmn, .dmn
    or .json, with no `..`. Paths are only ever keys (nothing is written to disk), but a version
    keeps them for good and `diagrams deploy DIR` reads the same layout from a folder."""
    if not isinstance(files, dict) or not files:
        raise Invalid("a bundle needs its files", {"files": "required"})
    if len(files) > MAX_FILES:
        raise Invalid("a bundle holds too many files", {"files": f"at most {MAX_FILES} files"})
    problems: dict[str, str] = {}
    for path, text in files.items():
        if not isinstance(text, str):
            problems[str(path)] = "must be the file's text"
        elif not _bundle_path(path):
            problems[str(path)] = (
                f"must be a path under {' or '.join(d + '/' for d in BUNDLE_DIRS)} ending "
                + ", ".join(BUNDLE_SUFFIXES)
            )
    if problems:
        raise Invalid("some files are not part of a bundle", problems)
    return dict(files)


def _bundle_path(path: str) -> bool:
    if not path or len(path) > MAX_PATH or "\\" in path or path != path.strip():
        return False
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        return False
    under = any(path.startswith(folder + "/") for folder in BUNDLE_DIRS)
    return under and pure.suffix in BUNDLE_SUFFIXES


def draft_of(session: Session, author: str, process_id: str) -> DiagramDraft | None:
    """The administrator's draft of the process, if they saved one."""
    return session.scalars(
        select(DiagramDraft)
        .where(DiagramDraft.author == author, DiagramDraft.process_id == process_id)
        .order_by(DiagramDraft.id.desc())
        .limit(1)
    ).first()


def save_draft(
    session: Session,
    author: str,
    process_id: str,
    files: object,
    base_sha: str | None,
    now: datetime,
) -> DiagramDraft:
    """Keep `files` as the administrator's draft of the process, replacing the one they had.
    `base_sha` is the version the edit started from, so the editor can say what it is a change
    of. Does not commit."""
    checked = check_files(files)
    draft = draft_of(session, author, process_id)
    if draft is None:
        draft = DiagramDraft(process_id=process_id, author=author)
        session.add(draft)
    draft.files = checked
    draft.base_sha = base_sha or None
    draft.updated_at = now
    session.flush()
    return draft


def discard_draft(session: Session, author: str, process_id: str) -> bool:
    """Drop the administrator's draft of the process; False when there was none. Does not
    commit."""
    result = session.execute(
        delete(DiagramDraft).where(
            DiagramDraft.author == author, DiagramDraft.process_id == process_id
        )
    )
    return bool(result.rowcount)
