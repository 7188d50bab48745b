"""olly.engine without an engine: what a build sends (parameters, proxies, registry hosts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olly.engine import BuildRequest, classic_build_params, registry_host


@pytest.mark.parametrize("image,host", [
    ("python:3.12-slim", "docker.io"), ("library/python", "docker.io"), ("org/app:1", "docker.io"),
    ("index.docker.io/org/app", "docker.io"), ("ghcr.io/org/app:1", "ghcr.io"),
    ("localhost/app", "localhost"), ("localhost:5000/app@sha256:" + "a" * 64, "localhost:5000"),
    ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000"), ("-bad.io/x", None),
])
def test_registry_host_as_docker_resolves_it(image: str, host: str | None) -> None:
    assert registry_host(image) == host


def _request(**kw: object) -> BuildRequest:
    base = dict(context=iter(()), dockerfile_name="Dockerfile", dockerfile=b"FROM scratch\n", dockerfile_display="Dockerfile",
                args={"A": "1"}, target=None, platform="linux/amd64", network="none", labels={"l": "v"},
                log_path=Path("/dev/null"))
    return BuildRequest(**{**base, **kw})  # type: ignore[arg-type]


def test_classic_params_carry_the_docker_config_proxies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the docker CLI and docker-py do: the config's proxies become build args (both cases),
    and an arg the target sets itself wins."""
    (tmp_path / "config.json").write_text(json.dumps({"proxies": {"default": {
        "httpProxy": "http://p:3128", "noProxy": "localhost", "ftpProxy": ""}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    params = classic_build_params(_request(args={"A": "1", "no_proxy": "mine"}), "unix:///var/run/docker.sock")
    assert json.loads(params["buildargs"]) == {"HTTP_PROXY": "http://p:3128", "http_proxy": "http://p:3128",
                                               "NO_PROXY": "localhost", "no_proxy": "mine", "A": "1"}
    assert {k: params[k] for k in ("dockerfile", "platform", "networkmode", "rm", "forcerm", "nocache", "pull")} == {
        "dockerfile": "Dockerfile", "platform": "linux/amd64", "networkmode": "none", "rm": "1", "forcerm": "1",
        "nocache": "0", "pull": "0"}
    assert "target" not in params and json.loads(params["labels"]) == {"l": "v"}


def test_classic_params_without_a_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    params = classic_build_params(_request(target="final", network=None, no_cache=True), "unix:///x.sock")
    assert json.loads(params["buildargs"]) == {"A": "1"}
    assert params["target"] == "final" and "networkmode" not in params and params["nocache"] == "1"


def test_an_engine_s_own_proxies_win_and_a_broken_config_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the docker CLI: ``proxies`` keyed by the engine's address beat ``default``. A config
    olly cannot read gives no proxies, not a failed build (docker-py ignored it too)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"proxies": {
        "default": {"httpProxy": "http://default:1"}, "tcp://far:2376": {"httpsProxy": "http://far:2"}}}))
    far = json.loads(classic_build_params(_request(), "tcp://far:2376")["buildargs"])
    near = json.loads(classic_build_params(_request(), "unix:///var/run/docker.sock")["buildargs"])
    assert far == {"HTTPS_PROXY": "http://far:2", "https_proxy": "http://far:2", "A": "1"}
    assert near == {"HTTP_PROXY": "http://default:1", "http_proxy": "http://default:1", "A": "1"}
    (tmp_path / "config.json").write_text("{bad")
    assert json.loads(classic_build_params(_request(), "unix:///x.sock")["buildargs"]) == {"A": "1"}


def test_buildkit_params_carry_the_docker_config_proxies_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker build` through buildx forwards them as well: the same build args as classic."""
    from olly.buildkitbuild import build_params

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"proxies": {
        "default": {"httpProxy": "http://default:1"}, "tcp://far:2376": {"httpsProxy": "http://far:2"}}}))
    for endpoint in ("unix:///var/run/docker.sock", "tcp://far:2376"):
        assert json.loads(build_params(_request(args={"A": "1", "http_proxy": "mine"}), None, endpoint)["buildargs"]) == \
            json.loads(classic_build_params(_request(args={"A": "1", "http_proxy": "mine"}), endpoint)["buildargs"])
    assert json.loads(build_params(_request(), None, "unix:///x.sock")["buildargs"])["HTTP_PROXY"] == "http://default:1"
    assert json.loads(build_params(_request())["buildargs"]) == {"A": "1"}  # no engine named: none
