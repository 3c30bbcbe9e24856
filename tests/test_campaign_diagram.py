"""The campaign diagram (DESIGN §12, issue 13 item 1, the diagram part): workflows/bpmn/campaign.bpmn
is part of the repository's bundle, validated by checks of its own and deployed with it; one grid's
instance runs with engine/step.py's run_step from launch through the officers' return and the
grid leader's confirmation, supervised at 80% of the span from launch to due and escalated at the
due time. Also two gaps of bundle validation: a form whose $ref cannot be resolved, and a DMN
decision without a decision table."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import START, changed
from sqlalchemy import select

from engine.clock import iso, parse_iso
from engine.models import DiagramVersion
from engine.specs import Bundle, DiagramError, live_version, parse_bundle
from engine.step import Complete, Fire, Open, gl_between, ready_user_tasks, run_step
from engine.validation import BundleInvalid, Problem, validate
from engine.versions import deploy_bundle, processes
from webapp.cli import main

CAMPAIGN = "workflows/bpmn/campaign.bpmn"
RETURN_FORM = "workflows/bpmn/forms/campaign_return.schema.json"
CONFIRM_FORM = "workflows/bpmn/forms/campaign_confirm.schema.json"
TIER_ABOVE = "rules/tier_above.dmn"
LAUNCHED = START  # Monday 2026-11-23 10:00 in Asia/Shanghai
DUE = START + timedelta(days=10)
WARN = START + timedelta(days=8)  # 80% of the ten days


def no_deadline(hours: float, clock: str) -> str:
    """A campaign's timers are its span's, never a working-time limit."""
    raise AssertionError("the campaign diagram called gl_deadline")


@pytest.fixture(scope="module")
def spec(bundle):
    return parse_bundle(bundle, process_id="campaign")


def problem_at(problems: list[Problem], file: str, element: str | None) -> Problem:
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
    stored = select(DiagramVersion).where(DiagramVersion.sha256 == bad.sha256)
    assert session.scalars(stored).first() is None
    return err.value.problems


# ------------------------------------------------------------------ the repository's bundle


def test_the_repository_bundle_validates_with_the_campaign_process(bundle):
    assert set(processes(bundle.files)) == {"case_loop", "campaign"}
    assert validate(bundle, now=START) == []
    assert validate(bundle, "campaign", now=START) == []


def test_a_bundle_without_a_campaign_diagram_is_still_a_case_loop_bundle(bundle):
    files = {p: t for p, t in bundle.files.items() if "campaign" not in p}
    assert validate(Bundle(files), now=START) == []
    with pytest.raises(DiagramError, match="'campaign' was not found"):
        parse_bundle(Bundle(files), process_id="campaign")


def test_the_campaign_spec_has_its_two_tasks_in_their_lanes_with_campaign_statuses(spec, bundle):
    tasks = {info.task: info for info in spec.tasks.values()}
    assert set(tasks) == {"campaign_return", "campaign_confirm"}
    assert (tasks["campaign_return"].lane, tasks["campaign_return"].form) == (
        "info_officer",
        "campaign_return",
    )
    assert (tasks["campaign_confirm"].lane, tasks["campaign_confirm"].form) == (
        "grid_leader",
        "campaign_confirm",
    )
    # No campaign task puts anything in a case status (DESIGN §5's six belong to cases).
    assert {i.props["status"] for i in tasks.values()} == {"returning", "confirming"}
    # The case loop parsed from the same bundle is the case loop, unchanged.
    loop = parse_bundle(bundle)
    assert loop.process_id == "case_loop" and "accept" in {i.task for i in loop.tasks.values()}
    assert not {i.task for i in loop.tasks.values()} & set(tasks)


def test_the_campaign_words_come_from_its_forms(spec):
    confirm = spec.forms["campaign_confirm"]["properties"]["confirmation"]
    assert confirm["enum"] == ["confirmed", "sent_back"]
    assert confirm["x-enumTitles"] == ["确认", "退回重报"]
    assert confirm["x-enumTitles-en"][1].startswith("Send back")
    assert spec.forms["campaign_return"]["title"] == "工作报送"


# ------------------------------------------------------------------ running one grid


def open_grid(spec, at=LAUNCHED):
    data = {"campaign": 7, "grid": "V01-D1-G01", "launched_at": iso(LAUNCHED), "due_at": iso(DUE)}
    return run_step(None, spec, Open(data), at, no_deadline)


def the_item(outcome) -> tuple[str, str]:
    """(task id, logical task) of the instance's one open work item."""
    [(task_id, task)] = ready_user_tasks(outcome.workflow).items()
    return task_id, task.task_spec.extensions["properties"]["task"]


def complete(spec, outcome, data: dict, at):
    task_id, logical = the_item(outcome)
    return run_step(outcome.workflow, spec, Complete(task_id, logical, data), at, no_deadline)


def test_a_dry_run_of_a_grid_goes_from_launch_through_return_and_confirmation_to_its_end(spec):
    opened = open_grid(spec)
    assert [r.info.task for r in opened.ready] == ["campaign_return"]
    assert opened.facts.status == "returning" and not opened.facts.closed
    returned = complete(spec, opened, {"note": "52 户已走访"}, LAUNCHED + timedelta(days=2))
    assert [r.info.task for r in returned.ready] == ["campaign_confirm"]
    assert returned.facts.status == "confirming"
    # The return's timers went with it; the confirmation has its own, at the same instants.
    assert {(at, kind) for at, kind, _e in returned.timers} == {(WARN, "warn"), (DUE, "due")}
    done = complete(spec, returned, {"confirmation": "confirmed"}, LAUNCHED + timedelta(days=3))
    assert done.facts.closed and done.facts.status == "confirmed"
    assert [kind for kind, _task, _data in done.events] == ["task_completed", "confirmed"]


def test_the_return_is_due_at_the_campaigns_due_time_and_supervised_at_80_percent(spec):
    opened = open_grid(spec)
    [ready] = opened.ready
    assert (ready.due_at, ready.warn_at) == (DUE, WARN)
    kind, _task, data = opened.events[0]
    assert kind == "opened"
    assert (data["tier"], parse_iso(data["warn_at"])) == ("info_officer", WARN)
    assert {(at, kind) for at, kind, _element in opened.timers} == {(WARN, "warn"), (DUE, "due")}


def test_the_80_percent_supervision_and_the_escalation_fire_at_their_instants(spec):
    outcome = open_grid(spec)
    item, _task = the_item(outcome)
    second = timedelta(seconds=1)

    def fire(at):
        nonlocal outcome
        outcome = run_step(outcome.workflow, spec, Fire(), at, no_deadline)
        return outcome

    assert fire(WARN - second).events == []
    warned = fire(WARN)
    assert [(k, t) for k, t, _d in warned.events] == [("supervised", "campaign_return")]
    assert "overdue" not in warned.events[0][2]
    assert [(s.task_id, s.notify) for s in warned.supervisions] == [(item, "holder,grid_leader")]
    assert warned.still_open == [item] and warned.ready == []

    assert fire(DUE - second).events == []
    late = fire(DUE)
    [(kind, task, data)] = late.events
    assert (kind, task, data["overdue"], parse_iso(data["due_at"])) == (
        "supervised",
        "campaign_return",
        True,
        DUE,
    )
    assert data["tier"] == "info_officer"
    [supervision] = late.supervisions
    assert supervision.notify.split(",") == ["holder", "grid_leader", "district_leader"]
    # Late, the officers still owe their return: it stays open, and nothing more is pending.
    assert late.still_open == [item] and late.timers == frozenset()
    assert fire(DUE + timedelta(days=3)).events == []


def test_both_timers_due_in_one_firing_come_in_order(spec):
    """A grid launched late (or a ticker that was down) fires both at once: 80% first."""
    outcome = run_step(open_grid(spec).workflow, spec, Fire(), DUE, no_deadline)
    assert [d.get("overdue", False) for _k, _t, d in outcome.events] == [False, True]


def test_the_grid_leader_sends_a_return_back_with_a_note_and_confirms_the_next(spec):
    at = LAUNCHED + timedelta(days=1)
    returned = complete(spec, open_grid(spec), {"note": "已完成"}, at)
    bare = {"confirmation": "sent_back"}
    assert list(spec.validators["campaign_confirm"].iter_errors(bare))  # a note is needed
    back = complete(spec, returned, {"confirmation": "sent_back", "note": "少报 3 户"}, at)
    assert [r.info.task for r in back.ready] == ["campaign_return"]
    assert back.facts.status == "returning" and not back.facts.closed
    # Sent back before the 80% instant: the return is supervised at the campaign's instants.
    assert {(due, kind) for due, kind, _e in back.timers} == {(WARN, "warn"), (DUE, "due")}
    again = complete(spec, back, {"note": "已补齐"}, at)
    done = complete(spec, again, {"confirmation": "confirmed"}, at)
    assert done.facts.status == "confirmed"


def test_a_return_sent_back_after_the_due_time_is_supervised_again_at_once(spec):
    """The return's timers are the campaign's instants, not a fresh limit: a return the grid
    leader sends back once the campaign is due is late from the moment it is open again, and
    the tier above hears so in the same step."""
    late = run_step(open_grid(spec).workflow, spec, Fire(), DUE, no_deadline)
    returned = complete(spec, late, {"note": "迟报"}, DUE + timedelta(days=1))
    back = complete(
        spec, returned, {"confirmation": "sent_back", "note": "少报"}, DUE + timedelta(days=2)
    )
    assert [(k, t, d.get("overdue")) for k, t, d in back.events] == [
        ("task_completed", "campaign_confirm", None),
        ("supervised", "campaign_return", None),
        ("supervised", "campaign_return", True),
    ]
    assert back.facts.status == "returning"


def test_gl_between_refuses_what_no_campaign_can_mean():
    assert gl_between("2026-11-23T02:00:00Z", "2026-12-03T02:00:00+00:00", 0.8) == iso(WARN)
    assert gl_between(LAUNCHED, DUE, 1) == iso(DUE)
    for start, end, fraction in [
        (iso(DUE), iso(LAUNCHED), 0.5),  # ends before it starts
        ("2026-11-23T02:00:00", iso(DUE), 0.5),  # no time zone
        (iso(LAUNCHED), iso(DUE), 1.5),
    ]:
        with pytest.raises(ValueError):
            gl_between(start, end, fraction)


# ------------------------------------------------------------------ broken campaign diagrams


def wrong_lane(bundle):
    return changed(bundle, CAMPAIGN, 'name="district_leader" />', 'name="volunteers" />', once=True)


def missing_form(bundle):
    return Bundle({p: t for p, t in bundle.files.items() if p != CONFIRM_FORM})


def unquoted_timer(bundle):
    # The first of the due timers is the return's.
    return changed(bundle, CAMPAIGN, "gl_between(launched_at, due_at, 1)", "P3D")


def case_status(bundle):
    return changed(bundle, CAMPAIGN, 'value="confirming"', 'value="handling"', once=True)


def no_due_timer(bundle):
    # The first `timer` due is the return's (the confirmation has one too).
    return changed(bundle, CAMPAIGN, '<spiffworkflow:property name="timer" value="due" />', "")


def never_confirms(bundle):
    # Confirmation goes back to the officers, and only an answer no form gives ends the grid.
    text = changed(
        bundle,
        CAMPAIGN,
        'default="f_campaign_gw_confirmed__confirmed"',
        'default="f_campaign_gw_confirmed__return"',
        once=True,
    )
    text = changed(
        text,
        CAMPAIGN,
        '<bpmn:sequenceFlow id="f_campaign_gw_confirmed__confirmed" name="确认" '
        'sourceRef="campaign_gw_confirmed" targetRef="campaign_confirmed" />',
        '<bpmn:sequenceFlow id="f_campaign_gw_confirmed__confirmed" name="确认" '
        'sourceRef="campaign_gw_confirmed" targetRef="campaign_confirmed"><bpmn:conditionExpression'
        ' xsi:type="bpmn:tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        'confirmation == "never"</bpmn:conditionExpression></bpmn:sequenceFlow>',
        once=True,
    )
    return changed(
        text,
        CAMPAIGN,
        'confirmation == "sent_back"</bpmn:conditionExpression>',
        'confirmation == "sent_back" or confirmation == "confirmed"</bpmn:conditionExpression>',
        once=True,
    )


BROKEN = {
    # name: (break the bundle, element, words the message must hold)
    "a lane that is not a tier": (wrong_lane, "campaign_lane_district_leader", ["volunteers"]),
    "a missing form": (missing_form, "campaign_confirm", ["formKey 'campaign_confirm'"]),
    "an unquoted timer": (unquoted_timer, "campaign_due_return", ["P3D", '"P3D"', "quoted"]),
    "a case status on a campaign task": (
        case_status,
        "campaign_confirm",
        ["'status'", "returning", "confirming"],
    ),
    "a return without its due timer": (no_due_timer, "campaign_return", ["'due'", "timer"]),
    "a dry run that never confirms": (
        never_confirms,
        "campaign_confirm",
        ["dry-run", "still running"],
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_broken_campaign_diagram_is_refused_naming_the_element(
    session, registry, bundle, clock, name
):
    breaks, element, words = BROKEN[name]
    bad = breaks(bundle)
    problem = problem_at(validate(bad, now=START), CAMPAIGN, element)
    for word in words:
        assert word in problem.message, problem
    assert problem_at(refused(session, registry, clock, bad), CAMPAIGN, element) == problem
    # The case loop of the same bundle is still fine: only the campaign is at fault.
    assert validate(bad, "case_loop", now=START) == []


def test_a_campaign_supervision_may_not_notify_a_case_owner(bundle):
    bad = changed(bundle, CAMPAIGN, 'value="holder,grid_leader"', 'value="owner"', once=True)
    problem = problem_at(validate(bad, now=START), CAMPAIGN, "campaign_warn_return")
    assert "unknown: ['owner']" in problem.message


def test_a_campaign_task_name_is_not_a_case_task(bundle):
    """Each process has its own task names: the case loop refuses a campaign's."""
    bpmn = "workflows/bpmn/case_loop.bpmn"
    bad = changed(
        bundle,
        bpmn,
        '<spiffworkflow:property name="task" value="report" />',
        '<spiffworkflow:property name="task" value="campaign_return" />',
    )
    problem = problem_at(validate(bad, now=START), bpmn, "report_grid")
    assert "campaign_return" in problem.message and "'accept'" in problem.message


# ------------------------------------------------------------------ forms' $ref, DMN without a table


def with_ref(bundle, ref: str) -> Bundle:
    form = json.loads(bundle.files[RETURN_FORM])
    form["$defs"] = {"text": {"type": "string", "maxLength": 2000}}
    form["properties"]["note"] = {"$ref": ref, "title": "完成情况"}
    return Bundle({**bundle.files, RETURN_FORM: json.dumps(form, ensure_ascii=False)})


def test_a_form_may_refer_to_its_own_parts(bundle):
    assert validate(with_ref(bundle, "#/$defs/text"), now=START) == []


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("https://example.com/note.schema.json", ["refers outside the form"]),
        ("note.schema.json", ["refers outside the form"]),
        ("#/$defs/missing", ["cannot be resolved"]),
    ],
)
def test_a_form_whose_ref_cannot_be_resolved_is_refused_naming_the_file(
    session, registry, clock, bundle, ref, words
):
    bad = with_ref(bundle, ref)
    problem = problem_at(validate(bad, now=START), RETURN_FORM, None)
    assert ref in problem.message
    for word in words:
        assert word in problem.message
    # The task that names the form is told its form is not valid.
    assert "not valid JSON Schema" in problem_at(validate(bad), CAMPAIGN, "campaign_return").message
    problem_at(refused(session, registry, clock, bad), RETURN_FORM, None)
    with pytest.raises(DiagramError, match="refers outside|cannot be resolved"):
        parse_bundle(bad, process_id="campaign")


def test_a_dmn_decision_without_a_decision_table_gets_a_clear_message(
    session, registry, clock, bundle
):
    text = bundle.files[TIER_ABOVE]
    bad = Bundle(
        {
            **bundle.files,
            TIER_ABOVE: re.sub(r"<decisionTable.*</decisionTable>", "", text, flags=re.S),
        }
    )
    [problem] = validate(bad, now=START)
    assert (problem.file, problem.element) == (TIER_ABOVE, "tier_above")
    assert "no decisionTable" in problem.message and "IndexError" not in problem.message
    assert problem.line == 3
    refused(session, registry, clock, bad)
    with pytest.raises(DiagramError, match="no decisionTable"):
        parse_bundle(bad)


# ------------------------------------------------------------------ deployed with the bundle


def test_init_db_deploys_the_repository_bundle_with_the_campaign_over_an_older_one(
    make_app, monkeypatch, bundle
):
    """A database that started on the repository's bundle of before the campaign (deployed by
    "system") gets the new repository version from `gridloop init-db`, live, with both
    processes; the registry then parses the campaign from the stored version."""
    older = Bundle({p: t for p, t in bundle.files.items() if "campaign" not in p})
    app = make_app(bundle=older)
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    result = CliRunner().invoke(main, ["init-db"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"diagram {bundle.sha256[:12]} deployed" in result.output
    from webapp import services
    from webapp.extensions import db

    with app.app_context():
        live = live_version(db.session)
        assert live.sha256 == bundle.sha256 and live.deployed_by == "system"
        assert processes(live.files) == ("campaign", "case_loop")
        registry = services(app).runtime.registry
        campaign = registry.get(live, "campaign")
        assert campaign.process_id == "campaign" and registry.get(live).process_id == "case_loop"
        assert registry.get(live, "campaign") is campaign  # parsed once
        db.session.remove()
