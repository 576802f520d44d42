"""Gas per accepted clip: the batched ClipRegistry (submission by a registered device + settlement + reward
minted to the device's contributor) for batches of 1, 16, 64 and 256, against the naive design (one
transaction per clip storing its digest and minting) measured in the same run on the embedded EVM (py-evm,
Prague), and what registering a device costs once. Target: < 3,000 at 64.

    .venv/bin/python bench/gas.py [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

from storage.ledger.contracts.gas import measure, table  # noqa: E402


def main() -> int:
    result = measure()
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
        return 0
    print("gas per accepted clip (receipts' gasUsed, embedded py-evm, Prague; all clips accepted at quality 1.0)")
    print(table(result))
    at64 = result["batched"][64]["later_mint"]["per_clip"] if 64 in result["batched"] else result["batched"]["64"]["later_mint"]["per_clip"]
    naive = result["naive"]["later_mint"]
    print(f"at 64 clips: {at64:,.0f} gas per clip, {naive / at64:.1f}x cheaper than the naive design ({naive:,d})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
