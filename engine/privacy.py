"""Residents' phone numbers: how one is written down and how it is shown.

A phone is personal data (DESIGN §6, §12). Wherever Gridloop shows one to someone who may not read
it in full — a reporter's number on a case, a household's number in a grid's register — it shows
it masked by the one rule here, its first 3 and last 4 characters (138****1234), so the pages, the
API and any export cannot drift apart. Households' numbers are also stored in one form (digits
only), so the same phone typed as "138 1234 5678" or "138-1234-5678" is one number, and a
re-imported organisation file that writes it either way changes nothing.
"""

from __future__ import annotations

import re

# A household's phone: a mobile (11 digits), a landline with or without its area code (7 to 12),
# or a number with its country code; at most 15 digits (ITU E.164).
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 15
# Digits, with the spaces and hyphens people type between them.
_TYPED = re.compile(r"[0-9](?:[0-9 -]*[0-9])?")


def phone_digits(text: str) -> str | None:
    """The digits of a phone number as typed ("138 1234-5678" -> "13812345678"), or None when the
    text is not one: anything but digits, spaces and hyphens, or too few or too many digits."""
    text = text.strip()
    if not _TYPED.fullmatch(text):
        return None
    digits = re.sub(r"[ -]", "", text)
    return digits if PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS else None


# The first 3 and last 4 characters show only when this many are hidden between them, as in a
# mobile number (138****5678): 7 of a landline's 8 digits would leave 10 numbers to try.
MASK_HIDES_AT_LEAST = 4


def mask_phone(phone: str | None) -> str:
    """A phone as people without the right to read it see it: its first 3 and last 4 characters
    with a star for each one between (13812345678 -> 138****5678). A number too short for that
    rule to hide at least MASK_HIDES_AT_LEAST characters (a landline without its area code,
    88881234) keeps only its last 2: a masked number never shows whole, nor nearly so."""
    if not phone:
        return ""
    # Digits only (DESIGN §12 counts digits: "+86 138 1234 5678" is 138****5678), and a
    # mobile's country code (86, 0086) left out, as people write the number at home.
    digits = re.sub(r"\D", "", phone)
    mobile = re.fullmatch(r"(?:0086|86)(1\d{10})", digits)
    phone = mobile.group(1) if mobile else digits or phone
    if len(phone) >= 7 + MASK_HIDES_AT_LEAST:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return "*" * (len(phone) - 2) + phone[-2:] if len(phone) > 2 else "*" * len(phone)
