"""Fault tests: kill -9 of real processes, Redis restarts.

They use the embedded-cluster fixtures of ``tests/conftest.py`` and the
integration tests' plain helpers (``from helpers import ...``), so that
folder is importable here too.
"""
from __future__ import annotations

import sys
from pathlib import Path

_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.append(_INTEGRATION)
