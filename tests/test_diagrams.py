"""Diagrams are code that administrators upload: a bundle that is malformed, unsafe or incomplete
never goes live, and the error names the element at fault. Scripts are checked again when run."""

from __future__ import annotations

import pytest
from conftest import START, changed
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser

from engine.sandbox import RestrictedScriptEngine, UnsafeScript, check_source
from engine.specs import Bundle, DiagramError, deploy, live_version, parse_bundle

BPMN = "workflows/bpmn/case_loop.bpmn"
DISPATCH = "rules/dispatch_tier.dmn"
HANDLE_FORM = "workflows/bpmn/forms/handle.schema.json"


def test_the_repository_bundle_parses(bundle):
    spec = parse_bundle(bundle)
    tasks = {info.spec: (info.task, info.lane, info.form) for info in spec.tasks.values()}
    assert tasks["accept"] == ("accept", "info_officer", "accept")
    assert tasks["handle_town"] == ("handle", "town_leadership", "handle_town")
    assert tasks["feedback"][0] == "feedback"
    assert {t for t, _l, _f in tasks.values()} == {
        "accept",
        "handle",
        "feedback",
        "report",
        "review",
    }


def test_malformed_xml_names_file_and_line(bundle):
    bad = changed(
        bundle,
        BPMN,
        '<bpmn:userTask id="accept" name="受理">',
        '<bpmn:userTask id="accept" name="受理"',
        1,
    )
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    line = bundle.files[BPMN].splitlines().index('    <bpmn:userTask id="accept" name="受理">') + 1
    assert err.value.file == BPMN
    assert err.value.line is not None and abs(err.value.line - line) <= 1
    assert BPMN in str(err.value)


def test_malformed_dmn_names_its_file(bundle):
    bad = changed(bundle, DISPATCH, "</decisionTable>", "</decisionTabel>")
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    assert err.value.file == DISPATCH and err.value.line


@pytest.mark.parametrize(
    ("path", "old", "new", "element"),
    [
        pytest.param(
            BPMN,
            "<spiffworkflow:preScript>reopen_count = 0\n",
            "<spiffworkflow:preScript>os = __import__('os')\nreopen_count = 0\n",
            ("intake",),
            id="script-__import__",
        ),
        pytest.param(
            BPMN,
            '<bpmn:script>closed_as = "rejected"</bpmn:script>',
            "<bpmn:script>closed_as = ().__class__.__mro__</bpmn:script>",
            ("reject",),
            id="script-__class__.__mro__",
        ),
        pytest.param(
            BPMN,
            '<bpmn:script>tier = "district_leader"</bpmn:script>',
            '<bpmn:script>tier = getattr(tier, "upper")()</bpmn:script>',
            ("to_district_grid",),
            id="script-getattr",
        ),
        pytest.param(
            BPMN,
            "valid == False</bpmn:conditionExpression>",
            "open('/etc/passwd') and valid == False</bpmn:conditionExpression>",
            ("gw_valid", "f_gw_valid__reject"),
            id="condition-open",
        ),
        pytest.param(
            BPMN,
            "gl_deadline(limit_hours, limit_clock)</bpmn:timeDate>",
            "eval('gl_deadline(limit_hours, limit_clock)')</bpmn:timeDate>",
            ("due_accept",),  # the first timer in the file
            id="timer-eval",
        ),
        pytest.param(
            DISPATCH,
            '<outputEntry id="dispatch_tier_r0_o0"><text>"village_secretary"</text>',
            '<outputEntry id="dispatch_tier_r0_o0"><text>"village_secretary".__class__</text>',
            ("dispatch", "dispatch_tier_r0", "dispatch_tier_r0_o0", "dispatch_tier"),
            id="dmn-output-dunder",
        ),
        pytest.param(
            DISPATCH,
            '<inputEntry id="dispatch_tier_r0_i0"><text>"safety_hazard"</text>',
            '<inputEntry id="dispatch_tier_r0_i0"><text>? in "".__class__.__subclasses__()</text>',
            ("dispatch", "dispatch_tier_r0", "dispatch_tier_r0_i0", "dispatch_tier"),
            id="dmn-input-dunder",
        ),
        pytest.param(
            BPMN,
            "<bpmn:script>reopen_count = reopen_count + 1</bpmn:script>",
            "<bpmn:script>f = lambda: 1\nreopen_count = reopen_count + 1</bpmn:script>",
            ("reopen",),
            id="script-lambda",
        ),
        pytest.param(
            BPMN,
            "<bpmn:script>reopen_count = reopen_count + 1</bpmn:script>",
            '<bpmn:script>reopen_count = "{0.__class__}".format(reopen_count)</bpmn:script>',
            ("reopen",),
            id="script-format",
        ),
        pytest.param(
            BPMN,
            "<bpmn:script>reopen_count = reopen_count + 1</bpmn:script>",
            "<bpmn:script>import os\nreopen_count = reopen_count + 1</bpmn:script>",
            ("reopen",),
            id="script-import",
        ),
    ],
)
def test_unsafe_python_is_refused_naming_the_element(bundle, path, old, new, element):
    with pytest.raises(DiagramError) as err:
        parse_bundle(changed(bundle, path, old, new))
    assert err.value.element in element, (err.value.element, str(err.value))
    assert err.value.element in str(err.value)


def test_user_task_in_a_lane_that_is_not_a_tier(bundle):
    bad = changed(
        bundle,
        BPMN,
        '<bpmn:lane id="lane_grid_leader" name="grid_leader">',
        '<bpmn:lane id="lane_grid_leader" name="grid_boss">',
    )
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    assert err.value.element in ("handle_grid", "report_grid")
    assert "grid_boss" in str(err.value)


def test_user_task_without_a_form(bundle):
    bad = changed(
        bundle,
        BPMN,
        '<spiffworkflow:property name="formKey" value="handle_town" />',
        "",
    )
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    assert err.value.element == "handle_town"


def test_form_key_without_its_schema(bundle):
    files = dict(bundle.files)
    del files[HANDLE_FORM]
    with pytest.raises(DiagramError) as err:
        parse_bundle(Bundle(files))
    assert err.value.element in ("handle_grid", "handle_district", "handle_village")
    assert "handle" in str(err.value)


def test_user_task_without_a_logical_task_name(bundle):
    bad = changed(
        bundle,
        BPMN,
        '<spiffworkflow:property name="task" value="feedback" />',
        '<spiffworkflow:property name="task" value="chat" />',
    )
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    assert err.value.element == "feedback"


def test_a_bad_form_schema_names_its_file(bundle):
    files = dict(bundle.files)
    files[HANDLE_FORM] = '{"type": "object", "properties": {"outcome": {"type": "nonsense"}}}'
    with pytest.raises(DiagramError) as err:
        parse_bundle(Bundle(files))
    assert err.value.file == HANDLE_FORM


def test_a_bad_bundle_leaves_the_live_version_live(session, registry, bundle, clock):
    live = live_version(session)
    assert live is not None and live.sha256 == bundle.sha256
    bad = changed(
        bundle,
        BPMN,
        "<spiffworkflow:preScript>reopen_count = 0\n",
        "<spiffworkflow:preScript>reopen_count = __import__('os')\n",
    )
    with pytest.raises(DiagramError):
        deploy(session, registry, bad, "adm", clock.now())
    session.rollback()
    assert live_version(session).id == live.id

    # A good new version does go live; deploying the same bundle again is a no-op.
    good = changed(bundle, HANDLE_FORM, '"title": "处置"', '"title": "处置（新版）"')
    version, created = deploy(session, registry, good, "adm", clock.now())
    session.commit()
    assert created and live_version(session).id == version.id != live.id
    again, created = deploy(session, registry, good, "adm", clock.now())
    assert not created and again.id == version.id


def test_running_cases_stay_on_their_version(gl, registry, bundle):
    old = gl.accepted()
    good = changed(bundle, HANDLE_FORM, '"title": "处置"', '"title": "处置（新版）"')
    version, _ = deploy(gl.session, registry, good, "adm", START)
    gl.session.commit()
    new = gl.accepted()
    assert gl.reload(new).diagram_id == version.id
    assert gl.reload(old).diagram_id != version.id
    old = gl.complete("gl1", old, {"outcome": "resolved"})
    assert old.status == "feedback"
    events = gl.events(old)
    assert {e.diagram for e in events} == {bundle.sha256}


# ------------------------------------------------------------------ the sandbox at run time


@pytest.mark.parametrize(
    "source",
    [
        "().__class__",
        "().__class__.__mro__[1].__subclasses__()",
        "__import__('os')",
        "getattr(x, 'upper')",
        '"{0.__class__}".format(x)',
        "(lambda: 1)()",
        "x.__dict__",
        "open('/etc/passwd')",
        "eval('1')",
        "globals()",
        "type(x)",
        "[c for c in ().__class__.__bases__]",
        'f"{x.__class__}"',
        "gl_unknown_helper()",
        "_private",
        "x.format_map({})",
    ],
)
def test_sandbox_refuses(source):
    with pytest.raises(UnsafeScript):
        check_source(source, "eval", frozenset({"gl_deadline"}))


@pytest.mark.parametrize(
    ("source", "mode"),
    [
        ('tier = "district_leader"', "exec"),
        ("reopen_count = reopen_count + 1", "exec"),
        ('x in ("a", "b")', "eval"),
        ("gl_deadline(limit_hours * 0.8, limit_clock)", "eval"),
        ('{"grid_leader": "district_leader"}[tier]', "eval"),
        ('reopen_count >= 2 and tier != "town_leadership"', "eval"),
        ("len([n for n in names if n.startswith('a')])", "eval"),
    ],
)
def test_sandbox_allows_plain_data_work(source, mode):
    check_source(source, mode, frozenset({"gl_deadline"}))


def test_restricted_engine_refuses_at_run_time():
    env = RestrictedScriptEngine(
        {"gl_deadline": lambda hours, clock: "2026-11-24T02:00:00Z"}
    ).environment
    assert env.evaluate("reopen_count + 1", {"reopen_count": 1}) == 2
    assert env.evaluate('x in ("a", "b")', {"x": "b"}) is True
    assert env.evaluate("gl_deadline(1, 'clock')", {}) == "2026-11-24T02:00:00Z"
    context = {"reopen_count": 0}
    env.execute('tier = "district_leader"', context)
    assert context["tier"] == "district_leader"
    for source in (
        "().__class__",
        "__import__('os')",
        "getattr(x, 'upper')",
        '"{0.__class__}".format(x)',
        "(lambda: 1)()",
    ):
        with pytest.raises(UnsafeScript):
            env.evaluate(source, {"x": "a"})
    with pytest.raises(UnsafeScript):
        env.execute("import os", {})
    assert env.evaluate("sorted(x)", {"x": [2, 1]}) == [1, 2]


def test_a_diagram_that_skipped_validation_is_still_refused_when_run(bundle):
    """The parse-time check is not the only guard: the engine checks every script it runs."""
    bad = changed(
        bundle,
        BPMN,
        "<spiffworkflow:preScript>reopen_count = 0\n",
        "<spiffworkflow:preScript>reopen_count = ().__class__.__mro__\n",
    )
    parser = SpiffBpmnParser(validator=VALIDATOR)
    for path, text in sorted(bad.files.items()):
        if path.endswith(".bpmn"):
            parser.add_bpmn_str(text.encode(), filename=path)
        elif path.endswith(".dmn"):
            parser.add_dmn_str(text.encode(), filename=path)
    workflow = BpmnWorkflow(parser.get_spec("case_loop"), parser.get_subprocess_specs("case_loop"))
    workflow.script_engine = RestrictedScriptEngine(
        {"gl_deadline": lambda h, c: "2026-11-24T02:00:00Z"}
    )
    with pytest.raises(Exception) as err:
        workflow.do_engine_steps()
    causes, exc = [], err.value
    while exc is not None:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "exception", None)
    assert any(isinstance(c, UnsafeScript) for c in causes), causes
    assert not any(
        "reopen_count" in t.data for t in workflow.get_tasks() if t.task_spec.name == "accept"
    )
