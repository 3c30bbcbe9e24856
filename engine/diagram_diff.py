"""What changed between two diagram bundles, in the terms an administrator edits: diagram elements,
decision-table rows and form fields (DESIGN §8, GET /diagrams/{a}/diff/{b}).

Two versions are compared by what they do, not by their text: a bundle re-saved by an editor moves
shapes, reorders attributes and re-indents, and none of that is a change. So each file is parsed
and every element is reduced to its *facets* — its attributes, extension properties, conditions,
scripts, timer expressions, the flows it connects — and two elements differ when their facets do.

- Elements are the BPMN and DMN elements that have an id and sit directly in a container (a
  process, subprocess, lane set, collaboration, the definitions, a decision or a decision table):
  tasks, events, gateways, flows, lanes, decisions, table columns. What sits inside them (an event
  definition, a condition, the extension properties) is a facet of theirs, so a changed timer shows
  as its boundary event, named. Diagram interchange (BPMN DI, DMNDI: shapes and edges) is left out:
  moving a shape changes nothing.
- Rules are DMN decision-table rows, by id; a row changes when any of its entries (or its
  description) does. Its entries are named by the table's column labels.
- Form fields are `forms/<file>#<field>`, a top-level property of a form's JSON Schema; a field
  changes when its schema or whether it is required does. A change elsewhere in the schema (its
  title, conditional requirements) is reported as the form itself, `forms/<file>`.

Only stored versions are compared, whose XML passed validation; it is still parsed without DTDs,
entities or network access.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from lxml import etree

BPMN_MODEL = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF = "http://spiffworkflow.org/bpmn/schema/1.0/core"
DMN_MODELS = frozenset(
    {
        "http://www.omg.org/spec/DMN/20151101/dmn.xsd",
        "http://www.omg.org/spec/DMN/20180521/MODEL/",
        "https://www.omg.org/spec/DMN/20191111/MODEL/",
    }
)
# Elements whose children with an id are elements of their own (the rest are facets).
BPMN_CONTAINERS = frozenset(
    {
        "definitions",
        "process",
        "subProcess",
        "transaction",
        "adHocSubProcess",
        "laneSet",
        "childLaneSet",
        "collaboration",
    }
)
DMN_CONTAINERS = frozenset({"definitions", "decision", "decisionTable"})
FLOWS = frozenset({"sequenceFlow", "messageFlow", "association", "dataInputAssociation"})


@dataclass(frozen=True)
class Change:
    """One facet that differs. `what` says which kind of facet (attribute, property, child,
    input, output, description, schema, required, form); `name` which one of that kind (an
    attribute's name, a property's name, a column's label, a schema keyword). before/after are
    None where the facet is absent on that side."""

    what: str
    name: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Entry:
    """One element, rule or field added, removed or changed. `name` is what people call it (an
    element's name, a flow's "source → target", a rule's description, a field's title);
    `context` the table or form it belongs to. For an added or removed entry, `changes` lists
    its facets (before or after None), so a page can say what came or went."""

    id: str
    kind: str
    file: str
    name: str
    context: str
    changes: tuple[Change, ...]


@dataclass
class Section:
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    changed: list[Entry] = field(default_factory=list)

    def ids(self) -> dict[str, list[str]]:
        return {
            "added": [e.id for e in self.added],
            "removed": [e.id for e in self.removed],
            "changed": [e.id for e in self.changed],
        }

    def __len__(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


@dataclass
class BundleDiff:
    elements: Section
    rules: Section
    forms: Section

    def as_json(self) -> dict:
        """The API's answer (DESIGN §8): ids only."""
        return {
            "elements": self.elements.ids(),
            "rules": self.rules.ids(),
            "forms": self.forms.ids(),
        }

    @property
    def empty(self) -> bool:
        return not (self.elements or self.rules or self.forms)


# A facet's key: (what, name); its value: the texts found, sorted (so that the order of, say, a
# lane's flowNodeRefs does not count).
Facets = dict[tuple[str, str], tuple[str, ...]]


@dataclass
class _Item:
    id: str
    kind: str
    file: str
    name: str
    context: str
    facets: Facets


def diff_bundles(old: dict[str, str], new: dict[str, str]) -> BundleDiff:
    """What changed from the bundle `old` to the bundle `new` (path -> text each)."""
    before, after = _items(old), _items(new)
    return BundleDiff(
        elements=_compare(before["elements"], after["elements"]),
        rules=_compare(before["rules"], after["rules"]),
        forms=_compare(before["forms"], after["forms"]),
    )


def _compare(old: dict[tuple, _Item], new: dict[tuple, _Item]) -> Section:
    section = Section()
    for key, item in new.items():
        if key not in old:
            section.added.append(_entry(item, _changes({}, item.facets)))
        elif old[key].facets != item.facets:
            section.changed.append(_entry(item, _changes(old[key].facets, item.facets)))
    for key, item in old.items():
        if key not in new:
            section.removed.append(_entry(item, _changes(item.facets, {})))
    return section


def _entry(item: _Item, changes: tuple[Change, ...]) -> Entry:
    return Entry(item.id, item.kind, item.file, item.name, item.context, changes)


def _changes(old: Facets, new: Facets) -> tuple[Change, ...]:
    keys = list(old) + [k for k in new if k not in old]
    found = []
    for key in keys:
        if old.get(key) != new.get(key):
            found.append(Change(key[0], key[1], _shown(old.get(key)), _shown(new.get(key))))
    return tuple(found)


def _shown(values: tuple[str, ...] | None) -> str | None:
    return None if values is None else ", ".join(values) if len(values) > 1 else values[0]


# ------------------------------------------------------------------ reading a bundle


def _items(files: dict[str, str]) -> dict[str, dict[tuple, _Item]]:
    found: dict[str, dict[tuple, _Item]] = {"elements": {}, "rules": {}, "forms": {}}
    for path in sorted(files):
        text = files[path]
        if path.endswith((".bpmn", ".dmn")):
            root = _parse(text)
            if root is None:
                continue
            _xml_items(path, root, found)
        elif path.endswith(".schema.json"):
            _form_items(path, text, found["forms"])
    return found


def _parse(text: str) -> etree._Element | None:
    parser = etree.XMLParser(
        resolve_entities=False, load_dtd=False, no_network=True, remove_comments=True
    )
    try:
        return etree.fromstring(text.encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return None


def _local(node: etree._Element) -> str:
    return etree.QName(node).localname


def _ns(node: etree._Element) -> str | None:
    return etree.QName(node).namespace


def _xml_items(path: str, root: etree._Element, found: dict[str, dict[tuple, _Item]]) -> None:
    model = _ns(root)
    if model == BPMN_MODEL:
        containers, models = BPMN_CONTAINERS, {BPMN_MODEL}
    elif model in DMN_MODELS:
        containers, models = DMN_CONTAINERS, set(DMN_MODELS)
    else:
        return
    names = {
        node.get("id"): node.get("name") or ""
        for node in root.iter()
        if isinstance(node.tag, str) and node.get("id")
    }

    def listed(node) -> bool:
        parent = node.getparent()
        return (
            isinstance(node.tag, str)
            and _ns(node) in models
            and bool(node.get("id"))
            and parent is not None
            and _ns(parent) in models
            and _local(parent) in containers
        )

    for node in root.iter():
        if not listed(node):
            continue
        kind = _local(node)
        if kind == "rule":
            table = node.getparent()
            rows = [r for r in table if isinstance(r.tag, str) and _local(r) == "rule"]
            item = _Item(
                node.get("id"),
                "rule",
                path,
                _rule_name(node, rows.index(node) + 1),
                _table_name(table),
                _rule_facets(node, table),
            )
            found["rules"][(path, item.id)] = item
            continue
        item = _Item(
            node.get("id"),
            kind,
            path,
            _element_name(node, names),
            "",
            _element_facets(node, listed),
        )
        found["elements"][(path, item.id)] = item


def _element_name(node: etree._Element, names: dict[str, str]) -> str:
    """Its name; for a flow without one, "source → target" by their names (or ids)."""
    if node.get("name"):
        return node.get("name")
    if _local(node) in FLOWS and node.get("sourceRef") and node.get("targetRef"):
        source, target = node.get("sourceRef"), node.get("targetRef")
        return f"{names.get(source) or source} → {names.get(target) or target}"
    return node.get("label") or ""


def _element_facets(node: etree._Element, listed) -> Facets:
    """An element's attributes (its id aside) and everything inside it that is not an element of
    its own, keyed by path: `child` facets such as `conditionExpression` or
    `timerEventDefinition/timeDate`, and `property` facets for spiffworkflow properties."""
    facets: dict[tuple[str, str], list[str]] = {}

    def add(key: tuple[str, str], value: str) -> None:
        facets.setdefault(key, []).append(value)

    for name, value in node.attrib.items():
        if name != "id":
            add(("attribute", etree.QName(name).localname), value)

    def walk(parent: etree._Element, prefix: str) -> None:
        for child in parent:
            if not isinstance(child.tag, str) or listed(child):
                continue
            local = _local(child)
            if _ns(child) == SPIFF and local == "property" and child.get("name"):
                add(("property", child.get("name")), child.get("value") or "")
                continue
            # extensionElements is the envelope of extensions: named by what is inside it.
            path = prefix if local == "extensionElements" else f"{prefix}{local}"
            if local != "extensionElements":
                text = (child.text or "").strip()
                if text:
                    add(("child", path), text)
                for name, value in child.attrib.items():
                    if name != "id":
                        add(("child", f"{path}@{etree.QName(name).localname}"), value)
            walk(child, path if local == "extensionElements" else f"{path}/")

    walk(node, "")
    return {key: tuple(sorted(values)) for key, values in facets.items()}


def _children(node: etree._Element, local: str) -> list[etree._Element]:
    return [c for c in node if isinstance(c.tag, str) and _local(c) == local]


def _text_of(node: etree._Element) -> str:
    texts = _children(node, "text")
    return (texts[0].text if texts else node.text or "").strip()


def _column_label(column: etree._Element) -> str:
    if column.get("label"):
        return column.get("label")
    if column.get("name"):
        return column.get("name")
    expressions = _children(column, "inputExpression")
    return _text_of(expressions[0]) if expressions else column.get("id") or ""


def _table_name(table: etree._Element) -> str:
    decision = table.getparent()
    return (decision.get("name") or decision.get("id") or "") if decision is not None else ""


def _rule_name(rule: etree._Element, row: int) -> str:
    descriptions = _children(rule, "description")
    text = (descriptions[0].text or "").strip() if descriptions else ""
    return text or f"#{row}"


def _rule_facets(rule: etree._Element, table: etree._Element) -> Facets:
    """A row's entries, named by their column's label (the n-th input entry is in the n-th input
    column), and its description."""
    facets: Facets = {}
    for kind, entry_tag, column_tag in (
        ("input", "inputEntry", "input"),
        ("output", "outputEntry", "output"),
    ):
        columns = _children(table, column_tag)
        for n, entry in enumerate(_children(rule, entry_tag)):
            label = _column_label(columns[n]) if n < len(columns) else f"#{n + 1}"
            facets[(kind, label)] = (_text_of(entry),)
    for n, entry in enumerate(_children(rule, "annotationEntry")):
        facets[("annotation", f"#{n + 1}")] = (_text_of(entry),)
    descriptions = _children(rule, "description")
    if descriptions and (descriptions[0].text or "").strip():
        facets[("description", "")] = ((descriptions[0].text or "").strip(),)
    return facets


def form_name(path: str) -> str:
    """`forms/accept.schema.json` for workflows/bpmn/forms/accept.schema.json."""
    return f"forms/{PurePosixPath(path).name}"


def _form_items(path: str, text: str, found: dict[tuple, _Item]) -> None:
    try:
        schema = json.loads(text)
    except ValueError:
        return
    if not isinstance(schema, dict):
        return
    form = form_name(path)
    title = str(schema.get("title") or "")
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    rest = {k: v for k, v in schema.items() if k not in ("properties", "required")}
    found[(form, "")] = _Item(form, "form", path, title, "", _json_facets("form", rest))
    for name, field_schema in properties.items():
        facets = _json_facets("schema", field_schema if isinstance(field_schema, dict) else {})
        facets[("required", "")] = ("yes" if name in required else "no",)
        label = field_schema.get("title") if isinstance(field_schema, dict) else None
        found[(form, name)] = _Item(
            f"{form}#{name}", "field", path, str(label or name), title, facets
        )


def _json_facets(what: str, value: dict) -> Facets:
    return {
        (what, key): (json.dumps(item, ensure_ascii=False, sort_keys=True),)
        for key, item in value.items()
    }


def changed_ids(diff: BundleDiff) -> Iterable[str]:
    """Every id the diff names, for messages and tests."""
    for section in (diff.elements, diff.rules, diff.forms):
        for entries in (section.added, section.removed, section.changed):
            yield from (e.id for e in entries)
