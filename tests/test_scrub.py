"""Secret values are masked in every encoding olly's output may carry them in."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote_plus, urlencode

import pytest

from olly import scrub


@pytest.fixture(autouse=True)
def fresh() -> None:
    scrub.clear()
    yield
    scrub.clear()


def test_nothing_registered_leaves_text_alone() -> None:
    assert scrub.scrub("buildargs=%7B%7D token") == "buildargs=%7B%7D token"


@pytest.mark.parametrize("value", ["plain-token-123", 'q"uo te/+&=é', "a\\b\nc"])
def test_every_encoding_is_masked(value: str) -> None:
    scrub.register(value)
    url = "http://x/build?" + urlencode({"buildargs": json.dumps({"T": value})})
    texts = [value, url, json.dumps({"msg": value}), base64.b64encode(value.encode()).decode(), quote_plus(value)]
    for text in texts:
        out = scrub.scrub(f"before {text} after")
        assert value not in out and "***" in out, out
        assert out.startswith("before ") and out.endswith(" after")


def test_longer_forms_are_masked_before_their_parts() -> None:
    scrub.register("abc", "abcdef")
    assert scrub.scrub("x abcdef y abc") == "x *** y ***"
