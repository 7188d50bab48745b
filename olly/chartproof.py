"""Proof that a chart's outputs are still what olly verified, without packaging it again.

A chart whose key did not change used to be packaged on every run (YAML parsed and dumped,
gzip) just to check the stored ``.cache/charts/<key>.tgz`` against its key: a row in the
cache db proves nothing (a restored CI cache can carry a replaced .tgz with a matching row).

The rule stays "trust nothing you did not verify". After olly has written a chart's
package, its ``dist/`` copy and its values file, or read them back and found them
byte-equal to a fresh package, it records each file's stat signature (size, mtime_ns,
inode, ctime_ns) in ``.cache/charts/proofs.json``. A later run that finds the same
signature on the same path knows the bytes are the ones it verified: no write can leave
size, mtime, inode and ctime as they were (a rename gives a new inode, a restore or copy a
new ctime, which no user-space call can set). As for the stat cache (olly.hashing), a
signature is recorded only for a file whose timestamps are older than the verification's
start minus RACY_NS: a rewrite within the same timestamp tick could otherwise go unseen.
The proof also names the packager (the sources of this module, charts.py and chartjobs.py,
ruamel.yaml's and zlib's versions): olly or a library that packages differently packages afresh.
"""

from __future__ import annotations

import json
import os
import zlib
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import xxhash

from olly.hashing import RACY_NS

FILE = "proofs.json"
Signature = list[int]


def signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def settled(path: Path, started_ns: int) -> Signature | None:
    """``path``'s signature if it can be trusted later: timestamps safely before ``started_ns``."""
    sig = signature(path)
    if sig is None or max(sig[1], sig[3]) >= started_ns - RACY_NS:
        return None
    return sig


_PACKAGER: list[str] = []


def packager() -> str:
    """What decides a package's bytes besides its key: olly's packaging code and the
    YAML and zlib versions it runs with."""
    if not _PACKAGER:
        h = xxhash.xxh3_128()  # an identity, not a secret: the hash olly keys with (no hashlib to load)
        for name in ("chartproof.py", "charts.py", "chartjobs.py"):
            source = Path(__file__).with_name(name)
            try:
                h.update(source.read_bytes())
            except OSError:
                h.update(os.urandom(16))  # no source to name it by: never matches, always packages
        h.update(_yaml_version_file() + zlib.ZLIB_RUNTIME_VERSION.encode())
        _PACKAGER.append(h.hexdigest())
    return _PACKAGER[0]


def _yaml_version_file() -> bytes:
    """ruamel.yaml's ``__init__.py`` (it holds the version), read without importing ruamel
    (``find_spec("ruamel.yaml")`` would import the ``ruamel`` namespace package)."""
    try:
        spec = find_spec("ruamel")
        for location in (spec.submodule_search_locations or []) if spec else []:
            init = Path(location) / "yaml" / "__init__.py"
            if init.is_file():
                return init.read_bytes()
    except (ImportError, ValueError, OSError):
        pass
    return os.urandom(16)  # unknown: never matches a recorded proof


def values_inputs(pins: dict[str, Any], registry: Any, root: Path, display: str) -> str:
    """A digest of everything a chart's values file is made from: the pins, the registry's
    values and values_file bytes, and the name its messages use."""
    overlay_file = b""
    if registry is not None and registry.values_file:
        try:
            overlay_file = (root / registry.values_file).read_bytes()
        except OSError:
            overlay_file = os.urandom(16)  # unreadable: prepare_chart has already refused it
    doc = [sorted((path, pin.repository, pin.tag, pin.pinned) for path, pin in pins.items()),
           list(registry.values) if registry is not None else [], display]
    h = xxhash.xxh3_128(json.dumps(doc).encode())
    h.update(overlay_file)
    return h.hexdigest()


class Proofs:
    """``.cache/charts/proofs.json``: per chart label, the proof of its last verified outputs.
    Read and written by the scheduler's main thread only, under the workspace lock."""

    def __init__(self, store_dir: Path) -> None:
        self.path = store_dir / FILE
        self.changed = False
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            data = {}
        self.entries: dict[str, Any] = data if isinstance(data, dict) else {}

    def holds(self, label: str, proof: dict[str, Any]) -> bool:
        """Does the recorded proof of ``label`` say exactly ``proof`` (and do the files it
        names still carry the signatures recorded)?"""
        entry = self.entries.get(label)
        if not isinstance(entry, dict) or entry.get("claim") != proof:
            return False
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            return False
        return all(signature(Path(path)) == sig for path, sig in files.items())

    def record(self, label: str, proof: dict[str, Any] | None, files: dict[str, Signature] | None) -> None:
        """Record (or, with no proof, forget) what was verified for ``label``."""
        if proof is None or not files:
            if self.entries.pop(label, None) is not None:
                self.changed = True
            return
        entry = {"claim": proof, "files": files}
        if self.entries.get(label) != entry:
            self.entries[label] = entry
            self.changed = True

    def save(self) -> None:
        """Best effort: without it the next run verifies by packaging, as before."""
        if not self.changed:
            return
        import tempfile

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".olly-tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.entries, f)
            os.replace(tmp, self.path)
        except OSError:
            pass
