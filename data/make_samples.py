"""Regenerate the committed sample exports under data/ (fixed seed; the catalog is left alone).

Run from the repository root: ``python data/make_samples.py``. The generator is ``samples.exports``,
which the tests also run to check that the committed files are exactly what it writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from samples import state_table  # noqa: E402
from samples.exports import write_all  # noqa: E402


def main() -> int:
    for path in [*write_all(ROOT / "data"), *state_table.write(ROOT / "data")]:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
