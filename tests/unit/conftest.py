"""Put the repository root (for `serving`) and code/ (the handler's flat modules) on sys.path."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "code"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
