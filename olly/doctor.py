"""`olly doctor`: check, before a run, what the run will need, and say how to fix each miss.

One check per line: the workspace file, the engine (kind, version, builder), each registry
of BUILD.toml (reachable, and whose credentials answer), qemu binfmt handlers for every
foreign platform BUILD.toml builds, the base-image lock, a writable ``.cache/`` and a
readable git version. Nothing is changed: a check only reads (and asks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from olly import baselock, credentials, locking
from olly.config import ImageTarget, Registry, Workspace, find_workspace, load_workspace
from olly.engine import PODMAN, Engine
from olly.errors import OllyError
from olly.plan import native_platform
from olly.registry import Endpoint, RegistryClient
from olly.versions import git_version

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
REGISTRY_TIMEOUT = 10.0  # a doctor answers quickly: a registry slower than this is a miss anyway
# OCI architecture -> the name qemu's binfmt handler is registered under (qemu-<name>).
QEMU_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le",
             "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el", "loong64": "loongarch64"}


@dataclass
class Check:
    name: str  # e.g. "engine", "registry ghcr", "qemu arm64"
    ok: bool
    detail: str
    fix: str = ""  # how to fix a miss (empty when ok, or when detail already says it)


@dataclass
class Checkup:
    root: Path | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run(start: Path) -> Checkup:
    ws, first = _workspace(start)
    up = Checkup(ws.root if ws else None, [first])
    engine, check = engine_check()
    up.checks.append(check)
    if ws is None:
        return up
    native = engine.platform if engine is not None else native_platform()
    repository = next((t.repository for t in ws.targets.values() if isinstance(t, ImageTarget)), None)
    up.checks += [registry_check(reg, reg.push_repository(repository) if repository else None)
                  for _, reg in sorted(ws.registries.items())]
    up.checks += qemu_checks(ws, native, engine)
    up.checks += [lock_check(ws, native), cache_check(ws), git_check(ws.root)]
    return up


def _workspace(start: Path) -> tuple[Workspace | None, Check]:
    try:
        ws = load_workspace(find_workspace(start))
    except OllyError as exc:
        fix = "run `olly init` to write one" if exc.reason == "no-workspace" else "fix BUILD.toml as the message says"
        return None, Check("workspace", False, exc.line(), fix)
    targets = len(ws.targets)
    return ws, Check("workspace", True, f"{ws.build_file or ws.root}: {targets} target(s)")


def engine_check() -> tuple[Engine | None, Check]:
    try:
        engine = Engine()
    except OllyError as exc:
        return None, Check("engine", False, exc.message, "start the engine (dockerd, or `podman system service`) "
                           "or point DOCKER_HOST at it")
    from olly import buildkit

    builder = ("buildah, through Podman's Docker-compatible API (builder auto: classic)" if engine.kind == PODMAN
               else "BuildKit through the Docker API (builder auto; olly needs no buildx)" if buildkit.supports(engine)
               else "the classic builder of the Docker API (API < 1.39: no BuildKit)")
    detail = (f"{engine.kind} {engine.engine_version or '?'} at {engine.endpoint} (API {engine.version}, "
              f"{engine.platform}); builds with {builder}")
    return engine, Check("engine", True, detail)


def registry_check(registry: Registry, repository: str | None = None) -> Check:
    """Reachable, and the user's credentials (or none) accepted for reading: a tag list of one
    of the workspace's repositories goes through olly's own client and auth."""
    name = f"registry {registry.name}"
    client = RegistryClient(Endpoint(registry.name, registry.host, registry.insecure), timeout=REGISTRY_TIMEOUT)
    try:
        client.list_tags(repository or registry.push_repository(f"{registry.charts}/olly-doctor"))
        user = credentials.resolve(registry.host).username
    except OllyError as exc:
        return Check(name, False, exc.message, _registry_fix(exc.reason, registry))
    who = f"as {user}" if user else "anonymously (no `docker login` for it: pushing may need one)"
    scheme = "http" if registry.insecure else "https"
    return Check(name, True, f"{scheme}://{registry.host} answers, {who}")


def _registry_fix(reason: str, registry: Registry) -> str:
    if reason == "registry-denied":
        return f"docker login {registry.host}"
    if reason == "registry-unreachable":
        return f"check that {registry.host} is up and reachable from here (DNS, VPN, firewall)"
    return "see the message; `olly --debug doctor` shows more"


def foreign_platforms(ws: Workspace, native: str) -> list[str]:
    """Platforms BUILD.toml builds (images' own, registries') whose architecture is not ``native``'s."""
    wanted = {p for t in ws.targets.values() if isinstance(t, ImageTarget) for p in t.platforms}
    wanted |= {p for r in ws.registries.values() for p in r.platforms}
    arch = native.split("/")[1]
    return sorted(p for p in wanted if p.split("/")[1] != arch)


def qemu_checks(ws: Workspace, native: str, engine: Engine | None) -> list[Check]:
    foreign = foreign_platforms(ws, native)
    if not foreign:
        return [Check("qemu", True, f"no platform other than {native} in BUILD.toml: none needed")]
    remote = "" if engine is None or engine.endpoint.startswith("unix://") else \
        f" (checked on this machine; the engine at {engine.endpoint} needs it on its own host)"
    return [binfmt_check(arch, remote) for arch in sorted({p.split("/")[1] for p in foreign})]


def binfmt_check(arch: str, remote: str = "") -> Check:
    handler = BINFMT_DIR / f"qemu-{QEMU_ARCH.get(arch, arch)}"
    fix = (f"docker run --privileged --rm tonistiigi/binfmt --install {arch} "
           "(or: apt-get install qemu-user-static binfmt-support)")
    try:
        lines = handler.read_text().splitlines()
    except OSError:
        return Check(f"qemu {arch}", False, f"no binfmt handler {handler}: {arch} RUN steps cannot run{remote}", fix)
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if not lines or lines[0].strip() != "enabled":
        return Check(f"qemu {arch}", False, f"{handler} is disabled{remote}", f"echo 1 > {handler}, or {fix}")
    if "F" not in flags:  # without F the interpreter must exist inside every build container
        return Check(f"qemu {arch}", False, f"{handler} lacks the F (fix-binary) flag: builds in containers "
                     f"cannot find the interpreter{remote}", f"re-register it: {fix}")
    return Check(f"qemu {arch}", True, f"{handler} enabled (flags {flags}){remote}")


def lock_check(ws: Workspace, native: str) -> Check:
    try:
        problems = locking.check(ws, native)
    except OllyError as exc:
        return Check("lock", False, exc.line(), "fix the file the message names")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Check("lock", False, problems[0] + more, "olly lock")
    return Check("lock", True, f"{baselock.LOCK_FILE} pins every base image the Dockerfiles use")


def cache_check(ws: Workspace) -> Check:
    cache = ws.cache_dir
    where = cache if cache.exists() else ws.root
    if not _writable(where) or not all(_writable(p) for p in (cache / "olly.db", cache / "logs") if p.exists()):
        return Check("cache", False, f"{where} is not writable by this user",
                     f"sudo chown -R {os.getuid()} {cache} (or delete {cache}: olly rebuilds what it needs)")
    return Check("cache", True, f"{cache} writable" + ("" if cache.exists() else " (created on the first run)"))


def _writable(path: Path) -> bool:
    mode = os.W_OK | (os.X_OK if path.is_dir() else 0)
    return os.access(path, mode)


def git_check(root: Path) -> Check:
    try:
        version = git_version(root)
    except OllyError as exc:
        return Check("git", False, exc.message)
    if version is None:
        return Check("git", True, "no git version here (no git, no repository or no commit): charts keep "
                     "Chart.yaml's version; pass --version to publish")
    return Check("git", True, f"version {version} (git describe)")
