"""Notifications: who hears about a step, written to the outbox in the step's transaction, and
delivered later to webhooks by workers.

Why an outbox: a step must commit or roll back as one (DESIGN §5), and a webhook is neither fast
nor reliable. So the step only adds `Notification` rows next to its work items and events; they
commit with it or vanish with it, and nobody is told about a step that did not happen. Delivery
runs outside every case transaction, one row at a time, with retries and backoff; a dead endpoint
costs its own rows some attempts and never touches a case.

Channels come from the organisation file (DESIGN §9): villages and grids may list webhooks
`{url, format}`, kept in `Unit.settings["notify"]`. A case's messages go to its grid's channels
and its village's, each URL once. Formats: `json` (the payload as it is) and `wecom` (the
group-robot message of WeChat Work, `{"msgtype": "text", "text": {"content": ...}}`).

Kinds of message:
- assigned (待办): a work item became ready for someone;
- supervised (督办): an item passed 80% of its limit, or its deadline at town;
- escalated (升级): an item's limit ran out and the case went one tier up.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .clock import iso, parse_iso
from .models import LEVEL_OF_ROLE, Case, Notification, Person, Unit, WorkItem

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
FORMATS = ("json", "wecom")
KINDS = ("assigned", "supervised", "escalated")

TIMEOUT_SECONDS = 5.0  # per HTTP request (connect, and each read)
MAX_ATTEMPTS = 8  # then the row is marked failed and left alone
FIRST_BACKOFF = timedelta(seconds=30)  # doubles after every failure ...
MAX_BACKOFF = timedelta(hours=1)  # ... up to this
# A row being posted is leased: its next_attempt_at moves this far ahead of the run's `now`, so
# a second deliverer does not take it meanwhile. A run stops claiming rows RUN_BUDGET after it
# started (real time), so every lease still has LEASE - RUN_BUDGET left when its post begins,
# well above the request timeout.
LEASE = timedelta(seconds=60)
RUN_BUDGET_SECONDS = 30.0
MAX_ERROR = 500  # characters of last_error (the column's size)
MAX_RESPONSE = 64 * 1024  # bytes of an answer read: enough for a WeCom errcode, bounded

TIER_LABEL = {
    "info_officer": "信息员",
    "grid_leader": "网格长",
    "district_leader": "片长",
    "village_secretary": "村党组织书记",
    "town_leadership": "镇联点班子",
}
TASK_LABEL = {
    "accept": "受理",
    "handle": "处置",
    "feedback": "回访反馈",
    "report": "上报",
    "review": "审核",
}
KIND_LABEL = {"assigned": "待办", "supervised": "督办", "escalated": "升级"}

Post = Callable[[str, bytes], tuple[int, bytes]]
"""Send `body` (JSON) to `url`; return the HTTP status and (the start of) the answer's body."""


# --------------------------------------------------------------------------------------------
# Writing the outbox (inside a step)


def on_step(
    session: Session,
    case: Case,
    events: list[tuple[str, str | None, dict]],
    new_items: list[WorkItem],
    now: datetime,
) -> None:
    """Called by every step after its work items and events are known. Adds outbox rows only:
    no flush and no commit, so the rows commit with the step or roll back with it.

    One row per message and channel. A case whose grid and village have no channels costs two
    identity-map lookups and nothing else.
    """
    with session.no_autoflush:  # the step writes when it is done, not while this reads
        channels = channels_of(session, case)
        payloads = list(_messages(session, case, events, new_items, now)) if channels else []
    for payload in payloads:
        for channel in channels:
            session.add(
                Notification(
                    case_id=case.id,
                    kind=payload["kind"],
                    url=channel["url"],
                    format=channel["format"],
                    payload=dict(payload),
                    created_at=now,
                    attempts=0,
                    next_attempt_at=now,
                )
            )


def channels_of(session: Session, case: Case) -> list[dict[str, str]]:
    """The case's webhooks: its grid's, then its village's, each URL once (a URL listed at both
    keeps the grid's format). Entries that are not a well-formed `{url, format}` are skipped:
    the import checks the file, but settings can also be written by other means."""
    found: dict[str, dict[str, str]] = {}
    for unit_id in (case.grid_id, case.village_id):
        unit = session.get(Unit, unit_id)
        entries = ((unit.settings if unit is not None else None) or {}).get("notify") or []
        for entry in entries if isinstance(entries, list) else []:
            url = entry.get("url") if isinstance(entry, dict) else None
            fmt = entry.get("format") if isinstance(entry, dict) else None
            if isinstance(url, str) and is_http_url(url) and fmt in FORMATS:
                found.setdefault(url, {"url": url, "format": fmt})
            else:
                log.warning("unit %s has a malformed notify entry: %r", unit_id, entry)
    return list(found.values())


def is_http_url(url: str) -> bool:
    """An absolute http(s) URL with a host and no whitespace: what a webhook can be."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and not any(c.isspace() for c in url)


def _messages(
    session: Session,
    case: Case,
    events: list[tuple[str, str | None, dict]],
    new_items: list[WorkItem],
    now: datetime,
) -> Iterator[dict[str, Any]]:
    """The step's payloads: its supervision and escalation events, then its new work items.

    The handle item an escalation creates is announced by the escalated message alone (same
    item, same people), and an item claimed as it was created (an officer opening a case holds
    its accept item) reached the person who took the step: neither gets an assigned message.
    """
    escalated_to = set()
    for type_, _task, data in events:
        if type_ == "supervised":
            yield _supervised(session, case, data, now)
        elif type_ == "escalated":
            payload = _escalated(session, case, data, new_items, now)
            escalated_to.add(payload["tier"])
            yield payload
    for item in new_items:
        if item.claimed_by is not None:
            continue
        if item.task == "handle" and item.role in escalated_to:
            continue
        yield _assigned(session, case, item, now)


def _assigned(session: Session, case: Case, item: WorkItem, now: datetime) -> dict[str, Any]:
    unit = session.get(Unit, item.unit_id)
    if item.assignee:
        recipient = item.assignee
        who = _person_name(session, item.assignee)
    else:
        recipient = f"{item.role}@{unit.code}"
        who = _who(item.role, unit)
    action = TASK_LABEL.get(item.task, item.name)
    text = f"请 {who} {action}"
    return _payload(
        session,
        "assigned",
        case,
        now,
        item.role,
        unit,
        item.task,
        item.name,
        item.due_at,
        [recipient],
        text,
    )


def _supervised(session: Session, case: Case, data: dict, now: datetime) -> dict[str, Any]:
    tier = data.get("tier")
    unit = _unit_of_tier(session, case, tier)
    item = _supervised_item(session, case, tier, now) if tier else None
    due_at = parse_iso(data["due_at"]) if data.get("due_at") else None
    overdue = bool(data.get("overdue")) or "missed" in data  # repeats only run past a deadline
    state = "已超过时限" if overdue else "已超过 80% 时限"
    payload = _payload(
        session,
        "supervised",
        case,
        now,
        tier,
        unit,
        item.task if item else None,
        item.name if item else None,
        due_at,
        list(data.get("notify") or []),
        f"{_who(tier, unit)} {state}",
    )
    payload["overdue"] = overdue
    return payload


def _escalated(
    session: Session, case: Case, data: dict, new_items: list[WorkItem], now: datetime
) -> dict[str, Any]:
    item = next((i for i in new_items if i.task == "handle"), None)
    tier = data.get("tier") or (item.role if item else None)
    if item is not None and item.role != tier:
        item = None
    unit = _unit_of_tier(session, case, tier)
    due = data.get("due_at")
    due_at = parse_iso(due) if due else (item.due_at if item else None)
    source = data.get("from")
    text = (
        f"{_who(source, _unit_of_tier(session, case, source))} 超时未办结，"
        f"已升级至 {_who(tier, unit)}"
    )
    recipients = [f"{tier}@{unit.code}"] if tier and unit else []
    payload = _payload(
        session,
        "escalated",
        case,
        now,
        tier,
        unit,
        item.task if item else "handle",
        item.name if item else None,
        due_at,
        recipients,
        text,
    )
    payload["from"] = source
    return payload


def _payload(
    session: Session,
    kind: str,
    case: Case,
    now: datetime,
    tier: str | None,
    unit: Unit | None,
    task: str | None,
    task_name: str | None,
    due_at: datetime | None,
    recipients: list[str],
    what: str,
) -> dict[str, Any]:
    """The stored payload: plain JSON values, times in UTC ISO like the API's (DESIGN §8), and
    `text`, one human line in Chinese with Shanghai times for people reading a group chat."""
    grid = session.get(Unit, case.grid_id)
    deadline = f"，截止 {_local(due_at)}" if due_at else ""
    text = f"【{KIND_LABEL[kind]}】{case.number} {case.title}：{what}{deadline}"
    return {
        "kind": kind,
        "case": case.number,
        "title": case.title,
        "category": case.category,
        "severity": case.severity,
        "grid": {"code": grid.code, "name": grid.name},
        "tier": tier,
        "unit": {"code": unit.code, "name": unit.name} if unit else None,
        "task": task,
        "task_name": task_name,
        "due_at": iso(due_at),
        "recipients": recipients,
        "at": iso(now),
        "text": text,
    }


def _unit_of_tier(session: Session, case: Case, tier: str | None) -> Unit | None:
    """The unit at the tier's level on the case's chain (DESIGN §4)."""
    level = LEVEL_OF_ROLE.get(tier or "")
    unit_id = {
        "grid": case.grid_id,
        "district": case.district_id,
        "village": case.village_id,
        "town": case.town_id,
    }.get(level or "")
    return session.get(Unit, unit_id) if unit_id else None


def _supervised_item(session: Session, case: Case, tier: str, now: datetime) -> WorkItem | None:
    """The open item the notice is about: the runtime stamped its supervised_at with this step's
    instant (in memory: the step has not flushed, so the query filters on what is stored)."""
    items = list(
        session.scalars(
            select(WorkItem)
            .where(
                WorkItem.case_id == case.id,
                WorkItem.role == tier,
                WorkItem.completed_at.is_(None),
            )
            .order_by(WorkItem.id.desc())
        )
    )
    return next((i for i in items if i.supervised_at == now), items[0] if items else None)


def _person_name(session: Session, username: str) -> str:
    return session.scalar(select(Person.name).where(Person.username == username)) or username


def _who(tier: str | None, unit: Unit | None) -> str:
    label = TIER_LABEL.get(tier or "", tier or "")
    return f"{label} · {unit.name}" if unit is not None else label


def _local(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------------------------
# Delivering (outside every case transaction)


def render(notification: Notification) -> bytes:
    """The HTTP body for the row's format. `json` adds the row's id, so a receiver can drop a
    repeat: delivery is at least once (an answer lost on the way back means a second post)."""
    if notification.format == "wecom":
        body: dict[str, Any] = {
            "msgtype": "text",
            "text": {"content": notification.payload["text"]},
        }
    elif notification.format == "json":
        body = {"id": notification.id, **notification.payload}
    else:
        raise ValueError(f"unknown notification format {notification.format!r}")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, not hops: urllib would turn the POST into a bodiless GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def post_json(url: str, body: bytes, timeout: float = TIMEOUT_SECONDS) -> tuple[int, bytes]:
    """The default `Post`: one POST with urllib, Content-Type application/json. A non-2xx answer
    is returned, not raised; network errors and timeouts raise."""
    if not is_http_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "gridloop"},
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(MAX_RESPONSE)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                answer = exc.read(MAX_RESPONSE)
            except OSError:
                answer = b""
        return exc.code, answer


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: 30 s, 1 min, 2 min, 4 min ... at most 1 h."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def deliver_due(session: Session, now: datetime, post: Post | None = None, limit: int = 100) -> int:
    """Post up to `limit` due notifications (oldest first); return how many were delivered.

    Each row lives through two short transactions of its own: the claim (a conditional UPDATE
    that leases the row, so two deliverers never post it at once) and the outcome. No transaction
    is open while a post waits on the network, so one slow endpoint holds no lock over other
    rows or over cases. A failed post is recorded and retried later with backoff; nothing about
    a delivery is raised to the caller. The session's own transaction is ended first: call this
    with no work pending. `now` is the run's instant (tests move it; the worker passes the wall
    clock).
    """
    post = post or post_json
    due = _due(now)
    ids = list(
        session.scalars(select(Notification.id).where(*due).order_by(Notification.id).limit(limit))
    )
    session.rollback()  # end the read before the first claim
    started = time.monotonic()
    delivered = 0
    for row_id in ids:
        if time.monotonic() - started > RUN_BUDGET_SECONDS:
            break  # the rest waits for the next run, with fresh leases
        claim = _claim(session, row_id, now)
        if claim is None:
            continue  # delivered, or taken by another deliverer, since the select
        error = claim.error or _attempt(post, claim.url, claim.format, claim.body)
        attempts = claim.attempts + 1
        _record(session, row_id, now, attempts, error)
        if error is None:
            delivered += 1
        else:
            log.info(
                "notification %s to %s failed (attempt %s): %s", row_id, claim.url, attempts, error
            )
    return delivered


class _Claim(NamedTuple):
    """What a deliverer took out of a leased row, so it posts with no transaction open."""

    url: str
    format: str
    body: bytes
    error: str | None  # the row cannot be rendered: a failed attempt without a post
    attempts: int  # before this one


def _due(now: datetime) -> tuple:
    return (
        Notification.delivered_at.is_(None),
        Notification.failed_at.is_(None),
        Notification.next_attempt_at <= now,
    )


def _claim(session: Session, row_id: int, now: datetime) -> _Claim | None:
    """Lease the row if it is still due, or None when another deliverer has it. The UPDATE's
    WHERE is the lock: only one deliverer's matches."""
    try:
        taken = session.execute(
            update(Notification)
            .where(Notification.id == row_id, *_due(now))
            .values(next_attempt_at=now + LEASE)
        ).rowcount
        if taken != 1:
            session.rollback()
            return None
        row = session.get(Notification, row_id, populate_existing=True)
        try:
            body, error = render(row), None
        except (KeyError, TypeError, ValueError) as exc:  # a row written by hand, say
            body, error = b"", _clip(f"cannot render: {type(exc).__name__}: {exc}")
        claim = _Claim(row.url, row.format, body, error, row.attempts or 0)
        session.commit()
        return claim
    except BaseException:
        session.rollback()
        raise


def _attempt(post: Post, url: str, fmt: str, body: bytes) -> str | None:
    """Post once; None when the receiver took it, else what went wrong."""
    try:
        status, answer = post(url, body)
    except Exception as exc:  # any failure of one endpoint is that row's business only
        return _clip(f"{type(exc).__name__}: {exc}")
    if not 200 <= status < 300:
        return _clip(f"HTTP {status}: {_text(answer)}")
    if fmt == "wecom":
        # WeCom answers 200 to everything and reports problems (bad key, too many messages a
        # minute) as a non-zero errcode in the body.
        try:
            errcode = json.loads(answer or b"{}").get("errcode", 0)
        except (ValueError, AttributeError):
            errcode = 0  # not WeCom's JSON (a relay in front of it): the 2xx stands
        if errcode not in (0, None):
            return _clip(f"errcode {errcode}: {_text(answer)}")
    return None


def _record(session: Session, row_id: int, now: datetime, attempts: int, error: str | None) -> None:
    """Store one attempt's outcome. `attempts` counts every post, the successful one too."""
    values: dict[str, Any] = {"attempts": attempts}
    if error is None:
        values["delivered_at"] = now
    else:
        values["last_error"] = error
        if attempts >= MAX_ATTEMPTS:
            values["failed_at"] = now
        else:
            values["next_attempt_at"] = now + backoff(attempts)
    try:
        session.execute(
            update(Notification)
            .where(Notification.id == row_id, Notification.delivered_at.is_(None))
            .values(**values)
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _text(answer: bytes | None) -> str:
    return (answer or b"")[:300].decode("utf-8", "replace").strip()


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR else message[: MAX_ERROR - 1] + "…"
