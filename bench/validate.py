"""Validator benchmark: clips settled per minute on this machine, labeling included.

Builds `--clips` real clips the way `knack demo` does (the bundled sample recording as a file camera, recorded,
labeled, signed for the network, pinned to the embedded content store and submitted by a device registered to
a contributor on the embedded chain), then times one validator round settling them all: fetch by CID, every
check, the network's labeler on every clip, and the settle transaction. The labeler's models are loaded
before the clock starts, as in a running `knack validate --watch`.

The sample is 7 s long and the validator rejects near duplicates before it labels them, so each 7 s of the
recording plays the sample differently (as recorded, mirrored, reversed, both, then the same upside down):
every clip is new content that the validator must label. The sample's IMU log would repeat every 7 s the
same way, so the clips carry video only.

    .venv/bin/python bench/validate.py [--clips 12] [--clip-seconds 2.5] [--device auto|cpu|cuda|tensorrt] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.config import CameraConfig, Device, from_mapping  # noqa: E402
from collector.labeling.runtime import gpu_present  # noqa: E402
from collector.sample import SAMPLE_VIDEO  # noqa: E402
from collector.sample.build import read_frames  # noqa: E402
from knack import wiring  # noqa: E402
from knack.demo import demo_keys, join_network  # noqa: E402
from knack.record import run_recording  # noqa: E402
from knack.session import DeviceSession  # noqa: E402

PASSWORD = "bench"
# Each pass over the sample, played one way. Mirroring and reversal change every frame's fingerprint and their
# order; a hand upside down is still a hand to the detector.
PASSES = (
    ("as recorded", False, False, False),
    ("mirrored", True, False, False),
    ("reversed", False, True, False),
    ("mirrored and reversed", True, True, False),
    ("upside down", False, False, True),
    ("upside down, mirrored", True, False, True),
    ("upside down, reversed", False, True, True),
    ("upside down, mirrored and reversed", True, True, True),
)
# Reasons decided before the validator labels a clip: a clip rejected for one of them was not labeled.
LABELED_REASONS = {"policy_rejected", "claim_mismatch"}


def recording(path: Path, seconds: float) -> tuple[Path, list[str], float]:
    """A video of `seconds` made of passes over the sample, each played differently; the passes used and the fps."""
    _, fps, frames = read_frames(SAMPLE_VIDEO)
    need = math.ceil(seconds * fps)
    passes = math.ceil(need / len(frames))
    if passes > len(PASSES):
        raise SystemExit(f"the sample gives {len(PASSES) * len(frames) / fps:.0f} s of distinct footage: ask for fewer or shorter clips")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    written = 0
    for _, mirror, reverse, upside_down in PASSES[:passes]:
        for frame in reversed(frames) if reverse else frames:
            if written == need:
                break
            if mirror:
                frame = frame[:, ::-1]
            if upside_down:
                frame = frame[::-1, ::-1]
            writer.write(frame.copy())
            written += 1
    writer.release()
    return path, [name for name, *_ in PASSES[:passes]], fps


def bench_config(data: Path, video: Path, fps: float, clip_seconds: float, device: str):
    base = from_mapping({"data_dir": str(data)})
    return dataclasses.replace(
        base,
        recorder=dataclasses.replace(base.recorder, clip_seconds=clip_seconds),
        labeler=dataclasses.replace(base.labeler, device=Device(device)),
        camera=(CameraConfig(name="bench", source=str(video), fps=fps, realtime=True),),
        serial=(),
        joints=(),
        source="bench/validate.py",
    ).validate()


def record_and_submit(config, clips: int, clip_seconds: float) -> tuple[object, object, dict]:
    """The device's side, as the demo runs it: keys, the device joined to the network, then record, label, pin
    and submit. The validator key and the outbox counts."""
    os.environ[wiring.DEVICE_PASSWORD_ENV] = PASSWORD  # demo_keys unlocks all three keys with it
    with contextlib.redirect_stdout(sys.stderr):  # "Created device key ..." lines: stdout is the figure's
        keys = demo_keys(config, config.data_path)
        config, key = join_network(config, keys)
        session = DeviceSession(config, key)  # no validator key: settling is the timed validator's job
        run = run_recording(session, duration=clips * clip_seconds + 60, until_sources_end=True, quiet=True)
    return config, keys.validator, {"written": len(run.written), "outbox": session.outbox.counts()}


def settle(config, validator_key) -> dict:
    ledger = wiring.open_ledger(config)
    validator = wiring.open_validator(config, ledger, wiring.open_store(config), validator_key)
    try:
        pending = validator.pending_batches()
        submitted = sum(len(b.digests) for b in pending)
        t0 = time.perf_counter()
        getattr(validator, "labeler", None)  # loads the models, as a service has at its first clip
        load_s = time.perf_counter() - t0
        batches = time_batches(validator)
        t0 = time.perf_counter()
        verdicts = validator.run_once()
        wall = time.perf_counter() - t0
        provider = getattr(validator, "provider", None)
    finally:
        if callable(close := getattr(validator, "close", None)):
            close()
        ledger.close()
    settled = [v for vs in verdicts.values() for v in vs]
    reasons = Counter(str(getattr(v.reason, "name", v.reason)).lower() for v in settled if not v.accepted)
    return {
        "submitted": submitted,
        "batches": len(verdicts),
        "settled": len(settled),
        "accepted": sum(v.accepted for v in settled),
        "rejected": dict(reasons),
        "unlabeled": sum(n for reason, n in reasons.items() if reason not in LABELED_REASONS),
        "wall_s": wall,
        "model_load_s": load_s,
        "provider": provider,
        "batch_seconds": [round(seconds, 3) for _, _, seconds in batches],
        "first_batch_s": batches[0][2] if batches else None,
        "after_first_seconds_per_clip": after_first(batches),
    }


def time_batches(validator) -> list[tuple[int, int, float]]:
    """(batch id, clips, seconds) of each batch the round settles, where the validator settles batch by batch:
    the first pays for first-inference allocations (and TensorRT engine builds), the rest show the steady pace."""
    timings: list[tuple[int, int, float]] = []
    settle_batch = getattr(validator, "settle", None)
    if not callable(settle_batch):
        return timings

    def timed(batch):
        t0 = time.perf_counter()
        try:
            return settle_batch(batch)
        finally:
            timings.append((batch.batch_id, len(batch.digests), time.perf_counter() - t0))

    validator.settle = timed
    return timings


def after_first(batches) -> float | None:
    rest = batches[1:]
    clips = sum(n for _, n, _ in rest)
    return sum(s for _, _, s in rest) / clips if clips else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12, help="clips to record and settle (default 12)")
    parser.add_argument("--clip-seconds", type=float, default=2.5)
    parser.add_argument("--device", default="auto", choices=[d.value for d in Device], help="the labeler's execution provider (default auto)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (printed) instead of deleting it")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="knack-validate-bench-"))
    try:
        video, passes, fps = recording(work / "bench.mp4", args.clips * args.clip_seconds + 0.5)
        config = bench_config(work / "data", video, fps, args.clip_seconds, args.device)
        if not args.json:
            print(
                f"validator benchmark: {args.clips} clip(s) of {args.clip_seconds:g} s from {SAMPLE_VIDEO.name} ({', '.join(passes)}); "
                f"{os.cpu_count()} CPU core(s), {'a GPU' if gpu_present() else 'no GPU'}; recording, labeling and submitting them first...",
                flush=True,
            )
        started = time.perf_counter()
        config, validator_key, device = record_and_submit(config, args.clips, args.clip_seconds)
        prepare_s = time.perf_counter() - started
        result = settle(config, validator_key)
    finally:
        if args.keep:
            print(f"data directory kept: {work / 'data'}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    settled, wall = result["settled"], result["wall_s"]
    result |= {
        "clips_asked": args.clips,
        "clip_seconds": args.clip_seconds,
        "device_asked": args.device,
        "clips_written": device["written"],
        "prepare_s": prepare_s,
        "clips_per_minute": settled / wall * 60 if settled and wall else 0.0,
        "seconds_per_clip": wall / settled if settled else None,
        "cpu_cores": os.cpu_count(),
        "gpu": gpu_present(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if settled else 1
    print(
        f"  {device['written']} clip(s) recorded; {result['submitted']} accepted on the device and submitted in {result['batches']} batch(es) ({prepare_s:.0f} s)"
    )
    if not settled:
        print("  nothing was settled: see the messages above")
        return 1
    rejected = ", ".join(f"{n} {reason}" for reason, n in sorted(result["rejected"].items())) or "none"
    print(f"  verdicts: {result['accepted']} accepted; rejected: {rejected}")
    print(f"  labeler on {result['provider'] or 'no execution provider reported'} (models loaded in {result['model_load_s']:.1f} s, before the clock)")
    print(f"  settled {settled} clip(s) in {wall:.1f} s: {wall / settled:.2f} s per clip")
    steady = result["after_first_seconds_per_clip"]
    if steady:
        print(f"  the first batch took {result['first_batch_s']:.2f} s (first inferences), the others {steady:.2f} s per clip")
    if result["unlabeled"]:
        print(f"  note: {result['unlabeled']} clip(s) were rejected before labeling, so the figure below overstates a validator labeling every clip")
    print(f"{result['clips_per_minute']:.1f} clips settled per minute, labeling included" + (f" ({60 / steady:.1f} after the first batch)" if steady else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
