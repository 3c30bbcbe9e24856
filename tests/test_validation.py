"""Deploy validation lists every problem of a bundle (DESIGN §8, issue 10 item 2): each broken
bundle is refused naming its file and the element at fault, deploying it leaves the live version
live, and the repository's bundle validates clean, quickly."""

from __future__ import annotations

import json
import time

import pytest
from conftest import START, changed
from sqlalchemy import select

from engine import validation
from engine.models import DiagramVersion
from engine.specs import Bundle, live_version
from engine.validation import BundleInvalid, Problem, sample_form_data, validate
from engine.versions import deploy_bundle

BPMN = "workflows/bpmn/case_loop.bpmn"
DISPATCH = "rules/dispatch_tier.dmn"
TIER_ABOVE = "rules/tier_above.dmn"
HANDLE_FORM = "workflows/bpmn/forms/handle.schema.json"
FEEDBACK_FORM = "workflows/bpmn/forms/feedback.schema.json"
REVIEW_FORM = "workflows/bpmn/forms/review.schema.json"
XSI = 'xsi:type="bpmn:tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
REOPEN_SCRIPT = "<bpmn:script>reopen_count = reopen_count + 1</bpmn:script>"


def in_script(bundle: Bundle, code: str) -> Bundle:
    """`code` at the start of the `reopen` script task."""
    return changed(
        bundle,
        BPMN,
        REOPEN_SCRIPT,
        f"<bpmn:script>{code}\nreopen_count = reopen_count + 1</bpmn:script>",
    )


def timer_of(bundle: Bundle, element: str, timer: str) -> Bundle:
    """The boundary event `element`'s timer definition replaced by `timer`."""
    text = bundle.files[BPMN]
    at = text.index(f'<bpmn:boundaryEvent id="{element}"')
    start = text.index("<bpmn:timeDate", at)
    end = text.index("</bpmn:timeDate>", start) + len("</bpmn:timeDate>")
    return Bundle({**bundle.files, BPMN: text[:start] + timer + text[end:]})


def with_rule(bundle: Bundle, path: str, rule: str) -> Bundle:
    return changed(bundle, path, "    </decisionTable>", rule + "    </decisionTable>")


def wrong_lane(bundle):
    return changed(
        bundle,
        BPMN,
        '<bpmn:lane id="lane_grid_leader" name="grid_leader">',
        '<bpmn:lane id="lane_grid_leader" name="grid_boss">',
    )


def missing_form(bundle):
    files = dict(bundle.files)
    del files[HANDLE_FORM]
    return Bundle(files)


def unquoted_timer(bundle):
    return timer_of(bundle, "due_grid", f"<bpmn:timeDuration {XSI}>P3D</bpmn:timeDuration>")


def overlapping_unique_rule(bundle):
    rule = """      <rule id="tier_above_low">
        <inputEntry id="tier_above_low_i0"><text>? in ("grid_leader", "district_leader")</text></inputEntry>
        <outputEntry id="tier_above_low_o0"><text>"village_secretary"</text></outputEntry>
      </rule>
"""
    return with_rule(bundle, TIER_ABOVE, rule)


def table_missing_low_severity(bundle):
    # The catch-all row now catches only "normal": a low case has no row at all.
    return changed(
        bundle,
        DISPATCH,
        '<inputEntry id="dispatch_tier_r2_i1"><text>-</text>',
        '<inputEntry id="dispatch_tier_r2_i1"><text>"normal"</text>',
    )


def script_import(bundle):
    return in_script(bundle, "os = __import__('os')")


def script_loops_for_ever(bundle):
    return in_script(bundle, "while True: pass")


def gateway_reads_unknown_field(bundle):
    return changed(
        bundle,
        BPMN,
        'satisfaction == "unsatisfied"</bpmn:conditionExpression>',
        'happiness == "unsatisfied"</bpmn:conditionExpression>',
    )


def dry_run_never_archives(bundle):
    # The gateway after accept is turned round: a valid case is rejected, and the path to the
    # archive is only for invalid ones, which never come.
    return changed(
        bundle,
        BPMN,
        "valid == False</bpmn:conditionExpression>",
        "valid == True</bpmn:conditionExpression>",
    )


BROKEN = {
    # name: (break the bundle, file, element, words the message must hold)
    "lane named wrong": (wrong_lane, BPMN, "lane_grid_leader", ["grid_boss", "tier"]),
    "missing form": (missing_form, BPMN, "handle_grid", ["formKey 'handle'"]),
    "unquoted timer": (unquoted_timer, BPMN, "due_grid", ["P3D", '"P3D"', "quoted"]),
    "overlapping UNIQUE rule": (
        overlapping_unique_rule,
        TIER_ABOVE,
        "tier_above_low",
        ["tier_above_r0", "tier_above_r1", "'grid_leader'", "'district_leader'", "UNIQUE"],
    ),
    "table missing a category × severity": (
        table_missing_low_severity,
        DISPATCH,
        "dispatch_tier",
        ["every category × low", "category × severity"],
    ),
    "script calling __import__": (script_import, BPMN, "reopen", ["__import__"]),
    "script that loops for ever": (script_loops_for_ever, BPMN, "reopen", ["while"]),
    "gateway reading a field no form has": (
        gateway_reads_unknown_field,
        BPMN,
        "f_gw_satisfied__reopen",
        ["happiness", "gw_satisfied"],
    ),
    "dry run that cannot reach the end": (
        dry_run_never_archives,
        BPMN,
        "end_rejected",
        ["dry-run", "rejected", "archived"],
    ),
}


def problem_at(problems: list[Problem], file: str, element: str) -> Problem:
    found = [p for p in problems if p.file == file and p.element == element]
    assert found, f"no problem at {file} {element}: {problems}"
    return found[0]


def refused(session, registry, clock, bad: Bundle) -> list[Problem]:
    """Deploy `bad` as an administrator would: refused, and the live version stays live."""
    live = live_version(session)
    with pytest.raises(BundleInvalid) as err:
        deploy_bundle(session, registry, bad, "adm", clock.now(), "broken")
    session.rollback()
    assert live_version(session).id == live.id
    assert (
        session.scalars(select(DiagramVersion).where(DiagramVersion.sha256 == bad.sha256)).first()
        is None
    )
    return err.value.problems


def test_the_repository_bundle_validates_clean_and_quickly(bundle):
    validate(bundle, now=START)  # the first run pays for imports and caches
    started = time.process_time()  # this process's time: other work on the machine is not ours
    assert validate(bundle, now=START) == []
    assert time.process_time() - started < 1.0


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_broken_bundle_is_refused_naming_file_and_element(
    session, registry, bundle, clock, name
):
    breaks, file, element, words = BROKEN[name]
    bad = breaks(bundle)
    problem = problem_at(validate(bad, now=START), file, element)
    for word in words:
        assert word in problem.message, problem
    deployed = refused(session, registry, clock, bad)
    assert problem_at(deployed, file, element).message == problem.message


def test_a_bundle_with_two_problems_reports_both(session, registry, bundle, clock):
    bad = script_import(wrong_lane(bundle))
    problems = validate(bad, now=START)
    problem_at(problems, BPMN, "lane_grid_leader")
    problem_at(problems, BPMN, "reopen")
    deployed = refused(session, registry, clock, bad)
    assert {(p.file, p.element) for p in deployed} >= {
        (BPMN, "lane_grid_leader"),
        (BPMN, "reopen"),
    }


def test_problems_of_several_files_are_all_listed(bundle):
    """A BPMN file that fails its schema in two places, a DMN file that is not XML and a form
    that is not JSON Schema: each is named, the schema errors with their lines (SpiffWorkflow
    itself stops at the first)."""
    bad = changed(bundle, BPMN, 'cancelActivity="false"', 'cancelActivity="perhaps"', 2)
    bad = changed(bad, DISPATCH, "</decisionTable>", "</decisionTabel>")
    files = dict(bad.files)
    files[FEEDBACK_FORM] = '{"type": "object", "properties": {"satisfaction": {"type": 7}}}'
    problems = validate(Bundle(files), now=START)
    schema = [p for p in problems if p.file == BPMN]
    assert len(schema) == 2 and all("perhaps" in p.message for p in schema), problems
    lines = [n for n, text in enumerate(bad.files[BPMN].splitlines(), 1) if "perhaps" in text]
    assert [p.line for p in schema] == lines
    assert problem_at(problems, DISPATCH, None).line
    problem_at(problems, FEEDBACK_FORM, None)


def test_every_lane_is_checked_not_only_those_with_user_tasks(bundle):
    bad = changed(
        bundle,
        BPMN,
        "    </bpmn:laneSet>",
        '      <bpmn:lane id="lane_volunteers" name="volunteers" />\n    </bpmn:laneSet>',
    )
    problem = problem_at(validate(bad, now=START), BPMN, "lane_volunteers")
    assert "volunteers" in problem.message


def test_a_user_task_without_a_form_key_or_task_is_named(bundle):
    bad = changed(bundle, BPMN, '<spiffworkflow:property name="formKey" value="handle_town" />', "")
    bad = changed(
        bad,
        BPMN,
        '<spiffworkflow:property name="task" value="feedback" />',
        "",
    )
    problems = validate(bad, now=START)
    assert "formKey" in problem_at(problems, BPMN, "handle_town").message
    assert "'task'" in problem_at(problems, BPMN, "feedback").message


def test_a_form_that_is_not_json_schema_names_the_file_and_its_tasks(bundle):
    bad = Bundle({**bundle.files, HANDLE_FORM: '{"type": "object", "required": "outcome"}'})
    problems = validate(bad, now=START)
    problem_at(problems, HANDLE_FORM, None)
    assert "not valid JSON Schema" in problem_at(problems, BPMN, "handle_district").message


@pytest.mark.parametrize(
    ("timer", "words"),
    [
        (f'<bpmn:timeDate {XSI}>"P3D"</bpmn:timeDate>', ["duration", "timeDate needs a date"]),
        (f'<bpmn:timeDate {XSI}>"2020-01-01T00:00:00Z"</bpmn:timeDate>', ["in the past"]),
        (f'<bpmn:timeDate {XSI}>"2030-01-01T00:00:00"</bpmn:timeDate>', ["no time zone"]),
        (f"<bpmn:timeDate {XSI}>limit_hours</bpmn:timeDate>", ["not text"]),
        (f'<bpmn:timeDuration {XSI}>"3 days"</bpmn:timeDuration>', ["not an ISO 8601"]),
        (f'<bpmn:timeCycle {XSI}>"R/2020-01-01T00:00:00Z/P1D"</bpmn:timeCycle>', ["past"]),
        (f"<bpmn:timeDate {XSI}>gl_deadline(hours, limit_clock)</bpmn:timeDate>", ["'hours'"]),
    ],
    ids=["duration-as-date", "past-date", "naive-date", "number", "prose", "past-cycle", "name"],
)
def test_a_timer_that_does_not_give_a_date_or_duration_is_named(bundle, timer, words):
    problem = problem_at(
        validate(timer_of(bundle, "warn_grid", timer), now=START), BPMN, "warn_grid"
    )
    for word in words:
        assert word in problem.message, problem


def test_a_quoted_duration_is_accepted(bundle):
    good = timer_of(bundle, "due_grid", f'<bpmn:timeDuration {XSI}>"P3D"</bpmn:timeDuration>')
    assert validate(good, now=START) == []


def test_a_new_category_needs_no_new_rule_where_a_catch_all_row_covers_it(bundle):
    path = "workflows/bpmn/forms/accept.schema.json"
    form = json.loads(bundle.files[path])
    category = form["properties"]["category"]
    category["enum"].append("landslide")
    category["x-enumTitles"].append("山体滑坡")
    category["x-enumTitles-en"].append("Landslide")
    grown = Bundle({**bundle.files, path: json.dumps(form, ensure_ascii=False)})
    assert validate(grown, now=START) == []
    # A catch-all row that lists the old categories leaves the new one without a row for its
    # low and normal cases (urgent ones have theirs).
    bare = changed(
        grown,
        DISPATCH,
        '<inputEntry id="dispatch_tier_r2_i0"><text>-</text>',
        '<inputEntry id="dispatch_tier_r2_i0"><text>? != "landslide"</text>',
    )
    problem = problem_at(validate(bare, now=START), DISPATCH, "dispatch_tier")
    assert "misses category × severity landslide × low, landslide × normal" in problem.message
    assert "urgent" not in problem.message


def test_a_rule_that_fails_on_a_known_value_is_named(bundle):
    bad = changed(
        bundle,
        DISPATCH,
        '<inputEntry id="dispatch_tier_r0_i1"><text>"urgent"</text>',
        '<inputEntry id="dispatch_tier_r0_i1"><text>? &gt; 3</text>',
    )
    problem = problem_at(validate(bad, now=START), DISPATCH, "dispatch_tier_r0")
    assert "TypeError" in problem.message


def test_a_table_reading_a_field_no_form_has_is_named(bundle):
    bad = changed(
        bundle,
        DISPATCH,
        '<inputExpression id="dispatch_tier_in0_expr" typeRef="string"><text>category',
        '<inputExpression id="dispatch_tier_in0_expr" typeRef="string"><text>kind',
    )
    problem = problem_at(validate(bad, now=START), DISPATCH, "dispatch_tier_in0")
    assert "'kind'" in problem.message


def test_a_timer_inside_a_subprocess_is_refused_naming_it(bundle):
    """The step fires the timers of the process's own tasks; one inside a subprocess would wait
    until some other step happened to run."""
    text = bundle.files[BPMN]
    start = text.index('<bpmn:scriptTask id="reopen"')
    end = text.index("</bpmn:scriptTask>", start) + len("</bpmn:scriptTask>")
    subprocess = """<bpmn:subProcess id="reopen" name="重新办理">
      <bpmn:incoming>f_gw_satisfied__reopen</bpmn:incoming>
      <bpmn:outgoing>f_reopen__gw_reopen</bpmn:outgoing>
      <bpmn:startEvent id="reopen_start" />
      <bpmn:sequenceFlow id="reopen_f1" sourceRef="reopen_start" targetRef="reopen_wait" />
      <bpmn:intermediateCatchEvent id="reopen_wait">
        <bpmn:timerEventDefinition><bpmn:timeDuration>"PT1H"</bpmn:timeDuration>
        </bpmn:timerEventDefinition>
      </bpmn:intermediateCatchEvent>
      <bpmn:sequenceFlow id="reopen_f2" sourceRef="reopen_wait" targetRef="reopen_end" />
      <bpmn:endEvent id="reopen_end" />
    </bpmn:subProcess>"""
    bad = Bundle({**bundle.files, BPMN: text[:start] + subprocess + text[end:]})
    problem = problem_at(validate(bad, now=START), BPMN, "reopen_wait")
    assert "subprocess 'reopen'" in problem.message and "on time" in problem.message


def test_a_loop_without_a_person_or_an_event_is_refused_without_running_it(bundle):
    """route → time_limit → gw_tier → route would spin inside one step for ever."""
    bad = changed(
        bundle,
        BPMN,
        'sourceRef="gw_tier" targetRef="handle_grid"',
        'sourceRef="gw_tier" targetRef="route"',
    )
    started = time.perf_counter()
    problems = validate(bad, now=START)
    assert time.perf_counter() - started < 5
    looped = [p for p in problems if "loops through" in p.message]
    assert looped and looped[0].element in ("route", "time_limit", "gw_tier"), problems
    assert all(name in looped[0].message for name in ("route", "time_limit", "gw_tier"))


def test_a_dry_run_that_stops_at_a_gateway_names_it(bundle):
    """No report branch for a case resolved at grid level: the dry run stops there."""
    text = bundle.files[BPMN]
    at = text.index('<bpmn:sequenceFlow id="f_gw_report__report_grid"')
    old = 'tier == "grid_leader"'
    at = text.index(old, at)
    bad = Bundle({**bundle.files, BPMN: text[:at] + 'tier == "grid"' + text[at + len(old) :]})
    problem = problem_at(validate(bad, now=START), BPMN, "gw_report")
    assert "dry-run" in problem.message


def test_a_dry_run_comes_back_to_a_task_with_the_next_answer(bundle):
    """A feedback form that offers "unsatisfied" first still validates: the dry run answers
    "basically_satisfied" when the case comes back to feedback."""
    form = json.loads(bundle.files[FEEDBACK_FORM])
    form["properties"]["satisfaction"]["enum"].reverse()
    reordered = Bundle({**bundle.files, FEEDBACK_FORM: json.dumps(form, ensure_ascii=False)})
    assert validate(reordered, now=START) == []


def test_a_dry_run_that_never_ends_is_stopped_naming_where_it_was(bundle, monkeypatch):
    """A review that can only return the case loops handle → feedback → report → review."""
    form = json.loads(bundle.files[REVIEW_FORM])
    form["properties"]["approved"]["const"] = False
    looping = Bundle({**bundle.files, REVIEW_FORM: json.dumps(form)})
    monkeypatch.setattr(validation, "DRY_RUN_STEPS", 30)
    problem = [p for p in validate(looping, now=START) if "dry-run" in p.message]
    assert problem and "30 steps" in problem[0].message, problem
    assert problem[0].element in ("review_district", "handle_grid", "feedback", "report_grid")
    # However slow each step, the dry run is cut at its time limit.
    monkeypatch.setattr(validation, "DRY_RUN_STEPS", 10_000)
    monkeypatch.setattr(validation, "DRY_RUN_SECONDS", 0.2)
    started = time.perf_counter()
    problem = [p for p in validate(looping, now=START) if "dry-run" in p.message]
    assert time.perf_counter() - started < 3
    assert problem and "still running after 0.2 seconds" in problem[0].message, problem


def test_sample_form_data_fits_each_form_and_follows_its_conditions(bundle):
    accept = json.loads(bundle.files["workflows/bpmn/forms/accept.schema.json"])
    assert sample_form_data(accept) == {
        "valid": True,
        "category": "resident_request",
        "severity": "normal",
    }
    rejected = sample_form_data(accept, visit=1)
    assert rejected["valid"] is False and rejected["note"].strip()
    handle = json.loads(bundle.files[HANDLE_FORM])
    refer = sample_form_data(handle, visit=1)
    assert refer["outcome"] == "refer_up" and refer["note"].strip()


def test_a_process_registers_checks_of_its_own(bundle, monkeypatch):
    """Validation is per process: another process's checks run for it, not the case loop's."""
    seen = []
    monkeypatch.setitem(
        validation.CHECKS,
        "case_loop_copy",
        validation.ProcessChecks((lambda parsed: seen.append(parsed.process_id),)),
    )
    text = (
        bundle.files[BPMN]
        .replace('id="case_loop"', 'id="case_loop_copy"')
        .replace('processRef="case_loop"', 'processRef="case_loop_copy"')
    )
    other = Bundle({**bundle.files, BPMN: text})
    assert validate(other, "case_loop_copy", now=START) == []
    assert seen == ["case_loop_copy"]
    assert "'case_loop'" in validate(other, now=START)[0].message
