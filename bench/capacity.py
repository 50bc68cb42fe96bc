#!/usr/bin/env python
"""Players one tickline server holds, vs a bare aioquic server: ``tickline bench capacity``.

    .venv/bin/python bench/capacity.py [--quick] [--json-out FILE] [--profile-out FILE] ...

The same thing as ``tickline bench capacity`` (same options; ``--help`` lists them):
the search and its judging live in ``tickline/capacity.py``, the bare server and its
clients in ``tickline/transport_ceiling.py``. One JSON line (``capacity_players``) on
stdout, progress on stderr, as BENCH.md describes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tickline.capacity import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
