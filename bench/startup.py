"""Start-up of the `knack` command, as a ratio to a bare `python -c pass` measured in the same run.

Each command runs in a fresh interpreter (as a person or a systemd unit starts it), `--repeat` times; the
median is reported. The data it works on is made here first: a signed clip bundle for `knack verify`, and an
embedded chain with the contracts deployed for `knack rewards --json`. Target: `knack --help` within 3x of
bare Python.

    .venv/bin/python bench/startup.py [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(data: Path) -> tuple[Path, str]:
    """A data directory holding one signed clip (noise video) and a deployed embedded chain."""
    import cv2
    import numpy as np

    from collector.bundle import file_entries, new_clip_id, seal, write_manifest
    from collector.identity import load_or_create
    from storage.ledger.web3_ledger import open_ledger

    key, _ = load_or_create(data / "device-key.json", "bench", kdf="pbkdf2", iterations=1000)
    clip_id = new_clip_id()
    partial = data / "clips" / f".partial-{clip_id}"
    partial.mkdir(parents=True)
    writer = cv2.VideoWriter(str(partial / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    writer.release()
    manifest = {"clip_id": clip_id, "device_id": key.address, "contributor": key.address, "files": file_entries(partial)}
    write_manifest(partial, manifest, key)
    clip = seal(partial, data / "clips" / clip_id)
    ledger = open_ledger("", data)
    ledger.deploy(key, key.address)
    ledger.close()
    return clip, key.address


def timed(argv: list[str], env: dict, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True)
        runs.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-400:]}")
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        clip, address = make_data(data)
        env = dict(os.environ, KNACK_DATA_DIR=str(data), XDG_CONFIG_HOME=str(Path(tmp) / "no-config"))
        env.pop("KNACK_CONFIG", None)
        knack = [sys.executable, "-m", "knack"]
        bare = timed([sys.executable, "-c", "pass"], env, args.repeat)
        figures = {
            "python -c pass": bare,
            "knack --help": timed([*knack, "--help"], env, args.repeat),
            "knack rewards --json": timed([*knack, "rewards", address, "--json"], env, args.repeat),
            "knack verify CLIP": timed([*knack, "verify", str(clip)], env, args.repeat),
        }
    if args.json:
        print(json.dumps({name: {"seconds": round(s, 4), "ratio": round(s / bare, 2)} for name, s in figures.items()}, indent=2))
        return 0
    print(f"start-up, median of {args.repeat} fresh interpreters ({sys.executable}):")
    for name, seconds in figures.items():
        print(f"  {name:<22} {seconds * 1000:7.0f} ms   {seconds / bare:5.1f}x bare Python")
    ratio = figures["knack --help"] / bare
    print(f"target: knack --help within 3x of bare Python: {'met' if ratio <= 3 else 'NOT met'} ({ratio:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
