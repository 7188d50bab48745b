"""Secret values never leave olly: every message, log line and JSON field is scrubbed.

A secret build arg's value must reach the engine, and engines echo what they were
sent: docker's HTTP errors quote the request URL, whose ``buildargs=`` holds the
values JSON-encoded and URL-encoded. Rather than trusting each place that formats
text, the values are registered here when they are read from the environment and
every writer (the CLI's output, build logs) passes its text through :func:`scrub`.
"""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import quote, quote_plus

MASK = "***"

_lock = threading.Lock()
_forms: list[str] = []  # every encoded form of every registered value, longest first


def encodings(value: str) -> set[str]:
    """The forms a value takes in the text olly may see: raw, JSON-escaped, URL-encoded
    (both ways, also of the JSON form, as in docker's ``buildargs=`` query) and base64."""
    forms: set[str] = set()
    for base in (value, json.dumps(value)[1:-1]):
        forms.update({base, quote(base), quote(base, safe=""), quote_plus(base), quote_plus(base, safe="")})
    raw = value.encode("utf-8", "surrogateescape")
    for b64 in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.update({b64, b64.rstrip("=")})
    return {f for f in forms if f}


def register(*values: str) -> None:
    """Remember secret values for the rest of this process."""
    with _lock:
        known = set(_forms)
        for value in values:
            if value:
                known |= encodings(value)
        _forms[:] = sorted(known, key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every registered secret, in any known encoding, replaced by ``***``."""
    if not _forms:
        return text
    for form in list(_forms):
        if form in text:
            text = text.replace(form, MASK)
    return text


def clear() -> None:
    """Forget every registered value (tests)."""
    with _lock:
        _forms.clear()
