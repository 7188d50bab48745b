"""What a BuildKit cache mount saves on a rebuild: a RUN step that "downloads" into its cache
directory (a sleep when the cache is empty, as a package manager fetching wheels) is rebuilt
after a source edit, once with the cache mount reused and once with a fresh cache id.

    python bench/cache_mount.py [--sleep 3] [--runs 3]

Needs a Docker engine with BuildKit (API >= 1.39) and a static busybox (/bin/busybox).
Prints one line per case: the median wall time of `olly make` for the rebuild.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).is_file()), None)


def workspace(root: Path, cache_id: str, sleep_s: float) -> None:
    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUSYBOX, app / "busybox")  # type: ignore[arg-type]
    (app / "busybox").chmod(0o755)
    (app / "src.txt").write_text(uuid.uuid4().hex + "\n")
    fetch = (f"if [ ! -f /c/pkg ]; then /bin/busybox sleep {sleep_s}; echo pkg > /c/pkg; fi; "
             "/bin/busybox cp /c/pkg /pkg")
    (app / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY src.txt /src.txt\n"
        f'RUN --mount=type=cache,id={cache_id},target=/c ["/bin/busybox", "sh", "-c", "{fetch}"]\n')
    (root / "BUILD.toml").write_text(f'[workspace]\nnetwork = "none"\nbuilder = "buildkit"\n'
                                     f'[images.app]\nrepository = "olly-bench/{cache_id}"\n')


def make(root: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "olly", "-C", str(root), "make", "--progress", "plain", "-q"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"olly make failed:\n{proc.stdout}{proc.stderr}")
    return time.perf_counter() - started


def rebuild(sleep_s: float, reuse: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        cache_id = f"bench-{uuid.uuid4().hex[:10]}"
        workspace(root, cache_id, sleep_s)
        make(root)  # build 1 fills the cache mount
        if not reuse:  # another cache id: the mount starts empty, as without cache mounts
            workspace(root, f"bench-{uuid.uuid4().hex[:10]}", sleep_s)
        (root / "app" / "src.txt").write_text(uuid.uuid4().hex + "\n")  # a source edit: RUN runs again
        try:
            return make(root)
        finally:
            _remove_images()


def _remove_images() -> None:
    """Drop the bench's images (olly-bench/*); best effort."""
    import docker

    client = docker.from_env()
    for image in client.images.list():
        if any(tag.startswith("olly-bench/") for tag in image.tags):
            try:
                client.images.remove(image.id, force=True)
            except Exception:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=3.0, help="seconds the simulated download takes")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if BUSYBOX is None:
        raise SystemExit("no static busybox (apt-get install busybox-static)")
    for label, reuse in (("rebuild, cache mount reused", True), ("rebuild, cache mount empty", False)):
        times = [rebuild(args.sleep, reuse) for _ in range(args.runs)]
        print(f"{label:32s} median {statistics.median(times):6.2f}s  (runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
