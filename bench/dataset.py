"""Dataset build benchmark: clips per minute with 1 and 2 worker processes, and peak memory as the number of
clips grows (it must stay flat: the driver keeps one row per episode, the workers one clip each).

The clips are the demo's (the bundled sample's real footage and a simulated IMU glove, labeled and signed):
`knack demo` runs once into a scratch data directory (or --demo-dir names one already made). Two figures:

- the chain path at the demo's size: every paid clip fetched by CID from the embedded store and verified
  end to end (Merkle proof against the batch root, CID recomputed, signature, file hashes), then converted;
- the local path at growing sizes: N copies of the demo's clips as local clip directories (verified by hash
  and signature, converted and encoded the same way), for the memory curve and the per-worker scaling.

Peak memory is the largest summed resident set of the build's process tree (the driver and Daft's workers),
sampled every 50 ms.

    .venv/bin/python bench/dataset.py [--sizes 6,24,96] [--workers 1,2] [--demo-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.bundle import list_clips  # noqa: E402
from collector.config import load  # noqa: E402
from knack.dataset.build import Options, build  # noqa: E402


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


class PeakMemory:
    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def demo_dir(given: str | None, scratch: Path) -> Path:
    if given:
        return Path(given)
    target = scratch / "demo"
    env = dict(os.environ, HOME=str(scratch / "home"), XDG_CONFIG_HOME=str(scratch / "home/config"), KNACK_DEVICE_PASSWORD="bench-dataset")
    env.pop("KNACK_CONFIG", None)
    print("running `knack demo` once for its clips…", flush=True)
    subprocess.run([sys.executable, "-m", "knack", "demo", "--data-dir", str(target)], env=env, check=True, stdout=subprocess.DEVNULL)
    return target


def run(config, options: Options) -> tuple[float, int, int, int]:
    shutil.rmtree(options.out, ignore_errors=True)
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = build(config, options, say=lambda _: None)
        seconds = time.perf_counter() - started
    return seconds, result.episodes, result.frames, memory.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6,24,96", help="numbers of clips for the local path")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--demo-dir", help="a data directory `knack demo` already filled")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="knack-bench-dataset-"))
    try:
        data = demo_dir(args.demo_dir, scratch)
        os.environ["KNACK_DATA_DIR"] = str(data)
        config = load(None)
        clips = list_clips(config.clips_path)
        print(f"machine: {os.cpu_count()} CPUs; clips: {len(clips)} demo clip(s) of {data}")
        print("\nchain path (paid clips fetched by CID and verified end to end, then converted):")
        print(f"  {'workers':>7} {'clips':>5} {'frames':>6} {'seconds':>8} {'clips/min':>9} {'peak MB':>8}")
        for w in workers:
            seconds, episodes, frames, peak = run(config, Options(out=scratch / "ds", workers=w, progress=False))
            print(f"  {w:>7} {episodes:>5} {frames:>6} {seconds:>8.2f} {episodes / seconds * 60:>9.1f} {peak / 2**20:>8.0f}", flush=True)
        print("\nlocal path (copies of the demo's clips; verified by hash and signature, converted the same way):")
        print(f"  {'workers':>7} {'clips':>5} {'frames':>6} {'seconds':>8} {'clips/min':>9} {'peak MB':>8}")
        copies = scratch / "copies"
        for n in sizes:
            shutil.rmtree(copies, ignore_errors=True)
            copies.mkdir()
            local = []
            for i in range(n):
                target = copies / f"{i:05d}-{clips[i % len(clips)].name}"
                shutil.copytree(clips[i % len(clips)], target)
                local.append(str(target))
            for w in workers:
                seconds, episodes, frames, peak = run(config, Options(out=scratch / "ds", clips=tuple(local), workers=w, progress=False))
                print(f"  {w:>7} {episodes:>5} {frames:>6} {seconds:>8.2f} {episodes / seconds * 60:>9.1f} {peak / 2**20:>8.0f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
