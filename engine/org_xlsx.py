"""The organisation file as administrators keep it: export to YAML (DESIGN §9) or xlsx, and import
from either through engine/org.py's one import path.

Export reads the database into the data of a §9 file (active units, active people, their
positions and liaisons, households, webhooks; never a password) in a fixed order, so exporting
twice gives the same content, and importing an export changes nothing.

xlsx, for people who keep rosters in Excel or WPS, has three sheets:
- 岗位 Positions: one row per position (a unit without anyone gets a row with no role): the
  unit's level, code, name, parent code and household count, then the role, username, name,
  an optional initial password, and for a town leader the villages they liaise with.
- 住户 Households: grid code, household number, head, and (when some household has one) phone
  and whether it is in the grid's group chat (已入群: 是, or empty), for grids whose households
  have any of these (a grid whose households are numbered 1..N with none of them needs only its
  count). An empty cell states nothing, as a key left out of a YAML entry: the household keeps
  what it has (so a roster of heads only keeps the phones officers entered in Gridloop); 否 in
  the in-group column states that it is not in the group.
- 通知 Webhooks: unit code, url, format (a village's or grid's `notify`).
Row 1 names the columns in Chinese, row 2 by their field names; import finds the columns by
either. Reading turns the sheets into the same data a YAML file parses to, with each row's place
attached, so engine/org.py checks it exactly as it checks YAML and its problems name the sheet
and row. Only a file without problems changes anything.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import admin_log
from .errors import NotFound
from .models import LEVEL_OF_ROLE, Household, Liaison, Person, Position, Unit
from .org import (
    ImportReport,
    OrgFileError,
    Problem,
    check_org,
    import_org_data,
    parse_org_file,
)
from .passwords import Passwords

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
YAML_TYPE = "application/yaml; charset=utf-8"
FORMATS = ("yaml", "xlsx")

# --------------------------------------------------------------------------------------------
# The database as §9 data


def export_data(session: Session) -> dict[str, Any]:
    """The organisation as the data of a §9 file: only what is active, in code and username
    order, without passwords (people already in the database need none to be imported again)."""
    units = {u.id: u for u in session.scalars(select(Unit).where(Unit.active))}
    towns = sorted((u for u in units.values() if u.level == "town"), key=lambda u: u.code)
    if not towns:
        raise NotFound("there is no organisation to export yet")
    town = towns[0]
    children: dict[int | None, list[Unit]] = {}
    for unit in sorted(units.values(), key=lambda u: u.code):
        children.setdefault(unit.parent_id, []).append(unit)
    held: dict[tuple[str, int], list[Person]] = {}
    rows = session.execute(
        select(Position.role, Position.unit_id, Person)
        .join(Person, Person.id == Position.person_id)
        .where(Person.active)
        .order_by(Person.username)
    ).all()
    for role, unit_id, person in rows:
        held.setdefault((role, unit_id), []).append(person)
    liaises: dict[int, list[str]] = {}
    for person_id, village_id in session.execute(select(Liaison.person_id, Liaison.village_id)):
        if village_id in units:
            liaises.setdefault(person_id, []).append(units[village_id].code)
    households: dict[int, list[tuple[int, str | None, str | None, bool]]] = {}
    for grid_id, number, head, phone, in_group in session.execute(
        select(
            Household.grid_id,
            Household.number,
            Household.head,
            Household.phone,
            Household.in_group,
        ).order_by(Household.grid_id, Household.number)
    ):
        households.setdefault(grid_id, []).append((number, head, phone, bool(in_group)))

    def people(role: str, unit: Unit) -> list[dict[str, Any]]:
        return [{"username": p.username, "name": p.name} for p in held.get((role, unit.id), [])]

    def one(node: dict[str, Any], key: str, role: str, unit: Unit) -> None:
        found = people(role, unit)
        if found:
            node[key] = found[0]

    def notify(node: dict[str, Any], unit: Unit) -> None:
        channels = (unit.settings or {}).get("notify") or []
        if channels:
            node["notify"] = [{"url": c["url"], "format": c["format"]} for c in channels]

    data: dict[str, Any] = {"town": {"code": town.code, "name": town.name}}
    leaders = []
    for person in held.get(("town_leadership", town.id), []):
        leader: dict[str, Any] = {"username": person.username, "name": person.name}
        if liaises.get(person.id):
            leader["liaises"] = sorted(liaises[person.id])
        leaders.append(leader)
    if leaders:
        data["leaders"] = leaders
    departments = []
    for unit in children.get(town.id, []):
        if unit.level == "department":
            department: dict[str, Any] = {"code": unit.code, "name": unit.name}
            if people("department_officer", unit):
                department["officers"] = people("department_officer", unit)
            departments.append(department)
    if departments:
        data["departments"] = departments
    villages = []
    for village in children.get(town.id, []):
        if village.level != "village":
            continue
        vnode: dict[str, Any] = {"code": village.code, "name": village.name}
        one(vnode, "secretary", "village_secretary", village)
        districts = []
        for district in children.get(village.id, []):
            if district.level != "district":
                continue
            dnode: dict[str, Any] = {"code": district.code, "name": district.name}
            one(dnode, "leader", "district_leader", district)
            grids = []
            for grid in children.get(district.id, []):
                if grid.level != "grid":
                    continue
                gnode: dict[str, Any] = {
                    "code": grid.code,
                    "name": grid.name,
                    "households": _households(households.get(grid.id, [])),
                }
                one(gnode, "leader", "grid_leader", grid)
                if people("info_officer", grid):
                    gnode["officers"] = people("info_officer", grid)
                notify(gnode, grid)
                grids.append(gnode)
            if grids:
                dnode["grids"] = grids
            districts.append(dnode)
        if districts:
            vnode["districts"] = districts
        notify(vnode, village)
        villages.append(vnode)
    if villages:
        data["villages"] = villages
    for role, key in (("auditor", "auditors"), ("admin", "admins")):
        if people(role, town):
            data[key] = people(role, town)
    return data


def _households(
    rows: list[tuple[int, str | None, str | None, bool]],
) -> int | list[dict[str, Any]]:
    """A count when the households are 1..N with no head, phone or group mark (what a count
    imports as), else the list of {number, head?, phone?, in_group?} with what each has."""
    bare = all(h is None and p is None and not g for _n, h, p, g in rows)
    if bare and [row[0] for row in rows] == list(range(1, len(rows) + 1)):
        return len(rows)
    listed = []
    for number, head, phone, in_group in rows:
        household: dict[str, Any] = {"number": number}
        if head is not None:
            household["head"] = head
        if phone is not None:
            household["phone"] = phone
        if in_group:
            household["in_group"] = True
        listed.append(household)
    return listed


# --------------------------------------------------------------------------------------------
# YAML

YAML_HEADER = (
    "# Gridloop organisation file (DESIGN §9), exported without passwords: people already in\n"
    "# the database need none; give one to each person you add.\n"
)
FLOW_KEYS = {"town", "leaders", "secretary", "leader", "officers", "auditors", "admins", "notify"}


def to_yaml(data: dict[str, Any]) -> str:
    """§9 YAML: people, households and webhooks one per line as flow mappings."""
    yaml = YAML(typ="rt", pure=True)
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    out.write(YAML_HEADER)
    yaml.dump(_styled(data, None), out)
    return out.getvalue()


def _styled(value: Any, key: str | None) -> Any:
    """Plain data as ruamel nodes with the flow style each part of the file reads best in."""
    if isinstance(value, dict):
        node = CommentedMap((k, _styled(v, k)) for k, v in value.items())
        leaf = all(not isinstance(v, dict | list) or k == "liaises" for k, v in value.items())
        if leaf and key is not None:
            node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(_styled(v, key) for v in value)
        if key == "liaises":
            seq.fa.set_flow_style()
        return seq
    return value


# --------------------------------------------------------------------------------------------
# xlsx: columns

POSITIONS = "岗位 Positions"
HOUSEHOLDS = "住户 Households"
WEBHOOKS = "通知 Webhooks"
SHEETS = (POSITIONS, HOUSEHOLDS, WEBHOOKS)
COLUMNS = {
    POSITIONS: (
        ("level", "层级"),
        ("unit_code", "单位代码"),
        ("unit_name", "单位名称"),
        ("parent_code", "上级代码"),
        ("households", "户数"),
        ("role", "岗位"),
        ("username", "用户名"),
        ("name", "姓名"),
        ("password", "初始密码"),
        ("liaises", "联系村"),
    ),
    HOUSEHOLDS: (
        ("grid_code", "网格代码"),
        ("number", "户号"),
        ("head", "户主"),
        ("phone", "电话"),
        ("in_group", "已入群"),
    ),
    WEBHOOKS: (("unit_code", "单位代码"), ("url", "地址"), ("format", "格式")),
}
REQUIRED_COLUMNS = {
    POSITIONS: ("level", "unit_code", "unit_name", "role", "username", "name"),
    HOUSEHOLDS: ("grid_code", "number"),
    WEBHOOKS: ("unit_code", "url", "format"),
}
# Chinese words accepted for levels and roles, beside the field values the export writes.
LEVEL_WORDS = {
    "镇": "town",
    "站办所": "department",
    "村": "village",
    "社区": "village",
    "片": "district",
    "网格": "grid",
}
ROLE_WORDS = {
    "镇联点班子": "town_leadership",
    "站办所人员": "department_officer",
    "村党组织书记": "village_secretary",
    "片长": "district_leader",
    "网格长": "grid_leader",
    "信息员": "info_officer",
    "审计员": "auditor",
    "管理员": "admin",
}
LEVELS = ("town", "department", "village", "district", "grid")
PARENT_LEVEL = {"department": "town", "village": "town", "district": "village", "grid": "district"}
SLOT = {"village_secretary": "secretary", "district_leader": "leader", "grid_leader": "leader"}
LIST_SPLIT = re.compile(r"[\s,，、;；]+")
MAX_ROWS = 200_000  # per sheet: a township has ~20,000 households
MAX_UNZIPPED = 64 * 1024 * 1024  # bytes inside the xlsx: a small file that unpacks to gigabytes
# How the households sheet writes in_group, and the words it reads as true or false (a cell
# Excel or WPS typed as TRUE/FALSE reads as itself); other text is a problem of its row.
IN_GROUP_YES = "是"
YES_WORDS = frozenset({"是", "已入群", "√", "✓", "y", "yes", "true", "1"})
NO_WORDS = frozenset({"否", "未入群", "×", "n", "no", "false", "0"})
# Where a row is, as a line number engine/org.py can carry: the sheet's index times this, plus
# the row (Excel has at most 1,048,576 rows).
SHEET_LINES = 10_000_000


def to_xlsx(data: dict[str, Any]) -> bytes:
    """The §9 data as a workbook of the three sheets, written row by row (openpyxl's write-only
    mode: a town's 20,000 households take a second, not a minute)."""
    book = Workbook(write_only=True)
    positions, households, webhooks = _rows(data)
    # The phone and in-group columns only when some household has one (a register of heads
    # keeps the three columns it always had).
    if not any(row[3] is not None or row[4] is not None for row in households):
        households = [row[:3] for row in households]
    bold = Font(bold=True)
    for title, rows in zip(SHEETS, (positions, households, webhooks), strict=True):
        sheet = book.create_sheet(title)
        columns = COLUMNS[title]
        if title == HOUSEHOLDS and not any(len(row) > 3 for row in rows):
            columns = columns[:3]
        sheet.freeze_panes = "A3"
        for index, (_f, label) in enumerate(columns):
            sheet.column_dimensions[get_column_letter(index + 1)].width = max(
                12, 2 * len(label) + 4
            )
        for header in ([label for _f, label in columns], [f for f, _label in columns]):
            sheet.append([_written(sheet, value, bold) for value in header])
        for values in rows:
            sheet.append([_written(sheet, value) for value in values])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _written(sheet, value: Any, font: Font | None = None) -> WriteOnlyCell:
    """A cell; text is typed as text, so "=..." stays text and is never a formula."""
    cell = WriteOnlyCell(sheet, value=_cell(value))
    if isinstance(value, str):
        cell.data_type = "s"
    if font is not None:
        cell.font = font
    return cell


def _cell(value: Any) -> Any:
    return ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value


def _rows(data: dict[str, Any]) -> tuple[list[list], list[list], list[list]]:
    """The three sheets' rows for §9 data (as export_data makes it)."""
    positions: list[list] = []
    households: list[list] = []
    webhooks: list[list] = []
    town = data["town"]

    def add(level, code, name, parent, count, people: Iterable[tuple[str, dict]]) -> None:
        people = list(people)
        for role, person in people:
            liaises = ",".join(person.get("liaises", []))
            positions.append(
                [
                    level,
                    code,
                    name,
                    parent,
                    count,
                    role,
                    person["username"],
                    person["name"],
                    None,
                    liaises or None,
                ]  # fmt: skip
            )
        if not people:
            positions.append([level, code, name, parent, count, None, None, None, None, None])

    add(
        "town",
        town["code"],
        town["name"],
        None,
        None,
        [("town_leadership", p) for p in data.get("leaders", [])]
        + [("auditor", p) for p in data.get("auditors", [])]
        + [("admin", p) for p in data.get("admins", [])],
    )
    for dept in data.get("departments", []):
        officers = [("department_officer", p) for p in dept.get("officers", [])]
        add("department", dept["code"], dept["name"], town["code"], None, officers)
    for village in data.get("villages", []):
        secretary = [("village_secretary", village["secretary"])] if "secretary" in village else []
        add("village", village["code"], village["name"], town["code"], None, secretary)
        for channel in village.get("notify", []):
            webhooks.append([village["code"], channel["url"], channel["format"]])
        for district in village.get("districts", []):
            leader = [("district_leader", district["leader"])] if "leader" in district else []
            add("district", district["code"], district["name"], village["code"], None, leader)
            for grid in district.get("grids", []):
                held = [("grid_leader", grid["leader"])] if "leader" in grid else []
                held += [("info_officer", p) for p in grid.get("officers", [])]
                count = grid["households"]
                if isinstance(count, list):
                    for household in count:
                        households.append(
                            [
                                grid["code"],
                                household["number"],
                                household.get("head"),
                                household.get("phone"),
                                IN_GROUP_YES if household.get("in_group") else None,
                            ]
                        )
                    count = len(count)
                add("grid", grid["code"], grid["name"], district["code"], count, held)
                for channel in grid.get("notify", []):
                    webhooks.append([grid["code"], channel["url"], channel["format"]])
    return positions, households, webhooks


# --------------------------------------------------------------------------------------------
# xlsx: reading


def _node(line: int, pairs: dict[str, Any]) -> CommentedMap:
    """A mapping that says it came from `line`, as ruamel's loader would (0-based inside)."""
    node = CommentedMap(pairs)
    node.lc.line, node.lc.col = line - 1, 0
    for key in pairs:
        node.lc.add_kv_line_col(key, [line - 1, 0, line - 1, 0])
    return node


def _seq(items: list[tuple[int, Any]]) -> CommentedSeq:
    seq = CommentedSeq(value for _line, value in items)
    for index, (line, _value) in enumerate(items):
        seq.lc.add_idx_line_col(index, [line - 1, 0])
    if items:
        seq.lc.line = items[0][0] - 1
    return seq


def _text(value: Any) -> str | None:
    """A cell as text: numbers typed into a code or username cell become their digits."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime):
        value = value.isoformat(sep=" ")
    text = str(value).strip()
    return text or None


def _whole(value: Any) -> int | str | None:
    """A cell as a whole number; the text itself when it is not one (the checks say so)."""
    if value is None or isinstance(value, bool):
        return _text(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = _text(value)
    return int(text) if text is not None and text.isdigit() else text


def _yes_no(value: Any) -> bool | str:
    """A filled in-group cell as true or false; text that is neither stays text, for
    engine/org.py to report with its row."""
    if isinstance(value, bool):
        return value
    text = (_text(value) or "").lower()
    if text in YES_WORDS:
        return True
    if text in NO_WORDS:
        return False
    return _text(value) or ""


@dataclass
class _Unit:
    level: str
    code: str
    name: str | None
    parent: str | None
    line: int
    count: Any = None
    count_line: int = 0
    people: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)  # role -> people
    households: list[tuple[int, Any]] = field(default_factory=list)
    notify: list[tuple[int, Any]] = field(default_factory=list)


class _XlsxReader:
    """Turns a workbook into §9 data (ruamel nodes carrying row numbers), collecting the
    problems only the sheet shape can have: a missing column, an unknown level or role, a unit
    whose rows disagree, a parent that is not there."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.units: dict[str, _Unit] = {}
        self.town: str | None = None
        self.leaders: dict[str, tuple[int, dict, list[tuple[int, str]]]] = {}

    def error(self, line: int, column: str, message: str) -> None:
        self.errors.append((line, column, message))

    def read(self, content: bytes) -> Any:
        book = self._open(content)
        if book is None:
            return None
        try:
            sheets = book.worksheets
            for index, title in enumerate(SHEETS):
                if index >= len(sheets):
                    if title == POSITIONS:
                        self.error(0, "", "the workbook has no sheets")
                    continue
                try:
                    rows = self._table(sheets[index], index, title)
                except Exception as exc:  # noqa: BLE001 - read lazily: a damaged sheet fails here
                    self.error(0, title, f"the sheet cannot be read: {type(exc).__name__}")
                    return None
                if rows is None:
                    continue
                handler = {
                    POSITIONS: self.position,
                    HOUSEHOLDS: self.household,
                    WEBHOOKS: self.webhook,
                }
                for line, row in rows:
                    handler[title](line, row)
        finally:
            book.close()
        return self.data()

    def _open(self, content: bytes):
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED:
                    self.error(0, "", "the workbook unpacks to more than 64 MB")
                    return None
        except zipfile.BadZipFile:
            self.error(0, "", "not an xlsx workbook (save it from Excel or WPS as .xlsx)")
            return None
        try:
            return load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
            self.error(0, "", f"the workbook cannot be read: {type(exc).__name__}")
            return None

    def _table(self, sheet, index: int, title: str) -> list[tuple[int, dict[str, Any]]] | None:
        """The sheet's data rows as (line, {field: value}), after the header row that names the
        required columns (by field name or Chinese label) within the first five rows; the other
        header row the export writes (field names under labels) is skipped."""
        aliases = {word: name for name, label in COLUMNS[title] for word in (name, label)}
        header: dict[int, str] | None = None
        header_row = 0
        rows: list[tuple[int, dict[str, Any]]] = []
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            if number > MAX_ROWS:
                self.error(0, title, f"has more than {MAX_ROWS} rows")
                return None
            if header is None:
                found = _header(values, aliases)
                if set(REQUIRED_COLUMNS[title]) <= set(found.values()):
                    header, header_row = found, number
                elif number >= 5:
                    break
                continue
            if (
                number == header_row + 1
                and _header(values, aliases)
                and _all_words(values, aliases)
            ):
                continue
            if all(_text(v) is None for v in values):
                continue
            row = {name: values[i] if i < len(values) else None for i, name in header.items()}
            rows.append((index * SHEET_LINES + number, row))
        if header is None:
            missing = ", ".join(REQUIRED_COLUMNS[title])
            self.error(0, title, f"no header row naming the columns {missing}")
            return None
        return rows

    # -- the sheets ----------------------------------------------------------------------------

    def position(self, line: int, row: dict[str, Any]) -> None:
        level_text = _text(row.get("level"))
        level = LEVEL_WORDS.get(level_text or "", level_text)
        code = _text(row.get("unit_code"))
        if level not in LEVELS:
            self.error(line, "level", f"must be one of: {', '.join(LEVELS)}, not {level_text!r}")
            return
        if code is None:
            self.error(line, "unit_code", "required")
            return
        unit = self.unit(line, level, code, row)
        if unit is None:
            return
        role_text = _text(row.get("role"))
        username = _text(row.get("username"))
        if role_text is None:
            if username is not None or _text(row.get("name")) is not None:
                self.error(line, "role", "required when a person is named")
            return
        role = ROLE_WORDS.get(role_text, role_text)
        if LEVEL_OF_ROLE.get(role) != level:
            roles = sorted(r for r, lv in LEVEL_OF_ROLE.items() if lv == level)
            self.error(line, "role", f"at a {level}, one of: {', '.join(roles)}; not {role_text!r}")
            return
        person: dict[str, Any] = {}
        for key in ("username", "name", "password"):
            value = row.get(key)
            # A password is taken as typed (spaces included), unless Excel made it a number.
            keep = key == "password" and isinstance(value, str)
            value = (value if value.strip() else None) if keep else _text(value)
            if value is not None:
                person[key] = value
        liaises = _text(row.get("liaises"))
        if liaises is not None and role != "town_leadership":
            self.error(line, "liaises", "only town leaders liaise with villages")
        if role == "town_leadership":
            codes = [c for c in LIST_SPLIT.split(liaises or "") if c]
            key = person.get("username") or f"row {line}"
            first = self.leaders.get(key)
            if first is None:
                self.leaders[key] = (line, person, [(line, c) for c in codes])
            else:
                first[2].extend((line, c) for c in codes if c not in [x for _l, x in first[2]])
            return
        held = unit.people.setdefault(role, [])
        if role in SLOT and held:
            other_line, other = held[0]
            if other.get("username") != person.get("username"):
                self.error(
                    line,
                    "username",
                    f"{code} has one {role} only: {other.get('username')!r} at "
                    f"{_where(other_line)}",
                )
            return
        held.append((line, person))

    def unit(self, line: int, level: str, code: str, row: dict[str, Any]) -> _Unit | None:
        name = _text(row.get("unit_name"))
        parent = _text(row.get("parent_code"))
        count = _whole(row.get("households"))
        unit = self.units.get(code)
        if unit is None:
            if level == "town":
                if self.town is not None and self.town != code:
                    self.error(
                        line, "unit_code", f"a second town: the file's town is {self.town!r}"
                    )
                    return None
                self.town = code
            unit = _Unit(level, code, name, parent, line)
            self.units[code] = unit
        else:
            for column, mine, theirs in (
                ("level", level, unit.level),
                ("unit_name", name, unit.name),
                ("parent_code", parent, unit.parent),
            ):
                if mine != theirs:
                    self.error(
                        line, column, f"{code}: {mine!r} here, {theirs!r} at {_where(unit.line)}"
                    )
                    return None
        if count is not None:
            if level != "grid":
                self.error(line, "households", "only grids have households")
            elif unit.count is not None and unit.count != count:
                self.error(
                    line,
                    "households",
                    f"{count!r} here, {unit.count!r} at {_where(unit.count_line)}",
                )
            elif unit.count is None:
                unit.count, unit.count_line = count, line
        return unit

    def household(self, line: int, row: dict[str, Any]) -> None:
        code = _text(row.get("grid_code"))
        unit = self.units.get(code or "")
        if unit is None or unit.level != "grid":
            self.error(line, "grid_code", f"{code!r} is not a grid of the positions sheet")
            return
        pairs: dict[str, Any] = {"number": _whole(row.get("number"))}
        # An empty cell states nothing, like a key left out of YAML (engine/org.py keeps what
        # the household has), so the export reads back as exactly the data it was written from.
        for key in ("head", "phone"):
            value = _text(row.get(key))
            if value is not None:
                pairs[key] = value
        if _text(row.get("in_group")) is not None:
            pairs["in_group"] = _yes_no(row["in_group"])
        unit.households.append((line, _node(line, pairs)))

    def webhook(self, line: int, row: dict[str, Any]) -> None:
        code = _text(row.get("unit_code"))
        unit = self.units.get(code or "")
        if unit is None or unit.level not in ("village", "grid"):
            self.error(
                line, "unit_code", f"{code!r} is not a village or grid of the positions sheet"
            )
            return
        pairs = {k: v for k in ("url", "format") if (v := _text(row.get(k))) is not None}
        unit.notify.append((line, _node(line, pairs)))

    # -- the §9 data ---------------------------------------------------------------------------

    def data(self) -> Any:
        if self.town is None:
            self.error(0, "", "no row for the town (level town)")
            return None
        by_parent: dict[str, list[_Unit]] = {}
        for unit in self.units.values():
            if unit.level == "town":
                continue
            wanted = PARENT_LEVEL[unit.level]
            parent = unit.parent or (self.town if wanted == "town" else None)
            found = self.units.get(parent or "")
            if found is None or found.level != wanted:
                self.error(unit.line, "parent_code", f"must be the code of a {wanted} in the sheet")
                continue
            by_parent.setdefault(found.code, []).append(unit)
        town = self.units[self.town]
        root = CommentedMap()
        root["town"] = _node(town.line, {"code": town.code, "name": town.name})
        leaders = []
        for line, person, codes in self.leaders.values():
            node = _node(line, person)
            if codes:
                node["liaises"] = _seq(codes)
                node.lc.add_kv_line_col("liaises", [line - 1, 0, line - 1, 0])
            leaders.append((line, node))
        sections = {
            "leaders": leaders,
            "departments": [
                (d.line, self.node(d, {"officers": "department_officer"}))
                for d in by_parent.get(town.code, [])
                if d.level == "department"
            ],
            "villages": [
                (v.line, self.village(v, by_parent))
                for v in by_parent.get(town.code, [])
                if v.level == "village"
            ],
            "auditors": [(ln, _node(ln, p)) for ln, p in town.people.get("auditor", [])],
            "admins": [(ln, _node(ln, p)) for ln, p in town.people.get("admin", [])],
        }
        for key, items in sections.items():
            if items:
                root[key] = _seq(items)
        return root

    def node(self, unit: _Unit, lists: dict[str, str], slots: dict[str, str] | None = None):
        pairs: dict[str, Any] = {"code": unit.code, "name": unit.name}
        node = _node(unit.line, pairs)
        for key, role in (slots or {}).items():
            if unit.people.get(role):
                line, person = unit.people[role][0]
                node[key] = _node(line, person)
                node.lc.add_kv_line_col(key, [line - 1, 0, line - 1, 0])
        for key, role in lists.items():
            if unit.people.get(role):
                node[key] = _seq([(ln, _node(ln, p)) for ln, p in unit.people[role]])
        if unit.notify:
            node["notify"] = _seq(unit.notify)
        return node

    def village(self, village: _Unit, by_parent: dict[str, list[_Unit]]) -> CommentedMap:
        node = self.node(village, {}, {"secretary": "village_secretary"})
        districts = []
        for district in by_parent.get(village.code, []):
            dnode = self.node(district, {}, {"leader": "district_leader"})
            grids = [(g.line, self.grid(g)) for g in by_parent.get(district.code, [])]
            if grids:
                dnode["grids"] = _seq(grids)
            districts.append((district.line, dnode))
        if districts:
            node["districts"] = _seq(districts)
        return node

    def grid(self, grid: _Unit) -> CommentedMap:
        node = self.node(grid, {"officers": "info_officer"}, {"leader": "grid_leader"})
        if grid.households:
            if grid.count is not None and grid.count != len(grid.households):
                self.error(
                    grid.count_line,
                    "households",
                    f"{grid.count!r} here, but the households sheet lists "
                    f"{len(grid.households)} for {grid.code}",
                )
            node["households"] = _seq(grid.households)
        else:
            node["households"] = grid.count if grid.count is not None else 0
        line = grid.count_line or grid.line
        node.lc.add_kv_line_col("households", [line - 1, 0, line - 1, 0])
        return node


def _header(values: tuple, aliases: dict[str, str]) -> dict[int, str]:
    """Column index -> field, for the cells of a row that name a column."""
    found = {}
    for index, value in enumerate(values):
        word = _text(value)
        if word is not None:
            word = word.lower() if word.lower() in aliases else word
            if word in aliases:
                found[index] = aliases[word]
    return found


def _all_words(values: tuple, aliases: dict[str, str]) -> bool:
    return all(_text(v) is None or _header((v,), aliases) for v in values)


def _where(line: int) -> str:
    sheet, row = divmod(line, SHEET_LINES)
    return f"{SHEETS[sheet]} row {row}" if line else "the workbook"


def read_xlsx(content: bytes) -> Any:
    """The workbook as §9 data for engine/org.py; OrgFileError listing the shape's problems."""
    data, problems = _read_xlsx(content)
    if problems:
        raise OrgFileError(_xlsx_problems(problems))
    return data


def _read_xlsx(content: bytes) -> tuple[Any, list[Problem]]:
    """The workbook as §9 data as far as it can be read (None when not at all), and the
    problems of its shape."""
    reader = _XlsxReader()
    data = reader.read(content)
    return data, reader.errors


def _xlsx_problems(errors: Iterable[Problem], from_org: bool = False) -> list[Problem]:
    """Problems whose line is a sheet row, told as "sheet row N, column" with line 0 (so that
    OrgFileError prints no line), in sheet and row order."""
    shown = []
    for line, path, message in sorted(errors, key=lambda e: e[0]):
        column = _column(path) if from_org else path
        where = _where(line) if line else ""
        place = ", ".join(x for x in (where, column) if x)
        shown.append((0, place, message))
    return shown


def _column(path: str) -> str:
    """An engine/org.py field path as the xlsx column it came from."""
    if not path:
        return ""
    parts = [re.sub(r"\[\d+\]$", "", p) for p in path.split(".")]
    last = parts[-1]
    parent = parts[-2] if len(parts) > 1 else ""
    people = {"leader", "secretary", "officers", "leaders", "auditors", "admins"}
    if last == "code":
        return "grid_code" if parent == "households" else "unit_code"
    if last == "name":
        return "name" if parent in people else "unit_name"
    if last in ("officers", "leader", "secretary"):
        return "username"
    return last


# --------------------------------------------------------------------------------------------
# Import and export, for the CLI and the pages


@dataclass(frozen=True)
class Imported:
    report: ImportReport
    format: str
    sha256: str

    @property
    def changed(self) -> bool:
        return any(asdict(self.report).values())


def format_of(filename: str) -> str | None:
    """ "yaml" or "xlsx" by the file's name, else None."""
    name = filename.lower()
    if name.endswith((".yaml", ".yml")):
        return "yaml"
    if name.endswith(".xlsx"):
        return "xlsx"
    return None


def parse_file(content: bytes, fmt: str) -> Any:
    """The file's §9 data; OrgFileError for what cannot be read."""
    if fmt == "xlsx":
        return read_xlsx(content)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OrgFileError([(0, "", "the file is not UTF-8 text")]) from None
    return parse_org_file(text)


def import_file(
    session: Session,
    content: bytes,
    fmt: str,
    passwords: Passwords,
    *,
    actor: str,
    now: datetime,
    reset_passwords: bool = False,
) -> Imported:
    """Import a YAML or xlsx organisation file through engine/org.py and record it in the
    administration log, in the caller's transaction (the caller commits). OrgFileError, having
    written nothing, when the file has problems; an xlsx file's problems name sheet and row."""
    if fmt == "xlsx":
        report = _import_xlsx(session, content, passwords, reset_passwords, now)
    else:
        report = import_org_data(session, parse_file(content, fmt), passwords, reset_passwords, now)
    sha = hashlib.sha256(content).hexdigest()
    admin_log.record(
        session,
        now,
        actor,
        "org_imported",
        {
            "format": fmt,
            "sha256": sha,
            "reset_passwords": reset_passwords,
            "changes": {k: v for k, v in asdict(report).items() if v},
        },
    )
    return Imported(report, fmt, sha)


def _import_xlsx(
    session: Session, content: bytes, passwords: Passwords, reset: bool, now: datetime
) -> ImportReport:
    """A workbook's problems all at once, those of its shape and those engine/org.py finds in
    what it says, each told by sheet and row; only a workbook without any is imported."""
    data, shape = _read_xlsx(content)
    if data is None:
        raise OrgFileError(_xlsx_problems(shape))
    if shape:
        try:
            check_org(session, data)
        except OrgFileError as exc:
            raise OrgFileError(_xlsx_problems(shape + exc.errors, from_org=True)) from None
        raise OrgFileError(_xlsx_problems(shape, from_org=True))
    try:
        return import_org_data(session, data, passwords, reset, now)
    except OrgFileError as exc:
        raise OrgFileError(_xlsx_problems(exc.errors, from_org=True)) from None


def export_file(session: Session, fmt: str) -> bytes:
    """The organisation as a YAML or xlsx file's bytes."""
    data = export_data(session)
    if fmt == "xlsx":
        return to_xlsx(data)
    return to_yaml(data).encode("utf-8")


def plain(data: Any) -> Any:
    """ruamel nodes as plain dicts and lists (to compare what two files say)."""
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data
