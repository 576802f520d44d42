"""Labeling benchmark: the shipped models over a 640x480@30 fps clip, per execution provider.

Prints video frames labeled per second, model frames (sampled) per second and the real-time factor
(seconds of video labeled per wall second) at the default sampling rate, for each provider that can run
here: CPU always, CUDA (and TensorRT where installed) when a GPU is present. Model sessions are created
once and warmed up before timing, as in a running device.

    .venv/bin/python bench/label.py [--repeat 3] [--video collector/sample/hands.mp4] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.bundle import FRAMES, new_clip_id, seal, write_manifest  # noqa: E402
from collector.config import Device, LabelerConfig, from_mapping  # noqa: E402
from collector.identity import load_or_create  # noqa: E402
from collector.labeling import Labeler  # noqa: E402
from collector.labeling.models import Models  # noqa: E402
from collector.labeling.runtime import gpu_present  # noqa: E402
from collector.sample import SAMPLE_VIDEO  # noqa: E402
from collector.video import probe, read_frames, write_video  # noqa: E402


def make_clip(clips: Path, video: Path, key, capture_ns: list[int] | None = None) -> tuple[Path, int, float]:
    """A signed clip bundle holding a copy of `video`, as the recorder would write it; with `capture_ns`, its
    frames.parquet too (one capture time per frame)."""
    info = probe(video)
    frames, fps = info.frames, info.fps
    clip_id = new_clip_id()
    partial = clips / f".partial-{clip_id}"
    partial.mkdir(parents=True)
    shutil.copy(video, partial / "video.mp4")
    if capture_ns is not None:
        table = {
            "camera": ["cam"] * len(capture_ns),
            "frame_index": pa.array(range(len(capture_ns)), pa.int64()),
            "capture_ns": pa.array(capture_ns, pa.int64()),
        }
        pq.write_table(pa.table(table), partial / FRAMES)
    stream = {"name": "cam", "kind": "camera", "source": str(video), "count": frames, "dropped": 0, "late": 0, "lost": 0, "parse_errors": {}, "gaps": []}
    manifest = {
        "clip_id": clip_id,
        "device_id": key.address,
        "contributor": key.address,
        "duration_s": frames / fps,
        "streams": [stream],
        "labels": None,
        "quality": None,
        "privacy": None,
        "decision": None,
    }
    write_manifest(partial, manifest, key)
    return seal(partial, clips / clip_id), frames, frames / fps


def as_recorded(video: Path, work: Path) -> Path:
    """The video re-encoded as the recorder writes a clip (the pinned codec), so the labeler decodes what it
    decodes on a device."""
    return write_video(work / "recorded.mp4", read_frames(video), probe(video).fps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(SAMPLE_VIDEO))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda" if gpu_present() else "cpu", help="comma-separated: cpu, cuda, tensorrt")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    args = parser.parse_args()

    defaults = LabelerConfig()
    work = Path(tempfile.mkdtemp(prefix="knack-label-bench-"))
    key, _ = load_or_create(work / "key.json", "bench", kdf="pbkdf2", iterations=1000)
    config = from_mapping({"data_dir": str(work / "data")}).validate()
    video = as_recorded(Path(args.video), work)
    print(
        f"labeling benchmark: {Path(args.video).name} as recorded ({probe(video).codec}), sampling {defaults.sample_fps:g} fps, batches of {defaults.batch_size}, {args.repeat} run(s) per provider"
    )
    rows = []
    for device in args.devices.split(","):
        labeler_config = dataclasses.replace(defaults, device=Device(device), threads=args.threads)
        models = Models(labeler_config)
        labeler = Labeler(dataclasses.replace(config, labeler=labeler_config), key, models)
        warm, _, _ = make_clip(config.clips_path, video, key)
        labeler.label(warm)  # first runs allocate and (for TensorRT) build engines
        wall = video_s = frames = 0.0
        sampled = 0
        for _ in range(args.repeat):
            clip, n, seconds = make_clip(config.clips_path, video, key)
            started = time.perf_counter()
            labeler.label(clip)
            wall += time.perf_counter() - started
            video_s += seconds
            frames += n
            quality = json.loads((clip / "manifest.json").read_text())["quality"]
            sampled += sum(c["sampled_frames"] for c in quality["cameras"].values())
        rows.append((device, models.provider, frames / wall, sampled / wall, video_s / wall))
    print(f"  {'asked':<9} {'provider':<28} {'video frames/s':>15} {'model frames/s':>15} {'real-time factor':>17}")
    for device, provider, fps, sps, rtf in rows:
        print(f"  {device:<9} {provider:<28} {fps:15.1f} {sps:15.1f} {rtf:16.2f}x")
    if len(rows) > 1:
        print(f"  {rows[1][1]} / {rows[0][1]}: {rows[1][4] / rows[0][4]:.1f}x")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
