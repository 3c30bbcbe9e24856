"""The organisation: importing the organisation file (DESIGN §9) and logging people in.

The file is the source of truth for who holds which position. An import first reads and checks the
whole file, collecting every problem with its line, so an administrator fixes a file in one round
instead of one error per attempt; only a file without problems changes the database. Then it
synchronises the database to the file: units and people are matched by code and username (so
importing the same file twice changes nothing), people and units missing from the file are
deactivated rather than deleted, because cases, work items and events name them forever.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarint import ScalarInt
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from .clock import iso
from .events import Chain
from .models import ApiToken, Household, Liaison, Person, Position, Unit, Visit, WorkItem
from .notify import FORMATS as NOTIFY_FORMATS
from .notify import is_http_url, webhook_allowance, webhook_refusal
from .passwords import Passwords
from .privacy import PHONE_MAX_DIGITS, PHONE_MIN_DIGITS, phone_digits
from .safeyaml import YamlFileError, load_yaml

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
USERNAME_HINT = "may hold only ASCII letters, digits and . _ - @, starting with a letter or digit"
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The town's code starts every case number (XDK-2026-000042) and campaign grid number
# (XDK-2026-T0007-001), which must fit case.number's 32 characters.
MAX_TOWN_CODE = 16
CODE_HINT = "may hold only ASCII letters, digits and . _ -, starting with a letter or digit"
MAX_HOUSEHOLDS = 10_000  # per grid: catches a typo such as 4800 for 48 before it writes rows
# The largest household number: household.number is an INTEGER column, 32 bits on PostgreSQL
# (SQLite's 64). A bigger number in the file is a problem with its line, not a crash on insert.
MAX_HOUSEHOLD_NUMBER = 2**31 - 1
UNIT_ORDER = ("town", "department", "village", "district", "grid")  # parents before children

TOP_KEYS = ("town", "leaders", "departments", "villages", "auditors", "admins")
TOWN_KEYS = ("code", "name")
PERSON_KEYS = ("username", "name", "password")
LEADER_KEYS = (*PERSON_KEYS, "liaises")
DEPARTMENT_KEYS = ("code", "name", "officers")
VILLAGE_KEYS = ("code", "name", "secretary", "districts", "notify")
DISTRICT_KEYS = ("code", "name", "leader", "grids")
GRID_KEYS = ("code", "name", "households", "leader", "officers", "notify")
HOUSEHOLD_KEYS = ("number", "head", "phone", "in_group")
# What a household's entry may state, beside its number: the file wins for each one it states.
HOUSEHOLD_FIELDS = ("head", "phone", "in_group")
NOTIFY_KEYS = ("url", "format")
MAX_URL = 500  # the outbox's url column

MAX_SHOWN = 50  # problems in an OrgFileError's text; `.errors` keeps them all
_CHUNK = 500  # ids per IN (...) list, well below every database's parameter limit

Problem = tuple[int, str, str]  # (line, field path, message); line 0 when the data has no lines


class OrgFileError(ValueError):
    """The organisation file has problems; `.errors` lists each as (line, field path, message)."""

    def __init__(self, errors: Sequence[Problem]) -> None:
        self.errors: list[Problem] = sorted(errors, key=lambda e: e[0])
        super().__init__(self.errors)

    def __str__(self) -> str:
        shown = [_format_problem(*problem) for problem in self.errors[:MAX_SHOWN]]
        if len(self.errors) > MAX_SHOWN:
            shown.append(f"… and {len(self.errors) - MAX_SHOWN} more problems")
        return "\n".join(shown)


def _format_problem(line: int, path: str, message: str) -> str:
    where = [f"line {line}"] if line else []
    if path:
        where.append(path)
    return ": ".join([*where, message])


@dataclass
class ImportReport:
    """What an import changed, for the CLI's summary line and for tests of idempotence."""

    units_created: int = 0
    units_updated: int = 0
    units_deactivated: int = 0
    people_created: int = 0
    people_updated: int = 0  # name, reactivation, password reset or positions/liaisons changed
    people_deactivated: int = 0
    people_reactivated: int = 0
    positions_added: int = 0
    positions_removed: int = 0
    liaisons_added: int = 0
    liaisons_removed: int = 0
    households_added: int = 0
    households_updated: int = 0
    households_removed: int = 0
    passwords_set: int = 0
    claims_released: int = 0

    def summary(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in asdict(self).items())


# --------------------------------------------------------------------------------------------
# Reading and checking the file


@dataclass
class _UnitSpec:
    code: str
    name: str | None
    level: str
    parent: str | None
    line: int
    path: str
    # Grids: number -> what the file states of that household (head, phone, in_group; a count
    # states nothing but the numbers).
    households: dict[int, dict[str, Any]] = field(default_factory=dict)
    notify: list[dict[str, str]] = field(default_factory=list)  # webhooks (villages, grids)


@dataclass
class _PersonSpec:
    username: str
    name: str | None
    password: str | None
    line: int
    path: str
    has_password_key: bool


@dataclass
class _Plan:
    """The file's content, checked: what the database is synchronised to."""

    units: dict[str, _UnitSpec] = field(default_factory=dict)
    people: dict[str, _PersonSpec] = field(default_factory=dict)
    positions: set[tuple[str, str, str]] = field(default_factory=set)  # username, role, unit code
    liaisons: set[tuple[str, str]] = field(default_factory=set)  # username, village code


def _lc_line(node: Any, what: str | None = None, which: Any = None, default: int = 0) -> int:
    """The 1-based line ruamel's round-trip loader recorded for `node` itself (what=None) or for
    one of its keys, values or items (what="key"/"value"/"item", which=key or index); `default`
    for plain data, which has no line information."""
    lc = getattr(node, "lc", None)
    try:
        return (lc.line if what is None else getattr(lc, what)(which)[0]) + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return default


def _node_line(node: Any, default: int) -> int:
    return _lc_line(node, default=default)


def _key_line(node: Any, key: Any, default: int) -> int:
    return _lc_line(node, "key", key, default)


def _value_line(node: Any, key: Any, default: int) -> int:
    return _lc_line(node, "value", key, default)


def _item_line(node: Any, index: int, default: int) -> int:
    return _lc_line(node, "item", index, default)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool | ScalarBoolean)


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool | ScalarBoolean):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, date | datetime):
        return "a date"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _Reader:
    """Walks the parsed file once, collecting problems and the plan; never touches the database."""

    def __init__(self, known_usernames: set[str]) -> None:
        self.known = known_usernames
        self.errors: list[Problem] = []
        self.plan = _Plan()
        self._liaises: list[tuple[str, str, int, str]] = []  # username, code, line, path
        self.webhooks = webhook_allowance()  # read once per import

    def error(self, line: int, path: str, message: str) -> None:
        self.errors.append((line, path, message))

    # -- generic checks ------------------------------------------------------------------------

    def mapping(
        self, node: Any, line: int, path: str, keys: tuple[str, ...], required: tuple[str, ...]
    ) -> bool:
        """Is `node` a mapping with only `keys` and all of `required`? Reports what is wrong."""
        if not isinstance(node, Mapping):
            self.error(
                line, path, f"must be a mapping with keys {', '.join(keys)}, not {_kind(node)}"
            )
            return False
        line = _node_line(node, line)
        for key in node:
            if key not in keys:
                self.error(
                    _key_line(node, key, line),
                    _join(path, key),
                    f"unknown key {key!r}; expected one of: {', '.join(keys)}",
                )
        for key in required:
            if key not in node:
                self.error(line, _join(path, key), "required")
        return True

    def text(
        self,
        node: Mapping,
        key: str,
        path: str,
        line: int,
        *,
        max_len: int,
        pattern: re.Pattern | None = None,
        hint: str = "",
        strip: bool = True,
        nullable: bool = False,
    ) -> str | None:
        """The text at node[key], or None when absent or wrong (wrong is reported)."""
        if key not in node or (nullable and node[key] is None):
            return None
        value, line, path = node[key], _value_line(node, key, line), _join(path, key)
        if not isinstance(value, str):
            quote = "" if value is None or isinstance(value, Mapping | list) else " (quote it)"
            self.error(line, path, f"must be text, not {_kind(value)}{quote}")
            return None
        value = str(value).strip() if strip else str(value)
        if not value:
            self.error(line, path, "must not be empty")
        elif len(value) > max_len:
            self.error(line, path, f"is longer than {max_len} characters")
        elif pattern is not None and not pattern.fullmatch(value):
            self.error(line, path, f"{value!r} {hint}")
        else:
            return value
        return None

    def items(
        self, node: Mapping, key: str, path: str, line: int
    ) -> Iterator[tuple[Any, int, str]]:
        """(item, line, path) for the list at node[key]; an absent or empty key is an empty list."""
        value = node.get(key)
        if value is None:
            return
        line, path = _value_line(node, key, line), _join(path, key)
        if not isinstance(value, list):
            self.error(line, path, f"must be a list, not {_kind(value)}")
            return
        for i, item in enumerate(value):
            yield item, _item_line(value, i, line), f"{path}[{i}]"

    # -- units ---------------------------------------------------------------------------------

    def unit(
        self, node: Mapping, line: int, path: str, level: str, parent: str | None
    ) -> str | None:
        """Register the unit whose mapping is `node`; its code, or None when the code is bad."""
        line = _node_line(node, line)
        longest = MAX_TOWN_CODE if level == "town" else 64
        code = self.text(node, "code", path, line, max_len=longest, pattern=CODE_RE, hint=CODE_HINT)
        name = self.text(node, "name", path, line, max_len=200)
        if code is None:
            return None
        code_line = _value_line(node, "code", line)
        first = self.plan.units.get(code)
        if first is not None:
            where = f"line {first.line} ({first.path})" if first.line else first.path
            self.error(
                code_line, _join(path, "code"), f"duplicate code {code!r}: already used at {where}"
            )
            return code
        self.plan.units[code] = _UnitSpec(code, name, level, parent, code_line, _join(path, "code"))
        return code

    def town(self, root: Mapping, top: int) -> str | None:
        node, line = root.get("town"), _value_line(root, "town", top)
        if "town" not in root or not self.mapping(node, line, "town", TOWN_KEYS, TOWN_KEYS):
            return None
        return self.unit(node, line, "town", "town", None)

    def department(self, node: Any, line: int, path: str, town: str | None) -> None:
        if not self.mapping(node, line, path, DEPARTMENT_KEYS, ("code", "name")):
            return
        code = self.unit(node, line, path, "department", town)
        for officer, oline, opath in self.items(node, "officers", path, line):
            self.person(officer, oline, opath, "department_officer", code)

    def village(self, node: Any, line: int, path: str, town: str | None) -> None:
        if not self.mapping(node, line, path, VILLAGE_KEYS, ("code", "name")):
            return
        code = self.unit(node, line, path, "village", town)
        self.channels(node, path, line, code, "village")
        self.slot(node, "secretary", line, path, "village_secretary", code)
        for district, dline, dpath in self.items(node, "districts", path, line):
            self.district(district, dline, dpath, code)

    def district(self, node: Any, line: int, path: str, village: str | None) -> None:
        if not self.mapping(node, line, path, DISTRICT_KEYS, ("code", "name")):
            return
        code = self.unit(node, line, path, "district", village)
        self.slot(node, "leader", line, path, "district_leader", code)
        for grid, gline, gpath in self.items(node, "grids", path, line):
            self.grid(grid, gline, gpath, code)

    def grid(self, node: Any, line: int, path: str, district: str | None) -> None:
        if not self.mapping(node, line, path, GRID_KEYS, ("code", "name", "households")):
            return
        code = self.unit(node, line, path, "grid", district)
        households = self.households(node, path, line)
        if code is not None and self.plan.units[code].level == "grid":
            self.plan.units[code].households = households
        self.channels(node, path, line, code, "grid")
        self.slot(node, "leader", line, path, "grid_leader", code)
        for officer, oline, opath in self.items(node, "officers", path, line):
            self.person(officer, oline, opath, "info_officer", code)

    def households(self, node: Mapping, path: str, line: int) -> dict[int, dict[str, Any]]:
        """number -> what the file states of it. A count N stands for households 1..N and states
        nothing else, so a re-import keeps what officers entered for them in Gridloop."""
        if "households" not in node:
            return {}
        value, line = node["households"], _value_line(node, "households", line)
        path = _join(path, "households")
        if _is_int(value):
            if 0 <= value <= MAX_HOUSEHOLDS:
                return {number: {} for number in range(1, value + 1)}
            self.error(line, path, f"must be between 0 and {MAX_HOUSEHOLDS}")
            return {}
        if not isinstance(value, list):
            self.error(line, path, "must be a number of households or a list of {number, head}")
            return {}
        rows: dict[int, dict[str, Any]] = {}
        for i, item in enumerate(value):
            self.household(item, _item_line(value, i, line), f"{path}[{i}]", rows)
        if len(rows) > MAX_HOUSEHOLDS:
            self.error(line, path, f"has more than {MAX_HOUSEHOLDS} households")
        return rows

    def household(self, node: Any, line: int, path: str, rows: dict[int, dict[str, Any]]) -> None:
        """One `{number, head?, phone?, in_group?}`. A key that is there states its value (null
        for no head or no phone); a key left out states nothing, and the household keeps what it
        has (DESIGN §12: the file wins for what it lists; officers' entries stay otherwise)."""
        if not self.mapping(node, line, path, HOUSEHOLD_KEYS, ("number",)):
            return
        line = _node_line(node, line)
        stated: dict[str, Any] = {}
        if "head" in node:
            stated["head"] = self.text(node, "head", path, line, max_len=100, nullable=True)
        if "phone" in node:
            stated["phone"] = self.phone(node, path, line)
        if "in_group" in node:
            value = node["in_group"]
            if isinstance(value, bool | ScalarBoolean):
                stated["in_group"] = bool(value)
            else:
                shown = repr(value) if isinstance(value, str) else _kind(value)
                self.error(
                    _value_line(node, "in_group", line),
                    _join(path, "in_group"),
                    f"must be true or false, not {shown}",
                )
        if "number" not in node:
            return
        number, nline = node["number"], _value_line(node, "number", line)
        if not _is_int(number) or not 1 <= number <= MAX_HOUSEHOLD_NUMBER:
            shown = "a larger number" if _is_int(number) and number > 0 else repr(number)
            self.error(
                nline,
                _join(path, "number"),
                f"must be a whole number from 1 to {MAX_HOUSEHOLD_NUMBER}, not {shown}",
            )
        elif number in rows:
            self.error(
                nline, _join(path, "number"), f"household {number} appears twice in this grid"
            )
        else:
            rows[number] = stated

    def phone(self, node: Mapping, path: str, line: int) -> str | None:
        """The phone at node["phone"] as its digits; None for null (no phone) or when it is not
        a phone number (reported). Unquoted digits are read as the number they are, with the
        leading zeros the file wrote (a landline's 0731...); hexadecimal and such are refused."""
        value, line, path = node["phone"], _value_line(node, "phone", line), _join(path, "phone")
        if value is None:
            return None
        text = None
        if isinstance(value, str):
            text = value
        elif _is_int(value) and type(value) in (int, ScalarInt) and value >= 0:
            text = str(int(value)).zfill(getattr(value, "_width", None) or 0)
        digits = phone_digits(text) if text is not None else None
        if digits is None:
            shown = repr(text) if text is not None else _kind(value)
            self.error(
                line,
                path,
                f"{shown} is not a phone number: {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} "
                "digits (spaces and hyphens between them are allowed)",
            )
        return digits

    def channels(self, node: Mapping, path: str, line: int, code: str | None, level: str) -> None:
        """The unit's webhooks, `notify: [{url, format}]`: each URL http(s), not at a loopback,
        link-local or private address unless the server's operator allows it (engine/notify.py,
        GRIDLOOP_WEBHOOK_ALLOW), and listed once; format json or wecom. Absent or empty means
        none."""
        channels: list[dict[str, str]] = []
        seen: dict[str, str] = {}
        for item, iline, ipath in self.items(node, "notify", path, line):
            if not self.mapping(item, iline, ipath, NOTIFY_KEYS, NOTIFY_KEYS):
                continue
            iline = _node_line(item, iline)
            url = self.text(item, "url", ipath, iline, max_len=MAX_URL)
            fmt = self.text(item, "format", ipath, iline, max_len=16)
            uline, upath = _value_line(item, "url", iline), _join(ipath, "url")
            if url is not None and not is_http_url(url):
                self.error(uline, upath, f"{url!r} must be an http:// or https:// address")
                url = None
            elif url is not None and (refusal := webhook_refusal(url, self.webhooks)):
                self.error(uline, upath, refusal)
                url = None
            if fmt is not None and fmt not in NOTIFY_FORMATS:
                self.error(
                    _value_line(item, "format", iline),
                    _join(ipath, "format"),
                    f"must be one of: {', '.join(NOTIFY_FORMATS)}, not {fmt!r}",
                )
                fmt = None
            if url is not None and url in seen:
                self.error(uline, upath, f"{url!r} is already listed at {seen[url]}")
            elif url is not None and fmt is not None:
                seen[url] = ipath
                channels.append({"url": url, "format": fmt})
        spec = self.plan.units.get(code) if code is not None else None
        if spec is not None and spec.level == level:
            spec.notify = channels

    # -- people --------------------------------------------------------------------------------

    def slot(
        self, node: Mapping, key: str, line: int, path: str, role: str, unit: str | None
    ) -> None:
        """A single-person position such as a grid's leader; null or absent means vacant."""
        if node.get(key) is not None:
            self.person(node[key], _value_line(node, key, line), _join(path, key), role, unit)

    def person(
        self,
        node: Any,
        line: int,
        path: str,
        role: str,
        unit: str | None,
        keys: tuple[str, ...] = PERSON_KEYS,
    ) -> str | None:
        """Register one appearance of a person holding `role` at `unit`; their username."""
        if not self.mapping(node, line, path, keys, ("username", "name")):
            return None
        line = _node_line(node, line)
        username = self.text(
            node, "username", path, line, max_len=64, pattern=USERNAME_RE, hint=USERNAME_HINT
        )
        name = self.text(node, "name", path, line, max_len=100)
        password = self.text(node, "password", path, line, max_len=1024, strip=False)
        if username is None:
            return None
        spec = self.plan.people.get(username)
        if spec is None:
            spec = _PersonSpec(username, name, password, line, path, "password" in node)
            self.plan.people[username] = spec
        else:
            self.same_person(spec, node, line, path, name, password)
        if unit is not None:
            self.plan.positions.add((username, role, unit))
        return username

    def same_person(
        self,
        spec: _PersonSpec,
        node: Mapping,
        line: int,
        path: str,
        name: str | None,
        pw: str | None,
    ) -> None:
        """A username seen again must be the same person: same name, no other password."""
        where = f"line {spec.line} ({spec.path})" if spec.line else spec.path
        if name is not None and spec.name is not None and name != spec.name:
            self.error(
                _value_line(node, "name", line),
                _join(path, "name"),
                f"{spec.username!r} is named {spec.name!r} at {where}, {name!r} here",
            )
        spec.name = spec.name if spec.name is not None else name
        if pw is not None and spec.password is not None and pw != spec.password:
            self.error(
                _value_line(node, "password", line),
                _join(path, "password"),
                f"differs from the password given for {spec.username!r} at {where}",
            )
        spec.password = spec.password if spec.password is not None else pw
        spec.has_password_key = spec.has_password_key or "password" in node

    def leader(self, node: Any, line: int, path: str, town: str | None) -> None:
        username = self.person(node, line, path, "town_leadership", town, LEADER_KEYS)
        if username is None:
            return
        for code, cline, cpath in self.items(node, "liaises", path, line):
            if isinstance(code, str) and code.strip():
                self._liaises.append((username, code.strip(), cline, cpath))
            else:
                self.error(cline, cpath, f"must be a village code, not {_kind(code)}")

    # -- the whole file ------------------------------------------------------------------------

    def read(self, root: Any) -> _Plan:
        if root is None:
            self.error(1, "", "the file is empty")
            return self.plan
        top = _node_line(root, 0)  # 0: plain data, which has no lines
        if not self.mapping(root, top, "", TOP_KEYS, ("town",)):
            return self.plan
        town = self.town(root, top)
        for node, line, path in self.items(root, "leaders", "", top):
            self.leader(node, line, path, town)
        for node, line, path in self.items(root, "departments", "", top):
            self.department(node, line, path, town)
        for node, line, path in self.items(root, "villages", "", top):
            self.village(node, line, path, town)
        for role, key in (("auditor", "auditors"), ("admin", "admins")):
            for node, line, path in self.items(root, key, "", top):
                self.person(node, line, path, role, town)
        self.check_liaisons()
        self.check_passwords()
        return self.plan

    def check_liaisons(self) -> None:
        for username, code, line, path in self._liaises:
            spec = self.plan.units.get(code)
            if spec is None:
                self.error(line, path, f"unknown village code {code!r}")
            elif spec.level != "village":
                self.error(line, path, f"{code!r} is a {spec.level}, not a village")
            else:
                self.plan.liaisons.add((username, code))

    def check_passwords(self) -> None:
        for spec in self.plan.people.values():
            if spec.username not in self.known and not spec.has_password_key:
                self.error(
                    spec.line,
                    _join(spec.path, "password"),
                    f"required: {spec.username!r} is not in the database yet",
                )


def parse_org_file(text: str) -> Any:
    """The file parsed with ruamel's round-trip loader, whose nodes know their lines; a YAML
    syntax error, an anchor or alias (refused before anything expands: see engine/safeyaml.py)
    or nesting that is too deep becomes an OrgFileError naming its line."""
    try:
        return load_yaml(text, round_trip=True)
    except YamlFileError as exc:
        raise OrgFileError([(exc.line, "", f"YAML: {exc.message}")]) from exc


def check_org(session: Session, data: Any) -> None:
    """Check parsed organisation data without writing (a dry run); raise OrgFileError listing
    every problem."""
    _read_plan(session, data)


def _read_plan(session: Session, data: Any) -> _Plan:
    """The checked plan, or OrgFileError. Only reads the database: whether a username exists
    decides whether the file must give a password."""
    reader = _Reader(set(session.scalars(select(Person.username))))
    plan = reader.read(data)
    if reader.errors:
        raise OrgFileError(reader.errors)
    if not any(role == "admin" for _u, role, _c in plan.positions):
        admins = session.scalars(
            select(Person.username)
            .join(Position, Position.person_id == Person.id)
            .where(Position.role == "admin", Person.active)
        ).all()
        if admins:  # as an administrator cannot deactivate the last one (engine/org_admin.py)
            raise OrgFileError(
                [(0, "admins", "names no administrator: importing it would deactivate "
                  f"{', '.join(sorted(admins))} and leave nobody to manage Gridloop")]
            )  # fmt: skip
    return plan


# --------------------------------------------------------------------------------------------
# Writing: synchronise the database to the plan


def import_org(
    session: Session,
    text: str,
    passwords: Passwords,
    reset_passwords: bool = False,
    now: datetime | None = None,
) -> ImportReport:
    """Import an organisation file (§9): check all of it, then synchronise the database to it.

    Raises OrgFileError, having written nothing, when the file has problems. Flushes but does not
    commit: the caller owns the transaction. Passwords in the file are hashed only for people
    created now, or for everyone in the file when `reset_passwords` is set; either way the person
    is marked as still having the file's password (`Person.password_initial`), which the web pages
    ask them to change.

    Parsing is ruamel's pure-Python round-trip loader (needed for line numbers) and dominates the
    time for big files: the 16,000 households of the demo take several seconds to parse. Code
    that already holds the data as Python objects (the demo) calls `import_org_data` instead.
    """
    return import_org_data(session, parse_org_file(text), passwords, reset_passwords, now)


def import_org_data(
    session: Session,
    data: Any,
    passwords: Passwords,
    reset_passwords: bool = False,
    now: datetime | None = None,
) -> ImportReport:
    """`import_org` for data already parsed (ruamel nodes, or plain dicts such as `demo_org()`,
    whose problems then carry line 0 and only their field path). `now` stamps the `released`
    events of claims given back by deactivated people (the caller's clock; default the system's)."""
    plan = _read_plan(session, data)
    return _Sync(session, plan, passwords, reset_passwords, now or datetime.now(UTC)).run()


class _Sync:
    """One import's writes. Existing rows are loaded once into dicts keyed by code or username,
    so the work is a handful of queries whatever the size of the township."""

    def __init__(
        self,
        session: Session,
        plan: _Plan,
        passwords: Passwords,
        reset_passwords: bool,
        now: datetime,
    ) -> None:
        self.session = session
        self.now = now
        self.plan = plan
        self.passwords = passwords
        self.reset = reset_passwords
        self.report = ImportReport()
        self.units: dict[str, Unit] = {}
        self.people: dict[str, Person] = {}
        self.created: set[str] = set()
        self.touched: set[str] = set()  # existing people in the file whose rows changed
        # grid id -> numbers of the households that stay whatever the file says: officers added
        # them in Gridloop, or a campaign visit names them
        self.officers_households: dict[int, set[int]] = defaultdict(set)

    def run(self) -> ImportReport:
        self.sync_units()
        self.sync_households()
        self.sync_people()
        self.sync_positions()
        self.sync_liaisons()
        self.deactivate_missing_people()
        self.session.flush()
        self.report.people_updated = len(self.touched)
        return self.report

    def hashed(self, password: str) -> str:
        """A fresh hash, with its own salt, for each person, even when people share a password:
        a shared hash would tell whoever reads the table which accounts share a password, and
        one cracked hash would open them all. It costs one argon2 run per person at the
        `passwords` cost (the demo passes cheaper, flagged parameters: see engine/demo.py)."""
        self.report.passwords_set += 1
        return self.passwords.hash(password)

    # -- units ---------------------------------------------------------------------------------

    def sync_units(self) -> None:
        self.units = {u.code: u for u in self.session.scalars(select(Unit))}
        # Households that stay whatever the file says: those officers added in Gridloop, and
        # those a campaign visit names that the file no longer lists (sync_households keeps
        # them), so that a grid's count is its rows.
        listed = {
            self.units[code].id: spec.households.keys()
            for code, spec in self.plan.units.items()
            if spec.level == "grid" and code in self.units
        }
        unlisted: dict[int, tuple[int, int]] = {}
        rows = select(Household.id, Household.grid_id, Household.number, Household.added_by)
        for row in self.session.execute(rows):
            if row.added_by is not None:
                self.officers_households[row.grid_id].add(row.number)
            elif row.grid_id in listed and row.number not in listed[row.grid_id]:
                unlisted[row.id] = (row.grid_id, row.number)
        for chunk in _chunks(list(unlisted)):
            visited = select(Visit.household_id).where(Visit.household_id.in_(chunk))
            for household_id in self.session.scalars(visited):
                grid_id, number = unlisted[household_id]
                self.officers_households[grid_id].add(number)
        for level in UNIT_ORDER:
            for spec in self.plan.units.values():
                if spec.level == level:
                    self.upsert_unit(spec)
            self.session.flush()  # children below need their parents' ids
        for code, unit in self.units.items():
            if code not in self.plan.units and unit.active:
                unit.active = False
                self.report.units_deactivated += 1

    def upsert_unit(self, spec: _UnitSpec) -> None:
        unit = self.units.get(spec.code)
        # The grid's households after the import: the file's, and those officers added that the
        # file does not list.
        kept = self.officers_households.get(unit.id, set()) if unit is not None else set()
        values = {
            "name": spec.name,
            "level": spec.level,
            "parent_id": self.units[spec.parent].id if spec.parent else None,
            "households": len(spec.households) + len(kept - spec.households.keys()),
            "active": True,
            "settings": _settings(unit.settings if unit is not None else None, spec),
        }
        if unit is None:
            self.units[spec.code] = unit = Unit(code=spec.code, **values)
            self.session.add(unit)
            self.report.units_created += 1
        elif _assign(unit, values):
            self.report.units_updated += 1

    def sync_households(self) -> None:
        """Each grid's households as the file lists them (DESIGN §12): the file wins for the
        households it lists (head, phone, in_group, as far as it states them); the households
        the file added earlier and no longer lists are removed; those officers added in Gridloop
        (added_by set) stay unless the file lists them, and keep who added them either way.
        Bulk statements: 16,000 rows one ORM object at a time would take most of the import."""
        wanted = {
            self.units[c].id: s.households for c, s in self.plan.units.items() if s.level == "grid"
        }
        current: dict[int, dict[int, Any]] = defaultdict(dict)
        rows = select(
            Household.id,
            Household.grid_id,
            Household.number,
            Household.head,
            Household.phone,
            Household.in_group,
            Household.added_by,
        )
        for row in self.session.execute(rows):
            if row.grid_id in wanted:  # grids no longer in the file keep their rows, as history
                current[row.grid_id][row.number] = row
        added: list[dict[str, Any]] = []
        changed: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        removed: list[int] = []
        for grid_id, households in wanted.items():
            have = current.get(grid_id, {})
            for number, stated in households.items():
                row = have.get(number)
                if row is None:
                    new = {"head": None, "phone": None, "in_group": False, **stated}
                    added.append({"grid_id": grid_id, "number": number, "added_by": None, **new})
                    continue
                differs = {k: v for k, v in stated.items() if getattr(row, k) != v}
                if differs:  # one executemany per set of columns
                    changed[tuple(sorted(differs))].append({"id": row.id, **differs})
            removed.extend(
                row.id
                for number, row in have.items()
                if number not in households and row.added_by is None
            )
        # A household a campaign visit names stays (its visit is proof of coverage): the file
        # no longer lists it, but deleting it would break the visit's record.
        visited = set()
        for chunk in _chunks(removed):
            visited.update(
                self.session.scalars(
                    select(Visit.household_id).where(Visit.household_id.in_(chunk))
                )
            )
        removed = [r for r in removed if r not in visited]
        for chunk in _chunks(removed):
            self.session.execute(delete(Household).where(Household.id.in_(chunk)))
        if added:
            self.session.execute(insert(Household), added)
        for _columns, values in sorted(changed.items()):
            self.session.execute(update(Household), values)
        self.report.households_added = len(added)
        self.report.households_updated = sum(len(values) for values in changed.values())
        self.report.households_removed = len(removed)

    # -- people --------------------------------------------------------------------------------

    def sync_people(self) -> None:
        self.people = {p.username: p for p in self.session.scalars(select(Person))}
        for spec in self.plan.people.values():
            person = self.people.get(spec.username)
            if person is None:
                self.create_person(spec)
            else:
                self.update_person(person, spec)
        self.session.flush()  # positions and liaisons need the new people's ids

    def create_person(self, spec: _PersonSpec) -> None:
        assert spec.password is not None  # check_passwords made sure
        person = Person(
            username=spec.username,
            name=spec.name,
            password_hash=self.hashed(spec.password),
            password_initial=True,  # the file's password: the web pages ask for a new one
            active=True,
            positions=[],  # loaded (empty), so adding positions below needs no query
        )
        self.session.add(person)
        self.people[spec.username] = person
        self.created.add(spec.username)
        self.report.people_created += 1

    def update_person(self, person: Person, spec: _PersonSpec) -> None:
        if not person.active:
            self.report.people_reactivated += 1
        changed = _assign(person, {"name": spec.name, "active": True})
        if self.reset and spec.password is not None:
            person.password_hash = self.hashed(spec.password)
            person.password_initial = True  # asked for a new one again, like a new person
            person.end_sessions()  # a reset ends the person's sessions and tokens
            changed = True
        if changed:
            self.touched.add(spec.username)

    def kept_as_deactivated(self, username: str) -> bool:
        """A person the file leaves out who was deactivated before this import (by an
        administrator, or by an earlier import): the import leaves them as they are, positions
        and liaisons included, so that reactivating restores them and importing an export (which
        lists active people only) changes nothing."""
        person = self.people.get(username)
        return username not in self.plan.people and person is not None and not person.active

    def sync_positions(self) -> None:
        """Every person's positions become exactly the file's; people not in it keep none, but
        for those deactivated already (kept_as_deactivated)."""
        by_id = {unit.id: unit for unit in self.units.values()}
        wanted: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for username, role, code in self.plan.positions:
            wanted[username].add((role, self.units[code].id))
        for username, person in self.people.items():
            if self.kept_as_deactivated(username):
                continue
            want = wanted.get(username, set())
            have = {(p.role, p.unit_id): p for p in person.positions}
            for key, position in have.items():
                if key not in want:
                    person.positions.remove(position)
                    self.session.delete(position)
                    self.report.positions_removed += 1
                    self.note_change(username)
            for role, unit_id in sorted(want - have.keys()):
                person.positions.append(Position(role=role, unit_id=unit_id, unit=by_id[unit_id]))
                self.report.positions_added += 1
                self.note_change(username)

    def sync_liaisons(self) -> None:
        usernames = {person.id: username for username, person in self.people.items()}
        want = {(self.people[u].id, self.units[c].id) for u, c in self.plan.liaisons}
        have = {
            (row.person_id, row.village_id): row for row in self.session.scalars(select(Liaison))
        }
        for key, row in have.items():
            if key not in want and not self.kept_as_deactivated(usernames.get(key[0], "")):
                self.session.delete(row)
                self.report.liaisons_removed += 1
                self.note_change(usernames.get(key[0], ""))
        for person_id, village_id in sorted(want - have.keys()):
            self.session.add(Liaison(person_id=person_id, village_id=village_id))
            self.report.liaisons_added += 1
            self.note_change(usernames[person_id])

    def note_change(self, username: str) -> None:
        if username in self.plan.people and username not in self.created:
            self.touched.add(username)

    def deactivate_missing_people(self) -> None:
        """People missing from the file can no longer log in (inactive, tokens revoked), and the
        items they had claimed go back to their colleagues. Cases keep their owner: the owner's
        username is history, and events must keep naming the same person."""
        gone = [p for username, p in self.people.items() if username not in self.plan.people]
        for person in gone:
            if person.active:
                person.active = False
                person.end_sessions()  # sessions and tokens end with the deactivation
                self.report.people_deactivated += 1
        for chunk in _chunks([p.username for p in gone]):
            claimed = self.session.scalars(
                select(WorkItem).where(
                    WorkItem.claimed_by.in_(chunk), WorkItem.completed_at.is_(None)
                )
            )
            for item in claimed:
                self.release(item)
        for chunk in _chunks([p.id for p in gone]):
            self.session.execute(delete(ApiToken).where(ApiToken.person_id.in_(chunk)))

    def release(self, item: WorkItem) -> None:
        """Give the item back to the holder's colleagues, in the case's history too: the case row
        moves under its version check, so a step racing the import retries or answers 409."""
        case = item.case
        data = {"work_item": item.id, "from": item.claimed_by, "reason": "deactivated"}
        item.claimed_by, item.claimed_at = None, None
        case.updated_at = self.now
        Chain.open(self.session, case).append(
            iso(self.now), "released", "system", item.task, data, case.diagram.sha256
        )
        self.report.claims_released += 1


def _settings(current: dict | None, spec: _UnitSpec) -> dict:
    """The unit's settings with the file's webhooks: the file is the source of truth for
    `notify` (a re-import replaces the list; no key, no webhooks); other settings are kept. A
    new dict, so the JSON column sees the change (and an equal one changes nothing)."""
    settings = {k: v for k, v in (current or {}).items() if k != "notify"}
    if spec.notify:
        settings["notify"] = [dict(channel) for channel in spec.notify]
    return settings


def _assign(obj: Any, values: Mapping[str, Any]) -> bool:
    """Set the attributes that differ; whether any did (so re-imports report no changes)."""
    changed = False
    for key, value in values.items():
        if getattr(obj, key) != value:
            setattr(obj, key, value)
            changed = True
    return changed


def _chunks(values: list, size: int = _CHUNK) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --------------------------------------------------------------------------------------------
# Login


def authenticate(
    session: Session, username: str, password: str, passwords: Passwords
) -> Person | None:
    """The active person with this username and password, else None.

    Every call spends exactly one argon2 verification (against a dummy hash for an unknown
    username, against the real hash for an inactive person) so response times do not reveal
    which usernames exist. A hash made with other parameters than `passwords` uses (e.g. a demo
    imported with cheap hashing) is upgraded on a successful login; the caller's commit keeps it.
    """
    person = None
    if isinstance(username, str) and username:
        person = session.scalar(select(Person).where(Person.username == username))
    if person is None:
        passwords.verify_dummy(password)
        return None
    if not passwords.verify(person.password_hash, password) or not person.active:
        return None
    if passwords.needs_rehash(person.password_hash):
        person.password_hash = passwords.hash(password)
    return person
