"""Translation catalogs. Sources are .po fragments per blueprint under webapp/i18n/<locale>/; they
are merged and compiled to the .mo files Flask-Babel reads when the app starts (a few ms), so a
clean checkout needs no build step and no compiled file is committed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

SOURCES = Path(__file__).parent / "i18n"
LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"


def compile_catalogs(target: Path) -> Path:
    """Merge every fragment of each locale into target/<locale>/LC_MESSAGES/messages.mo."""
    for folder in sorted(p for p in SOURCES.iterdir() if p.is_dir()):
        merged = Catalog(locale=folder.name)
        for fragment in sorted(folder.glob("*.po")):
            with fragment.open("rb") as handle:
                for message in read_po(handle, locale=folder.name):
                    if message.id and message.string:
                        merged.add(message.id, message.string)
        # Babel looks catalogs up by the parsed locale's name (zh_CN parses as zh_Hans_CN).
        for name in {folder.name, str(Locale.parse(folder.name))}:
            out = target / name / "LC_MESSAGES"
            out.mkdir(parents=True, exist_ok=True)
            # Write then rename: another process starting at the same time never reads half a file.
            fd, temp = tempfile.mkstemp(dir=out, suffix=".mo.tmp")
            with os.fdopen(fd, "wb") as handle:
                write_mo(handle, merged)
            os.replace(temp, out / "messages.mo")
    return target


def messages(locale: str = DEFAULT_LOCALE) -> dict[str, str]:
    """Every msgid of a locale with its translation (empty when untranslated), for tests."""
    found: dict[str, str] = {}
    for fragment in sorted((SOURCES / locale).glob("*.po")):
        with fragment.open("rb") as handle:
            for message in read_po(handle, locale=locale):
                if message.id:
                    found[str(message.id)] = str(message.string or "")
    return found
