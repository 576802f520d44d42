"""Near-duplicate detection of the validator (collector/fingerprint.py, storage/validator/near_duplicates.py) on real footage:
detection rate over re-encodes, frame-rate changes, trims, crops and brightness/contrast changes made with OpenCV,
false matches between distinct clips, the same for sensor logs, and lookups per second and memory per clip with
10^4, 10^5 and 10^6 stored clips (synthetic stored prints, real queries). Targets: detection >= 99%, false
matches <= 0.1%.

Footage: collector/sample/hands.mp4 and every video under each --media DIR, cut into windows of 3 s every 1.5 s
(a shorter video is one clip). Two clips are distinct when they come from different files or do not overlap in
time; a query may match its own clip or any clip overlapping it. The figures quoted with the code were measured with
--media holding dexsuite/dex-retargeting@3f56141b example/vector_retargeting/data/human_hand_video.mp4 (MIT; the
source that hands.mp4 plays at twice the speed) and intel-iot-devkit/sample-videos@57978890 asl_gestures/*.mkv and
bottle-detection.mp4 (CC BY 4.0). Sensor logs: collector/sample/imu.csv, and a 6-axis log at 200 Hz derived from
each clip's own picture motion (so distinct clips have distinct logs).

    .venv/bin/python bench/dedup.py [--quick] [--json] [--media DIR ...] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from collector.bundle import write_sensor_log  # noqa: E402
from collector.fingerprint import SENSOR_THRESHOLD, VIDEO_THRESHOLD, SensorPrint, VideoPrint, sensor_print, sensor_print_of, video_print  # noqa: E402
from collector.sample import SAMPLE_IMU, SAMPLE_VIDEO  # noqa: E402
from storage.validator.near_duplicates import NearDuplicateIndex  # noqa: E402

WINDOW_S, HOP_S = 3.0, 1.5
MAX_SOURCE_S = 60.0
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
SCALES = (10_000, 100_000, 1_000_000)
SYNTHETIC_SAMPLES = 49  # a 10 s clip (the recorder's default length) at 5 samples a second


@dataclass(frozen=True)
class Clip:
    source: str
    start: float
    end: float
    path: str

    def overlaps(self, other: Clip) -> bool:
        return self.source == other.source and min(self.end, other.end) > max(self.start, other.start)


# --- footage --------------------------------------------------------------------------------------------------------
def read_video(path: Path, seconds: float = MAX_SOURCE_S) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < seconds * fps:
        ok, frame = capture.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        if w > 640:  # what a field device records
            frame = cv2.resize(frame, (640, round(h * 640 / w) // 2 * 2), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    capture.release()
    return frames, fps


def write_video(path: Path, frames: list[np.ndarray], fps: float, fourcc: str = "mp4v", quality: int | None = None) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if quality is not None:
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def cut_clips(videos: list[Path], out: Path, quick: bool) -> list[Clip]:
    clips = []
    for video in videos:
        frames, fps = read_video(video, 12.0 if quick else MAX_SOURCE_S)
        if len(frames) < fps * 1.5:
            continue
        window, hop = round(WINDOW_S * fps), round(HOP_S * fps)
        starts = range(0, len(frames) - window + 1, hop) if len(frames) >= window else [0]
        for start in starts:
            path = write_video(out / f"clip-{len(clips):04d}.mp4", frames[start : start + window], fps)
            end = min(len(frames), start + window)
            clips.append(Clip(video.name, start / fps, end / fps, str(path)))
    return clips


# --- transformations an attacker applies (OpenCV) -------------------------------------------------------------------
def retime(frames: list[np.ndarray], fps: float, new_fps: float) -> list[np.ndarray]:
    count = int(len(frames) * new_fps / fps)
    return [frames[min(len(frames) - 1, round(i * fps / new_fps))] for i in range(count)]


def crop(frames: list[np.ndarray], rng: random.Random, resize: bool) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    top, bottom, left, right = (rng.uniform(0.01, 0.06) for _ in range(4))
    y0, y1, x0, x1 = int(h * top), h - int(h * bottom), int(w * left), w - int(w * right)
    x1 -= (x1 - x0) % 2
    y1 -= (y1 - y0) % 2
    out = [f[y0:y1, x0:x1] for f in frames]
    return [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in out] if resize else out


def tone(frames: list[np.ndarray], gain: float, contrast: float) -> list[np.ndarray]:
    # gain scales every value (brightness); contrast scales the distance from mid-grey
    return [cv2.convertScaleAbs(f, alpha=gain * contrast, beta=128 * (1 - contrast) * gain) for f in frames]


def change(rng: random.Random) -> float:
    return 1 + rng.choice((-1, 1)) * rng.uniform(0.10, 0.20)


def transform(name: str, frames: list[np.ndarray], fps: float, rng: random.Random, out: Path) -> Path:
    head = rng.randint(1, 10)
    if name == "mjpg":
        return write_video(out / "t.avi", frames, fps, "MJPG", quality=50)
    if name == "mp4v-half-size":
        half = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in frames]
        return write_video(out / "t.mp4", half, fps)
    if name == "fps-29":
        return write_video(out / "t.mp4", retime(frames, fps, 29.0), 29.0)
    if name == "fps-15":
        return write_video(out / "t.mp4", retime(frames, fps, 15.0), 15.0)
    if name == "trim":
        return write_video(out / "t.mp4", frames[head : len(frames) - rng.randint(0, len(frames) // 5)], fps)
    if name == "crop-resized":
        return write_video(out / "t.mp4", crop(frames, rng, True), fps)
    if name == "crop":
        return write_video(out / "t.mp4", crop(frames, rng, False), fps)
    if name == "brightness":
        return write_video(out / "t.mp4", tone(frames, change(rng), 1.0), fps)
    if name == "contrast":
        return write_video(out / "t.mp4", tone(frames, 1.0, change(rng)), fps)
    if name == "all-at-once":
        mixed = tone(crop(retime(frames[head:], fps, 24.0), rng, True), change(rng), change(rng))
        return write_video(out / "t.avi", mixed, 24.0, "MJPG", quality=70)
    raise ValueError(name)


TRANSFORMS = ("mjpg", "mp4v-half-size", "fps-29", "fps-15", "trim", "crop-resized", "crop", "brightness", "contrast", "all-at-once")


# --- sensor logs ----------------------------------------------------------------------------------------------------
def motion_log(frames: list[np.ndarray], fps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 6-axis log at 200 Hz from the clip's own picture motion: how much moved, where (x, y), which side, which
    half, and the mean brightness change; sensor noise on top."""
    grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32) for f in frames]
    ys, xs = np.mgrid[0:36, 0:64]
    rows = []
    for a, b in zip(grey, grey[1:]):
        d = b - a
        e = np.abs(d) + 1e-3
        rows.append(
            [e.mean(), (e * xs).sum() / e.sum(), (e * ys).sum() / e.sum(), e[:, 32:].mean() - e[:, :32].mean(), e[18:].mean() - e[:18].mean(), d.mean()]
        )
    values = np.array(rows)
    t = np.arange(len(values)) / fps
    grid = np.arange(0, t[-1], 1 / 200)
    log = np.stack([np.interp(grid, t, values[:, c]) for c in range(6)], axis=1)
    log += rng.normal(0, 0.01, log.shape) * log.std(axis=0)
    return (grid * 1e9).astype(np.int64) + 1_700_000_000_000_000_000, log


def imu_windows() -> list[tuple[str, float, float, np.ndarray, np.ndarray]]:
    with open(SAMPLE_IMU) as f:
        rows = list(csv.DictReader(f))
    t = np.array([int(r["t_us"]) * 1000 for r in rows], np.int64)
    v = np.array([[float(r[k]) for k in ("ax", "ay", "az", "gx", "gy", "gz")] for r in rows])
    out, n, hop = [], round(WINDOW_S * 200), round(HOP_S * 200)
    for start in range(0, len(t) - n + 1, hop):
        out.append(("imu.csv", start / 200, (start + n) / 200, t[start : start + n], v[start : start + n]))
    return out


def write_sensors(path: Path, stream: str, times: np.ndarray, values: np.ndarray) -> Path:
    """sensors.parquet as the recorder writes it."""
    write_sensor_log(path, [stream] * len(times), times.tolist(), [None] * len(times), values.tolist(), {stream: []})
    return path


SENSOR_TRANSFORMS = ("shift", "every-2nd-sample", "resampled-150hz", "noise", "offset", "scale", "new-clock", "all-at-once")


def sensor_transform(name: str, t: np.ndarray, v: np.ndarray, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    shift = rng.randint(1, 10)
    std = v.std(axis=0) + 1e-9
    noise = np.random.default_rng(rng.randrange(1 << 30))
    if name == "shift":
        return t[shift:], v[shift:]
    if name == "every-2nd-sample":
        return t[::2], v[::2]
    if name == "resampled-150hz":
        grid = np.arange(t[0], t[-1], 1e9 / 150).astype(np.int64)
        return grid, np.stack([np.interp(grid, t, v[:, c]) for c in range(v.shape[1])], axis=1)
    if name == "noise":
        return t, v + noise.normal(0, 0.05, v.shape) * std
    if name == "offset":
        return t, v + 0.5 * std
    if name == "scale":
        return t, v * change(rng)
    if name == "new-clock":
        return t - t[0] + rng.randrange(1 << 50), v
    if name == "all-at-once":
        t2, v2 = t[shift::2], v[shift::2]
        return t2 - t2[0] + 123_456_789, v2 * change(rng) + 0.3 * std + noise.normal(0, 0.03, v2.shape) * std
    raise ValueError(name)


def sensor_print_of_rows(t: np.ndarray, v: np.ndarray, query: bool = True) -> SensorPrint | None:
    return sensor_print_of({"imu": (t, v)}, query=query)


# --- per clip work (in worker processes) ----------------------------------------------------------------------------
def clip_work(job: tuple[int, Clip, int, str]) -> dict:
    index, clip, seed, tmp = job
    rng = random.Random(seed)
    out = Path(tempfile.mkdtemp(dir=tmp))
    frames, fps = read_video(Path(clip.path))
    result = {"index": index, "stored": video_print(Path(clip.path), query=False), "query": video_print(Path(clip.path)), "transformed": {}}
    for name in TRANSFORMS:
        path = transform(name, frames, fps, rng, out)
        result["transformed"][name] = video_print(path)
        path.unlink()
    t, v = motion_log(frames, fps, np.random.default_rng(seed))
    result["sensor_stored"] = sensor_print(write_sensors(out / "s.parquet", "imu", t, v), query=False)
    result["sensor_query"] = sensor_print(out / "s.parquet")
    result["sensor_transformed"] = {
        name: sensor_print(write_sensors(out / "s.parquet", "glove", *sensor_transform(name, t, v, rng))) for name in SENSOR_TRANSFORMS
    }
    return result


def overlap_work(job: tuple[int, str]) -> tuple[int, VideoPrint | None]:
    index, path = job
    return index, video_print(Path(path))


# --- measures -------------------------------------------------------------------------------------------------------
def pairwise_false_matches(clips: list, queries: list, stored: list, threshold: float) -> tuple[int, int, list]:
    pairs = hits = 0
    worst = []
    for i, q in enumerate(queries):
        for j, s in enumerate(stored):
            if i == j or clips[i].overlaps(clips[j]) or q is None or s is None:
                continue
            pairs += 1
            score = q.similarity(s)[0]
            worst.append((score, i, j))
            hits += score >= threshold
    worst.sort(reverse=True)
    return pairs, hits, worst[:3]


def synthetic(rng: np.random.Generator, count: int) -> list[tuple[VideoPrint, SensorPrint]]:
    """Stored prints of 10 s clips with uniformly random bits, everything moving: the crowd a real query searches."""
    n = SYNTHETIC_SAMPLES
    motion = rng.integers(0, 1 << 32, (count, n, 4), dtype=np.uint32)
    appearance = rng.integers(0, 1 << 63, (count, n), dtype=np.uint64)
    hashes = rng.integers(0, 1 << 48, (count, n), dtype=np.uint64)
    moving = bytes([255]) * (4 * n)
    return [
        (VideoPrint(motion[i].tobytes(), appearance[i].tobytes(), moving), SensorPrint(((6, 0b111111, hashes[i].tobytes(), moving[:n]),))) for i in range(count)
    ]


def scale_test(clips: list[Clip], results: list[dict], scales) -> list[dict]:
    index = NearDuplicateIndex()
    for clip, r in zip(clips, results):
        index.add(clip.path, video=r["stored"], sensors=r["sensor_stored"])
    queries = [(clips[r["index"]], r["transformed"]["all-at-once"]) for r in results if r["transformed"]["all-at-once"] is not None]
    sensor_queries = [(clips[r["index"]], r["sensor_transformed"]["all-at-once"]) for r in results if r["sensor_transformed"]["all-at-once"] is not None]
    by_path = {c.path: c for c in clips}
    rng = np.random.default_rng(7)
    rows, added = [], 0
    for target in scales:
        started = time.perf_counter()
        while added < target:
            batch = min(10_000, target - added)
            for k, (vp, sp) in enumerate(synthetic(rng, batch)):
                index.add(f"synthetic-{added + k:07d}", video=vp, sensors=sp)
            added += batch
        index.compact()
        build_s = time.perf_counter() - started
        timings = {}
        for kind, items, match in (("video", queries, index.match_video), ("sensors", sensor_queries, index.match_sensors)):
            found = 0
            started = time.perf_counter()
            for clip, query in items:
                m = match(query)
                found += m is not None and m.key in by_path and by_path[m.key].overlaps(clip)
            elapsed = time.perf_counter() - started
            timings[kind] = {"lookups_per_s": round(len(items) / elapsed, 1), "found": found, "queries": len(items)}
        rows.append({"stored": len(index), "build_s": round(build_s, 1), "bytes_per_clip": round(index.memory_bytes() / len(index)), **timings})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", action="append", default=[], help="a folder of more real videos (repeatable)")
    parser.add_argument("--quick", action="store_true", help="12 s of each video, 10^4 and 10^5 stored clips")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    videos = [SAMPLE_VIDEO] + sorted(p for d in args.media for p in Path(d).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    started = time.perf_counter()
    report: dict = {"videos": len(videos)}
    with tempfile.TemporaryDirectory() as tmp:
        clips = cut_clips(videos, Path(tmp), args.quick)
        report["clips"] = len(clips)
        jobs = [(i, c, 1000 + i, tmp) for i, c in enumerate(clips)]
        # Windows 0.75 s after every other clip: each overlaps two stored clips by three quarters.
        shifted = []
        for video in videos:
            frames, fps = read_video(video, 12.0 if args.quick else MAX_SOURCE_S)
            window, quarter = round(WINDOW_S * fps), round(WINDOW_S * fps / 4)
            for start in range(quarter, len(frames) - window + 1, round(2 * HOP_S * fps)):
                path = write_video(Path(tmp) / f"shifted-{len(shifted):04d}.mp4", frames[start : start + window], fps)
                shifted.append((Clip(video.name, start / fps, (start + window) / fps, str(path)), str(path)))
        context = multiprocessing.get_context("fork")
        with context.Pool(args.workers) as pool:
            results = sorted(pool.map(clip_work, jobs, chunksize=1), key=lambda r: r["index"])
            shifted_prints = dict(pool.map(overlap_work, list(enumerate(p for _, p in shifted))))
    report["prints_s"] = round(time.perf_counter() - started, 1)

    # Detection through the index holding every clip.
    index = NearDuplicateIndex()
    for clip, r in zip(clips, results):
        index.add(clip.path, video=r["stored"], sensors=r["sensor_stored"])
    by_path = {c.path: c for c in clips}

    def detect(kind: str, names) -> dict:
        table = {}
        for name in names:
            found = wrong = total = 0
            for clip, r in zip(clips, results):
                query = r["transformed" if kind == "video" else "sensor_transformed"][name]
                if query is None or (kind == "sensors" and r["sensor_stored"] is None):
                    continue
                total += 1
                m = index.match(query)
                found += m is not None and by_path[m.key].overlaps(clip)
                wrong += m is not None and not by_path[m.key].overlaps(clip)
            table[name] = {"found": found, "wrong": wrong, "queries": total}
        return table

    report["video_detection"] = detect("video", TRANSFORMS)
    overlap_found = sum(1 for i, (clip, _) in enumerate(shifted) if (m := index.match_video(shifted_prints[i])) is not None and by_path[m.key].overlaps(clip))
    report["overlap_three_quarters"] = {"found": overlap_found, "queries": len(shifted)}
    pairs, false, worst = pairwise_false_matches(clips, [r["query"] for r in results], [r["stored"] for r in results], VIDEO_THRESHOLD)
    report["video_false_matches"] = {"pairs": pairs, "matched": false, "highest": [round(w[0], 3) for w in worst]}

    # Sensors: the logs derived from each clip's motion, and windows of the bundled IMU log.
    imu = imu_windows()
    rng = random.Random(5)
    imu_clips = [Clip(name, a, b, f"{name}@{a}") for name, a, b, _, _ in imu]
    imu_stored = [sensor_print_of_rows(t, v, query=False) for *_, t, v in imu]
    imu_queries = [sensor_print_of_rows(t, v) for *_, t, v in imu]
    for clip, sp in zip(imu_clips, imu_stored):
        index.add(clip.path, sensors=sp)
        by_path[clip.path] = clip
    report["sensor_detection"] = detect("sensors", SENSOR_TRANSFORMS)
    imu_matches = [
        (clip, index.match_sensors(sensor_print_of_rows(*sensor_transform(name, t, v, rng))))
        for clip, (*_, t, v) in zip(imu_clips, imu)
        for name in SENSOR_TRANSFORMS
    ]
    report["sensor_detection"]["imu.csv (all kinds)"] = {
        "found": sum(m is not None and by_path[m.key].overlaps(clip) for clip, m in imu_matches),
        "wrong": sum(m is not None and not by_path[m.key].overlaps(clip) for clip, m in imu_matches),
        "queries": len(imu_matches),
    }
    sensor_clips = clips + imu_clips
    pairs, false, worst = pairwise_false_matches(
        sensor_clips, [r["sensor_query"] for r in results] + imu_queries, [r["sensor_stored"] for r in results] + imu_stored, SENSOR_THRESHOLD
    )
    report["sensor_false_matches"] = {"pairs": pairs, "matched": false, "highest": [round(w[0], 3) for w in worst]}
    report["resting_sensor_logs"] = sum(1 for r in results if r["sensor_stored"] is None or not r["sensor_stored"].index_keys()[0].size)

    report["scale"] = scale_test(clips, results, SCALES[:2] if args.quick else SCALES)
    report["total_s"] = round(time.perf_counter() - started, 1)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_report(report)
    return 0


def rate(found: int, total: int) -> str:
    return f"{100 * found / max(1, total):6.2f}% ({found}/{total})"


def print_report(report: dict) -> None:
    print(f"near-duplicate detection: {report['videos']} videos cut into {report['clips']} clips of {WINDOW_S:g} s every {HOP_S:g} s")
    for kind in ("video", "sensor"):
        table = report[f"{kind}_detection"]
        print(f"\n{kind} detection (query transformed, index holding every clip; target >= 99%)")
        for name, row in table.items():
            print(f"  {name:22s} {rate(row['found'], row['queries'])}   wrong clip: {row['wrong']}")
        found, total = sum(r["found"] for r in table.values()), sum(r["queries"] for r in table.values())
        print(f"  {'all':22s} {rate(found, total)}")
        if kind == "video":
            o = report["overlap_three_quarters"]
            print(f"  {'window 3/4 overlapping':22s} {rate(o['found'], o['queries'])}")
        fm = report[f"{kind}_false_matches"]
        print(f"{kind} false matches between distinct clips (target <= 0.1%): {rate(fm['matched'], fm['pairs'])}  highest similarities {fm['highest']}")
    print(f"sensor logs at rest (no key, never matched): {report['resting_sensor_logs']}")
    print("\nscale (synthetic stored prints of 10 s clips with video and one 6-axis stream; real transformed queries)")
    print(f"  {'stored clips':>12s} {'video lookups/s':>16s} {'found':>7s} {'sensor lookups/s':>17s} {'found':>7s} {'bytes/clip':>11s} {'build s':>8s}")
    for row in report["scale"]:
        v, s = row["video"], row["sensors"]
        print(
            f"  {row['stored']:12,d} {v['lookups_per_s']:16.1f} {v['found']:>3d}/{v['queries']:<3d} {s['lookups_per_s']:17.1f} "
            f"{s['found']:>3d}/{s['queries']:<3d} {row['bytes_per_clip']:11,d} {row['build_s']:8.1f}"
        )
    print(f"\ntotal {report['total_s']} s (prints {report['prints_s']} s)")


if __name__ == "__main__":
    sys.exit(main())
