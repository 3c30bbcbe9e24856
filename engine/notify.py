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
- escalated (升级): an item's limit ran out and the case went one tier up;
- transferred (转办): the case was sent to another grid (told to its owner, if it had one).

Where webhooks may go: only to public addresses. A webhook URL is chosen by whoever writes the
organisation file, and the server posts to it from inside the township's network, so a URL at a
loopback, link-local (169.254.169.254, cloud metadata), private (RFC 1918, fc00::/7) or other
non-public address would let the file reach services no outsider should. Such URLs are refused
when the file is imported (`webhook_refusal`: literal addresses and localhost names), and every
delivery resolves the host, checks every address it resolves to, and connects only to those
checked addresses (`post_json`), so a name that later resolves to a private address gets no
post either. Hosts that must be reached inside the network (a relay, a test receiver) are
allowed by the server's operator, not by the file: the environment variable
GRIDLOOP_WEBHOOK_ALLOW lists host names, addresses or networks (`10.0.0.0/8`), separated by
commas or spaces. A failed delivery keeps only a short reason (`HTTP 500`, `connection refused`),
never what the remote answered.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from .access import unit_by_code
from .clock import SHANGHAI, iso, parse_iso
from .models import (
    CASE_UNIT_COLUMN,
    LEVEL_OF_ROLE,
    Case,
    Notification,
    Person,
    Unit,
    WorkItem,
    case_unit,
)

log = logging.getLogger(__name__)

FORMATS = ("json", "wecom")
KINDS = ("assigned", "supervised", "escalated", "transferred")

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
ALLOW_ENV = "GRIDLOOP_WEBHOOK_ALLOW"  # hosts, addresses or networks webhooks may reach anyway
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv6 that a NAT64 gateway maps to IPv4

TIER_LABEL = {
    "info_officer": "信息员",
    "grid_leader": "网格长",
    "district_leader": "片长",
    "village_secretary": "村党组织书记",
    "town_leadership": "镇联点班子",
}
KIND_LABEL = {"assigned": "待办", "supervised": "督办", "escalated": "升级", "transferred": "转办"}

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
    forms: dict[str, dict] | None = None,
    owner_before: str | None = None,
) -> None:
    """Called by every step after its work items and events are known, with the forms of the
    case's diagram version (a task is named by its form's title) and, for a step that cleared the
    case's owner (a transfer), whom it was. Adds outbox rows only:
    no flush and no commit, so the rows commit with the step or roll back with it.

    One row per message and channel. A case whose grid and village have no channels costs two
    identity-map lookups and nothing else.
    """
    if not new_items and not any(t in NOTICE_EVENTS for t, _k, _d in events):
        return  # nothing to tell: no need to read the channels
    with session.no_autoflush:  # the step writes when it is done, not while this reads
        channels = channels_of(session, case)
        payloads = (
            list(_messages(session, case, events, new_items, now, forms or {}, owner_before))
            if channels
            else []
        )
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


# The events a step's notices are about (besides its new work items): see _messages.
NOTICE_EVENTS = frozenset({"supervised", "escalated", "transferred"})
UNIT_SETTINGS = select(Unit.id, Unit.settings).where(
    Unit.id.in_(bindparam("b_units", expanding=True))
)


def channels_of(session: Session, case: Case) -> list[dict[str, str]]:
    """The case's webhooks: its grid's, then its village's, each URL once (a URL listed at both
    keeps the grid's format). Entries that are not a well-formed `{url, format}` are skipped:
    the import checks the file, but settings can also be written by other means."""
    found: dict[str, dict[str, str]] = {}
    # Read fresh on every step (a worker's session lives long; settings change by import).
    settings = dict(
        session.connection()
        .execute(UNIT_SETTINGS, {"b_units": [case.grid_id, case.village_id]})
        .all()
    )
    for unit_id in (case.grid_id, case.village_id):
        entries = (settings.get(unit_id) or {}).get("notify") or []
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
    forms: dict[str, dict],
    owner_before: str | None = None,
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
        elif type_ == "transferred" and owner_before:
            yield _transferred(session, case, data, owner_before, now)
    for item in new_items:
        if item.claimed_by is not None:
            continue
        if item.task == "handle" and item.role in escalated_to:
            continue
        yield _assigned(session, case, item, now, forms.get(item.form, {}).get("title"))


def _assigned(
    session: Session, case: Case, item: WorkItem, now: datetime, title: str | None
) -> dict[str, Any]:
    unit = session.get(Unit, item.unit_id)
    if item.assignee:
        recipient = item.assignee
        who = _person_name(session, item.assignee)
    else:
        recipient = f"{item.role}@{unit.code}"
        who = _who(item.role, unit)
    action = title or item.name  # the bundle's words: the form's title, else the element's name
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


def _transferred(
    session: Session, case: Case, data: dict, owner: str, now: datetime
) -> dict[str, Any]:
    """The owner hears that their case went to another grid, and that its new owner will be
    whoever accepts it there."""
    target = unit_by_code(session, data.get("to") or "")
    where = target.name if target is not None else data.get("to")
    text = f"已由 {data.get('from')} 转办至 {where}（{data.get('to')}），由该网格重新受理"
    payload = _payload(
        session, "transferred", case, now, None, target, None, None, None, [owner], text
    )
    payload.update({"from": data.get("from"), "to": data.get("to"), "note": data.get("note")})
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
    unit_id = case_unit(case, level) if level in CASE_UNIT_COLUMN else None
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


# --------------------------------------------------------------------------------------------
# Which addresses a webhook may reach


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookAllowance(NamedTuple):
    """What GRIDLOOP_WEBHOOK_ALLOW lets webhooks reach besides public addresses: host names
    (the URL's host, exactly) and networks (a literal address in a URL, or an address a name
    resolves to)."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def allows(self, address: IPAddress) -> bool:
        return is_public_address(address) or any(address in net for net in self.networks)


def webhook_allowance(raw: str | None = None) -> WebhookAllowance:
    """The allowance in `raw`, by default the environment's GRIDLOOP_WEBHOOK_ALLOW (read at each
    call, so the operator's setting is the one in force): `127.0.0.1, relay.intranet 10.0.0.0/8`."""
    text = os.environ.get(ALLOW_ENV, "") if raw is None else raw
    hosts: set[str] = set()
    networks = []
    for entry in text.replace(",", " ").split():
        entry = entry.strip().strip("[]").lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry)
    return WebhookAllowance(frozenset(hosts), tuple(networks))


def is_public_address(address: IPAddress) -> bool:
    """A globally routed unicast address: not loopback, link-local, private (RFC 1918, fc00::/7,
    CGNAT), unspecified (0.0.0.0, ::), multicast, reserved or documentation, nor an IPv6 address
    that carries such an IPv4 address (mapped, 6to4, Teredo, NAT64)."""
    if address.version == 6:
        embedded = [address.ipv4_mapped, address.sixtofour, (address.teredo or (None, None))[1]]
        if address in NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(v4 is not None and not is_public_address(v4) for v4 in embedded):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def _literal_address(host: str) -> IPAddress | None:
    """The address a URL's host spells out, in any form the resolver accepts (`127.1`,
    `2130706433`, `0x7f.0.0.1` all mean 127.0.0.1), or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").rstrip(".")


def webhook_refusal(url: str, allowance: WebhookAllowance | None = None) -> str | None:
    """Why the org file may not name this webhook (None: it may). Checked without the network:
    a literal address that is not public, or a localhost name, unless GRIDLOOP_WEBHOOK_ALLOW
    allows it. Other names are checked at each delivery, against what they resolve to then."""
    allowance = webhook_allowance() if allowance is None else allowance
    host = _host(url)
    if host in allowance.hosts:
        return None
    hint = f"; the server's operator can allow it in {ALLOW_ENV}"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{url!r} points at this server ({host}){hint}"
    address = _literal_address(host)
    if address is not None and not allowance.allows(address):
        return f"{url!r} points at a loopback, link-local or private address ({address}){hint}"
    return None


class BlockedAddress(OSError):
    """A webhook's host resolves to an address that is not allowed: nothing was posted."""


def checked_addresses(
    host: str, port: int, allowance: WebhookAllowance | None = None
) -> list[tuple]:
    """Every socket address `host` resolves to, each checked; BlockedAddress if any is not
    public and not allowed (a name with one private address among public ones is refused as a
    whole: which one a client picks is not ours to guess)."""
    allowance = webhook_allowance() if allowance is None else allowance
    host = host.rstrip(".")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = [(family, sockaddr) for family, _t, _p, _c, sockaddr in infos]
    if host.lower() not in allowance.hosts:
        for _family, sockaddr in addresses:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if not allowance.allows(address):
                raise BlockedAddress(f"{host} resolves to {address}, which is not public")
    if not addresses:
        raise BlockedAddress(f"{host} resolves to no address")
    return addresses


def _connect_to(
    addresses: list[tuple], _requested: Any, timeout: Any = None, source_address: Any = None
) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers, in place of the
    (host, port) http.client asks for: never a fresh lookup, which could answer differently
    (DNS rebinding)."""
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None
    raise error


# --------------------------------------------------------------------------------------------
# Posting


def post_json(
    url: str,
    body: bytes,
    timeout: float = TIMEOUT_SECONDS,
    allowance: WebhookAllowance | None = None,
) -> tuple[int, bytes]:
    """The default `Post`: one POST, Content-Type application/json, to the checked addresses of
    the URL's host (`checked_addresses`; BlockedAddress, before any connection, when one is not
    allowed). A non-2xx answer is returned, not raised; network errors and timeouts raise.
    Redirects are answers, not hops, and no proxy from the environment is used: the check is
    about where the post really goes."""
    if not is_http_url(url):
        raise ValueError("not an http(s) URL")
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    host = parts.hostname or ""
    addresses = checked_addresses(host, port, allowance)
    if https:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    # http.client opens its socket through this attribute, as (address, timeout, source); HTTPS
    # then wraps it for TLS, checking the certificate against `host`. Pin it to the checked
    # addresses.
    conn._create_connection = partial(_connect_to, addresses)  # type: ignore[attr-defined]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": "gridloop"},
        )
        response = conn.getresponse()
        return response.status, response.read(MAX_RESPONSE)
    finally:
        conn.close()


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
            body, error = b"", f"cannot render: {type(exc).__name__}"
        claim = _Claim(row.url, row.format, body, error, row.attempts or 0)
        session.commit()
        return claim
    except BaseException:
        session.rollback()
        raise


def _attempt(post: Post, url: str, fmt: str, body: bytes) -> str | None:
    """Post once; None when the receiver took it, else a short reason: the HTTP status, WeCom's
    errcode, or what kind of network failure. Never the remote's words: an answer's body (or an
    error page quoted in an exception) is the remote's text, and it is not stored or shown."""
    try:
        status, answer = post(url, body)
    except Exception as exc:  # any failure of one endpoint is that row's business only
        log.info("notification to %s not delivered: %r", url, exc)
        return failure_reason(exc)
    if not 200 <= status < 300:
        return f"HTTP {int(status)}"
    if fmt == "wecom":
        # WeCom answers 200 to everything and reports problems (bad key, too many messages a
        # minute) as a non-zero errcode in the body.
        try:
            errcode = json.loads(answer or b"{}").get("errcode", 0)
        except (ValueError, AttributeError):
            errcode = 0  # not WeCom's JSON (a relay in front of it): the 2xx stands
        if errcode not in (0, None):
            is_number = isinstance(errcode, int) and not isinstance(errcode, bool)
            return f"errcode {errcode}" if is_number and abs(errcode) < 10**12 else "errcode ?"
    return None


def failure_reason(exc: BaseException) -> str:
    """A failed post in a few words of ours, e.g. `connection refused`, `timed out`."""
    if isinstance(exc, BlockedAddress):
        return "blocked (not a public address)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate not accepted"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    return type(exc).__name__


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
