"""Chart packaging pieces that need no engine: endpoint check, validation, reproducibility."""

from __future__ import annotations

import io
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
