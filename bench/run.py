"""olly's benchmark harness (issue #12): builds its workloads, runs olly and its peers as
whole processes in the same run, on the same trees, and prints medians, ratios, peak RSS
and each target with whether it is met. It prints figures; it asserts nothing.

    python bench/run.py                  # full scale (several minutes)
    python bench/run.py --quick          # smaller trees, about a minute
    python bench/run.py --only plan-100k --runs 9 --json out.json

See bench/README.md for what each case measures and why the peers are fair.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MEASURE = HERE / "measure.py"
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

CASES = ("startup", "noop-make", "edit-make", "plan-100k", "first-plan-100k", "values-5mb", "inputs-glob",
         "targets-5000")
SLOW_S = 15.0  # a measure whose run takes longer than this gets at most SLOW_RUNS runs
SLOW_RUNS = 3
MB = 1_000_000


# -- scale ---------------------------------------------------------------------------------


@dataclass
class Scale:
    name: str
    files: int
    contexts: int
    ignored: int
    values_mb: float
    glob_files: int
    targets: int


FULL = Scale("full", files=100_000, contexts=200, ignored=20_000, values_mb=5.0, glob_files=100_000, targets=5_000)
QUICK = Scale("quick", files=10_000, contexts=20, ignored=2_000, values_mb=0.25, glob_files=5_000, targets=500)


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Measure:
    """One command line (or sequence) measured N times. ``before``/``after`` run untimed
    around every run (warm-up included), e.g. to edit a file or delete a cache."""
    name: str
    cmds: list[list[str]]
    cwd: Path
    env: dict[str, str]
    before: Callable[[], None] | None = None
    after: Callable[[Path | None], None] | None = None
    warmup: bool = True
    stdout: str = "devnull"  # or "file": kept in the work dir (for docker image ids)
    timeout: float = 1800.0
    samples: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    error: str | None = None
    unavailable: str | None = None  # a peer that cannot run here: why
    runs_cap: int | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.error else None

    @property
    def peak_rss_mb(self) -> float | None:
        return max(self.rss_kib) * 1024 / MB if self.rss_kib and not self.error else None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "cmds": [[_short_path(a) for a in c] for c in self.cmds],
                "median_s": self.median, "samples_s": self.samples, "peak_rss_mb": self.peak_rss_mb,
                "rss_mb_per_run": [k * 1024 / MB for k in self.rss_kib], "error": self.error,
                "unavailable": self.unavailable}


def _short_path(arg: str) -> str:
    return "python" if arg == sys.executable else arg


class Runner:
    def __init__(self, runs: int, work: Path) -> None:
        self.runs = runs
        self.work = work
        self.outputs = work / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.counter = 0

    def once(self, m: Measure) -> dict[str, Any] | None:
        """One run of ``m`` in a fresh wrapper process; records a failure on ``m``."""
        if m.before:
            m.before()
        self.counter += 1
        out = self.outputs / f"{self.counter:05d}.out" if m.stdout == "file" else None
        err = self.outputs / f"{self.counter:05d}.err"
        argv = [sys.executable, "-S", str(MEASURE), str(out) if out else "-", str(err), str(m.timeout), "--"]
        for i, cmd in enumerate(m.cmds):
            argv += (["---"] if i else []) + cmd
        proc = subprocess.run(argv, cwd=m.cwd, env=m.env, capture_output=True, text=True)
        stderr = err.read_text(errors="replace") if err.exists() else ""
        err.unlink(missing_ok=True)
        if proc.returncode != 0:
            m.error = f"measure wrapper failed: {proc.stderr.strip()[-500:]}"
            return None
        wall, rss, rc, failed, timed_out = proc.stdout.split()
        r = {"wall_s": float(wall), "maxrss_kib": int(rss), "rc": int(rc), "failed_cmd": int(failed),
             "timed_out": timed_out == "1"}
        if m.after:
            m.after(out)
        if r["rc"] != 0 or r["timed_out"]:
            what = f"timed out after {m.timeout:.0f} s" if r["timed_out"] else f"exit {r['rc']}"
            cmd = " ".join(_short_path(a) for a in m.cmds[max(r["failed_cmd"], 0)])
            tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
            m.error = f"`{cmd}` {what}: " + (" | ".join(tail) or "(no stderr)")
            return None
        return r

    def run(self, measures: list[Measure]) -> None:
        """A warm-up run of each measure that wants one, then N timed runs, interleaved
        (run 1 of each measure, then run 2 of each, ...) so drift hits all alike."""
        live = [m for m in measures if not m.unavailable]
        for m in live:
            if m.warmup:
                r = self.once(m)
                if r and r["wall_s"] > SLOW_S:
                    m.runs_cap = SLOW_RUNS
        for i in range(self.runs):
            for m in live:
                if m.error or (m.runs_cap is not None and len(m.samples) >= m.runs_cap):
                    continue
                r = self.once(m)
                if r is None:
                    continue
                m.samples.append(r["wall_s"])
                m.rss_kib.append(r["maxrss_kib"])
                if r["wall_s"] > SLOW_S and m.runs_cap is None:
                    m.runs_cap = SLOW_RUNS


# -- results -------------------------------------------------------------------------------


@dataclass
class Target:
    text: str
    met: bool | None  # None: not evaluated (a peer or the engine is unavailable)
    why: str = ""


@dataclass
class Row:
    label: str
    olly: Measure | None
    peer: Measure | None = None
    targets: list[Target] = field(default_factory=list)
    rss_row: bool = False  # the figure compared is olly's peak RSS

    @property
    def ratio(self) -> float | None:
        if self.olly and self.peer and self.olly.median is not None and self.peer.median:
            return self.olly.median / self.peer.median
        return None


@dataclass
class Case:
    id: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    scaled: bool = True  # its workload shrinks with --quick
    setup_s: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 0.01:
        return f"{s * 1000:.1f} ms"
    if s < 10:
        return f"{s * 1000:.0f} ms"
    return f"{s:.1f} s"


def fmt_mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:.0f} MB"


def cell(m: Measure | None) -> str:
    if m is None:
        return "-"
    if m.unavailable:
        return "n/a"
    if m.error:
        return "error"
    return fmt_s(m.median)


def ms_target(limit_s: float) -> str:
    return f"≤ {limit_s * 1000:.0f} ms" if limit_s < 10 else f"≤ {limit_s:.0f} s"


def absolute(m: Measure, limit_s: float) -> Target:
    text = ms_target(limit_s)
    if m.error:
        return Target(text, False, "olly failed")
    return Target(text, m.median is not None and m.median <= limit_s)


def relative(olly: Measure, peer: Measure, factor: float, text: str, plus_s: float = 0.0) -> Target:
    if olly.error:
        return Target(text, False, "olly failed")
    if peer.unavailable or peer.error or peer.median is None:
        return Target(text, None, f"peer unavailable: {peer.unavailable or peer.error}")
    limit = factor * peer.median + plus_s
    return Target(f"{text} (= {fmt_s(limit)})", olly.median is not None and olly.median <= limit)


def rss_target(m: Measure, limit_mb: float) -> Target:
    text = f"peak RSS ≤ {limit_mb:.0f} MB"
    if m.error:
        return Target(text, False, "olly failed")
    return Target(text, m.peak_rss_mb is not None and m.peak_rss_mb <= limit_mb)


def met_cell(targets: list[Target]) -> str:
    if not targets:
        return "-"
    words = {True: "yes", False: "NO", None: "n/a"}
    if len(targets) == 1:
        return words[targets[0].met]
    return ", ".join(words[t.met] for t in targets)


def _measures(case: Case) -> list[Measure]:
    seen: dict[int, Measure] = {}
    for row in case.rows:
        for m in (row.olly, row.peer):
            if m is not None:
                seen.setdefault(id(m), m)
    return list(seen.values())


def print_case(case: Case, quick: bool) -> None:
    print()
    print(f"== {case.id}: {case.title}")
    if case.skipped:
        print(f"   skipped: {case.skipped}")
        return
    header = ["measure", "olly", "peer", "ratio", "target", "met?", "olly RSS", "peer RSS"]
    lines = []
    for row in case.rows:
        olly_fig = fmt_mb(row.olly.peak_rss_mb) if row.rss_row and row.olly else cell(row.olly)
        peer_fig = ("-" if row.peer is None else
                    (fmt_mb(row.peer.peak_rss_mb) if row.rss_row and not (row.peer.error or row.peer.unavailable)
                     else cell(row.peer)))
        ratio = "-"
        if row.rss_row and row.olly and row.peer and row.olly.peak_rss_mb and row.peer.peak_rss_mb:
            ratio = f"{row.olly.peak_rss_mb / row.peer.peak_rss_mb:.2f}×"
        elif not row.rss_row and row.ratio is not None:
            ratio = f"{row.ratio:.2f}×"
        lines.append([
            row.label,
            olly_fig,
            (f"{peer_fig} ({row.peer.name})" if row.peer is not None else "-"),
            ratio,
            " and ".join(t.text for t in row.targets) or "-",
            met_cell(row.targets),
            fmt_mb(row.olly.peak_rss_mb) if row.olly else "-",
            fmt_mb(row.peer.peak_rss_mb) if row.peer else "-",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("   " + " | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("   " + "-+-".join("-" * w for w in widths))
    for line in lines:
        print("   " + " | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    seen = set()
    for row in case.rows:
        for m in (row.olly, row.peer):
            if m is None or id(m) in seen:
                continue
            seen.add(id(m))
            if m.unavailable:
                print(f"   note: {m.name}: not run: {m.unavailable}")
            elif m.error:
                print(f"   ERROR: {m.name}: {m.error}")
            elif m.runs_cap is not None:
                print(f"   note: {m.name}: {len(m.samples)} runs only (one run takes > {SLOW_S:.0f} s)")
    spread = [f"{m.name} {fmt_s(min(m.samples))}–{fmt_s(max(m.samples))}" for m in _measures(case)
              if m.samples and not m.error]
    if spread:
        print("   runs, fastest–slowest: " + "; ".join(spread))
        for t in row.targets:
            if t.why and t.met is not True:
                print(f"   note: target {t.text!r} for {row.label!r}: {t.why}")
    for note in case.notes:
        print(f"   note: {note}")
    if quick and case.scaled and any(r.targets for r in case.rows):
        print("   (--quick: the targets are stated for the full scale; 'met?' here is indicative only)")


# -- environment ---------------------------------------------------------------------------


def _out(cmd: list[str], cwd: Path | None = None, timeout: float = 20, env: dict | None = None) -> str | None:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def base_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)  # the working tree under test, not an installed copy
    # Byte-code caching as on a developer's machine (this one may set PYTHONDONTWRITEBYTECODE,
    # which would make every olly run compile its modules again), kept in the bench's own
    # directory so that the repository is not written to. The warm-up run fills it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["DOCKER_BUILDKIT"] = "0"  # the docker CLI's classic builder (no buildx here); the workspace makes olly use it too
    env["TURBO_TELEMETRY_DISABLED"] = "1"
    env["DO_NOT_TRACK"] = "1"
    env.pop("CI", None)  # output modes as on a developer's machine (plain: stdout is not a tty)
    return env


def engine_version() -> tuple[str | None, str]:
    if shutil.which("docker") is None:
        return None, "no docker CLI on PATH"
    try:
        p = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                           text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None, "`docker version` timed out"
    if p.returncode != 0:
        return None, "no Docker engine answers: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    return p.stdout.strip(), ""


def machine_facts(env: dict[str, str]) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        pass
    head = _out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = _out(["git", "-C", str(REPO), "status", "--porcelain", "--", "olly"]) or ""
    olly_file = _out([sys.executable, "-c", "import olly, sys; print(olly.__file__)"], env=env, cwd=Path("/"))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": head,
        "olly_uncommitted_files": len([line for line in dirty.splitlines() if line.strip()]),
        "olly_module": olly_file,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "mem_gb": round(mem / 1e9, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "git": (_out(["git", "--version"]) or "none").replace("git version ", ""),
        "loadavg_start": os.getloadavg(),
    }


def install_turbo(work: Path, given: str | None) -> tuple[list[str] | None, str]:
    """Turborepo's native binary, installed by npm into a temporary directory."""
    if given:
        return [given], ""
    if shutil.which("npm") is None:
        return None, "npm not on PATH"
    dest = work / "turbo-npm"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "turbo@2"], cwd=dest,
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "`npm install turbo@2` timed out"
    if p.returncode != 0:
        return None, "`npm install turbo@2` failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    # The platform package's binary itself, not the node shim in node_modules/.bin (which would
    # add node's start-up, ~40 ms, to every turbo run: a peer made slower is no fair peer).
    found = sorted(dest.glob("node_modules/@turbo/*/bin/turbo")) or sorted(dest.glob("node_modules/turbo-*/bin/turbo"))
    if found:
        return [str(found[0])], ""
    shim = dest / "node_modules" / ".bin" / "turbo"
    return ([str(shim)], "") if shim.exists() else (None, "npm installed turbo@2 but no turbo binary was found")


# -- the bench -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scale = QUICK if args.quick else FULL
        self.work = Path(tempfile.mkdtemp(prefix="olly-bench-", dir=args.workdir))
        self.prefix = f"olly-bench-{uuid.uuid4().hex[:8]}"
        self.env = base_env(self.work)
        self.runner = Runner(args.runs, self.work)
        self.engine, self.engine_why = engine_version()
        self.turbo: list[str] | None = None
        self.turbo_why = "not needed"
        self.turbo_version: str | None = None
        self.peer_image_ids: set[str] = set()
        self._scale_ws: Path | None = None
        self._big: tuple[Path, dict] | None = None

    def olly(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "olly", *args]

    def check(self, cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 3600) -> tuple[int, str, str]:
        """An untimed run (setup, validation)."""
        p = subprocess.run(cmd, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def no_engine_env(self) -> dict[str, str]:
        return {**self.env, "DOCKER_HOST": f"unix://{self.work}/no-engine.sock"}

    # -- shared workloads --

    def scale_ws(self, case: Case) -> Path:
        """The ollyScale-sized workspace, built by olly once (its images must exist)."""
        if self._scale_ws is None:
            root = self.work / "scale"
            facts = workloads.scale_workspace(root, self.prefix)
            workloads.settle(facts["aged_at"])
            rc, out, err = self.check(self.olly("make", "--json"), root)
            if rc != 0:
                raise RuntimeError(f"first `olly make` of the ollyScale-sized workspace failed (exit {rc}): "
                                   f"{err.strip()[-600:]}")
            summary = json.loads(out).get("summary", {})
            self._scale_ws = root
            self.scale_facts = {**facts, "first_make": summary}
        case.facts.update({k: v for k, v in self.scale_facts.items() if k != "aged_at"})
        return self._scale_ws

    def big(self, case: Case) -> tuple[Path, dict]:
        if self._big is None:
            t0 = time.perf_counter()
            root = self.work / "big"
            s = self.scale
            facts = workloads.big_tree(root, s.files, s.contexts, s.ignored)
            facts["generate_s"] = round(time.perf_counter() - t0, 1)
            workloads.settle(facts["aged_at"])
            self._big = (root, facts)
        case.facts.update({k: v for k, v in self._big[1].items() if k != "aged_at"})
        return self._big

    def need_turbo(self) -> None:
        if self.turbo is None and self.turbo_why == "not needed":
            self.turbo, self.turbo_why = install_turbo(self.work, self.args.turbo)
            if self.turbo:
                self.turbo_version = _out([*self.turbo, "--version"], env=self.env)

    def docker_build(self, ctx: Path, tag: str, quiet: bool, base: str | None = None) -> list[str]:
        cmd = ["docker", "build", "--network", "none", "-t", tag]
        if quiet:
            cmd.append("-q")
        if base:
            cmd += ["--build-arg", f"BASE={base}"]
        return cmd + [str(ctx)]

    def curl_buildkit(self, ctx: Path, tag: str, base: str, labels: dict[str, str]) -> list[str]:
        """``tar | curl`` posting ``ctx`` to the engine's /build with BuildKit (version=2): the
        smallest client of the builder olly uses by default."""
        sock = self.env.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
        query = urllib.parse.urlencode({"version": "2", "networkmode": "none", "t": tag, "rm": "1",
                                        "buildargs": json.dumps({"BASE": base}), "labels": json.dumps(labels)})
        script = (f"tar -C {shlex.quote(str(ctx))} -c . | curl -sS --fail-with-body --unix-socket {shlex.quote(sock)} "
                  f"-X POST -H 'Content-Type: application/x-tar' --data-binary @- "
                  f"{shlex.quote('http://docker/build?' + query)}")
        return ["sh", "-c", script]

    def keep_ids(self, out: Path | None) -> None:
        """Remember the image ids the docker peers make (removed at the end)."""
        if out and out.exists():
            text = out.read_text(errors="replace")
            self.peer_image_ids.update(re.findall(r"sha256:([0-9a-f]{64})", text))
            self.peer_image_ids.update(re.findall(r"Successfully built ([0-9a-f]{12})", text))
            out.unlink()

    # -- cases --

    def case_startup(self) -> Case:
        case = Case("startup", "`olly --help` and `olly plan` on a tiny workspace vs `python -c pass`", scaled=False)
        tiny = workloads.tiny_workspace(self.work / "tiny", self.prefix)
        workloads.settle(workloads.age_tree(tiny))
        built, why = False, "no engine"
        if self.engine:
            rc, out, err = self.check(self.olly("make", "--network", "none"), tiny)
            built = rc == 0
            if not built:
                why = f"its first `olly make` failed, exit {rc}"
                case.notes.append(f"could not build the tiny workspace first (exit {rc}): "
                                  f"{(err.strip() or out.strip())[-300:]}")
        py = Measure("python -c pass", [[sys.executable, "-c", "pass"]], tiny, self.env)
        help_ = Measure("olly --help", [self.olly("--help")], tiny, self.env)
        plan = Measure("olly plan", [self.olly("plan")], tiny, self.env)
        self.runner.run([py, help_, plan])
        target = "≤ 2× peer + 40 ms"
        case.rows = [
            Row("olly --help", help_, py, [relative(help_, py, 2, target, 0.040)]),
            Row("olly plan, tiny workspace", plan, py, [relative(plan, py, 2, target, 0.040)]),
        ]
        case.notes.append("tiny workspace: tests/data/busy (3 images, 9 files); "
                          + ("all built, so the plan says 'up to date'" if built else
                             f"not built ({why}), so the plan says 'would build'")
                          + ("; olly plan consults the engine" if self.engine else "; no engine to consult"))
        return case

    def case_noop_make(self) -> Case:
        case = Case("noop-make", "no-op `olly make`, ollyScale-sized workspace (5 images, 3 charts, ~150 files), "
                    "all built, vs five warm `docker build -q`", scaled=False)
        if not self.engine:
            case.skipped = f"needs a Docker engine ({self.engine_why})"
            return case
        ws = self.scale_ws(case)
        make = Measure("olly make", [self.olly("make")], ws, self.env)
        plan = Measure("olly plan", [self.olly("plan")], ws, self.env)
        base_tag = f"{self.prefix}/peer-base:bench"
        builds = [self.docker_build(ws / "base", base_tag, quiet=True)]
        builds += [self.docker_build(ws / "apps" / app, f"{self.prefix}/peer-{app}:bench", quiet=True, base=base_tag)
                   for app in workloads.SCALE_APPS]
        peer = Measure("5× docker build -q, warm", builds, ws, self.env, stdout="file", after=self.keep_ids)
        self.runner.run([make, peer, plan])
        rc, out, err = self.check(self.olly("make", "--json"), ws)
        summary = json.loads(out).get("summary", {}) if rc == 0 else {}
        case.notes.append(f"check after timing: `olly make --json` summary {summary or err.strip()[-200:]} "
                          "(a no-op run builds nothing)")
        case.rows = [
            Row("olly make, no-op", make, peer, [absolute(make, 0.120), relative(make, peer, 0.5, "≤ 0.5× peer")]),
            Row("olly plan, same workspace (info)", plan, peer),
        ]
        case.notes.append("peer: the same five Dockerfiles and contexts, base first, each app FROM the peer's base "
                          "(--build-arg BASE), classic builder, --network none, its layer cache warmed by one run; "
                          "peer RSS is the docker CLI's (the engine's work is not in any RSS figure)")
        return case

    def case_edit_make(self) -> Case:
        case = Case("edit-make", "one file edited, `olly make <image>` vs plain `docker build` of that image",
                    scaled=False)
        if not self.engine:
            case.skipped = f"needs a Docker engine ({self.engine_why})"
            return case
        ws = self.scale_ws(case)
        edited = ws / "apps" / "api" / "src" / "api_00.txt"
        original = edited.read_text()

        def edit() -> None:  # new content every run: neither olly's cache nor the layer cache has it
            edited.write_text(original + f"edit {uuid.uuid4().hex}\n")

        base_tag = f"{self.prefix}/peer-base:bench"
        rc, _, err = self.check(self.docker_build(ws / "base", base_tag, quiet=True), ws)
        if rc != 0:
            case.notes.append(f"peer base image build failed: {err.strip()[-300:]}")
        # olly as a user runs it: its default builder, BuildKit through the engine's API (--builder auto beats
        # the workspace's "classic", which the no-op case keeps so its peer builds the same way).
        olly_m = Measure("olly make apps/api", [self.olly("make", "apps/api", "--builder", "auto")], ws, self.env,
                         before=edit)
        peer = Measure("docker build", [self.docker_build(ws / "apps" / "api", f"{self.prefix}/peer-api:bench",
                                                          quiet=False, base=base_tag)],
                       ws, self.env, before=edit, stdout="file", after=self.keep_ids)
        # Info, the same builder: the engine's BuildKit driven by the smallest client there is (tar | curl
        # POST /build?version=2, olly's labels included: BuildKit sets them without a step).
        labels = {"dev.olly.key": uuid.uuid4().hex, "org.opencontainers.image.title": f"{self.prefix}/api"}
        curl = Measure("BuildKit via curl", [self.curl_buildkit(ws / "apps" / "api", f"{self.prefix}/peer-api-bk:bench",
                                                                base_tag, labels)],
                       ws, self.env, before=edit, stdout="file", after=self.keep_ids)
        if not shutil.which("curl"):
            curl.unavailable = "curl is not installed"
        # Info, the classic builder for both; and docker build with olly's two labels, which the classic
        # builder runs as steps of their own, each with a container and a commit.
        classic = Measure("olly make --builder classic", [self.olly("make", "apps/api", "--builder", "classic")], ws,
                          self.env, before=edit)
        label_args = [arg for name, value in labels.items() for arg in ("--label", f"{name}={value}")]
        labelled_cmd = self.docker_build(ws / "apps" / "api", f"{self.prefix}/peer-api-labelled:bench", quiet=False,
                                         base=base_tag)
        labelled = Measure("docker build, olly's labels", [labelled_cmd[:2] + label_args + labelled_cmd[2:]], ws,
                           self.env, before=edit, stdout="file", after=self.keep_ids)
        self.runner.run([olly_m, peer, curl, classic, labelled])
        edit()
        rc, out, err = self.check(self.olly("make", "apps/api", "--builder", "auto", "--json"), ws)
        outcomes = {o["label"]: o["status"] for o in json.loads(out).get("outcomes", [])} if rc == 0 else {}
        case.notes.append(f"check: after an edit, `olly make apps/api --builder auto --json` gives "
                          f"{outcomes or err.strip()[-200:]}")
        if not curl.unavailable:
            edit()
            rc, out, err = self.check(curl.cmds[0], ws)
            case.notes.append("check: the curl-driven BuildKit build " + (
                "reports an image id" if '"moby.image.id"' in out else f"FAILED: {(out + err).strip()[-300:]}"))
        case.rows = [Row("olly make apps/api after an edit", olly_m, peer,
                         [relative(olly_m, peer, 1, "≤ peer + 100 ms", 0.100)]),
                     Row("same, vs the same builder driven by curl (info)", olly_m, curl),
                     Row("olly make --builder classic (info)", classic, peer),
                     Row("same, vs docker build with olly's labels (info)", classic, labelled)]
        case.notes.append("olly builds with its default builder (BuildKit through the engine's API, no buildx needed); "
                          "`docker build` here has only the classic builder (the CLI has no buildx plugin)")
        case.notes.append("each run (olly's and the peer's) first writes new content into apps/api/src/api_00.txt, "
                          "so both really rebuild: the COPY layer and the RUN after it; the base is cached for both")
        return case

    def case_plan_100k(self) -> Case:
        s = self.scale
        case = Case("plan-100k", f"no-op `olly plan`, {s.files:,} files in {s.contexts} contexts "
                    f"(+{s.ignored:,} ignored), warm stat cache, vs `turbo run build --dry=json` and `git status`")
        root, facts = self.big(case)
        self.need_turbo()
        # Without the watcher (OLLY_WATCH=0: it runs meanwhile for the other measure, idle), and
        # with it: `olly watch start` first; each measure's warm-up run marks the walks it verifies.
        unwatched = {**self.env, "OLLY_WATCH": "0"}
        plan = Measure("olly plan", [self.olly("plan")], root, unwatched)
        watched = Measure("olly plan, olly watch running", [self.olly("plan")], root, self.env)
        if self.turbo:
            turbo = Measure("turbo run build --dry=json", [[*self.turbo, "run", "build", "--dry=json"]], root, self.env)
        else:
            turbo = Measure("turbo run build --dry=json", [], root, self.env, unavailable=self.turbo_why)
        git = Measure("git status", [["git", "status"]], root, self.env)
        measures = [plan, watched, turbo, git]
        no_engine = None
        if self.engine:
            no_engine = Measure("olly plan, no engine", [self.olly("plan")], root, {**self.no_engine_env(), "OLLY_WATCH": "0"})
            measures.append(no_engine)
        rc, _, err = self.check(self.olly("watch", "start"), root)
        if rc != 0:
            watched.error = f"olly watch start failed: {err.strip()[-200:]}"
            measures.remove(watched)
        try:
            self.runner.run(measures)
        finally:
            self.check(self.olly("watch", "stop"), root)
        self._check_same_files(case, root, facts)
        case.rows = [
            Row("olly plan vs turbo --dry=json", plan, turbo, [relative(plan, turbo, 0.5, "≤ 0.5× peer")]),
            Row("same, olly watch running", watched, turbo, [relative(watched, turbo, 0.5, "≤ 0.5× peer")]),
            Row("olly plan", plan, None, [absolute(plan, 0.5)]),
            Row("olly plan, olly watch running", watched, None, [absolute(watched, 0.5)]),
            Row("olly plan peak RSS", plan, turbo, [rss_target(plan, 100)], rss_row=True),
            Row("olly plan vs git status (info)", plan, git),
        ]
        if no_engine:
            case.rows.append(Row("olly plan without an engine (info)", no_engine, turbo))
        case.notes.append("`olly plan` runs with OLLY_WATCH=0 (no watcher consulted); the watched one after "
                          "`olly watch start` (inotify), taking every context's walk on the watcher's word")
        case.notes.append("nothing in this tree is built (by either tool): both plan every target as to-do; "
                          "with an engine, olly asks it about each target's content tag, as it would if they were built")
        if not self.engine:
            case.notes.append("no engine answers, so olly plan does not consult one")
        return case

    def _check_same_files(self, case: Case, root: Path, facts: dict) -> None:
        """Untimed: that olly and turbo plan the same targets over the same files."""
        rc, out, err = self.check(self.olly("plan", "--json"), root)
        if rc == 0:
            targets = json.loads(out)["targets"]
            case.notes.append(f"olly plans {len(targets)} targets ({sum(t['action'] == 'build' for t in targets)} "
                              "to build)")
        else:
            case.notes.append(f"`olly plan --json` failed: {err.strip()[-200:]}")
        rc, out, err = self.check(self.olly("inputs", "ctx/c000", "--json"), root)
        olly_files = None
        if rc == 0:
            data = json.loads(out)
            files = data.get("files")
            if files is None and isinstance(data.get("platforms"), list) and data["platforms"]:
                files = data["platforms"][0].get("files")
            olly_files = len([f for f in files if f[1] != "d"]) if isinstance(files, list) else None
        if self.turbo:
            rc, tout, _ = self.check([*self.turbo, "run", "build", "--dry=json"], root)
            if rc == 0:
                dry = json.loads(tout)
                tasks = dry.get("tasks", [])
                c0 = next((t for t in tasks if t.get("package") == "@bench/c000"), None)
                n_inputs = len(c0.get("inputs", {})) if c0 else None
                case.notes.append(f"same files: olly keys {olly_files} files of ctx/c000, turbo hashes "
                                  f"{n_inputs} inputs of @bench/c000 ({len(tasks)} turbo tasks; "
                                  f"{facts['files'] // facts['contexts']} files per context, tmp/ excluded by "
                                  ".dockerignore and .gitignore)")

    def case_first_plan(self) -> Case:
        s = self.scale
        case = Case("first-plan-100k", f"first `olly plan` of {s.files:,} files (nothing cached) vs "
                    "`git add -A` on a fresh index")
        root, _ = self.big(case)
        cache = root / ".cache"
        index = self.work / "fresh-index"

        def drop_cache() -> None:
            shutil.rmtree(cache, ignore_errors=True)

        def drop_index() -> None:
            index.unlink(missing_ok=True)

        plan = Measure("olly plan, empty .cache/", [self.olly("plan")], root, self.env, before=drop_cache)
        git = Measure("git add -A, fresh index", [["git", "add", "-A"]], root,
                      {**self.env, "GIT_INDEX_FILE": str(index)}, before=drop_index)
        self.runner.run([plan, git])
        drop_index()
        case.rows = [Row("first olly plan vs git add -A", plan, git, [relative(plan, git, 1, "≤ peer")])]
        case.notes.append("olly: .cache/ deleted before every run (no stat cache, no db); git: a new, empty index "
                          "file (GIT_INDEX_FILE) before every run, so git reads and hashes every file; the objects are "
                          "already in .git (the tree is committed), so git does not write them again. "
                          "The OS page cache is warm for both (warm-up run)")
        return case

    def _patho(self, case: Case, root: Path, aged_at: float, limit_s: float, label: str,
               extra: list[Measure] = (), no_engine: bool = False) -> tuple[Measure, Measure | None]:
        workloads.settle(aged_at)
        plan = Measure("olly plan", [self.olly("plan")], root, self.env)
        ne = None
        measures = [plan, *extra]
        if no_engine and self.engine:
            ne = Measure("olly plan, no engine", [self.olly("plan")], root, self.no_engine_env())
            measures.append(ne)
        self.runner.run(measures)
        case.rows.append(Row(label, plan, None, [absolute(plan, limit_s)]))
        for m in extra:
            case.rows.append(Row(f"reference: {m.name} (info)", m, None))
        if ne:
            case.rows.append(Row("olly plan without an engine (info)", ne, None))
        return plan, ne

    def case_values(self) -> Case:
        s = self.scale
        case = Case("values-5mb", f"`olly plan` of a chart whose values.yaml is {s.values_mb:g} MB (warm stat cache)")
        root = self.work / "values"
        facts = workloads.values_workspace(root, self.prefix, s.values_mb)
        case.facts.update({k: v for k, v in facts.items() if k != "aged_at"})
        values = root / "chart" / "values.yaml"
        loader = "CSafeLoader" if _out([sys.executable, "-c", "import yaml; print(yaml.__with_libyaml__)"],
                                       env=self.env) == "True" else "SafeLoader"
        ref = Measure(f"python: yaml.load(values.yaml, {loader})",
                      [[sys.executable, "-c", f"import yaml, sys; yaml.load(open(sys.argv[1], 'rb'), "
                        f"Loader=yaml.{loader})", str(values)]], root, self.env)
        self._patho(case, root, facts["aged_at"], 1.0, "olly plan, big values.yaml", [ref])
        case.notes.append(f"values.yaml: {facts['values_bytes']:,} bytes, {facts['values_blocks']:,} top-level "
                          "blocks of nested mappings and lists; the reference row is only what parsing that file "
                          f"costs with PyYAML's {loader} (no target)")
        return case

    def case_glob(self) -> Case:
        s = self.scale
        case = Case("inputs-glob", f"`olly plan` of an image whose `inputs` glob matches {s.glob_files:,} files "
                    "(warm stat cache)")
        root = self.work / "glob"
        facts = workloads.glob_workspace(root, self.prefix, s.glob_files)
        self._patho(case, root, facts["aged_at"], 1.0, "olly plan, inputs = [\"shared/**\"]")
        return case

    def case_targets(self) -> Case:
        s = self.scale
        case = Case("targets-5000", f"`olly plan` of {s.targets:,} image targets (warm stat cache)")
        root = self.work / "many"
        facts = workloads.targets_workspace(root, self.prefix, s.targets)
        self._patho(case, root, facts["aged_at"], 2.0, f"olly plan, {s.targets:,} targets", no_engine=True)
        case.notes.append(f"{facts['bases']} base images, each of the others depends on one (two files per context)")
        return case

    # -- driver --

    def cleanup(self) -> None:
        if self.engine:
            listing = _out(["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]) or ""
            refs = [line.split()[0] for line in listing.splitlines() if line.startswith(self.prefix + "/")]
            for i in range(0, len(refs), 50):
                subprocess.run(["docker", "rmi", "-f", *refs[i:i + 50]], capture_output=True)
            ids = sorted(self.peer_image_ids)
            for i in range(0, len(ids), 50):
                subprocess.run(["docker", "rmi", *ids[i:i + 50]], capture_output=True)
        if self.args.keep:
            print(f"\nworkloads kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def print_header(meta: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"olly benchmark: python bench/run.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"date:     {meta['date']}")
    print(f"olly:     {meta['olly_module']} (python -m olly, PYTHONPATH={REPO}); commit {meta['commit']}"
          + (f" + uncommitted changes in {meta['olly_uncommitted_files']} files under olly/"
             if meta["olly_uncommitted_files"] else " (olly/ clean)"))
    print(f"machine:  {meta['nproc']} CPUs ({meta['cpu']}), {meta['mem_gb']} GB RAM, Linux {meta['kernel']}, "
          f"Python {meta['python']}, git {meta['git']}")
    print(f"peers:    Docker engine {meta['engine'] or 'none (' + meta['engine_why'] + ')'}"
          f"{' (classic builder)' if meta['engine'] else ''}; turbo {meta['turbo'] or 'not installed yet'}")
    print(f"scale:    {meta['scale']}; {args.runs} timed runs per measure (median), after one warm-up; "
          f"load average at start {', '.join(f'{x:.2f}' for x in meta['loadavg_start'])}")
    print("python:   byte-code cached (PYTHONPYCACHEPREFIX in the bench dir, PYTHONDONTWRITEBYTECODE unset) "
          "for olly and the python peer alike")
    print("figures:  wall time of the whole process, measured from outside; RSS = peak resident set of the "
          "largest process of the command (MB = 10^6 bytes), max over the runs; floor: "
          f"{fmt_mb(meta['rss_floor_mb'])} (what `true` shows: a child counts its spawner's pages)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, help="timed runs per measure (median; default 5, with --quick 3)")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (10k files / 20 contexts), ~1 minute")
    ap.add_argument("--only", action="append", default=[], metavar="CASE",
                    help=f"run only CASE (repeatable or comma-separated): {', '.join(CASES)}")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    ap.add_argument("--turbo", metavar="PATH", help="use this turbo binary instead of installing turbo@2 with npm")
    ap.add_argument("--workdir", metavar="DIR", help="where the temporary workloads go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated workloads (for profiling)")
    args = ap.parse_args()
    only = [c for item in args.only for c in item.split(",") if c]
    unknown = [c for c in only if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASES)}")
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    selected = [c for c in CASES if not only or c in only]

    bench = Bench(args)
    meta = machine_facts(bench.env)
    meta.update({"engine": bench.engine, "engine_why": bench.engine_why, "scale": bench.scale.name,
                 "scale_detail": vars(bench.scale), "runs": args.runs, "turbo": None,
                 "command": "python bench/run.py " + " ".join(sys.argv[1:])})
    if any(c in selected for c in ("plan-100k",)):
        bench.need_turbo()
        meta["turbo"] = bench.turbo_version or f"unavailable ({bench.turbo_why})"
    floor = bench.runner.once(Measure("true", [["true"]], bench.work, bench.env))
    meta["rss_floor_mb"] = floor["maxrss_kib"] * 1024 / MB if floor else None
    print_header(meta, args)
    sys.stdout.flush()
    started = time.perf_counter()
    cases: list[Case] = []
    methods = {"startup": bench.case_startup, "noop-make": bench.case_noop_make, "edit-make": bench.case_edit_make,
               "plan-100k": bench.case_plan_100k, "first-plan-100k": bench.case_first_plan,
               "values-5mb": bench.case_values, "inputs-glob": bench.case_glob, "targets-5000": bench.case_targets}
    try:
        for name in selected:
            t0 = time.perf_counter()
            try:
                case = methods[name]()
            except Exception as exc:  # a broken workload is reported, the other cases still run
                case = Case(name, "(setup failed)", skipped=f"setup failed: {type(exc).__name__}: {exc}")
            case.setup_s = round(time.perf_counter() - t0, 1)
            cases.append(case)
            print_case(case, args.quick)
            sys.stdout.flush()
    finally:
        bench.cleanup()

    all_targets = [t for c in cases for r in c.rows for t in r.targets]
    met = sum(t.met is True for t in all_targets)
    unmet = sum(t.met is False for t in all_targets)
    na = sum(t.met is None for t in all_targets)
    skipped = [c.id for c in cases if c.skipped]
    meta["loadavg_end"] = os.getloadavg()
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    print()
    summary = (f"summary: {met} of {len(all_targets)} targets met, {unmet} not met"
               + (f", {na} not evaluated (peer unavailable)" if na else "")
               + (f"; cases skipped: {', '.join(skipped)}" if skipped else "")
               + f"  [{meta['elapsed_s']:.0f} s, load average at end "
               + ", ".join(f"{x:.2f}" for x in meta["loadavg_end"]) + "]")
    print(summary)
    busiest = max(meta["loadavg_start"][0], meta["loadavg_end"][0])
    if meta["nproc"] and busiest > meta["nproc"]:
        print(f"warning: the machine was busy (load average up to {busiest:.1f} on {meta['nproc']} CPUs): "
              "figures are noisy; olly and its peers ran interleaved, so the ratios are the steadier figures")
    if args.json:
        doc = {"meta": meta, "summary": {"targets": len(all_targets), "met": met, "not_met": unmet,
                                         "not_evaluated": na, "skipped_cases": skipped, "line": summary},
               "cases": [{"id": c.id, "title": c.title, "skipped": c.skipped, "notes": c.notes, "facts": c.facts,
                          "setup_s": c.setup_s,
                          "rows": [{"measure": r.label, "olly": r.olly.as_json() if r.olly else None,
                                    "peer": r.peer.as_json() if r.peer else None, "ratio": r.ratio,
                                    "compares": "peak_rss" if r.rss_row else "wall_time",
                                    "targets": [{"text": t.text, "met": t.met, "why": t.why} for t in r.targets]}
                                   for r in c.rows]}
                         for c in cases]}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
