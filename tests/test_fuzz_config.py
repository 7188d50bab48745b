"""Fuzzing ``olly.config.load_workspace`` with generated BUILD.toml files.

The only acceptable outcomes are a ``Workspace`` or an ``OllyError`` (which the CLI turns
into one line and exit code 2): any other exception is a crash, i.e. an internal error
with exit code 4. Inputs: random text and bytes, structured TOML built from plausible
keys and values and then mutated (wrong types, unknown keys, labels with ``..``, ``/``,
unicode, control characters, empty strings), and line-level edits of a valid file.

Default run: ~300 examples per test, derandomized (same examples every run, < 15 s).
``OLLY_FUZZ_EXAMPLES=5000`` runs a longer, still deterministic, campaign;
``OLLY_FUZZ_SAVE=1`` writes each crashing input (the shrunk one last) to
``tests/data/fuzz_crashers/new-<exception>-<file>-<line>.toml``, to be renamed and kept:
every file there is replayed by ``test_crasher_regression``.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olly.config import Workspace, load_workspace
from olly.errors import OllyError
from olly.graph import Graph

CRASHERS = Path(__file__).parent / "data" / "fuzz_crashers"
EXAMPLES = int(os.environ.get("OLLY_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])


# -- the workspace the generated files are loaded in --------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directories that plausible labels name, plus traps: links out, a dangling link, a file
    where a directory is expected, a fifo, a non-UTF-8 name."""
    base = tmp_path_factory.mktemp("fuzz")
    ws = base / "ws"
    for d in ("a", "b", "apps/x", "apps/y", "deep/er/dir"):
        (ws / d).mkdir(parents=True)
        (ws / d / "Dockerfile").write_text("FROM scratch\n")
    (ws / "a" / "Dockerfile.dev").write_text("FROM scratch\n")
    for c in ("c", "charts/c"):
        (ws / c).mkdir(parents=True)
        (ws / c / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
        (ws / c / "values.yaml").write_text("image:\n  repository: x\n  tag: y\n")
    (ws / "shared").mkdir()
    (ws / "shared" / "x.txt").write_text("x\n")
    (ws / "f").write_text("a file, not a directory\n")
    (base / "outside").mkdir()
    (base / "outside" / "Dockerfile").write_text("FROM scratch\n")
    (base / "outside" / "Chart.yaml").write_text("apiVersion: v2\nname: o\nversion: 0.1.0\n")
    (ws / "link").symlink_to(base / "outside")
    (ws / "dangling").symlink_to(base / "nowhere")
    (ws / "loop").symlink_to("loop")
    os.mkfifo(ws / "fifo")
    os.mkdir(os.fsencode(ws) + b"/bad\xff")
    return ws


def _save(data: bytes, exc: BaseException) -> None:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    where = re.sub(r"[^A-Za-z0-9_.-]", "", Path(frame.filename).stem)
    name = f"new-{type(exc).__name__}-{where}-{frame.lineno}.toml"
    CRASHERS.mkdir(parents=True, exist_ok=True)
    (CRASHERS / name).write_bytes(data)


def load(root: Path, text: str | bytes) -> Workspace | OllyError:
    """Load ``text`` as ``root/BUILD.toml`` (and build its graph): a Workspace or an OllyError,
    anything else raises."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    (root / "BUILD.toml").write_bytes(data)
    try:
        ws = load_workspace(root)
        Graph.of(ws)  # what every command does next: cycle check
    except OllyError as exc:
        assert exc.reason and exc.message, exc
        return exc
    except BaseException as exc:  # a crash: the CLI would print "internal error" and exit 4
        if os.environ.get("OLLY_FUZZ_SAVE"):
            _save(data, exc)
        raise
    assert isinstance(ws, Workspace) and ws.targets
    return ws


# -- strategies -------------------------------------------------------------------

PLAUSIBLE_PATHS = ["a", "b", "apps/x", "apps/y", "deep/er/dir", "c", "charts/c", "shared", "f", "link", "link/x",
                   "dangling", "loop", "fifo", "missing", "a/Dockerfile", "a/Dockerfile.dev", "shared/x.txt",
                   "shared/*.txt", "shared/**", "**/*", "*", "."]
HOSTILE_PATHS = ["", ".", "..", "../a", "a/..", "a/../..", "/a", "/", "//a", "a//b", "./a", "a/", "a/./b", "a\\b",
                 "C:/a", "c:a", "~", "~/a", "$HOME", "a\x00b", "\x00", "a\nb", "a\rb", "\x1b[31m", "é", "日本/語",
                 "\u202e", "\ufeff", "a" * 300, "/".join(["d"] * 200), "a/../../" * 20, "link/..", "link/../a",
                 "a\udcff", "bad\udcff", "con", "nul", " a", "a ", "-a", "*", "?", "[", "[z-", "**/..", "{a,b}"]
path_text = st.one_of(
    st.sampled_from(PLAUSIBLE_PATHS),
    st.sampled_from(HOSTILE_PATHS),
    st.lists(st.sampled_from(["a", "b", "..", ".", "", "apps", "x", "link", "é", "\x00", "*", "**"]),
             min_size=1, max_size=6).map("/".join),
    st.text(max_size=30),
)
NAMES = ["A", "B", "PYTHON_BASE", "X", "1A", "A-B", "", "A B", "é", "A\nB", "_", "a.b", "PATH", "HOME"]
REPOS = ["x/a", "x/b", "ollyscale/a", "a", "A/B", "x/a:tag", "x/a@sha256:0", "ghcr.io/x/a", "localhost/a",
         "localhost:5000/a", "x//a", "x/a/", "/x", "", "x_a", "x__a", "x---a", "é/a", "x/" + "a" * 300]
ENDPOINTS = ["r.example", "r.example:5000", "r.example:5000/p", "https://r.example", "localhost", "127.0.0.1:5000",
             "", "r.example:99999999", "r..example", "-r.example", "r.example/P", "r.example/p/", "[::1]:5000"]
PLATFORMS = ["linux/amd64", "linux/arm64/v8", "linux", "linux/", "/amd64", "Linux/AMD64", "", "linux/amd64/v8/x"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), path_text)
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=10)


def maybe(values: st.SearchStrategy, junk_one_in: int = 25) -> st.SearchStrategy:
    """Mostly the plausible value, sometimes (1 in ``junk_one_in``) a wrong type or hostile junk."""
    return st.integers(1, junk_one_in).flatmap(lambda i: junk if i == 1 else values)


LABELS = ["a", "b", "apps/x", "apps/y", "deep/er/dir"]
label_text = maybe(st.sampled_from(LABELS), 3).filter(lambda v: isinstance(v, str)) | path_text
repository = st.from_regex(r"[a-z]{1,3}(/[a-z0-9]{1,4}){0,2}", fullmatch=True) | st.sampled_from(REPOS)
dep_list = st.lists(st.sampled_from(LABELS + ["c", "charts/c", "missing"]) | path_text, max_size=3)


def optional(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """A table with each field present or not, valid-looking values, sometimes wrong ones."""
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


def with_required(required: dict, table: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.fixed_dictionaries({k: maybe(v, 40) for k, v in required.items()}), table).map(
        lambda t: {**t[0], **t[1]})


image_spec = with_required({"repository": repository}, optional(
    context=path_text, dockerfile=path_text,
    args=st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), st.text(max_size=6), max_size=3),
    secrets=st.lists(st.sampled_from(NAMES) | st.text(max_size=6), max_size=2),
    target=st.text(max_size=8), inputs=st.lists(path_text, max_size=3), depends_on=dep_list,
    platform=st.sampled_from(PLATFORMS), network=st.sampled_from(["host", "none", "bridge", ""]),
))
chart_spec = optional(
    path=st.sampled_from(["c", "charts/c"]) | path_text,
    images=st.dictionaries(st.sampled_from(["image", "a.image", "", "x\ny", "image.repository", "é"]),
                           st.sampled_from(LABELS) | path_text, max_size=3),
)
registry_spec = with_required({"push": st.sampled_from(ENDPOINTS)}, optional(
    pull=st.sampled_from(ENDPOINTS), insecure=st.booleans(),
    charts=st.sampled_from(["charts", "a/charts", "", "Charts", "a//b"]),
))
workspace_spec = optional(name=st.text(max_size=10), network=st.text(max_size=6), source=st.text(max_size=20))
build_doc = st.fixed_dictionaries({"images": maybe(st.dictionaries(label_text, image_spec, min_size=1, max_size=4), 40)},
                                  optional={
    "workspace": maybe(workspace_spec),
    "registries": maybe(st.dictionaries(st.text(max_size=6), registry_spec, max_size=2)),
    "charts": maybe(st.dictionaries(st.sampled_from(["c", "charts/c"]) | path_text, chart_spec, max_size=2)),
})

# Mutations applied on top: an unknown key somewhere, a dropped key, a value of the wrong type.
mutation = st.tuples(st.sampled_from(["unknown", "drop", "retype", "none", "none", "none"]), st.integers(0, 50), st.text(max_size=8), junk)


def mutate(doc: dict, mutations: list) -> dict:
    for op, i, key, value in mutations:
        tables = [doc] + [t for t in _tables(doc)]
        table = tables[i % len(tables)]
        if op == "unknown":
            table[key or "unknown"] = value
        elif op == "drop" and table:
            del table[sorted(table)[i % len(table)]]
        elif op == "retype" and table:
            table[sorted(table)[i % len(table)]] = value
    return doc


def _tables(d: dict):
    for v in d.values():
        if isinstance(v, dict):
            yield v
            yield from _tables(v)


# -- a small TOML writer (the standard library only reads TOML) --------------------


def toml_str(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:  # not representable in TOML: substitute
            out.append("\\ufffd")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if v is None:
        return '""'  # TOML has no null
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict, style: int) -> str:
    """Tables as ``[section."label"]`` headers (style 0), dotted keys (1) or inline (2)."""
    lines = []
    for section, body in doc.items():
        if style == 2 or not isinstance(body, dict):
            lines.append(f"{toml_str(section)} = {toml_value(body)}")
            continue
        flat = {k: v for k, v in body.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in body.items() if isinstance(v, dict)}
        if flat:
            lines.append(f"[{toml_str(section)}]")
            lines += [f"{toml_str(k)} = {toml_value(v)}" for k, v in flat.items()]
        for name, table in nested.items():
            if style == 1:
                lines += [f"{toml_str(section)}.{toml_str(name)}.{toml_str(k)} = {toml_value(v)}" for k, v in table.items()]
                if not table:
                    lines.append(f"{toml_str(section)}.{toml_str(name)} = {{}}")
            else:
                lines.append(f"[{toml_str(section)}.{toml_str(name)}]")
                lines += [f"{toml_str(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


VALID = """\
[workspace]
name = "w"

[registries.local]
push = "r.example:5000"

[images.a]
repository = "x/a"
args = { A = "1" }
inputs = ["shared/*.txt"]

[images."apps/x"]
repository = "x/x"
depends_on = ["a"]

[charts.c]
images = { "image" = "apps/x" }
"""


# -- the fuzz tests -----------------------------------------------------------------


def test_valid_baseline_loads(root: Path) -> None:
    ws = load(root, VALID)
    assert isinstance(ws, Workspace) and sorted(ws.targets) == ["a", "apps/x", "c"]


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text(root: Path, text: str) -> None:
    load(root, text)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(root: Path, data: bytes) -> None:
    load(root, data)


@FUZZ
@given(doc=build_doc, mutations=st.lists(mutation, max_size=2), style=st.integers(0, 2))
def test_structured_toml(root: Path, doc: dict, mutations: list, style: int) -> None:
    load(root, to_toml(mutate(doc, mutations), style))


LINE_EDITS = st.lists(st.tuples(
    st.sampled_from(["drop", "dup", "insert", "replace", "swap", "truncate"]),
    st.integers(0, 40),
    st.one_of(st.sampled_from(['[images."../x"]', "[images.a]", "[[images]]", "[charts.a]", 'repository = 1',
                               'context = ".."', 'depends_on = ["a", "a"]', 'depends_on = ["apps/x"]', "x = [[[[",
                               'dockerfile = "link/Dockerfile"', '"" = ""', "[images.\"\"]", "images.a = 1",
                               "[images.\"a\\u0000\"]", 'inputs = ["**/..", "link/*"]', "\x00", "\ufeff", "\\"]),
              st.text(max_size=30)),
), min_size=1, max_size=5)


@FUZZ
@given(edits=LINE_EDITS)
def test_line_edits_of_a_valid_file(root: Path, edits: list[tuple[str, int, str]]) -> None:
    lines = VALID.splitlines()
    for op, i, text in edits:
        i %= len(lines) + 1
        if op == "drop" and i < len(lines):
            del lines[i]
        elif op == "dup" and i < len(lines):
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, text)
        elif op == "replace" and i < len(lines):
            lines[i] = text
        elif op == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        elif op == "truncate" and i < len(lines):
            lines[i] = lines[i][: len(text)]
    load(root, "\n".join(lines) + "\n")


# Errors must stay one line: checked where the input has no control characters (labels with
# newlines are a known bug, see test_hostile.py / the crashers directory).
printable_paths = st.sampled_from([p for p in PLAUSIBLE_PATHS + HOSTILE_PATHS
                                   if p.isprintable() and "\udcff" not in p])


@FUZZ
@given(labels=st.lists(printable_paths, min_size=1, max_size=3), contexts=st.lists(printable_paths, max_size=3),
       deps=st.lists(printable_paths, max_size=2), repo=st.sampled_from(REPOS), chart=st.booleans())
def test_errors_are_one_line(root: Path, labels: list[str], contexts: list[str], deps: list[str], repo: str,
                             chart: bool) -> None:
    doc: dict = {"images": {}}
    for n, label in enumerate(labels):
        spec = {"repository": f"{repo}{n}" if repo else repo, "depends_on": deps}
        if n < len(contexts):
            spec["context"] = contexts[n]
        doc["images"][label] = spec
    if chart:
        doc["charts"] = {labels[0]: {"images": {"image": labels[-1]}}}
    result = load(root, to_toml(doc, 0))
    if isinstance(result, OllyError):
        assert "\n" not in result.line() and "\r" not in result.line(), result.line()


# Random dependency graphs (images sharing one context, charts pinning them): the result must
# agree with an independent cycle check, and the order must put dependencies first.
graphs = st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
    st.lists(st.integers(0, n - 1), max_size=3),
))


def _has_cycle(n: int, edges: set[tuple[int, int]]) -> bool:
    indegree = [0] * n
    for _, b in edges:
        indegree[b] += 1
    todo = [i for i in range(n) if indegree[i] == 0]
    seen = 0
    while todo:
        i = todo.pop()
        seen += 1
        for a, b in edges:
            if a == i:
                indegree[b] -= 1
                if indegree[b] == 0:
                    todo.append(b)
    return seen < n


@FUZZ
@given(graph=graphs)
def test_dependency_graphs(root: Path, graph: tuple[int, list[tuple[int, int]], list[int]]) -> None:
    n, edge_list, pinned = graph
    edges = set(edge_list)  # (a, b): image a depends on image b
    lines = []
    for i in range(n):
        deps = sorted({f"t{b}" for a, b in edges if a == i})
        lines += [f"[images.t{i}]", f'repository = "x/t{i}"', 'context = "a"', f"depends_on = {json.dumps(deps)}"]
    if pinned:
        lines += ["[charts.c]", "images = {" + ", ".join(f'"v{k}.image" = "t{i}"' for k, i in enumerate(pinned)) + "}"]
    result = load(root, "\n".join(lines) + "\n")
    if isinstance(result, OllyError):
        assert result.reason == "dependency-cycle" and _has_cycle(n, edges), result.line()
        path = result.message.split("dependency cycle: ", 1)[1].split(" -> ")
        assert path[0] == path[-1] and all((int(a[1:]), int(b[1:])) in edges for a, b in zip(path, path[1:]))
        return
    assert not _has_cycle(n, edges)
    order = Graph.of(result).order()
    position = {label: k for k, label in enumerate(order)}
    assert sorted(order) == sorted([f"t{i}" for i in range(n)] + (["c"] if pinned else []))
    assert all(position[f"t{b}"] < position[f"t{a}"] for a, b in edges if a != b)


# -- regression: every crasher ever found is replayed -------------------------------

# Crashers found so far (tests/data/fuzz_crashers/), with the bug each showed:
#   nul-in-context/-inputs/-label.toml  ValueError from os.path.realpath (fixed in 9030e49)
#   deep-nesting.toml                   RecursionError in tomllib (fixed in 9030e49)
#   name-too-long-label.toml            OSError ENAMETOOLONG from Path.is_dir (fixed in 9030e49)
#   newline-in-*.toml                   a multi-line error (control characters now escaped)
# file name -> why it still fails (drop the entry once olly is fixed: strict xfail will say so)
KNOWN_BUGS: dict[str, str] = {}  # none open: newline-in-* were fixed by escaping control characters


def _crasher_params():
    files = sorted(p.name for p in CRASHERS.glob("*.toml")) if CRASHERS.is_dir() else []
    for name in files:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])] if name in KNOWN_BUGS else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", _crasher_params())
def test_crasher_regression(root: Path, name: str) -> None:
    result = load(root, (CRASHERS / name).read_bytes())
    if isinstance(result, OllyError):
        assert "\n" not in result.line() and "\r" not in result.line(), result.line()


def test_known_bugs_name_real_files() -> None:
    assert set(KNOWN_BUGS) <= {p.name for p in CRASHERS.glob("*.toml")}
