"""Reading YAML that an administrator hands in (the organisation file, a calendar file) safely.

YAML anchors and aliases let a few hundred bytes stand for gigabytes: each alias is a reference,
and whoever walks the data (the importer, `json.dumps`) expands it (a "billion laughs" file of
470 bytes reached 2 GB). Gridloop's files never need them, so the first anchor (`&a`) or alias
(`*a`) is refused with its line, while the file is being composed: nothing has been built from
it yet, let alone expanded. Nesting is bounded too, so a deeply nested file is a refusal with a
line instead of a RecursionError. Always ruamel's pure-Python parser, whose composer is ours.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent

MAX_DEPTH = 50  # nested mappings and lists; the organisation file needs about 10


class YamlFileError(ValueError):
    """The text is not YAML we accept; `line` (1-based) and `message` say where and why."""

    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message
        super().__init__(f"line {line}: {message}")


class _NoAnchorComposer(Composer):
    """ruamel's composer, refusing an alias or an anchor before it composes the node."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            raise YamlFileError(
                event.start_mark.line + 1,
                f"alias *{event.anchor} is not allowed: write the value out "
                "(YAML anchors and aliases are refused)",
            )
        if getattr(event, "anchor", None) is not None:
            raise YamlFileError(
                event.start_mark.line + 1,
                f"anchor &{event.anchor} is not allowed: YAML anchors and aliases are refused",
            )
        return super().compose_node(parent, index)


class _LinedValues:
    """Mixed into ruamel's constructor: a value that cannot be built (an integer of more than
    4,300 digits, which Python refuses to convert) is a refusal naming its line, not a crash."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except YamlFileError:
            raise
        except ValueError as exc:
            problem = str(exc).split(";")[0]
            raise YamlFileError(
                node.start_mark.line + 1, f"cannot read a value: {problem}"
            ) from exc


def load_yaml(text: str, round_trip: bool = False) -> Any:
    """The one YAML document in `text`: plain data (`round_trip=False`), or ruamel's round-trip
    nodes, which know their lines. Raises YamlFileError for a syntax error, an anchor or alias,
    nesting deeper than MAX_DEPTH or a value that cannot be read."""
    yaml = YAML(typ="rt" if round_trip else "safe", pure=True)
    yaml.Composer = _NoAnchorComposer
    yaml.Constructor = type("Constructor", (_LinedValues, yaml.Constructor), {})
    yaml.max_depth = MAX_DEPTH
    try:
        return yaml.load(text)
    except MaxDepthExceededError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlFileError(line, f"nested more than {MAX_DEPTH} levels deep") from exc
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        message = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context:
            message = f"{message} ({context})"
        raise YamlFileError(mark.line + 1 if mark else 1, message) from exc
