"""The process's words, read from the deployed bundles (DESIGN §1), never from Python.

Categories and severities, with their labels in Chinese and English, are the `enum`,
`x-enumTitles` and `x-enumTitles-en` of the accept form. What may be chosen is what the live
version offers; a label is the live version's, and a value the live version dropped keeps the
label of the newest version that had it, so old cases still read well. A bundle that adds a
category makes it usable everywhere the moment it is live.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import DiagramVersion
from .specs import PROCESS_ID, Spec, SpecRegistry

FIELDS = ("category", "severity")


@dataclass(frozen=True)
class Choice:
    value: str
    zh: str
    en: str

    def label(self, language: str) -> str:
        return self.zh if language == "zh" else self.en


def accept_form(spec: Spec) -> dict:
    """The form of the version's accept task (DESIGN §3)."""
    for info in spec.tasks.values():
        if info.task == "accept":
            return spec.forms.get(info.form, {})
    return {}


def choices_of(prop: dict) -> list[Choice]:
    """An enum's choices with their titles; a missing title falls back to the other language's,
    then to the value itself."""
    values = prop.get("enum") or []
    zh = prop.get("x-enumTitles") or []
    en = prop.get("x-enumTitles-en") or []
    found = []
    for i, value in enumerate(values):
        title_zh = zh[i] if i < len(zh) else None
        title_en = en[i] if i < len(en) else None
        found.append(
            Choice(
                str(value), title_zh or title_en or str(value), title_en or title_zh or str(value)
            )
        )
    return found


def version_choices(spec: Spec, name: str) -> list[Choice]:
    return choices_of(accept_form(spec).get("properties", {}).get(name, {}))


@dataclass
class Vocabulary:
    """The live version's choices, and a label for every value any version ever offered."""

    live: dict[str, list[Choice]] = field(default_factory=dict)
    known: dict[str, dict[str, Choice]] = field(default_factory=dict)

    def options(self, name: str) -> list[Choice]:
        return self.live.get(name, [])

    def values(self, name: str) -> list[str]:
        return [c.value for c in self.options(name)]

    def label(self, name: str, value: str | None, language: str) -> str:
        if not value:
            return ""
        choice = self.known.get(name, {}).get(value)
        return choice.label(language) if choice else value


def vocabulary(session: Session, registry: SpecRegistry) -> Vocabulary:
    """Read from every deployed version, newest first. Parsed specs come from the registry, so
    this costs one small query once the versions are parsed."""
    words = Vocabulary({name: [] for name in FIELDS}, {name: {} for name in FIELDS})
    rows = session.execute(
        select(DiagramVersion.id, DiagramVersion.sha256, DiagramVersion.activated_at)
        .where(DiagramVersion.process_id == PROCESS_ID)
        .order_by(DiagramVersion.id.desc())
    ).all()
    # The live version first (activated last; rollback makes an older one live), then newest first.
    live = max(
        (r for r in rows if r.activated_at is not None),
        key=lambda r: (r.activated_at, r.id),
        default=None,
    )
    rows = sorted(rows, key=lambda r: (r is not live, -r.id))
    for position, (version_id, sha, _activated) in enumerate(rows):
        spec = registry.parsed(sha) or registry.get(session.get(DiagramVersion, version_id))
        for name in FIELDS:
            choices = version_choices(spec, name)
            if position == 0:
                words.live[name] = choices
            for choice in choices:
                words.known[name].setdefault(choice.value, choice)
    return words
