"""Regenerate tests/data/golden_keys.json ON PURPOSE (e.g. after bumping KEY_SCHEMA).

Usage: python tests/regen_golden.py   -- then review the diff and commit it.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["OLLY_BUILDER"] = "classic"  # the golden keys are the classic builder's (see test_keys)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_keys import GOLDEN, golden_keys, golden_workspace  # noqa: E402

from fakes import FakeEngine  # noqa: E402
from olly import api  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    root = golden_workspace(Path(tmp))
    keys = golden_keys(root)
    result = api.make(root, [], engine=FakeEngine(), version="v1.0.0")
    keys["chart"] = next(o.key for o in result.outcomes if o.label == "chart")
GOLDEN.write_text(json.dumps(keys, indent=2, sort_keys=True) + "\n")
print(json.dumps(keys, indent=2, sort_keys=True))
