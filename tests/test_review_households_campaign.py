"""Review regressions for the household register and the campaign diagram (issue 13 items 1, 2).

- A grid counts as returned only once its leader confirms (DESIGN §12), so the grid leader's
  campaign_confirm carries the campaign's 80% and due timers like the officers' return: its work
  item has the campaign's due time, and a confirmation left waiting past it is supervised, the
  district leader told. Before, it had no due time and nothing ever fired.
- A form whose $ref leads back to itself without descending into the submission would recurse
  for ever when a submission is checked (a 500): refused at deploy naming the form.
- A phone too short for the 138****5678 rule to hide 4 digits (an 8-digit landline showed 7 of
  its 8) shows only its last 2, on the page and in the API.
"""

from __future__ import annotations

import json
from datetime import timedelta

import jsonschema
import pytest
from apps import bearer, web_client
from conftest import START
from test_households import G01, REGISTER_ORG, text_of

from engine.clock import iso
from engine.privacy import mask_phone
from engine.specs import Bundle, DiagramError, parse_bundle
from engine.step import Complete, Fire, Open, ready_user_tasks, run_step
from engine.validation import validate

CAMPAIGN = "workflows/bpmn/campaign.bpmn"
RETURN_FORM = "workflows/bpmn/forms/campaign_return.schema.json"
LAUNCHED = START
DUE = START + timedelta(days=10)
WARN = START + timedelta(days=8)


def no_deadline(hours: float, clock: str) -> str:
    raise AssertionError("the campaign diagram called gl_deadline")


@pytest.fixture(scope="module")
def spec(bundle):
    return parse_bundle(bundle, process_id="campaign")


def returned_on_time(spec):
    data = {"launched_at": iso(LAUNCHED), "due_at": iso(DUE)}
    opened = run_step(None, spec, Open(data), LAUNCHED, no_deadline)
    [(task_id, _task)] = ready_user_tasks(opened.workflow).items()
    at = LAUNCHED + timedelta(days=1)
    command = Complete(task_id, "campaign_return", {"note": "52 户已走访"})
    return run_step(opened.workflow, spec, command, at, no_deadline)


def test_the_grid_leaders_confirmation_is_due_at_the_campaigns_due_time(spec):
    returned = returned_on_time(spec)
    [confirm] = returned.ready
    assert confirm.info.task == "campaign_confirm"
    assert (confirm.due_at, confirm.warn_at) == (DUE, WARN)


def test_a_confirmation_left_waiting_is_supervised_at_80_percent_and_late_at_the_due_time(spec):
    outcome = returned_on_time(spec)
    [confirm] = outcome.ready
    second = timedelta(seconds=1)

    def fire(at):
        nonlocal outcome
        outcome = run_step(outcome.workflow, spec, Fire(), at, no_deadline)
        return outcome

    assert fire(WARN - second).events == []
    warned = fire(WARN)
    assert [(k, t, d.get("overdue")) for k, t, d in warned.events] == [
        ("supervised", "campaign_confirm", None)
    ]
    assert [s.task_id for s in warned.supervisions] == [confirm.task_id]
    assert fire(DUE - second).events == []
    late = fire(DUE)
    [(kind, task, data)] = late.events
    assert (kind, task, data["overdue"], data["tier"]) == (
        "supervised",
        "campaign_confirm",
        True,
        "grid_leader",
    )
    [supervision] = late.supervisions
    assert "district_leader" in supervision.notify.split(",")
    assert late.still_open == [confirm.task_id] and late.facts.status == "confirming"


def test_a_campaign_diagram_whose_confirmation_has_no_due_timer_is_refused(bundle):
    text = bundle.files[CAMPAIGN]
    due = '<spiffworkflow:property name="timer" value="due" />'
    assert text.count(due) == 2
    last = text.rindex(due)  # the confirmation's (drawn after the return's)
    bad = Bundle({**bundle.files, CAMPAIGN: text[:last] + text[last + len(due) :]})
    problems = [p for p in validate(bad, now=START) if p.element == "campaign_confirm"]
    assert problems and "'due'" in problems[0].message, validate(bad, now=START)
    assert validate(bad, "case_loop", now=START) == []
    # The bundle as it is passes.
    assert validate(bundle, now=START) == []


def with_note(bundle, note: dict, defs: dict | None = None) -> Bundle:
    form = json.loads(bundle.files[RETURN_FORM])
    if defs is not None:
        form["$defs"] = defs
    form["properties"]["note"] = note
    return Bundle({**bundle.files, RETURN_FORM: json.dumps(form, ensure_ascii=False)})


@pytest.mark.parametrize(
    ("note", "defs", "ref"),
    [
        ({"$ref": "#/properties/note"}, None, "#/properties/note"),
        (
            {"$ref": "#/$defs/a"},
            {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}},
            "#/$defs/",
        ),
        ({"$anchor": "n", "anyOf": [{"$ref": "#n"}, {"type": "string"}]}, None, "#n"),
    ],
)
def test_a_form_whose_ref_loops_on_one_value_is_refused_at_deploy(bundle, note, defs, ref):
    bad = with_note(bundle, note, defs)
    # What a submission would meet: the check never ends (Python gives up with RecursionError).
    form = json.loads(bad.files[RETURN_FORM])
    with pytest.raises(RecursionError):
        list(jsonschema.Draft202012Validator(form).iter_errors({"note": "已完成"}))
    problems = [p for p in validate(bad, now=START) if p.file == RETURN_FORM]
    assert problems, validate(bad, now=START)
    assert ref in problems[0].message and "never end" in problems[0].message
    with pytest.raises(DiagramError, match="never end"):
        parse_bundle(bad, process_id="campaign")


def test_a_form_that_refers_to_itself_through_a_field_or_an_item_is_fine(bundle):
    """A nested structure (a list of notes, each with its own list) ends with the value."""
    defs = {
        "entry": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "more": {"$ref": "#/$defs/entries"}},
        },
        "entries": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/entry"}},
    }
    good = with_note(bundle, {"type": "string", "maxLength": 2000}, defs)
    form = json.loads(good.files[RETURN_FORM])
    form["properties"]["items"] = {"$ref": "#/$defs/entries"}
    good = Bundle({**good.files, RETURN_FORM: json.dumps(form, ensure_ascii=False)})
    assert validate(good, now=START) == []


# ------------------------------------------------------------------ the household register


def test_a_short_phone_is_not_shown_nearly_whole(make_app):
    """The 3-and-4 rule hides 4 digits of a mobile number; applied to a landline without its area
    code (8 digits) it hid one, leaving ten numbers to try. Shorter numbers keep their last 2."""
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("88881234") == "******34"
    assert mask_phone("0731888888") == "********88"
    app = make_app(REGISTER_ORG)
    off1 = web_client(app, "off1")
    added = off1.post(
        f"/grids/{G01}/households", data={"number": "6", "head": "郑六", "phone": "8888 1234"}
    )
    assert added.status_code == 302
    page = text_of(off1.get(f"/grids/{G01}/households"))
    assert "******34" in page and "888*1234" not in page and "88881234" not in page
    client = app.test_client()
    body = client.get(f"/api/v1/grids/{G01}/households", headers=bearer(client, "dl1"))
    [six] = [h for h in body.get_json()["items"] if h["number"] == 6]
    assert six["phone"] == "******34"
