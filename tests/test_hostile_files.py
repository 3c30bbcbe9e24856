"""Files an administrator hands in, written by someone hostile: a diagram that carries script, YAML
that expands to gigabytes, numbers the database cannot hold, and an import that would give
people sharing a password one shared hash. Each is refused (or handled) with a message that says
where, and nothing else changes."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from argon2 import extract_parameters
from click.testing import CliRunner
from conftest import ORG_YAML, changed
from sqlalchemy import select

from engine.models import Household, Person, Unit
from engine.org import OrgFileError, authenticate, import_org, import_org_data
from engine.passwords import DEMO_PARAMETERS, Passwords
from engine.specs import Bundle, DiagramError, deploy, live_version, parse_bundle
from webapp.cli import main

BPMN = "workflows/bpmn/case_loop.bpmn"
DISPATCH = "rules/dispatch_tier.dmn"
ACCEPT = '<bpmn:userTask id="accept" name="受理">'
XHTML = "http://www.w3.org/1999/xhtml"


def with_documentation(bundle: Bundle, content: str) -> Bundle:
    """The repository bundle with a documentation element on the accept task."""
    return changed(
        bundle, BPMN, ACCEPT, f"{ACCEPT}<bpmn:documentation>{content}</bpmn:documentation>"
    )


# ------------------------------------------------------------------ 1. diagrams carry no script


def test_plain_documentation_still_deploys(bundle):
    parse_bundle(with_documentation(bundle, "受理：核实群众反映的情况 &amp; 登记"))


def test_a_script_in_documentation_is_refused_naming_the_element_and_the_live_version_stays(
    session, registry, bundle, clock
):
    live = live_version(session)
    assert live is not None and live.sha256 == bundle.sha256
    bad = with_documentation(
        bundle, f'说明<xhtml:script xmlns:xhtml="{XHTML}">alert(document.cookie)</xhtml:script>'
    )
    with pytest.raises(DiagramError) as err:
        deploy(session, registry, bad, "adm", clock.now())
    session.rollback()
    assert err.value.file == BPMN
    assert err.value.element == "accept"  # the nearest element with an id
    message = str(err.value)
    assert "xhtml:script" in message and "accept" in message and BPMN in message
    lines = bad.files[BPMN].splitlines()
    assert err.value.line == next(n for n, x in enumerate(lines, 1) if "xhtml:script" in x)
    assert live_version(session).id == live.id


@pytest.mark.parametrize(
    ("path", "old", "new", "element", "words"),
    [
        pytest.param(
            BPMN,
            ACCEPT,
            f'{ACCEPT}<bpmn:documentation><script xmlns="{XHTML}">alert(1)</script>'
            "</bpmn:documentation>",
            "accept",
            "script",
            id="default-namespace-script",
        ),
        pytest.param(
            BPMN,
            ACCEPT,
            f'{ACCEPT}<bpmn:extensionElements><svg:svg xmlns:svg="http://www.w3.org/2000/svg" '
            'onload="alert(1)"/></bpmn:extensionElements>',
            "accept",
            "svg:svg",
            id="svg-in-extension-elements",
        ),
        pytest.param(
            BPMN,
            ACCEPT,
            f"{ACCEPT}<bpmn:documentation><script>alert(1)</script></bpmn:documentation>",
            "accept",
            "<script>",
            id="no-namespace-element",
        ),
        pytest.param(
            BPMN,
            ACCEPT,
            f"{ACCEPT}<?xml-stylesheet type='text/xsl' href='data:,x'?>",
            "accept",
            "processing instruction",
            id="processing-instruction",
        ),
        pytest.param(
            DISPATCH,
            '<decision id="dispatch_tier" name="派单：起始办理层级">',
            '<decision id="dispatch_tier" name="派单：起始办理层级"><extensionElements>'
            f'<h:script xmlns:h="{XHTML}">alert(1)</h:script></extensionElements>',
            "dispatch_tier",
            "h:script",
            id="dmn-extension-elements",
        ),
    ],
)
def test_foreign_markup_is_refused_naming_file_and_element(bundle, path, old, new, element, words):
    with pytest.raises(DiagramError) as err:
        parse_bundle(changed(bundle, path, old, new))
    assert (err.value.file, err.value.element) == (path, element), str(err.value)
    assert words in str(err.value)


def test_a_stylesheet_before_the_root_element_is_refused(bundle):
    text = bundle.files[BPMN]
    declaration, rest = text.split("\n", 1)
    bad = Bundle({**bundle.files, BPMN: f'{declaration}\n<?xml-stylesheet href="x.xsl"?>\n{rest}'})
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    assert err.value.file == BPMN and err.value.line == 2
    assert "xml-stylesheet" in str(err.value)


BILLION_LAUGHS_XML = """<!DOCTYPE d [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
]>"""


@pytest.mark.parametrize(
    ("doctype", "reference"),
    [
        pytest.param(BILLION_LAUGHS_XML, "&h;", id="billion-laughs"),
        pytest.param('<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "&x;", id="xxe"),
    ],
)
def test_a_doctype_with_entities_is_refused_before_anything_expands(bundle, doctype, reference):
    text = bundle.files[BPMN]
    declaration, rest = text.split("\n", 1)
    rest = rest.replace(ACCEPT, f"{ACCEPT}<bpmn:documentation>{reference}</bpmn:documentation>")
    bad = Bundle({**bundle.files, BPMN: f"{declaration}\n{doctype}\n{rest}"})
    started = time.monotonic()
    with pytest.raises(DiagramError) as err:
        parse_bundle(bad)
    assert time.monotonic() - started < 5
    assert err.value.file == BPMN and err.value.line == 2
    assert "DOCTYPE" in str(err.value)
    assert "root:" not in str(err.value)  # nothing of /etc/passwd


# ------------------------------------------------------------------ 2. YAML bombs, big numbers

YAML_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
# The conftest organisation with a household whose number is the bomb: the message saying it is
# not a number (like `json.dumps` of a calendar file) would expand 9**9 strings.
ORG_BOMB = YAML_BOMB + ORG_YAML.replace(
    "            households: 4\n", "            households: [{number: *i, head: x}]\n"
)


def _bounded(call):
    """Run `call`, returning (exception, seconds, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        caught = exc
    else:
        caught = None
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return caught, seconds, peak


def test_an_org_file_bomb_is_refused_at_its_first_anchor_quickly_and_small(session):
    caught, seconds, peak = _bounded(lambda: import_org(session, ORG_BOMB, Passwords(cheap=True)))
    assert isinstance(caught, OrgFileError), caught
    assert caught.errors == [
        (1, "", "YAML: anchor &a is not allowed: YAML anchors and aliases are refused")
    ]
    assert "line 1" in str(caught)
    assert seconds < 5 and peak < 20 * 2**20, (seconds, peak)
    session.rollback()
    assert session.scalar(select(Unit.id).where(Unit.code == "XDK")) is not None  # unchanged


def test_an_alias_in_an_org_file_is_refused_with_its_line(session):
    text = ORG_YAML.replace("name: 一组\n", "name: &g 一组\n", 1).replace(
        "name: 二组\n", "name: *g\n", 1
    )
    with pytest.raises(OrgFileError) as caught:
        import_org(session, text, Passwords(cheap=True))
    line = next(n for n, x in enumerate(text.splitlines(), 1) if "&g" in x)
    assert caught.value.errors[0][0] == line
    assert "anchor &g" in str(caught.value)


@pytest.mark.parametrize(
    "number",
    [2**63, 2**64 + 1, 2**31, 10**100, "9" * 5000],
    ids=["2^63", "2^64+1", "2^31", "googol", "5000-digits"],
)
def test_a_household_number_the_database_cannot_hold_is_a_line_numbered_problem(session, number):
    text = ORG_YAML.replace(
        "            households: 4\n",
        f"            households:\n              - {{number: 1, head: 甲}}\n"
        f"              - {{number: {number}, head: 乙}}\n",
    )
    line = next(n for n, x in enumerate(text.splitlines(), 1) if "head: 乙" in x)
    with pytest.raises(OrgFileError) as caught:
        import_org(session, text, Passwords(cheap=True))
    ((at, _path, message),) = caught.value.errors
    assert at == line, caught.value.errors
    assert len(str(caught.value)) < 500
    session.rollback()
    assert session.scalar(select(Household.id).where(Household.number > 2**31 - 1)) is None


def test_a_household_number_in_plain_data_is_checked_too(session):
    data = {
        "town": {"code": "XDK", "name": "小渡口镇"},
        "villages": [
            {
                "code": "V09",
                "name": "九村",
                "districts": [
                    {
                        "code": "V09-D1",
                        "name": "一片",
                        "grids": [
                            {
                                "code": "V09-D1-G01",
                                "name": "一组",
                                "households": [{"number": 2**64}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    with pytest.raises(OrgFileError) as caught:
        import_org_data(session, data, Passwords(cheap=True))
    assert caught.value.errors == [
        (
            0,
            "villages[0].districts[0].grids[0].households[0].number",
            "must be a whole number from 1 to 2147483647, not a larger number",
        )
    ]


def test_too_deep_nesting_is_a_line_numbered_problem(session):
    text = ORG_YAML + "extra: " + "[" * 300 + "]" * 300 + "\n"
    with pytest.raises(OrgFileError) as caught:
        import_org(session, text, Passwords(cheap=True))
    assert caught.value.errors[0][0] == len(ORG_YAML.splitlines()) + 1
    assert "nested" in str(caught.value)


def test_an_org_file_error_shows_at_most_50_problems():
    error = OrgFileError([(n, f"x[{n}]", "bad") for n in range(1, 121)])
    lines = str(error).splitlines()
    assert len(lines) == 51
    assert lines[0] == "line 1: x[1]: bad" and lines[49] == "line 50: x[50]: bad"
    assert lines[50] == "… and 70 more problems"
    assert len(error.errors) == 120


@pytest.fixture
def calendar_cli(tmp_path, monkeypatch, new_db_url):
    monkeypatch.setenv("GRIDLOOP_DATABASE_URL", new_db_url("cal"))
    monkeypatch.setenv("GRIDLOOP_CHEAP_PASSWORDS", "1")
    runner = CliRunner()
    # A database at the current schema: the CLI refuses any other before it reads the file.
    assert runner.invoke(main, ["init-db"]).exit_code == 0

    def run(text: str):
        path = tmp_path / "calendar.yaml"
        path.write_text(text, encoding="utf-8")
        return runner.invoke(main, ["calendar", "import", str(path)])

    return run


def test_a_calendar_bomb_is_refused_quickly_naming_its_line(calendar_cli):
    bomb = YAML_BOMB + "year: 2027\nholidays: *i\nworkdays: []\n"
    result, seconds, peak = None, 0.0, 0

    def run():
        nonlocal result
        result = calendar_cli(bomb)

    _caught, seconds, peak = _bounded(run)
    assert result.exit_code == 1, result.output
    assert "line 1" in result.output and "anchor &a" in result.output
    assert seconds < 10 and peak < 50 * 2**20, (seconds, peak)


def test_a_calendar_alias_is_refused(calendar_cli):
    result = calendar_cli("year: 2027\nholidays: &h [2027-01-01]\nworkdays: *h\n")
    assert result.exit_code == 1
    assert "line 2" in result.output and "anchor &h" in result.output


# ------------------------------------------------------------------ 3. a hash per person


def test_people_sharing_a_password_get_hashes_of_their_own(session):
    hashes = dict(session.execute(select(Person.username, Person.password_hash)).all())
    assert len(hashes) > 10
    # Every person in the conftest organisation has the password "pw".
    assert len(set(hashes.values())) == len(hashes)
    passwords = Passwords(cheap=True)
    assert all(passwords.verify(h, "pw") for h in hashes.values())


def test_an_import_hashes_each_new_person_separately(new_db_url):
    from engine.storage import create_schema, make_engine, make_sessionmaker

    engine = make_engine(new_db_url("org"))
    create_schema(engine)
    with make_sessionmaker(engine)() as s:
        report = import_org(s, ORG_YAML, Passwords(cheap=True))
        s.commit()
        a, b = (
            s.scalar(select(Person.password_hash).where(Person.username == u))
            for u in ("off1", "off2")
        )
    engine.dispose()
    assert a != b and a.split("$")[4] != b.split("$")[4]  # different salts
    assert report.passwords_set == report.people_created


def test_demo_accounts_use_the_flagged_demo_cost_and_upgrade_on_first_login(new_db_url):
    from engine.storage import create_schema, make_engine, make_sessionmaker

    strong = Passwords()
    demo = strong.for_demo()
    assert Passwords(cheap=True).for_demo().cheap  # tests keep their cheaper hasher
    engine = make_engine(new_db_url("org"))
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        import_org(s, ORG_YAML, demo)
        s.commit()
        stored = s.scalar(select(Person.password_hash).where(Person.username == "off1"))
    params = extract_parameters(stored)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        DEMO_PARAMETERS["time_cost"],
        DEMO_PARAMETERS["memory_cost"],
        DEMO_PARAMETERS["parallelism"],
    )
    assert strong.needs_rehash(stored)
    with sessions() as s:
        assert authenticate(s, "off1", "pw", strong) is not None  # the app's default hasher
        s.commit()
    with sessions() as s:
        upgraded = s.scalar(select(Person.password_hash).where(Person.username == "off1"))
        assert upgraded != stored and not strong.needs_rehash(upgraded)
        assert authenticate(s, "off1", "pw", strong) is not None
    engine.dispose()


def test_demo_township_passwords_are_per_person(new_db_url):
    """The demo's 705 accounts share one password but not one hash (imported as `load_demo`
    imports them)."""
    from engine.demo_org import demo_org
    from engine.storage import create_schema, make_engine, make_sessionmaker

    engine = make_engine(new_db_url("demo"))
    create_schema(engine)
    with make_sessionmaker(engine)() as s:
        started = time.monotonic()
        import_org_data(s, demo_org(), Passwords().for_demo())
        seconds = time.monotonic() - started
        s.commit()
        hashes = list(s.scalars(select(Person.password_hash)))
    engine.dispose()
    assert len(hashes) == 705 and len(set(hashes)) == 705
    assert seconds < 60, seconds  # ~1 ms an account at the demo cost, plus the import itself
