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
