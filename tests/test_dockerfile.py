"""olly.dockerfile: instructions as Docker's parser reads them, the FROM/ARG view, rewriting."""

from __future__ import annotations

import pytest

from olly import dockerfile
from olly.dockerfile import BLOCKED, DockerfileError, expand, external_images, parse, rewrite, stages


def kw(data: bytes) -> list[tuple[str, int, int]]:
    return [(i.keyword, i.line, i.end_line) for i in parse(data).instructions]


def test_instructions_with_line_numbers_comments_and_blank_lines() -> None:
    data = b"# a comment\n\nfrom python:3.14 AS build\n  # indented comment\n   RUN echo hi\n\ncopy . /\n"
    assert kw(data) == [("FROM", 3, 3), ("RUN", 5, 5), ("COPY", 7, 7)]
    assert parse(data).instructions[1].text == "RUN echo hi"


def test_continuations_join_lines_and_skip_comments_and_empty_lines() -> None:
    data = b"FROM \\\n  python:3.14 \\\n# comment inside\n\n  AS base\nRUN a \\  \n b\n"
    df = parse(data)
    assert kw(data) == [("FROM", 1, 5), ("RUN", 6, 7)]
    assert df.instructions[0].text == "FROM   python:3.14   AS base"
    assert df.instructions[1].text == "RUN a  b"
    (s,) = stages(df)
    assert (s.image, s.stage, s.line) == ("python:3.14", "base", 1)


def test_escape_directive_changes_the_continuation_character() -> None:
    data = b"# escape=`\nFROM mcr.microsoft.com/windows `\n  AS w\nRUN dir c:\\\nRUN x\n"
    df = parse(data)
    assert df.escape == "`" and df.directives == {"escape": "`"}
    assert kw(data) == [("FROM", 2, 3), ("RUN", 4, 4), ("RUN", 5, 5)]
    assert stages(df)[0].stage == "w"


def test_directives_count_only_at_the_top() -> None:
    # After a blank line (or any comment that is not a directive) it is a plain comment.
    df = parse(b"\n# escape=`\nFROM a \\\n b\n")
    assert df.escape == "\\" and df.instructions[0].text == "FROM a  b"
    df = parse(b"# hello\n# escape=`\nFROM a\n")
    assert df.escape == "\\"
    df = parse(b"# syntax=docker/dockerfile:1\n# ESCAPE = `\nFROM a\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}


def test_bad_directives_are_errors_with_their_line() -> None:
    with pytest.raises(DockerfileError) as err:
        parse(b"# escape=x\nFROM a\n")
    assert err.value.line == 1
    with pytest.raises(DockerfileError) as err:
        parse(b"# escape=\\\n# escape=`\nFROM a\n")
    assert err.value.line == 2


def test_crlf_bom_and_no_final_newline() -> None:
    data = b"\xef\xbb\xbfFROM a\r\nRUN b \\\r\n c\r\nCOPY x y"
    df = parse(data)
    assert [(i.keyword, i.text) for i in df.instructions] == [("FROM", "FROM a"), ("RUN", "RUN b  c"), ("COPY", "COPY x y")]


def test_stages_flags_and_stage_names() -> None:
    df = parse(b"FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\nFROM build\nFROM scratch\nFROM a as\n")
    got = [(s.image, s.stage, s.platform) for s in stages(df)]
    assert got == [("golang:1.22", "build", "$BUILDPLATFORM"), ("build", None, None), ("scratch", None, None),
                   ("a", None, None)]


def test_global_args_are_those_before_the_first_from() -> None:
    df = parse(b'ARG A=1 B\nARG C="x y"\nFROM a\nARG D=2\n')
    assert [(a.name, a.default) for a in dockerfile.global_args(df)] == [("A", "1"), ("B", None), ("C", '"x y"')]


@pytest.mark.parametrize("word, env, expected", [
    ("python:${V}-slim", {"V": "3.14"}, "python:3.14-slim"),
    ("python:$V", {"V": "3.14"}, "python:3.14"),
    ("${IMG:-python:3}", {}, "python:3"),
    ("${IMG:-python:3}", {"IMG": "alpine"}, "alpine"),
    ("${IMG:-python:3}", {"IMG": ""}, "python:3"),
    ("${IMG-python:3}", {"IMG": ""}, ""),
    ("a${X:+-x}", {"X": "1"}, "a-x"),
    ("a${X:+-x}", {}, "a"),
    ("a${X+-x}", {"X": ""}, "a-x"),
    ('"python:$V"', {"V": "3"}, "python:3"),
    ("'python:$V'", {"V": "3"}, "python:$V"),
    ("py\\$V", {"V": "3"}, "py$V"),
    ("$V", {}, None),  # unset: Docker substitutes "", olly does not guess
    ("$V", {"V": None}, None),  # declared without a value
    ("${V}", {"V": BLOCKED}, None),
    ("${V:-x}", {"V": BLOCKED}, None),  # a dependency's arg, whatever the operator
    ("${V?err}", {"V": "1"}, None),  # not modelled
    ("${V", {"V": "1"}, None),
    ('"unterminated', {}, None),
    ("a$", {}, "a$"),
])
def test_expand(word: str, env: dict, expected: str | None) -> None:
    assert expand(word, env) == expected


def test_external_images_substitute_args_and_skip_what_is_not_external() -> None:
    df = parse(b"ARG PY=3.14\nARG IMG=python:${PY}-slim\nARG DEP\nARG UNSET\n"
               b"FROM $IMG AS build\nFROM build\nFROM BUILD\nFROM scratch\nFROM ${DEP}\nFROM x:${UNSET}\n"
               b"FROM alpine@sha256:" + b"0" * 64 + b"\nFROM base AS base\n")
    refs = external_images(df, {}, blocked={"DEP"})
    assert [(r.reference, r.line) for r in refs] == [
        ("python:3.14-slim", 5), ("alpine@sha256:" + "0" * 64, 11), ("base", 12)]


def test_build_args_override_arg_defaults_but_only_for_declared_args() -> None:
    df = parse(b"ARG PY=3.13\nFROM python:$PY\nFROM x:$OTHER\n")
    assert [r.reference for r in external_images(df, {"PY": "3.14", "OTHER": "1"}, set())] == ["python:3.14"]


def test_from_platform_flag_is_substituted() -> None:
    df = parse(b"ARG P=linux/arm64\nFROM --platform=$P a\nFROM --platform=$BUILDPLATFORM b\n")
    assert [(r.reference, r.platform) for r in external_images(df, {}, set())] == [("a", "linux/arm64"), ("b", None)]


def test_rewrite_changes_only_the_image_reference() -> None:
    data = b"# base\nARG V=3\nFROM  --platform=linux/amd64 python:${V}   AS b \r\nRUN x\n\xff\xfe raw bytes\n"
    df = parse(data)
    (ref,) = external_images(df, {}, set())
    s = ref.stage
    out = rewrite(df, [(s.instruction, s.image_start, s.image_start + len(s.image), "python:3@sha256:ab")])
    assert out == data.replace(b"python:${V}", b"python:3@sha256:ab")


def test_rewrite_a_reference_split_by_a_continuation_keeps_every_line() -> None:
    data = b"FROM pyth\\\non:3 AS x\nRUN y\n"
    df = parse(data)
    s = stages(df)[0]
    assert s.image == "python:3"
    out = rewrite(df, [(s.instruction, s.image_start, s.image_start + len(s.image), "python:3@sha256:ab")])
    assert out == b"FROM \\\npython:3@sha256:ab AS x\nRUN y\n"
    again = parse(out)
    assert [(i.keyword, i.line) for i in again.instructions] == [("FROM", 1), ("RUN", 3)]
    assert stages(again)[0].image == "python:3@sha256:ab"


def test_rewrite_several_lines_from_the_end() -> None:
    data = b"FROM a\nFROM b AS x\nFROM a\n"
    df = parse(data)
    edits = [(s.instruction, s.image_start, s.image_start + len(s.image), s.image + "@d") for s in stages(df)]
    assert rewrite(df, edits) == b"FROM a@d\nFROM b@d AS x\nFROM a@d\n"
