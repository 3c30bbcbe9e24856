"""Validation of a bundle before it may go live (DESIGN §8): every problem, each naming the file
and the element at fault, so that an administrator can fix them all in one round.

(Interface stub: `validate` today reports the first problem parse_bundle finds.)"""

from __future__ import annotations

from dataclasses import dataclass

from .specs import PROCESS_ID, Bundle, DiagramError, parse_bundle


@dataclass(frozen=True)
class Problem:
    file: str | None
    element: str | None
    message: str

    def as_json(self) -> dict:
        return {"file": self.file, "element": self.element, "message": self.message}


class BundleInvalid(DiagramError):
    """A bundle refused with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(
            "; ".join(p.message for p in self.problems)
            if len(self.problems) > 1
            else first.message,
            element=first.element,
            file=first.file,
        )


def validate(bundle: Bundle, process_id: str = PROCESS_ID) -> list[Problem]:
    """Every problem of the bundle's process `process_id`; empty when it may go live."""
    try:
        parse_bundle(bundle)
    except DiagramError as exc:
        return [Problem(exc.file, exc.element, str(exc))]
    return []
