"""Benchmark: planning cost of a large context, cold vs. warm stat cache.

Prints figures (no assertions). Usage:
    python bench/noop.py [--files 20000] [--make]
--make also runs a real `olly make` twice (needs a Docker engine) and times the no-op.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from olly import api  # noqa: E402


def build_tree(root: Path, files: int) -> None:
    ctx = root / "big"
    for i in range(files):
        d = ctx / f"d{i % 100:03d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n" * 20)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /big/\n")
    (ctx / ".dockerignore").write_text("**/*.tmp\n!d001/keep.tmp\n")
    (root / "BUILD.toml").write_text('[images.big]\nrepository = "olly-bench/big"\n')


def timed(label: str, fn) -> object:
    t0 = time.perf_counter()
    out = fn()
    print(f"{label:<34} {time.perf_counter() - t0:8.3f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--make", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed(f"create {args.files} files", lambda: build_tree(root, args.files))
        past = time.time() - 60  # files older than the racy window, as in a real checkout
        for p in root.rglob("*"):
            os.utime(p, (past, past))
        cold = timed("plan, cold stat cache", lambda: api.plan(root, [], check_engine=False))
        print(f"{'  files hashed':<34} {cold.files_read:8d}")
        time.sleep(2.1)  # let the ctimes of the fresh files leave the racy window
        timed("plan, cold again (now cacheable)", lambda: api.plan(root, [], check_engine=False))
        warm = timed("plan, warm stat cache (no-op)", lambda: api.plan(root, [], check_engine=False))
        print(f"{'  files hashed':<34} {warm.files_read:8d}")
        if args.make:
            timed("make, first build", lambda: api.make(root, []))
            timed("make, no-op", lambda: api.make(root, []))
        print(f"{'peak RSS':<34} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MiB")


if __name__ == "__main__":
    main()
