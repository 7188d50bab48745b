"""An in-memory stand-in for olly.engine.Engine, for fast unit tests.

It consumes the tar stream exactly like the daemon would (so TarStream's
verification runs) and derives image ids from the bytes it received.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any, Callable

from olly.engine import BuildFailed, BuildRequest


class FakeEngine:
    endpoint = "fake://"
    platform = "linux/amd64"

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.builds: list[str] = []  # dockerfile_display of each build, in order
        self.received: dict[str, dict[str, bytes]] = {}  # image id -> tar members
        self.types: dict[str, dict[str, bytes]] = {}  # image id -> tar member types (tarfile.REGTYPE, ...)
        self.during_build: Callable[[BuildRequest], None] | None = None

    def inspect(self, ref: str) -> dict[str, Any] | None:
        if ref in self.images:
            return self.images[ref]
        for image in self.images.values():
            if ref in image["RepoTags"]:
                return image
        return None

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        ref = f"{repository}:{tag}"
        for image in self.images.values():
            if ref in image["RepoTags"]:
                image["RepoTags"].remove(ref)
        self.images[image_id]["RepoTags"].append(ref)

    def remove(self, image_id: str) -> None:
        del self.images[image_id]

    def discard(self, image_id: str) -> None:
        self.images.pop(image_id, None)

    def build(self, req: BuildRequest) -> str:
        if self.during_build:
            self.during_build(req)
        data = b"".join(req.context)
        members: dict[str, bytes] = {}
        types: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m) if m.isfile() else None
                members[m.name] = f.read() if f else b""
                types[m.name] = m.type
        dockerfile = members.get(req.dockerfile_name)
        if dockerfile is None:
            raise BuildFailed(f"Dockerfile {req.dockerfile_name} missing from context", [])
        if b"FAIL" in dockerfile:
            raise BuildFailed("The command '/bin/sh -c false' returned a non-zero code: 1", ["Step 2/2 : RUN false"])
        h = hashlib.sha256(data + repr(sorted(req.args.items())).encode() + repr(req.labels).encode())
        image_id = "sha256:" + h.hexdigest()
        os_name, arch = (req.platform or self.platform).split("/")[:2]
        self.images[image_id] = {"Id": image_id, "RepoTags": [], "Config": {"Labels": dict(req.labels)},
                                 "Os": os_name, "Architecture": arch}
        self.received[image_id] = members
        self.types[image_id] = types
        self.builds.append(req.dockerfile_display)
        return image_id
