"""What chart packaging writes (issue #13): image blocks checked at plan time, registry
values overlays, dist/ layout and modes, Helm's BOM and appVersion rules, `olly why`.

A FakeEngine stands in for the engine; the registry tests use the session's test registry
(no push: nothing is uploaded)."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import copy_workspace
from fakes import FakeEngine
from olly import api, charts
from olly.config import Registry
from olly.errors import OllyError


def pub_ws(tmp_path: Path, host: str = "127.0.0.1:9", registry_extra: str = "") -> Path:
    """The `pub` fixture workspace; ``registry_extra`` lines are added to [registries.test]."""
    prefix = f"olly-test-{uuid.uuid4().hex[:10]}"  # nothing of another test in the shared registry
    root = copy_workspace("pub", tmp_path, prefix=prefix)
    build = root / "BUILD.toml"
    text = build.read_text().replace("REGISTRY_HOST", host).replace("CHARTS_PREFIX", prefix)
    build.write_text(text.replace("charts = \"" + prefix + "/charts\"\n", f"charts = \"{prefix}/charts\"\n{registry_extra}", 1))
    return root


def by_label(result: api.MakeResult) -> dict[str, api.Outcome]:
    return {o.label: o for o in result.outcomes}


def members(artifact: str) -> dict[str, bytes]:
    return charts.read_members(Path(artifact).read_bytes())


# -- 1. image blocks are checked for shape at plan time ---------------------------------


@pytest.mark.parametrize("block, line, problem", [
    ("  image:\n    pullPolicy: IfNotPresent\n", 5, "it has no repository and no tag (it has: pullPolicy)"),
    ("  image:\n    repository: x\n", 5, "it has no tag (it has: repository)"),
    ("  image: nginx:1\n", 5, "it is a single value"),
    ("  image:\n    repository: {registry: r, name: n}\n    tag: x\n", 5, "its repository must be plain values"),
])
def test_values_path_must_be_an_image_block(tmp_path: Path, block: str, line: int, problem: str) -> None:
    root = pub_ws(tmp_path)
    values = root / "chart" / "values.yaml"
    text = values.read_text()
    start = text.index("  # the web server image\n")
    values.write_text(text[:start] + block + text[text.index("  port: 8080"):])
    with pytest.raises(OllyError) as info:
        api.plan(root, [], check_engine=False)
    err = info.value
    assert err.reason == "chart-invalid"
    assert err.location == f"chart/values.yaml:{line}", err.line()
    assert "values path 'web.image'" in err.message and problem in err.message, err.message


def test_missing_values_path_is_located_at_its_nearest_parent(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    build = root / "BUILD.toml"
    build.write_text(build.read_text().replace('"web.image" = "web"', '"web.img" = "web"'))
    with pytest.raises(OllyError) as info:
        api.plan(root, [], check_engine=False)
    assert info.value.location == "chart/values.yaml:4"  # `web:`, which has no `img`
    assert "values path 'web.img' does not exist" in info.value.message


# -- 2. registry values overlays --------------------------------------------------------

OVERLAY = 'values = { "web.env.MODE" = "ui", "otelCollector.enabled" = false, "replicas" = 2 }\n'


def test_overlay_is_merged_into_the_values_file_only(tmp_path: Path, registry) -> None:
    root = pub_ws(tmp_path, registry.host, OVERLAY + 'values_file = "deploy/local.yaml"\n')
    (root / "deploy").mkdir()
    (root / "deploy" / "local.yaml").write_text("# local cluster\ninstrumentation:\n  enabled: false\nweb:\n  env:\n    MODE: frontend\n")
    eng = FakeEngine()
    first = by_label(api.make(root, [], engine=eng, registry="test"))
    chart = first["chart"]
    assert chart.status == "built", chart.reason
    assert Path(chart.artifact).parent == root / "dist" / "charts" / "test"
    values_file = Path(chart.artifact).with_suffix(".values.yaml")
    text = values_file.read_text()
    assert text.startswith("# local cluster\n")  # the file's comments survive
    values = yaml.safe_load(text)
    assert values["web"]["env"] == {"MODE": "ui"}  # `values` wins over values_file
    assert values["otelCollector"] == {"enabled": False} and values["replicas"] == 2
    assert values["instrumentation"] == {"enabled": False}
    assert values["web"]["image"]["repository"].startswith(f"{registry.host}/")
    assert set(values["tools"]["image"]) == {"repository", "tag"}
    # The package is registry-independent apart from its pins: no overlay in it.
    packaged = yaml.safe_load(members(chart.artifact)["fixture/values.yaml"])
    assert packaged["replicas"] == 1 and "otelCollector" not in packaged and "env" not in packaged["web"]

    # A changed overlay rewrites the values file; the package (key, version) stays cached.
    (root / "deploy" / "local.yaml").write_text("instrumentation:\n  enabled: true\n")
    second = by_label(api.make(root, [], engine=eng, registry="test"))["chart"]
    assert (second.status, second.key, second.version) == ("cached", chart.key, chart.version), second.reason
    assert any(n.startswith(f"wrote {values_file.name}") for n in second.notes), second.notes
    assert yaml.safe_load(values_file.read_text())["instrumentation"] == {"enabled": True}
    third = by_label(api.make(root, [], engine=eng, registry="test"))["chart"]
    assert not any(n.startswith("wrote ") for n in third.notes)  # unchanged: not rewritten


def test_overlay_setting_a_pinned_block_fails_at_plan_time(tmp_path: Path, registry) -> None:
    root = pub_ws(tmp_path, registry.host, 'values_file = "local.yaml"\n')
    (root / "local.yaml").write_text("web:\n  image:\n    tag: latest\n")
    with pytest.raises(OllyError) as info:
        api.plan(root, [], registry="test", check_engine=False)
    assert info.value.reason == "chart-invalid"
    assert "registry 'test' values (local.yaml) sets web.image.tag, which olly pins" in info.value.message
    (root / "local.yaml").write_text("- a list\n")
    with pytest.raises(OllyError, match="local.yaml: a values file is a mapping at the top"):
        api.plan(root, [], registry="test", check_engine=False)


def test_values_document_merges_overlay_and_pins() -> None:
    reg = Registry("r", "r.example", "r.example", False, "charts", values=(("a.b.c", 1), ("web.image.pullPolicy", "Always")))
    overlay = charts.load_overlay(Path("/nonexistent"), reg)
    doc = yaml.safe_load(charts.values_document({"web.image": charts.Pin("r/web", "olly-1", False)}, overlay))
    assert doc == {"a": {"b": {"c": 1}}, "web": {"image": {"pullPolicy": "Always", "repository": "r/web", "tag": "olly-1"}}}
    assert charts.load_overlay(Path("/nonexistent"), Registry("r", "h", "h", False, "charts")) is None
    with pytest.raises(OllyError, match="sets 'web' of values path 'web.image' to a value"):
        charts.check_overlay({"web": 3}, ["web.image"], reg)


def test_overlay_file_and_dotted_values_must_agree_on_mappings(tmp_path: Path) -> None:
    (tmp_path / "v.yaml").write_text("\ufeffa: 1\nkeep: [x, y]\n")  # a BOM, as Helm's loader allows
    reg = Registry("r", "h", "h", False, "charts", values=(("a.b", 2),), values_file="v.yaml")
    with pytest.raises(OllyError, match="registry 'r' values path 'a.b': v.yaml sets 'a' to a value"):
        charts.load_overlay(tmp_path, reg)
    reg = Registry("r", "h", "h", False, "charts", values=(("c.d", 2),), values_file="v.yaml")
    assert yaml.safe_load(charts.values_document({}, charts.load_overlay(tmp_path, reg))) == {
        "a": 1, "keep": ["x", "y"], "c": {"d": 2}}


# -- 3. and 4. dist/ layout and file modes ------------------------------------------------


def test_without_registry_packages_go_to_unpublished(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    chart = by_label(api.make(root, [], engine=FakeEngine()))["chart"]
    assert Path(chart.artifact).parent == root / "dist" / "charts" / "_unpublished"
    assert Path(chart.artifact).with_suffix(".values.yaml").is_file()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_dist_files_get_0666_less_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    root = pub_ws(tmp_path)
    old = os.umask(umask)
    try:
        chart = by_label(api.make(root, [], engine=FakeEngine()))["chart"]
    finally:
        os.umask(old)
    tgz = Path(chart.artifact)
    for path in (tgz, tgz.with_suffix(".values.yaml"), *(root / ".cache" / "charts").glob("*.tgz")):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


# -- 5. package bytes as `helm package` makes them ---------------------------------------------


def test_bom_is_stripped_and_no_empty_app_version_is_added(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    chart_dir = root / "chart"
    meta = (chart_dir / "Chart.yaml").read_text().replace('appVersion: "0.0.0"\n', "")
    bom = charts.UTF8_BOM
    (chart_dir / "Chart.yaml").write_bytes(bom + meta.encode())
    (chart_dir / "values.yaml").write_bytes(bom + (chart_dir / "values.yaml").read_bytes())
    (chart_dir / "templates" / "notes.txt").write_bytes(bom + b"hello\n")
    (chart_dir / "README.md").write_bytes(bom + b"# chart\n")
    eng = FakeEngine()
    chart = by_label(api.make(root, [], engine=eng))["chart"]  # not a git checkout: no version stamped
    files = members(chart.artifact)
    assert all(not data.startswith(bom) for data in files.values())
    assert files["fixture/templates/notes.txt"] == b"hello\n" and files["fixture/README.md"] == b"# chart\n"
    assert "appVersion" not in yaml.safe_load(files["fixture/Chart.yaml"])
    stamped = by_label(api.make(root, [], engine=eng, version="v2.0.0"))["chart"]
    assert yaml.safe_load(members(stamped.artifact)["fixture/Chart.yaml"])["appVersion"] == "v2.0.0"


def test_oci_annotations_are_helm_push_s_without_created() -> None:
    meta = {"name": "c", "version": "1.0.0", "description": "d", "home": "https://h", "sources": ["https://s1", "https://s2"],
            "maintainers": [{"name": "Ann", "email": "ann@x"}, {"name": "Bob"}, {"email": "c@x"}],
            "annotations": {"org.opencontainers.image.title": "not-c", "org.opencontainers.image.url": "https://u",
                            "team": "obs"}}
    assert charts.oci_annotations(meta) == {
        "org.opencontainers.image.title": "c", "org.opencontainers.image.version": "1.0.0",
        "org.opencontainers.image.description": "d", "org.opencontainers.image.url": "https://u",
        "org.opencontainers.image.source": "https://s1",
        "org.opencontainers.image.authors": "Ann (ann@x), Bob,  (c@x)", "team": "obs",
    }
    assert charts.oci_annotations({"name": "c", "version": "1.0.0", "description": "  "}) == {
        "org.opencontainers.image.title": "c", "org.opencontainers.image.version": "1.0.0"}  # blank: left out


def test_chart_annotations_must_be_strings(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    chart = root / "chart" / "Chart.yaml"
    chart.write_text(chart.read_text() + "annotations:\n  replicas: 3\n")
    with pytest.raises(OllyError, match="annotations must map strings to strings"):
        api.plan(root, [], check_engine=False)


# -- 7. olly why for charts ----------------------------------------------------------------


def test_why_explains_a_chart(tmp_path: Path) -> None:
    root = pub_ws(tmp_path)
    assert api.why(root, "chart")["built_before"] is False
    eng = FakeEngine()
    first = by_label(api.make(root, [], engine=eng, version="v1.0.0"))
    assert api.why(root, "chart")["changes"][-2:] == ["~ version: 1.0.0 -> 0.3.0", "~ appVersion: v1.0.0 -> 0.0.0"]
    api.make(root, [], engine=eng)  # the version olly why plans with (no git: the chart's own)
    info = api.why(root, "chart")
    assert (info["built_before"], info["current_key_built"], info["changes"]) == (True, True, [])

    (root / "chart" / "templates" / "deployment.yaml").write_text("kind: Deployment\n")
    (root / "chart" / "templates" / "extra.yaml").write_text("kind: ConfigMap\n")
    (root / "web" / "index.html").write_text("<h1>v2</h1>\n")
    info = api.why(root, "chart")
    old_web = first["web"].ref.rsplit(":", 1)[1]
    new_web = api.plan(root, ["web"], check_engine=False).by_label()["web"].tag
    assert info["current_key_built"] is False and info["previous_key"] != info["key"]
    assert info["changes"] == ["~ file templates/deployment.yaml (content)", "+ file templates/extra.yaml",
                               f"~ pin web.image: {old_web} -> {new_web}"]
    reasons = api.plan(root, ["chart"], check_engine=False).by_label()["chart"].reasons
    assert reasons == ["an image it pins will be rebuilt"]  # its key is known only after the build
    api.make(root, ["web"], engine=eng)
    reasons = api.plan(root, ["chart"], check_engine=False).by_label()["chart"].reasons
    assert "1 file modified: templates/deployment.yaml" in reasons[-1] and "pin web.image changed" in reasons[-1]


def test_why_of_a_chart_from_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from olly.cli import cli

    root = pub_ws(tmp_path)
    api.make(root, [], engine=FakeEngine())
    (root / "chart" / "values.yaml").write_text((root / "chart" / "values.yaml").read_text().replace("replicas: 1", "replicas: 3"))
    out = CliRunner().invoke(cli, ["-C", str(root), "why", "chart"])
    assert out.exit_code == 0, out.output
    assert "  ~ file values.yaml (content)" in out.output.splitlines()
