"""Regenerate tests/data/golden_keys.json ON PURPOSE (e.g. after bumping KEY_SCHEMA).

Usage: python tests/regen_golden.py   -- then review the diff and commit it.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_keys import GOLDEN, golden_keys, golden_workspace  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    keys = golden_keys(golden_workspace(Path(tmp)))
GOLDEN.write_text(json.dumps(keys, indent=2, sort_keys=True) + "\n")
print(json.dumps(keys, indent=2, sort_keys=True))
