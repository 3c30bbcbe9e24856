"""Diagram bundles: loading, hashing, validating, parsing once per version, and deploying.

A bundle is every BPMN, DMN and form file of the township's processes: the case loop (`case_loop`)
and the campaign diagram (`campaign`, DESIGN §12), which share the lanes, the forms folder and the
version. Its sha256 names the version; a case is pinned to the version it started on, and the parsed
spec is kept by hash (and process) so that no request parses twice.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
from lxml import etree
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.specs.control import BoundaryEventJoin, BoundaryEventSplit, _EndJoin
from SpiffWorkflow.bpmn.specs.event_definitions.item_aware_event import SignalEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.exclusive_gateway import ExclusiveGateway
from SpiffWorkflow.bpmn.specs.mixins.script_task import ScriptTask
from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask
from SpiffWorkflow.dmn.parser.BpmnDmnParser import SCHEMAS as DMN_SCHEMAS
from SpiffWorkflow.dmn.specs.business_rule_task_mixin import BusinessRuleTaskMixin
from SpiffWorkflow.specs.Join import Join
from SpiffWorkflow.spiff.parser.process import SPIFF_XSD, VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import SPIFFWORKFLOW_NSMAP
from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import TIER_ABOVE, TIERS, DiagramVersion
from .sandbox import UnsafeScript, check_source

PROCESS_ID = "case_loop"
LOGICAL_TASKS = ("accept", "handle", "feedback", "report", "review")
# The six statuses are fixed by the contract (DESIGN §5); which task puts a case in which open
# status is the diagram's say (a user task's `status` property), and a closed case is `closed_as`.
OPEN_STATUSES = ("accepting", "handling", "feedback", "reporting")
# What versions deployed before the `status` property existed meant (see parse_bundle `stored`).
LEGACY_STATUS = {
    "accept": "accepting",
    "handle": "handling",
    "feedback": "feedback",
    "report": "reporting",
    "review": "reporting",
}
# Who a supervision notifies (the `notify` property of an element that raises `supervised`).
NOTIFY_KINDS = ("holder", "owner", *TIERS)
# The helpers diagram code may call: gl_deadline from the step's caller (it counts working time
# from the step's instant), the others from engine/step.py STEP_HELPERS.
HELPERS = frozenset({"gl_deadline", "gl_between"})
CAMPAIGN_PROCESS_ID = "campaign"
BUNDLE_DIRS = ("workflows/bpmn", "rules")
# DESIGN §5: every .bpmn, .dmn, .json and .yaml file under BUNDLE_DIRS is part of the bundle.
BUNDLE_SUFFIXES = (".bpmn", ".dmn", ".json", ".yaml")
BUNDLE_MAX_FILES = 200  # a bundle today holds ten
# The namespaces a diagram's elements may belong to: BPMN's model and diagram interchange (BPMN
# DI, DC, DI), every DMN version SpiffWorkflow validates with its diagram interchange (DMNDI and
# DMN's own DC and DI), and SpiffWorkflow's extensions. Anything else (XHTML, SVG, other tools'
# extensions) is refused when a bundle is parsed: see `_model_xml`.
MODEL_NAMESPACES = frozenset(
    {
        "http://www.omg.org/spec/BPMN/20100524/MODEL",
        "http://www.omg.org/spec/BPMN/20100524/DI",
        "http://www.omg.org/spec/DD/20100524/DC",
        "http://www.omg.org/spec/DD/20100524/DI",
        *DMN_SCHEMAS,  # DMN 1.1, 1.2 and 1.3 model namespaces
        "http://www.omg.org/spec/DMN/20180521/DMNDI/",
        "https://www.omg.org/spec/DMN/20191111/DMNDI/",
        "http://www.omg.org/spec/DMN/20180521/DC/",
        "http://www.omg.org/spec/DMN/20180521/DI/",
        SPIFFWORKFLOW_NSMAP["spiffworkflow"],
    }
)


@dataclass(frozen=True)
class ProcessRules:
    """What a process's diagram may say, and what its instances start with. The case statuses and
    logical tasks are the contract's (DESIGN §2, §3, §5); a campaign's grid instance has its own
    (DESIGN §12), and must not put anything in a case status."""

    tasks: tuple[str, ...]  # the logical names a user task's `task` property may take
    statuses: tuple[str, ...]  # the open statuses a user task's `status` property may take
    required: tuple[str, ...]  # logical tasks the process must have
    notify: tuple[str, ...]  # whom a supervision's `notify` property may name
    # The keys of an Open command's data that the process's first data holds (run_step).
    opening: tuple[str, ...]
    legacy_status: dict[str, str] = field(default_factory=dict)  # see parse_bundle `stored`


# A campaign's grid instance: the officers return (campaign_return), the grid leader confirms or
# sends the return back (campaign_confirm); it ends `confirmed`. It is started with the campaign's
# span as ISO 8601 instants, from which its 80% supervision and its due time are measured.
CAMPAIGN_TASKS = ("campaign_return", "campaign_confirm")
CAMPAIGN_STATUSES = ("returning", "confirming")
CAMPAIGN_OPENING = ("launched_at", "due_at")

RULES: dict[str, ProcessRules] = {
    PROCESS_ID: ProcessRules(
        LOGICAL_TASKS,
        OPEN_STATUSES,
        ("accept",),
        NOTIFY_KINDS,
        ("category", "severity"),
        LEGACY_STATUS,
    ),
    # No case owner here: a supervision tells the item's holder and tiers.
    CAMPAIGN_PROCESS_ID: ProcessRules(
        CAMPAIGN_TASKS, CAMPAIGN_STATUSES, CAMPAIGN_TASKS, ("holder", *TIERS), CAMPAIGN_OPENING
    ),
}


def rules_of(process_id: str) -> ProcessRules:
    """The process's rules; a process Gridloop does not know is held to the case loop's."""
    return RULES.get(process_id, RULES[PROCESS_ID])


class DiagramError(ValueError):
    """A bundle that must not go live. `element` names the diagram element at fault."""

    def __init__(
        self,
        message: str,
        element: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ):
        self.element, self.file, self.line = element, file, line
        self.detail = message  # what is wrong, without where (a Problem has fields for that)
        where = ", ".join(
            p
            for p in (
                f"element '{element}'" if element else "",
                file or "",
                f"line {line}" if line else "",
            )
            if p
        )
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Bundle:
    files: dict[str, str]  # POSIX path from the repository root -> text

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + self.files[path].encode() + b"\0")
        return digest.hexdigest()


def load_bundle(root: Path) -> Bundle:
    files = {}
    for folder in BUNDLE_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.suffix in BUNDLE_SUFFIXES:
                rel = PurePosixPath(path.relative_to(root).as_posix())
                files[str(rel)] = path.read_text(encoding="utf-8")
    return Bundle(files)


@dataclass
class TaskInfo:
    """What the engine needs of a user task, read from its extension properties."""

    spec: str
    task: str
    name: str
    lane: str
    form: str
    props: dict[str, str]


@dataclass
class Spec:
    sha256: str
    process: Any
    subprocesses: dict
    forms: dict[str, dict]
    tasks: dict[str, TaskInfo]
    validators: dict[str, Any] = field(default_factory=dict)
    # User tasks (by element id) on which the diagram hangs a `transfer` signal boundary event:
    # their holder may send the case to another grid (转办).
    transferable: frozenset[str] = frozenset()
    # What an Open command's data gives the process's first data (ProcessRules.opening); empty:
    # the case loop's (engine/step.py OPENING_WORDS).
    opening: tuple[str, ...] = ()
    # A step may drop what earlier passes of a loop left in the tree (engine/step.py
    # _shed_passed_loops): only when no join but a boundary event's or the end's reads them.
    loops_shed: bool = False

    @property
    def process_id(self) -> str:
        return self.process.name


def _parser() -> SpiffBpmnParser:
    return SpiffBpmnParser(validator=VALIDATOR)


# Where a problem goes: parse_bundle raises the first (`_raise`); engine/validation.py collects
# them all, so that an administrator can fix every problem of a bundle in one round.
Report = Callable[[DiagramError], None]


def _raise(error: DiagramError) -> None:
    raise error


@dataclass
class BundleFiles:
    """What a bundle's files hold once read: the parser that took every BPMN and DMN file that
    parsed, the forms by name, and which files failed."""

    parser: SpiffBpmnParser
    forms: dict[str, dict] = field(default_factory=dict)
    bad_forms: dict[str, str] = field(default_factory=dict)  # form name -> its path
    roots: dict[str, etree._Element] = field(default_factory=dict)  # .bpmn/.dmn path -> root
    broken: bool = False  # a BPMN or DMN file did not parse: the process cannot be built


def read_files(bundle: Bundle, report: Report = _raise) -> BundleFiles:
    """Parse every file of the bundle, reporting each file's problems and going on with the
    others (a form that fails leaves the diagram readable)."""
    files = BundleFiles(_parser())
    for path, text in sorted(bundle.files.items()):
        try:
            if path.endswith(".bpmn"):
                root = _model_xml(path, text, report)
                if root is None:
                    files.broken = True
                    continue
                files.roots[path] = root
                files.parser.add_bpmn_xml(root, filename=path)
            elif path.endswith(".dmn"):
                root = _model_xml(path, text, report)
                if root is None:
                    files.broken = True
                    continue
                files.roots[path] = root
                if not _decisions_have_tables(path, root, report):
                    files.broken = True
                    continue
                files.parser.add_dmn_xml(root, filename=path)
            elif path.endswith(".schema.json"):
                name = PurePosixPath(path).name.removesuffix(".schema.json")
                form = _load_form(path, text, report)
                if form is None:
                    files.bad_forms[name] = path
                else:
                    files.forms[name] = form
        except etree.XMLSyntaxError as exc:
            files.broken = True
            report(DiagramError(f"malformed XML: {exc.msg}", file=path, line=exc.lineno))
        except ValidationException as exc:
            files.broken = True
            for error in _schema_errors(path, files.roots.get(path)) or [
                _from_validation(exc, path)
            ]:
                report(error)
    return files


def _decisions_have_tables(path: str, root: etree._Element, report: Report) -> bool:
    """Whether every decision of a DMN file is a decision table, reporting each that is not:
    SpiffWorkflow runs decision tables only, and a decision without one would fail with a bare
    IndexError when a process calling it is built."""
    ok = True
    for decision in root.iter(etree.Element):
        if etree.QName(decision).localname != "decision":
            continue
        if not any(
            etree.QName(c).localname == "decisionTable"
            for c in decision.iterchildren(etree.Element)
        ):
            ok = False
            report(
                DiagramError(
                    "the decision has no decisionTable: Gridloop runs DMN decision tables only "
                    "(a literal expression, a context or an invocation cannot be run)",
                    decision.get("id"),
                    path,
                    decision.sourceline,
                )
            )
    return ok


def process_ids(parser: SpiffBpmnParser) -> list[str]:
    """The executable processes the parsed BPMN files define."""
    return list(parser.get_process_ids())


def process_of(parser: SpiffBpmnParser, process_id: str = PROCESS_ID) -> tuple[Any, dict]:
    """The executable process `process_id` and its subprocess specs, or DiagramError."""
    try:
        return parser.get_spec(process_id), parser.get_subprocess_specs(process_id)
    except ValidationException as exc:
        raise _from_validation(exc, getattr(exc, "file_name", None)) from exc
    except KeyError as exc:
        raise DiagramError(f"no executable process '{process_id}'") from exc


def decision_files(parser: SpiffBpmnParser) -> dict[str, tuple[str, str]]:
    """Decision table id -> (its decision's id, its DMN file), for the decisions parsed so far
    (those the process calls)."""
    found = {}
    for decision_id, dmn in parser.dmn_parsers.items():
        decision = getattr(dmn, "decision", None)
        for table in getattr(decision, "decisionTables", []):
            found[table.id] = (decision_id, dmn.filename)
    return found


def make_spec(
    bundle: Bundle, process, subprocesses: dict, forms: dict[str, dict], tasks: dict
) -> Spec:
    spec = Spec(bundle.sha256, process, subprocesses, forms, tasks)
    spec.validators = {name: jsonschema.Draft202012Validator(s) for name, s in forms.items()}
    spec.transferable = _transferable(process)
    spec.loops_shed = sheds_loops(process, subprocesses)
    if process.name != PROCESS_ID:
        spec.opening = rules_of(process.name).opening
    return spec


def sheds_loops(process, subprocesses: dict) -> bool:
    """Whether a step may drop what earlier passes of a loop left in the tree: no subprocess,
    and no join but a boundary event's or the end's (a parallel or an inclusive join reads the
    finished tasks of earlier passes)."""
    return not subprocesses and all(
        not isinstance(task, Join) or isinstance(task, BoundaryEventJoin | _EndJoin)
        for task in process.task_specs.values()
    )


def parse_bundle(bundle: Bundle, stored: bool = False, process_id: str = PROCESS_ID) -> Spec:
    """Parse and validate a bundle's process `process_id` (the case loop unless told), or raise
    DiagramError naming the element at fault (the first problem; engine/validation.py lists them
    all). Only that process is built: SpiffWorkflow reads every file, but builds a process's task
    specs only when asked for it.

    `stored`: a version already deployed, loaded to run its cases. A version deployed before a
    property became required gets that property's old behaviour (LEGACY_STATUS, the runtime's
    default recipients) instead of being refused: cases pinned to it must go on running."""
    files = read_files(bundle)
    process, subprocesses = process_of(files.parser, process_id)
    tasks = check_process(
        process,
        files.forms,
        stored=stored,
        tables=decision_files(files.parser),
        rules=rules_of(process_id),
    )
    return make_spec(bundle, process, subprocesses, files.forms, tasks)


TRANSFER_SIGNAL = "transfer"


def _transferable(process) -> frozenset[str]:
    """The user tasks that a `transfer` signal boundary event hangs on."""
    found = set()
    for ts in process.task_specs.values():
        if not isinstance(ts, BoundaryEventSplit):
            continue
        children = ts.outputs
        if any(
            isinstance(getattr(c, "event_definition", None), SignalEventDefinition)
            and c.event_definition.name == TRANSFER_SIGNAL
            for c in children
        ):
            found.update(c.name for c in children if getattr(c, "manual", False))
    return frozenset(found)


def _model_xml(path: str, text: str, report: Report = _raise) -> etree._Element | None:
    """The file's root element, parsed without a DTD, entities or network, and holding only
    BPMN/DMN model and diagram elements; else DiagramError naming the file, the nearest element
    with an id and what is at fault.

    A stored diagram is served to browsers as XML (the diagram viewer fetches it), and a browser
    that opens it directly runs an XHTML or SVG `script` anywhere in it, e.g. inside a
    `bpmn:documentation`, whose content the BPMN schema leaves open. A processing instruction
    (`<?xml-stylesheet?>`) would make the browser apply a stylesheet that can do the same; a DTD
    can declare entities that expand exponentially or read local files (XXE). So every element
    must belong to MODEL_NAMESPACES, and a DTD, an entity or a processing instruction is refused
    before anything is expanded. SpiffWorkflow is then given this parsed tree, never the text.

    Each offending node is reported; the root is returned only when there is none."""
    parser = etree.XMLParser(
        resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False
    )
    doctype = DiagramError(
        "a DOCTYPE (a DTD or entity declarations) is not allowed in a diagram",
        file=path,
        line=text[: max(text.find("<!DOCTYPE"), 0)].count("\n") + 1,
    )
    try:
        tree = etree.fromstring(text.encode("utf-8"), parser).getroottree()
    except etree.XMLSyntaxError:
        if "<!DOCTYPE" in text:  # e.g. libxml2's own limit on entity amplification
            report(doctype)
            return None
        raise
    info, root = tree.docinfo, tree.getroot()
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        report(doctype)
        return None
    refused: set[etree._Element] = set()  # a foreign element is reported, not its insides
    prolog = [*root.itersiblings(preceding=True), *root.itersiblings()]
    for node in [*prolog, *root.iter()]:
        if refused and any(a in refused for a in node.iterancestors()):
            continue
        if isinstance(node, etree._ProcessingInstruction):
            message = f"processing instruction <?{node.target}?> is not allowed in a diagram"
        elif isinstance(node, etree._Entity):
            message = f"entity reference {node.text} is not allowed in a diagram"
        elif isinstance(node, etree._Comment) or etree.QName(node).namespace in MODEL_NAMESPACES:
            continue
        else:
            message = (
                f"element <{_tag_name(node)}> is not part of a BPMN or DMN model: a diagram may "
                "hold only elements of the BPMN, BPMN DI, DC, DI, DMN, DMNDI and spiffworkflow "
                "namespaces"
            )
        refused.add(node)
        report(DiagramError(message, element=_nearest_id(node), file=path, line=node.sourceline))
    return None if refused else root


def _tag_name(node: etree._Element) -> str:
    """`xhtml:script (http://www.w3.org/1999/xhtml)`, or the bare name when it has no namespace."""
    name = etree.QName(node)
    if name.namespace is None:
        return name.localname
    prefixed = f"{node.prefix}:{name.localname}" if node.prefix else name.localname
    return f"{prefixed} ({name.namespace})"


def _nearest_id(node: etree._Element) -> str | None:
    """The id of the node's nearest ancestor that has one: the diagram element at fault."""
    for ancestor in node.iterancestors():
        if ancestor.get("id"):
            return ancestor.get("id")
    return None


def _from_validation(exc: ValidationException, path: str | None) -> DiagramError:
    element = getattr(exc, "id", None) or getattr(exc, "name", None)
    return DiagramError(
        str(exc).split("\n")[0],
        element=element,
        file=getattr(exc, "file_name", None) or path,
        line=getattr(exc, "line_number", None) or None,
    )


def _schema_errors(path: str, root: etree._Element | None) -> list[DiagramError]:
    """Every XML Schema error of a BPMN or DMN file that failed validation, each with its line:
    SpiffWorkflow stops at the first. Only called once a file has failed, so the schema is
    compiled then (a few milliseconds)."""
    if root is None:
        return []
    if path.endswith(".bpmn"):
        validator = BpmnValidator(imports={"spiffworkflow": SPIFF_XSD})
    else:
        schema = DMN_SCHEMAS.get(etree.QName(root).namespace)
        if schema is None:
            return []
        validator = BpmnValidator(schema)
    validator.preprocess(root)
    if validator.validator.validate(root):
        return []
    return [
        DiagramError(f"schema validation: {error.message}", file=path, line=error.line or None)
        for error in validator.validator.error_log
    ]


def _load_form(path: str, text: str, report: Report = _raise) -> dict | None:
    fault = _form_fault(text)
    if fault is not None:
        report(DiagramError(f"bad form schema: {fault}", file=path))
        return None
    return json.loads(text)


@lru_cache(maxsize=256)
def _form_fault(text: str) -> str | None:
    """What is wrong with a form's text, or None. Checking a schema against the metaschema
    costs milliseconds, and a bundle's forms rarely change between deploys (and a deploy reads
    them twice: validation, then parsing), so the verdict is kept by text."""
    try:
        schema = json.loads(text)
        jsonschema.Draft202012Validator.check_schema(schema)
    except (ValueError, jsonschema.SchemaError) as exc:
        return str(exc)
    except RecursionError:  # JSON nested deeper than Python's stack: not a form anyone wrote
        return "the JSON is nested too deeply"
    if not isinstance(schema, dict):
        return "a form is a JSON object"
    return _ref_fault(schema)


_REF_KEYWORDS = ("$ref", "$dynamicRef")


def _ref_fault(schema: dict) -> str | None:
    """What is wrong with the form's references, or None. A form may refer only to its own parts
    (`#/$defs/...`, `#anchor`): anything else would be fetched, or fail, when a submission is
    checked against it, long after the deploy that should have refused it."""
    refs = _refs(schema)
    if not refs:
        return None
    resource = DRAFT202012.create_resource(schema)
    base = resource.id() or "urn:gridloop:form"
    try:
        resolver = Registry().with_resource(base, resource).crawl().resolver(base_uri=base)
    except Exception as exc:  # an $id or $anchor the library cannot take
        return f"its references cannot be read: {exc}"
    for keyword, ref in refs:
        if not ref.startswith("#"):
            return (
                f"{keyword} '{ref}' refers outside the form: a form may refer only to its own "
                "parts ('#/$defs/...'), nothing is fetched"
            )
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return f"{keyword} '{ref}' cannot be resolved: the form has no such part"
    loop = _ref_loop(schema, resolver)
    if loop is not None:
        return (
            f"{loop} leads back to itself without going into a field or an item: checking a "
            "submission against the form would never end"
        )
    return None


# Keywords whose subschemas apply to the very value their schema applies to (not to a field or an
# item of it): a loop of these and references never reaches an end when a value is checked.
_SAME_VALUE_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_ONE = ("not", "if", "then", "else")


def _ref_loop(schema: dict, resolver) -> str | None:
    """A reference ("$ref '#/...'") on a loop of schemas that apply to one and the same value
    (`{"$ref": "#/$defs/a"}` in `a` itself, or a and b naming each other), or None. A reference
    that goes into a field or an item first (a tree of nested lists) ends with the value."""

    def same_value(node: dict) -> list[tuple[Any, str | None]]:
        found: list[tuple[Any, str | None]] = []
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and ref.startswith("#"):
                try:
                    found.append((resolver.lookup(ref).contents, f"{keyword} '{ref}'"))
                except Unresolvable:
                    pass
        for keyword in _SAME_VALUE_LISTS:
            if isinstance(node.get(keyword), list):
                found.extend((sub, None) for sub in node[keyword])
        found.extend((node.get(keyword), None) for keyword in _SAME_VALUE_ONE)
        if isinstance(node.get("dependentSchemas"), dict):
            found.extend((sub, None) for sub in node["dependentSchemas"].values())
        return [(sub, via) for sub, via in found if isinstance(sub, dict)]

    nodes, walk = [], [schema]
    while walk:  # every object of the form, iteratively
        current = walk.pop()
        if isinstance(current, dict):
            nodes.append(current)
            walk.extend(v for v in current.values() if isinstance(v, dict | list))
        elif isinstance(current, list):
            walk.extend(v for v in current if isinstance(v, dict | list))
    done: set[int] = set()
    for start in nodes:
        if id(start) in done:
            continue
        # Depth first, iteratively: (node, its same-value edges left, the edge that led here).
        path: list[tuple[dict, Iterator, str | None]] = [(start, iter(same_value(start)), None)]
        on_path = {id(start)}
        while path:
            node, edges, _via = path[-1]
            step = next(edges, None)
            if step is None:
                path.pop()
                on_path.discard(id(node))
                done.add(id(node))
                continue
            sub, via = step
            if id(sub) in on_path:  # back to a schema on the path: the loop's references
                start_at = next(i for i, (n, _e, _v) in enumerate(path) if n is sub)
                refs = [v for _n, _e, v in path[start_at + 1 :]] + [via]
                return next((v for v in refs if v is not None), "a reference")
            if id(sub) not in done:
                path.append((sub, iter(same_value(sub)), via))
                on_path.add(id(sub))
    return None


def _refs(node: Any) -> list[tuple[str, str]]:
    """Every (keyword, reference) of a schema, however deep (iteratively: a form's depth was
    bounded by the JSON parse, not by this walk)."""
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if key in _REF_KEYWORDS and isinstance(value, str):
                    found.append((key, value))
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(v for v in current if isinstance(v, dict | list))
    return found


def check_process(
    process,
    forms: dict[str, dict],
    report: Report = _raise,
    stored: bool = False,
    lanes: bool = True,
    tables: dict[str, tuple[str, str]] | None = None,
    bad_forms: dict[str, str] | None = None,
    python: bool = True,
    rules: ProcessRules | None = None,
) -> dict[str, TaskInfo]:
    """Check what the engine needs of every task spec and read the user tasks' properties.

    Reports every problem: with `python`, each piece of Python outside the sandbox (see
    check_python); each supervision without a valid `notify`; each user task without a logical
    `task`, a `status` or a form that exists (named by the task's id). `lanes`: also refuse a user
    task whose lane is not a tier (validation checks every lane itself, by the lane's id).
    `tables`: decision table id -> (decision id, DMN file). `bad_forms`: form name -> the file of
    a form that did not load (reported already). `rules`: what the process's tasks may say (the
    case loop's unless given)."""
    bad_forms = bad_forms or {}
    rules = rules or RULES[PROCESS_ID]
    process_file = getattr(process, "file", None)
    if python:
        check_python(process, report, tables)
    tasks: dict[str, TaskInfo] = {}
    for name, ts in process.task_specs.items():
        element = getattr(ts, "bpmn_id", None) or name
        event_props = getattr(ts, "extensions", {}).get("properties", {})
        if event_props.get("event") == "supervised" and stored and "notify" not in event_props:
            # Deployed before `notify` existed: whom such a supervision told then, the holder,
            # the owner and the tier above the element's lane.
            above = TIER_ABOVE.get(getattr(ts, "lane", None) or "")
            event_props["notify"] = "holder,owner" + (f",{above}" if above else "")
        if event_props.get("event") == "supervised":
            kinds = [k.strip() for k in event_props.get("notify", "").split(",") if k.strip()]
            unknown = [k for k in kinds if k not in rules.notify]
            if not kinds or unknown:
                whom = " and ".join(k for k in ("holder", "owner") if k in rules.notify)
                report(
                    DiagramError(
                        "a supervision needs property 'notify': a comma-separated list of "
                        f"{whom} and tiers {TIERS}" + (f"; unknown: {unknown}" if unknown else ""),
                        element,
                        process_file,
                    )
                )
        if isinstance(ts, UserTask):
            info = _user_task(ts, forms, stored, lanes, bad_forms, process_file, report, rules)
            if info is not None:
                tasks[ts.name] = info
    present = {
        ts.extensions.get("properties", {}).get("task")
        for ts in process.task_specs.values()
        if isinstance(ts, UserTask)
    }
    for logical in rules.required:
        if logical not in present:
            report(DiagramError(f"the process has no {logical} task", file=process_file))
    return tasks


def check_python(
    process, report: Report = _raise, tables: dict[str, tuple[str, str]] | None = None
) -> set[str]:
    """Report every piece of the process's Python that is outside the sandbox's allowlist or
    cost bounds (engine/sandbox.py): a script, pre- or postScript, condition or timer expression
    named by its element's id, a DMN cell by its rule's (or input's) id in its DMN file, each
    table once however many tasks call it. Returns the task spec names and decision table ids
    at fault, which later checks leave alone (their code must not run)."""
    tables = tables or {}
    process_file = getattr(process, "file", None)
    unsafe: set[str] = set()
    checked_tables: set[str] = set()
    for name, ts in process.task_specs.items():
        element = getattr(ts, "bpmn_id", None) or name
        table = ts.dmnEngine.decision_table if isinstance(ts, BusinessRuleTaskMixin) else None
        seen_table = table is not None and table.id in checked_tables
        if table is not None:
            checked_tables.add(table.id)
        for source, mode, cell in _python_of(ts):
            if cell is not None and seen_table:
                continue
            try:
                check_source(source, mode, HELPERS)
            except (UnsafeScript, SyntaxError) as exc:
                if cell is None:
                    unsafe.add(name)
                    report(DiagramError(f"unsafe or invalid Python: {exc}", element, process_file))
                    continue
                unsafe.add(table.id)
                decision, path = tables.get(table.id, (table.id, None))
                report(
                    DiagramError(
                        f"unsafe or invalid Python: {cell[1]} of decision table '{decision}' "
                        f"(business rule task '{element}'): {exc}",
                        cell[0],
                        path,
                    )
                )
    return unsafe


def _user_task(
    ts,
    forms: dict[str, dict],
    stored: bool,
    lanes: bool,
    bad_forms: dict[str, str],
    process_file: str | None,
    report: Report,
    rules: ProcessRules,
) -> TaskInfo | None:
    """A user task's TaskInfo, or None after reporting each thing wrong with it."""
    element = ts.bpmn_id or ts.name
    props = dict(ts.extensions.get("properties", {}))
    logical, form = props.get("task"), props.get("formKey")
    problems = []
    if logical not in rules.tasks:
        problems.append(
            "has no property 'task'" if logical is None else f"property 'task' is '{logical}'"
        )
        problems[-1] += f": it must be one of {rules.tasks}"
    elif stored and "status" not in props and logical in rules.legacy_status:
        props["status"] = rules.legacy_status[logical]
    if props.get("status") not in rules.statuses:
        whose = "the case's" if rules is RULES[PROCESS_ID] else "the instance's"
        problems.append(
            f"property 'status' ({whose} status while this task is open) must be one of "
            f"{rules.statuses}"
        )
    if not form:
        problems.append("has no property 'formKey' (the name of its form)")
    elif form in bad_forms:
        problems.append(f"formKey '{form}': its form {bad_forms[form]} is not valid JSON Schema")
    elif form not in forms:
        problems.append(f"formKey '{form}' has no forms/{form}.schema.json")
    if lanes and ts.lane not in TIERS:
        problems.append(f"lane '{ts.lane}' is not one of the five tiers")
    for message in problems:
        report(DiagramError(message, element, process_file))
    if problems:
        return None
    return TaskInfo(ts.name, logical, ts.bpmn_name or ts.name, ts.lane, form, props)


def _python_of(ts) -> list[tuple[str, str, tuple[str, str] | None]]:
    """Every piece of Python a task spec will run, with the mode it runs in and, for a DMN cell,
    (the id of its rule or input, a description of the cell)."""
    found: list[tuple[str, str, tuple[str, str] | None]] = []
    if isinstance(ts, ScriptTask) and ts.script:
        found.append((ts.script, "exec", None))
    extensions = getattr(ts, "extensions", {})
    for key in ("preScript", "postScript"):
        if extensions.get(key):
            found.append((extensions[key], "exec", None))
    if isinstance(ts, ExclusiveGateway) or hasattr(ts, "cond_task_specs"):  # inclusive too
        for cond, _target in getattr(ts, "cond_task_specs", []):
            if cond is not None:
                found.append((cond.args[0], "eval", None))
    event = getattr(ts, "event_definition", None)
    if isinstance(event, TimerEventDefinition):
        found.append((event.expression, "eval", None))
    if isinstance(ts, BusinessRuleTaskMixin):
        table = ts.dmnEngine.decision_table
        for inp in table.inputs:
            if inp.expression:
                found.append((inp.expression, "eval", (inp.id, f"input expression {inp.id}")))
        for rule in table.rules:
            for entry in rule.inputEntries:
                for lhs in entry.lhs:
                    if lhs:
                        source = _dmn_entry(lhs, entry.input.expression)
                        found.append((source, "eval", (rule.id, f"input entry {entry.id}")))
            for entry in rule.outputEntries:
                if entry.text:
                    found.append((entry.text, "eval", (rule.id, f"output entry {entry.id}")))
    return found


# How SpiffWorkflow's DMNEngine.evaluate finds the `?` of an input entry: outside quotes.
_DMN_QUESTION = re.compile(r"(\?)(?=(?:[^'\"]|['\"][^'\"]*['\"])*$)")


def _dmn_entry(text: str, input_expression: str | None) -> str:
    """An input entry as the DMN engine will evaluate it, so that what is checked at deploy is
    what runs: `?` stands for the input (`? in ("a", "b")`); an entry that parses alone is compared
    with it, `(input) == (entry)`; anything else follows it (`input > 5`). Without an input
    expression the engine uses the repr of a data value, here a name of the same standing."""
    entry = _DMN_QUESTION.sub("dmninputexpr", text)
    if "dmninputexpr" in entry:
        return entry
    subject = input_expression or "dmninputexpr"
    try:
        ast.parse(entry)
    except SyntaxError:
        return subject + entry
    return f"({subject}) == ({entry})"


class SpecRegistry:
    """Parsed specs kept by bundle hash (the case loop's) and by hash and process id (the other
    processes of a bundle, such as the campaign's). One per server process, shared by every
    request and worker."""

    def __init__(self) -> None:
        self._by_sha: dict[str, Spec] = {}
        self._others: dict[tuple[str, str], Spec] = {}
        self._by_id: dict[int, Spec] = {}

    def get(self, version: DiagramVersion, process_id: str = PROCESS_ID) -> Spec:
        """The version's spec of `process_id`, parsed the first time it is asked for."""
        spec = self.parsed(version.sha256, process_id)
        if spec is None:
            bundle = Bundle(version.files)
            spec = self.add(parse_bundle(bundle, stored=True, process_id=process_id))
        return spec

    def add(self, spec: Spec) -> Spec:
        """Keep a parsed spec (one parsed without a database, say) under its hash."""
        if spec.process_id == PROCESS_ID:
            self._by_sha.setdefault(spec.sha256, spec)
        else:
            self._others.setdefault((spec.sha256, spec.process_id), spec)
        self._by_id[id(spec.process)] = spec
        return spec

    def by_process(self, process) -> Spec:
        return self._by_id[id(process)]

    def by_sha(self, sha: str, process_id: str = PROCESS_ID) -> Spec:
        spec = self.parsed(sha, process_id)
        if spec is None:
            raise KeyError((sha, process_id))
        return spec

    def parsed(self, sha: str, process_id: str = PROCESS_ID) -> Spec | None:
        """The spec of this hash and process if this server process has parsed it already, else
        None."""
        if process_id == PROCESS_ID:
            return self._by_sha.get(sha)
        return self._others.get((sha, process_id))


def live_version(session: Session, process_id: str = PROCESS_ID) -> DiagramVersion | None:
    """The version new cases start on: the one activated last (rollback activates an older one)."""
    return session.scalars(
        select(DiagramVersion)
        .where(DiagramVersion.process_id == process_id, DiagramVersion.activated_at.is_not(None))
        .order_by(DiagramVersion.activated_at.desc(), DiagramVersion.id.desc())
        .limit(1)
    ).first()


def deploy(
    session: Session,
    registry: SpecRegistry,
    bundle: Bundle,
    actor: str,
    now: datetime,
    comment: str = "",
    activate: bool = True,
) -> tuple[DiagramVersion, bool]:
    """Store the bundle as a version (the live one unless `activate` is false) if its hash is
    new. A bundle that fails validation raises DiagramError and leaves the old version live.
    Does not commit; records nothing in the administration log (engine/versions.py does)."""
    sha = bundle.sha256
    existing = session.scalars(select(DiagramVersion).where(DiagramVersion.sha256 == sha)).first()
    if existing is not None:
        return existing, False
    spec = parse_bundle(bundle)
    version = DiagramVersion(
        process_id=PROCESS_ID,
        sha256=sha,
        files=dict(bundle.files),
        deployed_by=actor,
        deployed_at=now,
        comment=comment,
        activated_at=now if activate else None,
    )
    session.add(version)
    session.flush()
    registry._by_sha[sha] = spec
    registry._by_id[id(spec.process)] = spec
    return version, True
