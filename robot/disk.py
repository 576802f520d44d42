"""Disk limits of a long-running recorder: pause before the disk fills, prune what was rejected.

The judgements are pure (numbers in, a decision out); measuring the disk and deleting clips are the
edges, in `measure` and the service."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
# Recording resumes only when this much more room is there than the limit needs, so it does not flap.
RESUME_MARGIN = 0.05


@dataclass(frozen=True)
class DiskUsage:
    data_bytes: int  # everything under the data directory: clips, content store, databases
    free_bytes: int  # free space on its file system, for this user


def measure(data_dir: Path) -> DiskUsage:
    total = 0
    stack = [Path(data_dir)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue  # a clip renamed or removed while we looked
        except OSError:
            continue
    return DiskUsage(total, shutil.disk_usage(data_dir).free)


def pause_reason(usage: DiskUsage, quota_mb: float, min_free_mb: float, paused: bool) -> str | None:
    """Why recording must not go on, or None. While paused, the limits must be cleared by a margin."""
    slack = 1 + RESUME_MARGIN if paused else 1.0
    if quota_mb and usage.data_bytes * slack >= quota_mb * MB:
        return f"the data directory holds {usage.data_bytes / MB:.0f} MB, at its quota of {quota_mb:g} MB (robot.disk_quota_mb)"
    if min_free_mb and usage.free_bytes <= min_free_mb * MB * slack:
        return f"only {usage.free_bytes / MB:.0f} MB free on the disk, the floor is {min_free_mb:g} MB (robot.min_free_mb)"
    return None


def prunable(entries, now: float, max_age_h: float) -> list[str]:
    """Clip ids rejected on the device longer ago than `max_age_h` (oldest first); nothing when 0.

    Only `rejected`: a clip accepted but not yet settled is owed to the network and never pruned."""
    if not max_age_h:
        return []
    cutoff = now - max_age_h * 3600
    return [e.clip_id for e in sorted(entries, key=lambda e: e.updated) if e.state == "rejected" and e.updated <= cutoff]
