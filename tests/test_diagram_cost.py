"""Diagram code is bounded in cost before it can go live. Python running in-process cannot be
interrupted inside `[0] * 10**9`, so every script, gateway condition, DMN cell and timer expression
is held to a grammar at deploy (engine/sandbox.py, "Cost bounds"), and the refusal names the
element at fault. What still fails when it runs commits nothing."""

from __future__ import annotations

import time

import pytest
from conftest import START, snapshot
from conftest import changed as shared_changed

from engine.sandbox import (
    MAX_CHARS,
    MAX_INT,
    MAX_NODES,
    RestrictedScriptEngine,
    UnsafeScript,
    check_source,
)
from engine.specs import Bundle, DiagramError, deploy, live_version, parse_bundle

BPMN = "workflows/bpmn/case_loop.bpmn"
DISPATCH = "rules/dispatch_tier.dmn"
TIME_LIMIT = "rules/time_limit.dmn"
HELPERS = frozenset({"gl_deadline"})

# The three pieces of code the issue names, as written there.
FOR_RANGE = "for i in range(10**10): pass"
REPEAT = "[0] * 10**9"
WHILE = "while True: pass"


def changed(bundle: Bundle, path: str, old: str, new: str) -> Bundle:
    return shared_changed(bundle, path, old, new, once=True)


def in_script(bundle: Bundle, code: str) -> Bundle:
    """`code` at the start of the `reopen` script task."""
    old = "<bpmn:script>reopen_count = reopen_count + 1</bpmn:script>"
    return changed(
        bundle, BPMN, old, f"<bpmn:script>{code}\nreopen_count = reopen_count + 1</bpmn:script>"
    )


def in_condition(bundle: Bundle, code: str) -> Bundle:
    """`code` as the condition of gw_valid's flow to `reject`."""
    old = "valid == False</bpmn:conditionExpression>"
    return changed(bundle, BPMN, old, f"{code}</bpmn:conditionExpression>")


def in_dmn_output(bundle: Bundle, code: str) -> Bundle:
    """`code` as the output cell of dispatch_tier's first rule."""
    old = '<outputEntry id="dispatch_tier_r0_o0"><text>"village_secretary"</text>'
    return changed(
        bundle, DISPATCH, old, f'<outputEntry id="dispatch_tier_r0_o0"><text>{code}</text>'
    )


def in_dmn_input(bundle: Bundle, code: str) -> Bundle:
    """`code` as the second input cell of time_limit's first rule."""
    old = '<inputEntry id="time_limit_r0_i1"><text>"urgent"</text>'
    return changed(
        bundle, TIME_LIMIT, old, f'<inputEntry id="time_limit_r0_i1"><text>{code}</text>'
    )


def in_timer(bundle: Bundle, code: str) -> Bundle:
    """`code` as the timeDate of the first escalation timer, due_grid."""
    old = "gl_deadline(limit_hours, limit_clock)</bpmn:timeDate>"
    text = bundle.files[BPMN]
    at = text.index(old, text.index('id="due_grid"'))
    return Bundle(
        {**bundle.files, BPMN: text[:at] + f"{code}</bpmn:timeDate>" + text[at + len(old) :]}
    )


PLACES = {
    "script": (in_script, "reopen"),
    "condition": (in_condition, "gw_valid"),
    "dmn": (in_dmn_output, "dispatch_tier_r0"),
}


def refused_at_deploy(session, registry, clock, bad: Bundle) -> DiagramError:
    """Deploy `bad`; it must be refused and leave the live version live."""
    live = live_version(session)
    with pytest.raises(DiagramError) as err:
        deploy(session, registry, bad, "adm", clock.now())
    session.rollback()
    assert live_version(session).id == live.id
    return err.value


# ------------------------------------------------------------------ the nine cases


@pytest.mark.parametrize("code", [FOR_RANGE, REPEAT, WHILE], ids=["for-range", "repeat", "while"])
@pytest.mark.parametrize("place", list(PLACES))
def test_unbounded_code_is_refused_at_deploy_naming_the_element(
    session, registry, bundle, clock, place, code
):
    put, element = PLACES[place]
    error = refused_at_deploy(session, registry, clock, put(bundle, code))
    assert error.element == element, str(error)
    assert f"element '{element}'" in str(error)


# The same costs written without `**` (refused before this grammar) and, for the places that take an
# expression, as expressions (a `for` or `while` statement there is a syntax error anyway).
UNBOUNDED_WITHOUT_POW = {
    "script": [
        "for i in range(10000000000): pass",
        "for i in range(1000000): pass",
        "x = [0] * 1000000",
        'x = "a" * reopen_count',
        "for i in range(1000): reopen_count = reopen_count + reopen_count",
        "x = [i for i in range(1000000)]",
    ],
    "condition": [
        "[0] * 1000000 == valid",
        '"a" * valid == ""',
        "valid in [i for i in range(1000000)]",
        "sum(range(1000000)) == valid",
        "len([0 for i in range(1000) for j in range(1000)]) == valid",
    ],
    "dmn": [
        "[0] * 1000000",
        '"a" * category',
        "[i for i in range(1000000)]",
        "range(1000000)",
        "severity * category",
    ],
}


@pytest.mark.parametrize(
    ("place", "code"),
    [(place, code) for place, codes in UNBOUNDED_WITHOUT_POW.items() for code in codes],
)
def test_unbounded_code_without_pow_is_refused_naming_the_element(bundle, place, code):
    put, element = PLACES[place]
    with pytest.raises(DiagramError) as err:
        parse_bundle(put(bundle, code))
    assert err.value.element == element, str(err.value)


@pytest.mark.parametrize(
    "code",
    ["? in range(1000000)", "? in [0] * 1000000", '? == "a" * severity', "> len([0] * 5000)"],
)
def test_an_unbounded_dmn_input_cell_names_its_rule(bundle, code):
    with pytest.raises(DiagramError) as err:
        parse_bundle(in_dmn_input(bundle, code))
    assert err.value.element == "time_limit_r0", str(err.value)
    assert "time_limit_r0_i1" in str(err.value)


@pytest.mark.parametrize(
    "code",
    ['"R/" + "P1D" * 100000', "gl_deadline(limit_hours * 10000, limit_clock)", "[0] * 10**9"],
)
def test_an_unbounded_timer_expression_names_the_timer(bundle, code):
    with pytest.raises(DiagramError) as err:
        parse_bundle(in_timer(bundle, code))
    assert err.value.element == "due_grid", str(err.value)


# ------------------------------------------------------------------ what diagrams do still deploys


def test_the_repository_bundle_deploys(session, registry, bundle, clock):
    """The repository's own bundle (gl_deadline(...) timers, a dict literal lookup, comparisons, `in`
    with tuples) passes; conftest deploys it too, this says so explicitly."""
    spec = parse_bundle(bundle)
    assert spec.sha256 == bundle.sha256
    assert live_version(session).sha256 == bundle.sha256


@pytest.mark.parametrize(
    ("put", "code"),
    [
        (in_dmn_output, '{"urgent": "village_secretary", "normal": "grid_leader"}[severity]'),
        (in_dmn_output, '"village_secretary" if severity in ("urgent", "high") else "grid_leader"'),
        (in_dmn_input, '? in ("urgent", "high")'),
        (in_dmn_input, "-"),
        (in_condition, "valid == False and len(category) &lt; 100"),
        (in_timer, "gl_deadline(float(limit_hours) * 1.5, limit_clock)"),
        (in_timer, "gl_deadline(limit_hours * 2, limit_clock)"),
        (
            in_script,
            "limits = {'grid_leader': 24, 'district_leader': 48}\nh = limits.get(tier, 72)",
        ),
        (in_script, "total = 0\nfor i in range(1000): total = total + i"),
        (in_script, "names = [t for t in ['a', 'b', 'c'] if t != 'b']\nx = ', '.join(names)"),
        (in_script, "marks = ['-'] * 20\nline = '-' * 40\nhours = int(reopen_count) * 3600"),
    ],
)
def test_plain_diagram_code_deploys(bundle, put, code):
    parse_bundle(put(bundle, code))


# ------------------------------------------------------------------ the grammar, rule by rule


@pytest.mark.parametrize(
    ("source", "mode", "words"),
    [
        ("while x: pass", "exec", "`while`"),
        ("for i in range(1001): pass", "exec", "at most 1000 numbers"),
        ("for i in range(n): pass", "exec", "integer literals"),
        ("for i in range(0, 10, 0): pass", "exec", "zero"),
        ("for x in names: pass", "exec", "`for` over anything but a literal"),
        ("[x + '!' for x in names]", "eval", "comprehension over task data"),
        ("[(x, y) for x in names for y in names]", "eval", "only one `for`"),
        ("[0 for i in range(1000) for j in range(1000)]", "eval", "units of work"),
        ("for i in range(1000):\n    for j in range(1000): pass", "exec", "units of work"),
        (f"{MAX_INT + 1}", "eval", "integer literal"),
        ("2 ** 10", "eval", "**"),
        ("1 << 10", "eval", "<<"),
        ('"a" * n', "eval", "`*` is allowed"),
        ("x * y", "eval", "`*` is allowed"),
        ("x * 1001", "eval", "`*` by 1001"),
        ("[0] * 1001", "eval", "`*` by 1001"),
        ("[0] * 1000 * 2", "eval", "grow to 2000"),
        ("s = s + s\n" * 10, "exec", "grow to 1024"),
        ("for i in range(20): s = s + s", "exec", "grow to"),
        ("for i in range(20): s += s", "exec", "grow to"),
        ("l = [1]\nm = l\nfor i in range(20): m += l", "exec", "grow to"),
        ("x = [0] * 1000\nfor i in range(10): x.append(x[:])", "exec", "grow to 2000"),
        ("for i in range(600): d[i] = [i, i]", "exec", "may add 1002"),
        ("note % n", "eval", "`%`"),
        ("sum(x, [])", "eval", "sum()"),
        ("round(n, -1000000)", "eval", "round()"),
        ("sep.join(names)", "eval", "`.join`"),
        ('x.replace("", "abc")', "eval", "`.replace`"),
        ("sum = range\nsum(1000000)", "exec", "may not be assigned"),
        ("x" * (MAX_CHARS + 1), "eval", "characters"),
        ("[" + "0, " * MAX_NODES + "]", "eval", "syntax nodes"),
    ],
)
def test_the_grammar_refuses(source, mode, words):
    with pytest.raises(UnsafeScript) as err:
        check_source(source, mode, HELPERS)
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("source", "mode"),
    [
        ("limit_hours * 0.8", "eval"),  # a float literal: a sequence times a float raises
        ("float(a) * b", "eval"),  # float() is a number whatever `a` was
        ("int(a) * int(b)", "eval"),  # both known numbers: arithmetic, not repetition
        ("len(a) * len(b)", "eval"),
        ("x * 3", "eval"),  # a small literal factor: at most 3 times `x`
        ("[0] * 1000", "eval"),
        ("-1 * x", "eval"),
        ("int(note) % 7", "eval"),
        ("for i in range(10):\n    for j in range(10): t = i", "exec"),
        ("for k, v in {'a': 1, 'b': 2}.items(): t = k", "exec"),
        ("for i, v in enumerate(['a', 'b']): t = v", "exec"),
        ("out = []\nfor i in range(100): out.append(i)", "exec"),
        ("[n for n in names if n.startswith('a')]", "eval"),
        ("{k: v for k, v in d.items() if k != 'x'}", "eval"),
        ("any(n == 'a' for n in names)", "eval"),
        ("sum(range(1000))", "eval"),
        ("round(x, 2)", "eval"),
        ('x.replace("a", "b")', "eval"),
        ('f"{x}-{y}"', "eval"),
    ],
)
def test_the_grammar_allows(source, mode):
    check_source(source, mode, HELPERS)


def test_code_that_passes_runs_fast_on_large_inputs():
    """The bound holds when the code runs: the largest values and loops the grammar lets through,
    on inputs as large as the forms allow (4000 characters), stay small."""
    env = RestrictedScriptEngine({"gl_deadline": lambda h, c: "2026-11-24T02:00:00Z"}).environment
    for source in (
        "y = x * 1000",
        "for i in range(1000): y = x * 40",
        "y = [x * 10 for i in range(100)]",
        "y = x.upper().lower().upper().lower().upper().lower()",
        "y = ', '.join(names * 100)",
        "t = 0\nfor i in range(1000): t = t + i",
    ):
        check_source(source, "exec", HELPERS)
        context = {"x": "ab" * 2000, "names": ["n" * 80] * 100}
        started = time.perf_counter()
        env.execute(source, context)
        assert time.perf_counter() - started < 5, source  # each takes milliseconds


# ------------------------------------------------------------------ at run time


def test_the_engine_refuses_unbounded_code_at_run_time_too():
    """A diagram that skipped validation meets the same grammar when its code runs."""
    env = RestrictedScriptEngine({"gl_deadline": lambda h, c: "2026-11-24T02:00:00Z"}).environment
    with pytest.raises(UnsafeScript):
        env.execute("x = [0] * 1000000", {})
    with pytest.raises(UnsafeScript):
        env.evaluate('"a" * n', {"n": 10**9})
    with pytest.raises(UnsafeScript):
        env.execute("for i in range(1000000): pass", {})
    assert env.evaluate("limit_hours * 0.8", {"limit_hours": 10}) == 8.0


def test_a_script_that_fails_at_run_time_leaves_the_case_unchanged(gl, registry, bundle):
    """The grammar bounds cost, not correctness: `"district_leader" + reopen_count` deploys and
    raises TypeError when the grid leader refers the case up, or its escalation timer fires. The
    step commits nothing: no event, no work item, no timer, the same workflow and version."""
    broken = changed(
        bundle,
        BPMN,
        '<bpmn:script>tier = "district_leader"</bpmn:script>',
        '<bpmn:script>tier = "district_leader" + reopen_count</bpmn:script>',
    )
    version, created = deploy(gl.session, registry, broken, "adm", START)
    gl.session.commit()
    assert created
    case = gl.accepted()
    assert gl.reload(case).diagram_id == version.id
    before = snapshot(gl, case)
    due_at = gl.item(case).due_at

    with pytest.raises(Exception) as err:  # noqa: PT011 - SpiffWorkflow's WorkflowTaskException
        gl.complete("gl1", case, {"outcome": "refer_up", "note": "上报"})
    assert "TypeError" in repr(err.value) or "str" in str(err.value)
    assert snapshot(gl, case) == before

    # The ticker's escalation runs the same script: it fails, logs, and moves nothing.
    assert gl.fire(due_at) == 0
    assert snapshot(gl, case) == before
    assert gl.reload(case).tier == "grid_leader"
