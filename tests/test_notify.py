"""Notifications: the outbox rows a step writes (assigned, supervised, escalated), and their
delivery to webhooks with retries and backoff. The HTTP receiver is real (a local server); time
is not: every delivery run is given its `now`, and nothing sleeps for time to pass."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
from conftest import ACCEPT_NORMAL, GRID, ORG_YAML, START
from sqlalchemy import select

from engine import notify
from engine.clock import iso
from engine.models import Notification, Unit
from engine.notify import MAX_ATTEMPTS, backoff, deliver_due, post_json, render
from engine.org import OrgFileError, import_org
from engine.passwords import Passwords

SH = ZoneInfo("Asia/Shanghai")
GRID_DUE = datetime(2026, 11, 24, 10, tzinfo=SH).astimezone(UTC)  # 24 working hours
GRID_WARN = datetime(2026, 11, 24, 5, 12, tzinfo=SH).astimezone(UTC)  # 80% of them
DISTRICT_DUE = datetime(2026, 11, 26, 10, tzinfo=SH).astimezone(UTC)
G01_HEAD = "            name: 一组\n            households: 4\n"
V01_HEAD = "    name: 一村\n"


# ------------------------------------------------------------------ a real webhook receiver


class Receiver:
    """A local webhook endpoint in a thread. It records every POST; it can be told to answer
    500 to the next N, to answer with a given body, or to hold requests to some paths until
    the test ends (past any client timeout)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_next = 0
        self.answer = b'{"errcode":0,"errmsg":"ok"}'
        self.hang_paths: set[str] = set()
        self.released = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    fail = receiver.fail_next > 0
                    receiver.fail_next -= fail
                if self.path in receiver.hang_paths:
                    receiver.released.wait(30)
                answer = b"boom" if fail else receiver.answer
                try:
                    self.send_response(500 if fail else 200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str | None = None) -> list[dict]:
        return [json.loads(b) for p, _, b in self.requests if path is None or p == path]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def allow_the_local_receiver(monkeypatch):
    """The receiver listens on 127.0.0.1, where webhooks may go only when the operator allows
    it (engine/notify.py): these tests allow it, as an operator would a relay."""
    monkeypatch.setenv("GRIDLOOP_WEBHOOK_ALLOW", "127.0.0.1")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def dead_url() -> str:
    """An address where nothing listens: a port the OS just handed out and took back."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# ------------------------------------------------------------------ helpers


def notify_yaml(indent: int, channels: list[tuple[str, str]]) -> str:
    pad = " " * indent
    lines = [f"{pad}notify:"] + [f"{pad}  - {{url: {u}, format: {f}}}" for u, f in channels]
    return "\n".join(lines) + "\n"


def org_with(grid=(), village=()) -> str:
    """The conftest organisation with webhooks on grid V01-D1-G01 and village V01."""
    text = ORG_YAML
    if grid:
        text = text.replace(G01_HEAD, G01_HEAD + notify_yaml(12, list(grid)))
    if village:
        text = text.replace(V01_HEAD, V01_HEAD + notify_yaml(4, list(village)))
    return text


def configure(gl, grid=(), village=()):
    report = import_org(gl.session, org_with(grid, village), Passwords(cheap=True), now=START)
    gl.session.commit()
    return report


def outbox(session) -> list[Notification]:
    session.rollback()
    session.expire_all()
    return list(session.scalars(select(Notification).order_by(Notification.id)))


def unit(session, code: str) -> Unit:
    return session.scalar(select(Unit).where(Unit.code == code))


def line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


# ------------------------------------------------------------------ writing the outbox


def test_accepting_a_case_adds_an_assigned_row_in_the_steps_transaction(gl, monkeypatch):
    configure(gl, grid=[("http://hooks.example/g", "wecom")])
    seen = []
    real = notify.on_step

    def spy(session, case, events, new_items, now, forms, *rest):
        real(session, case, events, new_items, now, forms, *rest)
        added = [o for o in session.new if isinstance(o, Notification)]
        seen.append([(row.kind, row.id) for row in added])  # pending: no flush, no id yet

    monkeypatch.setattr(notify, "on_step", spy)
    case = gl.open("off1")
    assert outbox(gl.session) == [] and seen == [[]]  # the opener holds accept: no one to tell

    gl.clock.advance(minutes=5)
    case = gl.complete("off1", case, ACCEPT_NORMAL)

    assert seen[-1] == [("assigned", None)]
    (row,) = outbox(gl.session)
    now = START + timedelta(minutes=5)
    assert (row.case_id, row.kind, row.url, row.format) == (
        case.id,
        "assigned",
        "http://hooks.example/g",
        "wecom",
    )
    assert (row.created_at, row.next_attempt_at, row.attempts) == (now, now, 0)
    assert (row.delivered_at, row.failed_at, row.last_error) == (None, None, None)
    assert row.payload == {
        "kind": "assigned",
        "case": "XDK-2026-000001",
        "title": "路灯坏了",
        "category": "resident_request",
        "severity": "normal",
        "grid": {"code": GRID, "name": "一组"},
        "tier": "grid_leader",
        "unit": {"code": GRID, "name": "一组"},
        "task": "handle",
        "task_name": "处置（网格长）",
        "due_at": iso(GRID_DUE + timedelta(minutes=5)),
        "recipients": [f"grid_leader@{GRID}"],
        "at": iso(now),
        "text": "【待办】XDK-2026-000001 路灯坏了：请 网格长 · 一组 处置，截止 2026-11-24 10:05",
    }


def test_a_resident_case_tells_the_grids_officers(gl):
    configure(gl, village=[("http://hooks.example/v", "json")])
    gl.open(None, title="井盖丢了")
    (row,) = outbox(gl.session)
    assert row.payload["recipients"] == [f"info_officer@{GRID}"]
    assert row.payload["due_at"] == iso(START + timedelta(hours=4))  # 4 working hours
    assert row.payload["text"] == (
        "【待办】XDK-2026-000001 井盖丢了：请 信息员 · 一组 受理，截止 2026-11-23 14:00"
    )


def test_a_step_that_fails_late_leaves_no_outbox_row(gl, monkeypatch):
    configure(gl, grid=[("http://hooks.example/g", "json")])
    case = gl.open("off1")
    added = []
    real = notify.on_step

    def spy_then_fail(session, *args):
        # The outbox rows are the step's last writes: fail right after them, before the commit.
        real(session, *args)
        added.extend(o for o in session.new if isinstance(o, Notification))
        raise RuntimeError("disk full")

    monkeypatch.setattr(notify, "on_step", spy_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        gl.complete("off1", case, ACCEPT_NORMAL)

    assert [row.kind for row in added] == ["assigned"]  # it was written, then rolled back
    monkeypatch.undo()
    assert outbox(gl.session) == []
    assert gl.reload(case).status == "accepting"


def test_no_channels_no_rows(gl):
    case = gl.accepted()
    gl.fire(GRID_WARN)
    gl.fire(GRID_DUE)
    assert "escalated" in gl.types(case)
    assert outbox(gl.session) == []


def test_supervision_and_escalation_add_rows_with_their_text(gl):
    configure(gl, grid=[("http://hooks.example/g", "json")])
    case = gl.accepted()
    before = len(outbox(gl.session))

    assert gl.fire(GRID_WARN) == 1
    rows = outbox(gl.session)[before:]
    assert [r.kind for r in rows] == ["supervised"]
    assert rows[0].payload == {
        "kind": "supervised",
        "case": case.number,
        "title": "路灯坏了",
        "category": "resident_request",
        "severity": "normal",
        "grid": {"code": GRID, "name": "一组"},
        "tier": "grid_leader",
        "unit": {"code": GRID, "name": "一组"},
        "task": "handle",
        "task_name": "处置（网格长）",
        "due_at": iso(GRID_DUE),
        "recipients": [f"grid_leader@{GRID}", "off1", "district_leader@V01-D1"],
        "at": iso(GRID_WARN),
        "text": "【督办】XDK-2026-000001 路灯坏了：网格长 · 一组 已超过 80% 时限，"
        "截止 2026-11-24 10:00",
        "overdue": False,
    }

    assert gl.fire(GRID_DUE) == 1
    rows = outbox(gl.session)[before + 1 :]
    assert [r.kind for r in rows] == ["escalated"]  # the new handle item: no second message
    assert rows[0].payload == {
        "kind": "escalated",
        "case": case.number,
        "title": "路灯坏了",
        "category": "resident_request",
        "severity": "normal",
        "grid": {"code": GRID, "name": "一组"},
        "tier": "district_leader",
        "unit": {"code": "V01-D1", "name": "一片"},
        "task": "handle",
        "task_name": "处置（片长）",
        "due_at": iso(DISTRICT_DUE),
        "recipients": ["district_leader@V01-D1"],
        "at": iso(GRID_DUE),
        "text": "【升级】XDK-2026-000001 路灯坏了：网格长 · 一组 超时未办结，"
        "已升级至 片长 · 一片，截止 2026-11-26 10:00",
        "from": "grid_leader",
    }

    # Resolved at the district: the owner's feedback item goes to the owner, by name.
    case = gl.complete("dl1", case, {"outcome": "resolved"})
    (row,) = outbox(gl.session)[before + 2 :]
    assert (row.kind, row.payload["recipients"]) == ("assigned", ["off1"])
    assert row.payload["text"] == (
        "【待办】XDK-2026-000001 路灯坏了：请 周信息员 回访反馈，截止 2026-11-25 10:00"
    )


def test_urgent_case_climbs_to_town_and_town_overdue_is_supervised(gl):
    configure(gl, village=[("http://hooks.example/v", "wecom")])
    case = gl.accepted(category="safety_hazard", severity="urgent")
    assert gl.item(case).role == "village_secretary"
    before = len(outbox(gl.session))

    # 8 clock hours on: 80% and 100% are both due, so one step supervises and escalates.
    gl.fire(gl.item(case).due_at)
    rows = outbox(gl.session)[before:]
    assert [r.kind for r in rows] == ["supervised", "escalated"]
    assert rows[1].payload["recipients"] == ["town_leadership@XDK"]
    assert (
        "村党组织书记 · 一村 超时未办结，已升级至 镇联点班子 · 小渡口镇" in rows[1].payload["text"]
    )

    gl.fire(gl.item(case).due_at)  # town's deadline: nothing above, supervised as overdue
    last = outbox(gl.session)[-1]
    assert last.kind == "supervised" and last.payload["overdue"] is True
    assert "：镇联点班子 · 小渡口镇 已超过时限，截止" in last.payload["text"]
    assert last.payload["recipients"] == ["town_leadership@XDK", "off1"]


def test_grid_and_village_channels_are_deduped_by_url(gl):
    configure(
        gl,
        grid=[("http://a.example/1", "wecom"), ("http://b.example/1", "json")],
        village=[("http://b.example/1", "wecom"), ("http://c.example/1", "json")],
    )
    gl.accepted()
    assert [(r.url, r.format) for r in outbox(gl.session)] == [
        ("http://a.example/1", "wecom"),
        ("http://b.example/1", "json"),
        ("http://c.example/1", "json"),
    ]
    # Another grid of the village hears through the village only; another village not at all.
    gl.accepted(officer="off2", grid="V01-D1-G02")
    gl.accepted(officer="off3", grid="V02-D1-G01")
    rows = outbox(gl.session)[3:]
    assert [(r.payload["case"], r.url) for r in rows] == [
        ("XDK-2026-000002", "http://b.example/1"),
        ("XDK-2026-000002", "http://c.example/1"),
    ]


def test_settings_written_directly_are_used_and_bad_entries_skipped(gl):
    unit(gl.session, GRID).settings = {
        "notify": [
            {"url": "http://ok.example/", "format": "json"},
            {"url": "ftp://no.example/", "format": "json"},
            {"url": "http://no.example/", "format": "sms"},
            "nonsense",
        ]
    }
    gl.session.commit()
    gl.accepted()
    assert [r.url for r in outbox(gl.session)] == ["http://ok.example/"]


# ------------------------------------------------------------------ delivery


def test_deliver_posts_json_and_wecom_exactly(gl, receiver):
    configure(
        gl, grid=[(receiver.url("/wecom"), "wecom")], village=[(receiver.url("/json"), "json")]
    )
    gl.accepted()
    wecom, plain = outbox(gl.session)

    assert deliver_due(gl.session, START) == 2

    by_path = {path: (headers, body) for path, headers, body in receiver.requests}
    headers, body = by_path["/wecom"]
    assert headers["Content-Type"] == "application/json"
    content = "【待办】XDK-2026-000001 路灯坏了：请 网格长 · 一组 处置，截止 2026-11-24 10:00"
    assert body == json.dumps(
        {"msgtype": "text", "text": {"content": content}}, ensure_ascii=False
    ).encode("utf-8")
    assert body == render(wecom)
    headers, body = by_path["/json"]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"id": plain.id, **plain.payload}
    for row in outbox(gl.session):
        assert (row.delivered_at, row.attempts, row.failed_at) == (START, 1, None)

    assert deliver_due(gl.session, START + timedelta(days=1)) == 0
    assert len(receiver.requests) == 2


def test_a_receiver_failing_twice_gets_it_on_the_third_run(gl, receiver):
    configure(gl, grid=[(receiver.url(), "json")])
    gl.accepted()
    receiver.fail_next = 2

    assert deliver_due(gl.session, START) == 0
    (row,) = outbox(gl.session)
    assert (row.attempts, row.next_attempt_at, row.delivered_at) == (
        1,
        START + timedelta(seconds=30),
        None,
    )
    assert row.last_error == "HTTP 500"

    assert deliver_due(gl.session, START + timedelta(seconds=29)) == 0  # not due yet
    assert len(receiver.requests) == 1

    second = START + timedelta(seconds=30)
    assert deliver_due(gl.session, second) == 0
    (row,) = outbox(gl.session)
    assert (row.attempts, row.next_attempt_at) == (2, second + timedelta(minutes=1))

    third = second + timedelta(minutes=1)
    assert deliver_due(gl.session, third) == 1
    (row,) = outbox(gl.session)
    assert (row.attempts, row.delivered_at, row.failed_at) == (3, third, None)
    assert len(receiver.requests) == 3
    assert len({body for _, _, body in receiver.requests}) == 1  # the same message each time


def test_wecom_errcode_is_a_failure(gl, receiver):
    configure(gl, grid=[(receiver.url(), "wecom")])
    gl.accepted()
    receiver.answer = b'{"errcode":93000,"errmsg":"invalid webhook url"}'

    assert deliver_due(gl.session, START) == 0
    (row,) = outbox(gl.session)
    assert row.attempts == 1 and row.delivered_at is None
    assert row.last_error == "errcode 93000"

    receiver.answer = b'{"errcode":0,"errmsg":"ok"}'
    assert deliver_due(gl.session, START + backoff(1)) == 1


def test_a_dead_url_never_raises_and_the_case_moves_on(gl):
    url = dead_url()
    configure(gl, grid=[(url, "json")])
    case = gl.accepted()

    assert deliver_due(gl.session, START) == 0
    (row,) = outbox(gl.session)
    assert row.attempts == 1 and row.delivered_at is None
    assert row.last_error == "connection refused"

    case = gl.complete("gl1", case, {"outcome": "resolved"})
    assert case.status == "feedback"
    assert deliver_due(gl.session, START + timedelta(hours=1)) == 0
    rows = outbox(gl.session)
    assert [(r.kind, r.attempts) for r in rows] == [("assigned", 2), ("assigned", 1)]
    case = gl.complete("off1", case, {"satisfaction": "satisfied"})
    assert case.status == "reporting"


def test_a_hanging_receiver_times_out_and_holds_up_no_other_row(gl, receiver):
    receiver.hang_paths.add("/slow")
    configure(gl, grid=[(receiver.url("/slow"), "json")], village=[(receiver.url("/ok"), "json")])
    gl.accepted()

    started = time.monotonic()
    delivered = deliver_due(gl.session, START, post=partial(post_json, timeout=0.3))
    assert time.monotonic() - started < 5

    assert delivered == 1
    slow, ok = outbox(gl.session)
    assert slow.delivered_at is None and slow.attempts == 1 and "timed out" in slow.last_error
    assert ok.delivered_at == START


def test_a_post_function_that_raises_is_recorded(gl):
    configure(gl, grid=[("http://hooks.example/g", "json")])
    gl.accepted()

    def post(url, body):
        raise ConnectionResetError("reset by peer")

    assert deliver_due(gl.session, START, post=post) == 0
    (row,) = outbox(gl.session)
    assert row.last_error == "connection reset"


def test_a_row_that_cannot_be_rendered_fails_without_a_post_and_blocks_no_other(gl, receiver):
    configure(gl, grid=[(receiver.url(), "json")])
    gl.accepted()
    gl.accepted()
    first, second = outbox(gl.session)
    first.format = "sms"
    gl.session.commit()

    assert deliver_due(gl.session, START) == 1
    first, second = outbox(gl.session)
    assert (first.attempts, first.delivered_at) == (1, None)
    assert first.last_error.startswith("cannot render: ValueError")
    assert second.delivered_at == START
    assert [b["case"] for b in receiver.bodies()] == ["XDK-2026-000002"]


def test_a_run_stops_claiming_when_its_time_budget_is_spent(gl, receiver, monkeypatch):
    configure(gl, grid=[(receiver.url(), "json")])
    gl.accepted()
    monkeypatch.setattr(notify, "RUN_BUDGET_SECONDS", -1.0)
    assert deliver_due(gl.session, START) == 0
    assert receiver.requests == []
    (row,) = outbox(gl.session)
    assert (row.attempts, row.next_attempt_at) == (0, START)  # untouched, due for the next run


def test_after_max_attempts_the_row_is_marked_failed(gl, receiver):
    configure(gl, grid=[(receiver.url(), "json")])
    gl.accepted()
    receiver.fail_next = 100
    at, waits = START, []

    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert deliver_due(gl.session, at) == 0
        (row,) = outbox(gl.session)
        assert row.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert row.failed_at is None
            waits.append(int((row.next_attempt_at - at).total_seconds()))
            at = row.next_attempt_at

    assert waits == [30, 60, 120, 240, 480, 960, 1920]
    assert (row.failed_at, row.delivered_at, row.last_error) == (at, None, "HTTP 500")
    assert deliver_due(gl.session, at + timedelta(days=30)) == 0
    assert len(receiver.requests) == MAX_ATTEMPTS


def test_backoff_doubles_from_30_seconds_up_to_an_hour():
    assert [backoff(n).total_seconds() for n in range(1, 9)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]
    assert backoff(30) == timedelta(hours=1)


def test_two_deliverers_post_each_row_exactly_once(gl, make_session, receiver):
    case = gl.open("off1")
    for i in range(50):
        gl.session.add(
            Notification(
                case_id=case.id,
                kind="assigned",
                url=receiver.url(),
                format="json",
                payload={"n": i, "text": str(i)},
                created_at=START,
                attempts=0,
                next_attempt_at=START,
            )
        )
    gl.session.commit()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def deliverer() -> None:
        session = make_session()
        try:
            barrier.wait()
            results.append(deliver_due(session, START))
        except Exception as exc:  # reported below: an exception in a thread fails nothing
            errors.append(exc)
        finally:
            session.close()

    threads = [threading.Thread(target=deliverer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert sum(results) == 50
    posted = Counter(body["n"] for body in receiver.bodies())
    assert posted == Counter(range(50))  # each once
    rows = outbox(gl.session)
    assert all(r.delivered_at == START and r.attempts == 1 for r in rows)


def test_limit_bounds_a_run(gl, receiver):
    configure(gl, grid=[(receiver.url(), "json")])
    for _ in range(3):
        gl.accepted()
    assert deliver_due(gl.session, START, limit=2) == 2
    assert deliver_due(gl.session, START, limit=2) == 1
    assert [b["case"] for b in receiver.bodies()] == [
        "XDK-2026-000001",
        "XDK-2026-000002",
        "XDK-2026-000003",
    ]


# ------------------------------------------------------------------ the organisation file


def test_org_file_notify_is_stored_replaced_and_removed(gl):
    report = configure(
        gl, grid=[("https://hooks.example/g", "wecom")], village=[("http://v.example/", "json")]
    )
    assert report.units_updated == 2
    grid, village = unit(gl.session, GRID), unit(gl.session, "V01")
    assert grid.settings == {"notify": [{"url": "https://hooks.example/g", "format": "wecom"}]}
    assert village.settings == {"notify": [{"url": "http://v.example/", "format": "json"}]}
    assert unit(gl.session, "V01-D1-G02").settings == {}

    assert (
        configure(
            gl, grid=[("https://hooks.example/g", "wecom")], village=[("http://v.example/", "json")]
        ).units_updated
        == 0
    )  # the same file again changes nothing

    grid.settings = {**grid.settings, "other": 1}  # settings the file does not own stay
    gl.session.commit()
    configure(gl, grid=[("http://new.example/", "json")])
    assert unit(gl.session, GRID).settings == {
        "other": 1,
        "notify": [{"url": "http://new.example/", "format": "json"}],
    }
    assert unit(gl.session, "V01").settings == {}

    configure(gl)
    assert unit(gl.session, GRID).settings == {"other": 1}


GRID_PATH = "villages[0].districts[0].grids[0]"


@pytest.mark.parametrize(
    "grid_notify, fragment, path, message",
    [
        (
            "notify: [{url: 'http://x.example/', format: sms}]",
            "format: sms",
            f"{GRID_PATH}.notify[0].format",
            "must be one of: json, wecom, not 'sms'",
        ),
        (
            "notify: [{url: 'ftp://x.example/', format: json}]",
            "ftp://",
            f"{GRID_PATH}.notify[0].url",
            "'ftp://x.example/' must be an http:// or https:// address",
        ),
        (
            "notify: [{url: 'http:///nohost', format: json}]",
            "nohost",
            f"{GRID_PATH}.notify[0].url",
            "must be an http:// or https:// address",
        ),
        (
            "notify: 'http://x.example/'",
            "notify: 'http",
            f"{GRID_PATH}.notify",
            "must be a list, not str",
        ),
        (
            "notify: [{url: 'http://x.example/'}]",
            "notify: [{url",
            f"{GRID_PATH}.notify[0].format",
            "required",
        ),
        (
            "notify: [{url: 'http://x.example/', format: json, secret: s}]",
            "secret: s",
            f"{GRID_PATH}.notify[0].secret",
            "unknown key 'secret'",
        ),
        (
            "notify: [{url: 8080, format: json}]",
            "8080",
            f"{GRID_PATH}.notify[0].url",
            "must be text, not a number",
        ),
        (
            "notify:\n              - {url: 'http://x.example/', format: json}\n"
            "              - {url: 'http://x.example/', format: wecom}",
            "format: wecom",
            f"{GRID_PATH}.notify[1].url",
            f"'http://x.example/' is already listed at {GRID_PATH}.notify[0]",
        ),
    ],
)
def test_org_file_notify_problems_name_their_line(gl, grid_notify, fragment, path, message):
    text = ORG_YAML.replace(G01_HEAD, f"{G01_HEAD}            {grid_notify}\n")
    with pytest.raises(OrgFileError) as caught:
        import_org(gl.session, text, Passwords(cheap=True), now=START)
    line = line_of(text, fragment)
    assert any(
        (at, where) == (line, path) and message in text_ for at, where, text_ in caught.value.errors
    ), caught.value.errors
    assert f"line {line}: {path}: " in str(caught.value)
    gl.session.rollback()
    assert unit(gl.session, GRID).settings == {}


def test_org_file_notify_on_a_village_and_not_on_a_district(gl):
    text = ORG_YAML.replace(
        V01_HEAD, V01_HEAD + "    notify: [{url: 'gopher://x', format: json}]\n"
    )
    text = text.replace(
        "        name: 一片\n        leader: {username: dl1",
        "        name: 一片\n        notify: []\n        leader: {username: dl1",
    )
    with pytest.raises(OrgFileError) as caught:
        import_org(gl.session, text, Passwords(cheap=True), now=START)
    assert [(line, path) for line, path, _ in caught.value.errors] == [
        (line_of(text, "gopher"), "villages[0].notify[0].url"),
        (line_of(text, "notify: []"), "villages[0].districts[0].notify"),
    ]
    assert "unknown key 'notify'" in str(caught.value)
