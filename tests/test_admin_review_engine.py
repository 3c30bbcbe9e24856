"""Regressions found reviewing the engine side of the administrators' issue (issue 10): hostile
bundles and workbooks are refused with a message instead of an exception, a decision table that
lost all its rules is named, the administration log's head is named in digests as DESIGN §6 says,
and a migration's log entry survives losing the race for its seq."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from conftest import changed
from openpyxl import Workbook
from sqlalchemy.orm import Session

from engine import admin_log, digests, migration, org_xlsx
from engine.org import OrgFileError
from engine.specs import Bundle, deploy
from engine.validation import validate

HANDLE_FORM = "workflows/bpmn/forms/handle.schema.json"
DISPATCH = "rules/dispatch_tier.dmn"
LIMITS = "rules/time_limit.dmn"


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_a_form_nested_deeper_than_the_stack_is_refused_not_a_crash(bundle, text):
    problems = validate(Bundle({**bundle.files, HANDLE_FORM: text}))
    assert any(p.file == HANDLE_FORM and "nested too deeply" in p.message for p in problems)


def test_a_decision_table_without_rules_misses_every_category_and_severity(bundle):
    text = re.sub(r"<rule .*?</rule>\s*", "", bundle.files[DISPATCH], flags=re.S)
    problems = validate(Bundle({**bundle.files, DISPATCH: text}))
    missing = [p for p in problems if "misses category × severity" in p.message]
    assert missing and missing[0].file == DISPATCH and missing[0].element == "dispatch_tier"


def _workbook() -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = "岗位"
    sheet.append(["level", "unit_code", "unit_name", "parent_code", "households", "role",
                  "username", "name", "password", "liaises"])  # fmt: skip
    sheet.append(["town", "XDK", "T", None, None, "admin", "root", "Root", "pw12345678", None])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_a_workbook_with_a_damaged_sheet_is_refused_with_a_message():
    good = _workbook()
    assert org_xlsx.read_xlsx(good)["town"]["code"] == "XDK"
    source, out = zipfile.ZipFile(io.BytesIO(good)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as damaged:
        for info in source.infolist():
            data = source.read(info.filename)
            damaged.writestr(
                info, data[: len(data) // 2] if "sheet1.xml" in info.filename else data
            )
    with pytest.raises(OrgFileError) as refused:
        org_xlsx.read_xlsx(out.getvalue())
    assert "the sheet cannot be read" in str(refused.value)


def test_the_administration_log_is_named_admin_in_digests(session, clock):
    admin_log.record(session, clock.now(), "adm", "calendar_changed", {"year": 2027})
    digest = digests.make(session, clock.now(), "aud")
    session.commit()
    assert ["admin", 1] == json.loads(digest.heads)[-1][:2]
    assert admin_log.entry_dict(admin_log.entries(session)[0])["case"] == "admin"
    assert not [p for p in digests.verify_all(session).problems if p.case == "admin"]


def test_a_migration_run_that_loses_the_log_seq_to_another_change_is_still_logged(
    gl, bundle, monkeypatch
):
    case = gl.accepted()
    target = changed(
        bundle,
        LIMITS,
        '<outputEntry id="time_limit_feedback_other_o0"><text>24</text>',
        '<outputEntry id="time_limit_feedback_other_o0"><text>8</text>',
        once=True,
    )
    version, _ = deploy(gl.session, gl.runtime.registry, target, "adm", gl.clock.now())
    gl.session.commit()
    selection, problems = migration.select_cases(gl.session, version.sha256, [case.number])
    assert not problems
    real_head, raced = admin_log.head, []

    def head(session):
        found = real_head(session)
        if not raced:  # another administrator appends between our read and our insert
            raced.append(True)
            with Session(session.get_bind()) as other:
                admin_log.record(other, gl.clock.now(), "adm2", "calendar_changed", {"year": 1})
                other.commit()
        return found

    monkeypatch.setattr(admin_log, "head", head)
    results = migration.run(gl.session, gl.runtime, "adm", selection, dry_run=False)
    assert [r.ok for r in results] == [True]
    types = [e.type for e in admin_log.entries(gl.session)]
    assert types[:3] == ["cases_migrated", "migration_started", "calendar_changed"]
    assert admin_log.check(gl.session) is None
