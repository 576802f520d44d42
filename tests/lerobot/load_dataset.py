"""Loads a dataset built by `knack dataset build` through LeRobot's own LeRobotDataset, offline, and reads
every item: what a lab's training code does first. Run by `make test-lerobot` in its own environment (lerobot
and torch, about 5 GB), never by the default suite. Exits 1 on any mismatch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(root: Path) -> int:
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    info = json.loads((root / "meta" / "info.json").read_text())
    dataset = LeRobotDataset("knack/local", root=root, video_backend="pyav")
    print(
        f"lerobot {lerobot.__version__ if hasattr(lerobot, '__version__') else '?'}: {dataset.num_episodes} episodes, {len(dataset)} frames, {dataset.fps} fps"
    )
    problems = []
    if dataset.num_episodes != info["total_episodes"] or len(dataset) != info["total_frames"]:
        problems.append("totals differ from info.json")
    cameras = dataset.meta.video_keys
    tasks = set()
    for i in range(len(dataset)):
        item = dataset[i]
        ep, k = int(item["episode_index"]), int(item["frame_index"])
        if abs(float(item["timestamp"]) - k / dataset.fps) > 1e-4:
            problems.append(f"item {i}: timestamp {float(item['timestamp'])} is not {k}/{dataset.fps}")
        for key in cameras:
            frame = item[key]
            h, w = info["features"][key]["shape"][:2]
            if tuple(frame.shape) != (3, h, w) or not (0.0 <= float(frame.min()) and float(frame.max()) <= 1.0):
                problems.append(f"item {i}: {key} has shape {tuple(frame.shape)} or values outside 0..1")
        if "observation.state" in info["features"] and item["observation.state"].shape[0] != info["features"]["observation.state"]["shape"][0]:
            problems.append(f"item {i}: observation.state has {item['observation.state'].shape[0]} values")
        tasks.add(item["task"])
        if ep < 0:
            problems.append(f"item {i}: episode {ep}")
    episodes = dataset.meta.episodes
    provenance = [episodes[e]["knack/cid"] for e in range(dataset.num_episodes)]
    print(
        f"read all {len(dataset)} items: cameras {', '.join(cameras)}; state of {info['features'].get('observation.state', {}).get('shape', [0])[0]} channels; tasks {sorted(tasks)}"
    )
    print(f"provenance kept: {len(provenance)} episode(s) with knack/cid, e.g. {provenance[0] if provenance else '-'}")
    stats = dataset.meta.stats or {}
    print(f"stats for: {', '.join(sorted(stats))}")
    for p in problems[:20]:
        print("PROBLEM", p)
    print("OK: LeRobotDataset loaded every item" if not problems else f"FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
