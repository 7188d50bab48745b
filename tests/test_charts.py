"""Chart packaging pieces that need no engine: endpoint check, validation, reproducibility."""

from __future__ import annotations

import io
import re
import tarfile

import pytest

from olly import charts
from olly.config import Registry
from olly.errors import OllyError


def tgz(files: dict[str, bytes]) -> bytes:
    return charts._tgz(files)


SPLIT = Registry(name="local", push="registry.local", pull="docker-registry.local", insecure=True, charts="charts")


def test_endpoint_check_matches_host_names_only() -> None:
    ok = tgz({"c/values.yaml": b"imageRegistry: docker-registry.local\nimage: docker-registry.local/x:1\n"})
    charts.check_endpoints(ok, SPLIT, "c")  # the pull host contains the push host as a suffix: fine
    for bad in (b"image: registry.local/x:1\n", b"image: Registry.LOCAL/x:1\n", b"host: registry.local\n"):
        with pytest.raises(OllyError, match="push endpoint of registry 'local'"):
            charts.check_endpoints(tgz({"c/values.yaml": bad}), SPLIT, "c")


def test_endpoint_check_looks_inside_vendored_subcharts() -> None:
    sub = tgz({"sub/values.yaml": b"image: registry.local/redis:7\n"})
    with pytest.raises(OllyError, match="sub/values.yaml"):
        charts.check_endpoints(tgz({"c/values.yaml": b"a: 1\n", "c/charts/sub-0.1.0.tgz": sub}), SPLIT, "c")


def test_same_host_other_path_prefix() -> None:
    reg = Registry(name="r", push="127.0.0.1:5000/build", pull="127.0.0.1:5000/run", insecure=True, charts="charts")
    charts.check_endpoints(tgz({"c/values.yaml": b"image: 127.0.0.1:5000/run/x:1\n"}), reg, "c")
    with pytest.raises(OllyError):
        charts.check_endpoints(tgz({"c/values.yaml": b"image: 127.0.0.1:5000/build/x:1\n"}), reg, "c")


def test_package_bytes_are_deterministic() -> None:
    files = {"c/Chart.yaml": b"name: c\n", "c/a.yaml": b"x\n"}
    one, two = tgz(files), tgz(dict(reversed(list(files.items()))))
    assert one == two
    with tarfile.open(fileobj=io.BytesIO(one), mode="r:gz") as tar:
        for m in tar.getmembers():
            assert (m.uid, m.gid, m.mode, m.mtime, m.uname) == (0, 0, 0o644, charts.PACKAGE_MTIME, "")
    assert one[4:8] == b"\0\0\0\0"  # gzip header mtime 0


def test_oci_artifact_is_reproducible_and_helm_typed() -> None:
    meta = {"name": "c", "version": "1.0.0", "apiVersion": "v2"}
    a = charts.oci_artifact(b"tgz", meta)
    assert a == charts.oci_artifact(b"tgz", dict(reversed(list(meta.items()))))
    assert b"application/vnd.cncf.helm.config.v1+json" in a[1] and b"created" not in a[1]


# --- Versions identify content (issue #7 item 7) ---------------------------------------

def _source(tmp_path, files: dict[str, str], base: str = "0.1.1") -> charts.ChartSource:
    from olly.hashing import hash_bytes

    rows = []
    for rel, text in sorted(files.items()):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        rows.append((rel, path, hash_bytes(text.encode())))
    return charts.ChartSource("c", "c", "c", base, "0.0.0", rows)


FILES = {"Chart.yaml": "name: c\nversion: 0.1.1\n", "values.yaml": "image:\n  repository: x\n  tag: y\n"}
PINS = {"image": charts.Pin("reg/x", "olly-1@sha256:" + "a" * 64, True)}


def test_release_version_is_unchanged(tmp_path) -> None:
    src = _source(tmp_path, FILES)
    assert charts.stamp(src, PINS, "v2.1.8") == ("2.1.8", "v2.1.8")
    assert charts.stamp(src, PINS, "v1.0.0-rc.1") == ("1.0.0-rc.1", "v1.0.0-rc.1")
    assert charts.stamp(src, PINS, None) == ("0.1.1", "0.0.0")  # no version: the chart's own


def test_dev_version_names_the_content(tmp_path) -> None:
    src = _source(tmp_path / "a", FILES)
    version, app = charts.stamp(src, PINS, "v2.1.8-3-gabc123-dirty")
    assert re.fullmatch(r"0\.1\.1-v2\.1\.8-3-gabc123\.[0-9a-f]{8}|0\.1\.1-v2\.1\.8-3-gabc123\.c[0-9]{8}", version), version
    assert app == "v2.1.8-3-gabc123"  # git's -dirty dropped: the suffix tells packages apart
    # The tree becoming dirty does not change the version of an untouched chart ...
    assert charts.stamp(src, PINS, "v2.1.8-3-gabc123") == (version, app)
    # ... equal content gives an equal version (another checkout path, same bytes) ...
    assert charts.stamp(_source(tmp_path / "b", FILES), PINS, "v2.1.8-3-gabc123-dirty")[0] == version
    # ... and any other content, pin or version gives another one.
    edited = _source(tmp_path / "c", {**FILES, "values.yaml": FILES["values.yaml"] + "replicas: 2\n"})
    repinned = {"image": charts.Pin("reg/x", "olly-1@sha256:" + "b" * 64, True)}
    others = {charts.stamp(edited, PINS, "v2.1.8-3-gabc123-dirty")[0],
              charts.stamp(src, repinned, "v2.1.8-3-gabc123-dirty")[0],
              charts.stamp(src, PINS, "v2.1.8-4-gdef456")[0]}
    assert len(others) == 3 and version not in others
    # The key covers the stamped version; it differs per content like the version does.
    keys = {charts.chart_key(src, PINS, version, app), charts.chart_key(edited, PINS, *charts.stamp(edited, PINS, app))}
    assert len(keys) == 2


def test_dev_version_package_is_valid_semver(tmp_path) -> None:
    src = _source(tmp_path, FILES)
    version, app = charts.stamp(src, PINS, "feature/x+y-dirty")
    tgz_bytes, meta = charts.package(src, PINS, version, app)
    assert meta["version"] == version and re.fullmatch(r"0\.1\.1-feature-x-y\.c?[0-9a-f]{8}", version)
    for ident in version.split("-", 1)[1].split("."):  # SemVer pre-release identifiers
        assert ident and not (ident.isdigit() and ident.startswith("0"))


# --- YAML alias bombs (issue #7 item 11) ------------------------------------------------

def billion_laughs(levels: int = 9, key_prefix: str = "") -> tuple[str, int]:
    """A billion-laughs block and the 1-based line of the first node past the bound."""
    lines = [f'{key_prefix}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels):
        lines.append(f"{key_prefix}{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]")
    size, first = 10, None
    for i in range(1, levels):
        size = 1 + 9 * size
        if first is None and size > charts.MAX_ALIAS_EXPANSION + 100:
            first = i + 1
    assert first is not None
    return "\n".join(lines) + "\n", first


def test_alias_bomb_is_refused_with_its_line() -> None:
    text, line = billion_laughs()
    doc = "# header\nreplicas: 1\n" + text
    with pytest.raises(OllyError) as err:
        charts._load_yaml(doc.encode(), "charts/x/values.yaml")
    assert err.value.reason == "chart-invalid"
    assert err.value.line().startswith(f"charts/x/values.yaml:{line + 2}: aliases expand")


@pytest.mark.parametrize("doc, line", [
    ("a: &a [x, *a]\n", 1),  # ruamel would load this one as [x, None]: checked on the node graph
    ("x: 1\nm: &m\n  k: *m\n", 2),  # the line of the anchor
    ("&r [*r]\n", 1),
])
def test_recursive_alias_is_refused(doc: str, line: int) -> None:
    with pytest.raises(OllyError, match=r"recursive alias \*") as err:
        charts._load_yaml(doc.encode(), "c/values.yaml")
    assert err.value.location == f"c/values.yaml:{line}"


def test_shared_aliases_within_the_bound_still_load() -> None:
    doc = charts._load_yaml(b"base: &b {cpu: 1}\na: *b\nb: [*b, *b]\nc:\n  <<: *b\n  mem: 2\n", "v")
    assert doc["b"][1]["cpu"] == 1 and doc["c"]["cpu"] == 1


@pytest.mark.parametrize("name", ["values.yaml", "Chart.yaml"])
def test_plan_refuses_an_alias_bomb_fast(tmp_path, name: str) -> None:
    """A 9-level billion laughs (~400 million nodes expanded) in a chart file: `olly plan`
    fails with the located error in seconds and bounded memory, expanding nothing."""
    import os
    import resource
    import subprocess
    import sys
    import time
    from pathlib import Path

    from conftest import copy_workspace

    root = copy_workspace("pub", tmp_path)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace("REGISTRY_HOST", "127.0.0.1:9").replace("CHARTS_PREFIX", "p"))
    target = root / "chart" / name
    original = target.read_text()
    bomb, line = billion_laughs(key_prefix="lol_")
    target.write_text(original + bomb)
    offset = len(original.splitlines())

    def limit() -> None:  # 1.5 GiB of address space: an expansion would die, not swap the machine
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "olly", "-C", str(root), "plan"], capture_output=True, text=True,
                          timeout=60, preexec_fn=limit, cwd=Path(__file__).resolve().parent.parent,
                          env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/olly-test.sock"})
    assert time.monotonic() - started < 10
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith(f"olly: error: chart/{name}:{offset + line}: aliases expand"), proc.stderr


def test_chart_check_is_remembered_by_content(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chart whose values.yaml and Chart.yaml passed the check is not parsed again while
    their bytes and the values paths stay the same (olly.memo); any change checks afresh,
    and a failing check is never remembered."""
    from pathlib import Path

    from olly.config import ChartTarget
    from olly.hashing import FileHasher

    root = Path(tmp_path)
    (root / ".cache").mkdir()
    chart = root / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\nappVersion: '1.2'\n")
    (chart / "values.yaml").write_text("app:\n  image:\n    repository: r\n    tag: t\n")
    target = ChartTarget(label="chart", path="chart", images={"app.image": "img"})
    parsed: list[bytes] = []
    real = charts._load_yaml
    monkeypatch.setattr(charts, "_load_yaml", lambda data, display: parsed.append(data) or real(data, display))

    def load() -> charts.ChartSource:
        return charts.load_chart(root, target, FileHasher(root, {}))

    first = load()
    assert (first.name, first.base_version, first.app_version) == ("c", "0.1.0", "1.2") and len(parsed) == 2
    again = load()
    assert (again.name, again.base_version, again.app_version) == ("c", "0.1.0", "1.2") and len(parsed) == 2
    other = ChartTarget(label="chart", path="chart", images={"app.other": "img"})  # other paths: checked again
    with pytest.raises(OllyError, match="values path 'app.other' does not exist"):
        charts.load_chart(root, other, FileHasher(root, {}))
    (chart / "values.yaml").write_text("app:\n  image:\n    tag: t\n")  # edited: checked again, and refused
    for _ in range(2):
        with pytest.raises(OllyError, match="it has no repository"):
            load()
    (chart / "values.yaml").write_text("app:\n  image:\n    repository: r\n    tag: t\n")
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.2.0\n")
    assert (load().base_version, load().app_version) == ("0.2.0", "")
