"""BUILD.toml loading: valid workspaces and one located error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from olly.config import ChartTarget, ImageTarget, load_workspace, locate_line
from olly.errors import OllyError

REPO = Path(__file__).resolve().parent.parent


def write_ws(tmp_path: Path, toml: str, files: tuple[str, ...] = ("apps/a/Dockerfile",)) -> Path:
    for f in files:
        p = tmp_path / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("FROM scratch\n")
    (tmp_path / "BUILD.toml").write_text(toml)
    return tmp_path


def error_of(root: Path) -> OllyError:
    with pytest.raises(OllyError) as info:
        load_workspace(root)
    return info.value


def test_repo_workspace_loads() -> None:
    ws = load_workspace(REPO)
    images = {l for l, t in ws.targets.items() if isinstance(t, ImageTarget)}
    charts = {l for l, t in ws.targets.items() if isinstance(t, ChartTarget)}
    assert images == {"apps/ollyscale", "apps/ollyscale-ui", "apps/opamp-server", "apps/demo"}
    assert charts == {"charts/ollyscale", "charts/ollyscale-demos"}


def test_defaults(tmp_path: Path) -> None:
    ws = load_workspace(write_ws(tmp_path, '[images."apps/a"]\nrepository = "x/a"\n'))
    t = ws.targets["apps/a"]
    assert isinstance(t, ImageTarget)
    assert (t.context, t.dockerfile, t.args, t.depends_on) == ("apps/a", "apps/a/Dockerfile", {}, [])


def test_missing_dockerfile_names_file_line_and_key(tmp_path: Path) -> None:
    root = write_ws(tmp_path, '[workspace]\nname = "x"\n\n[images."apps/a"]\nrepository = "x/a"\ndockerfile = "apps/a/Dockerfile.x"\n')
    err = error_of(root)
    assert err.line().endswith('BUILD.toml:6: images."apps/a".dockerfile: file not found: apps/a/Dockerfile.x')
    assert err.exit_code == 2


@pytest.mark.parametrize(
    "toml, line, fragment",
    [
        ('[images."apps/a"]\nrepository = "x/a"\ncolour = "red"\n', 3, 'images."apps/a".colour: unknown key'),
        ('[images."apps/a"]\nrepository = 3\n', 2, "repository: input should be a valid string"),
        ('[images."apps/a"]\nrepository = "x/a"\nargs = { N = 1 }\n', 3, "args.N"),
        ('[images."apps/a"]\nrepository = "x/a"\n[images."apps/a"]\n', 3, "invalid TOML"),
        ('[images."apps/a"\n', 1, "invalid TOML"),
        ('[images."apps/a"]\n', 1, "required key is missing"),
        ('[images."../x"]\nrepository = "x/a"\n', 1, "escapes the workspace"),
        ('[images."/abs"]\nrepository = "x/a"\n', 1, "workspace-relative"),
        ('[images."apps//a"]\nrepository = "x/a"\n', 1, "normalised"),
        ('[images."apps/a"]\nrepository = "x/a"\ndepends_on = ["apps/b"]\n', 3, "unknown image target 'apps/b'"),
        ('[images."apps/a"]\nrepository = "X/A"\n', 2, "invalid repository name"),
        ('[images."apps/a"]\nrepository = "ghcr.io/x/a"\n', 2, "registry host"),
        ('[images."apps/a"]\nrepository = "x/a"\nplatform = "amd64"\n', 3, "invalid platform"),
        ('[images."apps/a"]\nrepository = "x/a"\ncontext = "nope"\n', 3, "directory not found: nope"),
        ('[images."apps/a"]\nrepository = "x/a"\ninputs = ["../secret"]\n', 3, "escapes the workspace"),
        ('[charts."apps/a"]\nimages = {}\n', 1, "no Chart.yaml"),
        ("", None, "declares no targets"),
        ("[workspace]\n", None, "declares no targets"),
    ],
)
def test_located_errors(tmp_path: Path, toml: str, line: int | None, fragment: str) -> None:
    err = error_of(write_ws(tmp_path, toml))
    text = err.line()
    assert fragment in text
    if line is not None:
        assert f"BUILD.toml:{line}:" in text
    assert "\n" not in text


def test_dependency_arg_collision(tmp_path: Path) -> None:
    toml = ('[images."apps/a"]\nrepository = "x/a"\n[images."b/a"]\nrepository = "x/b"\n'
            '[images."c"]\nrepository = "x/c"\ndepends_on = ["apps/a", "b/a"]\n')
    err = error_of(write_ws(tmp_path, toml, ("apps/a/Dockerfile", "b/a/Dockerfile", "c/Dockerfile")))
    assert "would both pass build arg A" in err.line()


def test_huge_and_binary_files(tmp_path: Path) -> None:
    (tmp_path / "BUILD.toml").write_bytes(b"#" * (2 << 20))
    assert "limit" in error_of(tmp_path).line()
    (tmp_path / "BUILD.toml").write_bytes(b"\xff\xfe")
    assert "not UTF-8" in error_of(tmp_path).line()


def test_locate_line_prefers_deepest_key() -> None:
    text = '[images."a"]\nrepository = "r"\n\n[images."b"]\nrepository = "s"\nargs = { X = "1" }\n'
    assert locate_line(text, ("images", "b", "repository")) == 5
    assert locate_line(text, ("images", "b", "args", "X")) == 6
    assert locate_line(text, ("images", "a")) == 1


# -- names the engine or a registry would refuse at run time (issue #7, item 15) ----------------

LONG_PREFIX = "r.example:5000/" + "p" * 200  # 215 characters: room for a 40-character repository


@pytest.mark.parametrize(
    "toml, line, fragment",
    [
        ('[images."apps/a"]\nrepository = "x/A"\n', 2, "invalid repository name"),
        ('[images."apps/a"]\nrepository = "x//a"\n', 2, "invalid repository name"),
        (f'[images."apps/a"]\nrepository = "{"a" * 256}"\n', 2, "256 characters long, over the 255"),
        (f'[registries.r]\npush = "{LONG_PREFIX}"\n[images."apps/a"]\nrepository = "x/{"a" * 40}"\n', 4,
         "images.\"apps/a\".repository: under registry 'r' (push = "),
        (f'[registries.r]\npush = "r.example"\npull = "{LONG_PREFIX}"\n[images."apps/a"]\nrepository = "x/{"a" * 40}"\n', 5,
         "(pull = "),
        (f'[registries.r]\npush = "{LONG_PREFIX}"\ncharts = "{"c" * 40}"\n[images."apps/a"]\nrepository = "x/a"\n', 3,
         "registries.r.charts: "),
        ('[registries.r]\npush = "r.example:65536"\n[images."apps/a"]\nrepository = "x/a"\n', 2,
         "registries.r.push: invalid endpoint 'r.example:65536': port 65536 is not in 1-65535"),
        ('[registries.r]\npush = "r.example"\npull = "r.example:99999/p"\n[images."apps/a"]\nrepository = "x/a"\n', 3,
         "registries.r.pull: invalid endpoint"),
        ('[registries.r]\npush = "r.example:0"\n[images."apps/a"]\nrepository = "x/a"\n', 2, "port 0"),
    ],
)
def test_names_refused_at_load_time(tmp_path: Path, toml: str, line: int, fragment: str) -> None:
    err = error_of(write_ws(tmp_path, toml))
    assert err.exit_code == 2 and err.reason == "config-invalid"
    assert f"BUILD.toml:{line}: " in err.line() and fragment in err.line(), err.line()


def test_longest_reference_names_load(tmp_path: Path) -> None:
    """The limits are exact: 255 characters is fine, with and without a registry."""
    repo = "x/" + "a" * (255 - len(LONG_PREFIX) - 1 - 2)
    assert len(f"{LONG_PREFIX}/{repo}") == 255
    root = write_ws(tmp_path, f'[registries.r]\npush = "{LONG_PREFIX}"\n[images."apps/a"]\nrepository = "{repo}"\n')
    assert load_workspace(root).registries["r"].push == LONG_PREFIX
    root = write_ws(tmp_path, f'[images."apps/a"]\nrepository = "{"b" * 255}"\n')
    assert load_workspace(root).targets["apps/a"].repository == "b" * 255


# Bidi controls (U+202A-E, U+2066-9), zero-width and direction marks (U+200B-F), BOM, line separator.
INVISIBLE = ["\u202a", "\u202e", "\u2066", "\u2069", "\u200b", "\u200d", "\u200f", "\ufeff", "\u2028", "\x85"]


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
@pytest.mark.parametrize("section", ["images", "charts"])
def test_label_with_invisible_character(tmp_path: Path, char: str, section: str) -> None:
    label = f"apps/a{char}b"
    (tmp_path / label).mkdir(parents=True)  # a matching directory: the label itself is the problem
    (tmp_path / label / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / label / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
    body = 'repository = "x/a"\n' if section == "images" else ""
    err = error_of(write_ws(tmp_path, f'[{section}."{label}"]\n{body}'))
    text = err.line()
    assert err.exit_code == 2
    assert f'BUILD.toml:1: {section}."apps/a' in text, text
    assert "character" in text and char not in text  # escaped, never printed raw
    assert "\n" not in text


def test_invalid_platforms_are_located_config_errors(tmp_path: Path) -> None:
    import re

    from olly.config import load_workspace
    from olly.errors import OllyError

    root = tmp_path / "w"
    (root / "a").mkdir(parents=True)
    (root / "a" / "Dockerfile").write_text("FROM scratch\n")
    for body, needle in ((' platforms = ["linux"]', "invalid platform 'linux'"),
                         (' platforms = []', "at least one platform"),
                         (' platforms = ["linux/amd64", "linux/amd64"]', "twice"),
                         (' platform = "linux/amd64"\n platforms = ["linux/arm64"]', "not both")):
        (root / "BUILD.toml").write_text(f'[images.a]\nrepository = "x/a"\n{body}\n')
        with pytest.raises(OllyError) as exc:
            load_workspace(root)
        assert needle in exc.value.message and re.search(r"BUILD\.toml:\d+$", exc.value.location)


# -- registries: names and values overlays (issue #13) -------------------------------------

CHART_WS = ("apps/a/Dockerfile", "c/Chart.yaml")
IMAGE_AND_CHART = '[images."apps/a"]\nrepository = "x/a"\n[charts.c]\nimages = { "web.image" = "apps/a" }\n'


@pytest.mark.parametrize(
    "registry, line, fragment, reason",
    [
        ('[registries._unpublished]\npush = "r.example"\n', 1, "invalid registry name '_unpublished'", "config-invalid"),
        ('[registries."a.b"]\npush = "r.example"\n', 1, "letters, digits, '-' and '_'", "config-invalid"),
        ('[registries.Local]\npush = "r.example"\n[registries.local]\npush = "r.example"\n', 3,
         "registry names 'Local' and 'local' differ only in case", "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues = { "a..b" = 1 }\n', 3, "an empty key between dots", "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues = { "a" = 1, "a.b" = 2 }\n', 3,
         "sets a key inside 'a', which is set to a value", "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues = { "a.b" = 1, a = { b = 2 } }\n', 3, "'a.b' is set twice", "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues = { "a" = [1, 2] }\n', 3, "not list; put lists in values_file",
         "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues = { "web.image.tag" = "x" }\n', 3,
         "would override the image block 'web.image' that olly pins in c", "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues = { "web" = "x" }\n', 3, "image block 'web.image'", "config-invalid"),
        ('[registries.r]\npush = "r.example"\nvalues_file = "nope.yaml"\n', 3, "file not found: nope.yaml",
         "config-missing-file"),
        ('[registries.r]\npush = "r.example"\nvalues_file = "../x.yaml"\n', 3, "escapes the workspace", "config-invalid"),
    ],
)
def test_registry_settings_refused_at_load_time(tmp_path: Path, registry: str, line: int, fragment: str, reason: str) -> None:
    root = write_ws(tmp_path, registry + IMAGE_AND_CHART, CHART_WS)
    err = error_of(root)
    assert err.reason == reason and f"BUILD.toml:{line}: " in err.line() and fragment in err.line(), err.line()


def test_registry_values_load_in_both_toml_forms(tmp_path: Path) -> None:
    root = write_ws(tmp_path, '[registries.local-dev_2]\npush = "r.example"\nvalues_file = "deploy/v.yaml"\n'
                              'values = { "web.env.MODE" = "ui", "web.image.pullPolicy" = "Always" }\n'
                              '[registries.b.values]\notelCollector.enabled = false\n"otelCollector.port" = 4317\n'
                              '[registries.b]\npush = "r.example"\n'
                    + IMAGE_AND_CHART, CHART_WS + ("deploy/v.yaml",))
    ws = load_workspace(root)
    reg = ws.registries["local-dev_2"]
    assert reg.values_file == "deploy/v.yaml"
    assert dict(reg.values) == {"web.env.MODE": "ui", "web.image.pullPolicy": "Always"}
    assert dict(ws.registries["b"].values) == {"otelCollector.enabled": False, "otelCollector.port": 4317}


def test_repo_build_file_pins_existing_image_blocks() -> None:
    """BUILD.toml's values paths are the image blocks the repo's charts really have."""
    from olly import api

    the_plan = api.plan(REPO, ["charts/..."], check_engine=False)
    assert {t.label for t in the_plan.targets if t.kind == "chart"} == {"charts/ollyscale", "charts/ollyscale-demos"}


def test_links_deep_in_shared_directories_are_still_checked(tmp_path: Path) -> None:
    # rel_path remembers which directories are no symlink; a link below one still counts.
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "Dockerfile").write_text("FROM scratch\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    toml = '[images."apps/a"]\nrepository = "x/a"\n[images."apps/b"]\nrepository = "x/b"\n'
    write_ws(ws, toml, ("apps/a/Dockerfile",))
    (ws / "apps" / "b").symlink_to("a")  # inside the workspace: fine
    assert load_workspace(ws).targets["apps/b"].dockerfile == "apps/b/Dockerfile"
    (ws / "apps" / "b").unlink()
    (ws / "apps" / "b").symlink_to(tmp_path / "outside")
    err = error_of(ws)
    assert "resolves outside the workspace (through a symlink): 'apps/b'" in err.message
