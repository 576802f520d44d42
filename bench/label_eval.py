"""Labeler evaluation on real footage: is each clip accepted or rejected for the reason a person would give,
and is every face in view blurred and nothing else?

The clips are cut from the real sources of `bench/evalset/sources.toml` (pinned public repositories, licences
in `bench/evalset/SOURCES.md`), and degraded copies are derived from the ones showing hands: dark,
over-exposed, defocused, motion-blurred, frozen (one picture repeated; and a stalled capture clock), and still
scenes (a photo or a slowed clip with sensor noise only); the clips with faces are also dimmed to a third of
the light, measured for their faces only (a face must be blurred whatever the clip's fate). Each clip is written as a bundle, as the recorder
would (mp4v video, frames.parquet capture times), and labeled by the shipped labeler with the default policy.

Prints precision of accepted clips, recall of bad clips, reason accuracy, face-blur recall (and in dim light), frames blurred where
no face is (hands or objects blurred as faces), the share of good clips accepted, and a table per category.

    .venv/bin/python bench/label_eval.py [--mirror /work/.mirror] [--cache ~/.cache/knack-evalset] [--only ID,...] [-v]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent / "evalset"))

from fetch import DEFAULT_CACHE, load_sources, source_file  # noqa: E402
from label import make_clip  # noqa: E402

from collector.config import from_mapping  # noqa: E402
from collector.identity import load_or_create  # noqa: E402
from collector.labeling import Labeler  # noqa: E402

MAX_SIZE = (640, 480)
MAX_FPS = 30.0
# Reasons that may come with the expected one without making it wrong (a dark clip also hides the hands).
ALSO = {
    "too_dark": {"no_hands", "blurry"},
    "too_bright": {"no_hands", "blurry"},
    "blurry": {"no_hands"},
    "frozen": {"no_hands"},  # the repeated picture may be one without hands
    "no_hands": {"face_unblurrable"},
    "face_unblurrable": set(),
}


@dataclass
class Clip:
    name: str
    category: str
    frames: list[np.ndarray]
    fps: float
    expect: str | None  # "accept" or the reason code a person would give; None: measured for faces only
    faces: list[list[tuple[float, float, float, float]]] = field(default_factory=list)  # per frame, truth boxes (px)
    times: list[int] | None = None  # capture times (ns); None: regular at 1/fps
    good: bool = True  # counts towards "good clips accepted"


def _fit(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = min(1.0, MAX_SIZE[0] / w, MAX_SIZE[1] / h)
    size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if size != (w, h) else frame


def _face_boxes(tracks: list, t: float, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Truth face boxes at time t (s from the excerpt start), linearly between keyframes, in pixels."""
    out = []
    for keys in tracks:
        times = [k[0] for k in keys]
        if not times or t < times[0] - 1e-6 or t > times[-1] + 1e-6:
            continue
        box = [float(np.interp(t, times, [k[i] for k in keys])) for i in range(1, 5)]
        out.append((box[0] * width, box[1] * height, box[2] * width, box[3] * height))
    return out


def read_excerpt(path: Path, source: dict) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 1.0 <= fps <= 240.0 else 15.0
    step = max(1, round(fps / MAX_FPS))
    first, count = round(source["start_s"] * fps), round(source["seconds"] * fps)
    frames, index = [], 0
    while index < first + count:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= first and (index - first) % step == 0:
            frames.append(_fit(frame))
        index += 1
    capture.release()
    return frames, fps / step


def camera_path(image: np.ndarray, seconds: float, fps: float, seed: int, moving: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A hand-held camera over a photo: a crop of 80% drifting and shaking smoothly, with sensor noise; or a
    fixed camera (a still scene: only the noise changes). Returns the frames and each frame's affine matrix."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out_w, out_h = _fit(np.zeros((int(h * 0.8), int(w * 0.8), 1), np.uint8)).shape[1::-1]
    frames, matrices = [], []
    phases = rng.uniform(0, 2 * math.pi, 6)
    for k in range(round(seconds * fps)):
        t = k / fps
        if moving:
            dx = 0.06 * math.sin(0.9 * t + phases[0]) + 0.01 * math.sin(7.3 * t + phases[1])
            dy = 0.05 * math.sin(0.7 * t + phases[2]) + 0.01 * math.sin(6.1 * t + phases[3])
            zoom = 0.8 + 0.04 * math.sin(0.5 * t + phases[4])
            angle = 1.5 * math.sin(0.6 * t + phases[5])
        else:
            dx = dy = angle = 0.0
            zoom = 0.8
        cx, cy = w / 2 + dx * w, h / 2 + dy * h
        scale = out_w / (zoom * w)
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        matrix[0, 2] += out_w / 2 - cx
        matrix[1, 2] += out_h / 2 - cy
        frame = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        noise = rng.normal(0, 1.5, frame.shape)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
        matrices.append(matrix)
    return frames, matrices


def _noisy(frame: np.ndarray, rng, sigma: float) -> np.ndarray:
    return np.clip(frame.astype(np.float32) + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return kernel / kernel.sum()


def dimmed(base: Clip, seed: int) -> Clip:
    """The clip in a dim room (a third of the light, with sensor noise), measured for its faces only: whether it
    should be accepted depends on how dark the source already was, but every face in it must be blurred."""
    rng = np.random.default_rng(seed)
    frames = [_noisy((f * 0.3).astype(np.uint8), rng, 1.5) for f in base.frames]
    return Clip(f"{base.name}+dim", "dim (faces only)", frames, base.fps, None, base.faces, good=False)


def variants(base: Clip, seed: int) -> list[Clip]:
    """The degraded copies of a clip that shows hands, each with the reason a person would give."""
    rng = np.random.default_rng(seed)
    side = max(base.frames[0].shape[:2])  # blur lengths relative to the long side, as 31 px at 640 x 480
    out = []

    def derive(kind: str, category: str, frames: list[np.ndarray], expect: str, times=None) -> None:
        out.append(Clip(f"{base.name}+{kind}", category, frames, base.fps, expect, base.faces, times, good=False))

    derive("dark", "dark", [_noisy((f * 0.16).astype(np.uint8), rng, 1.5) for f in base.frames], "too_dark")
    # Exposure pushed until half the picture is blown out (as an auto-exposure fooled by a dark scene does).
    gain = 250.0 / max(8.0, float(np.median(cv2.cvtColor(base.frames[0], cv2.COLOR_BGR2GRAY))))
    blown = [np.clip(f.astype(np.float32) * gain, 0, 255).astype(np.uint8) for f in base.frames]
    derive("overexposed", "over-exposed", blown, "too_bright")
    sigma = 0.012 * side
    derive("defocus", "blur", [cv2.GaussianBlur(f, (0, 0), sigma) for f in base.frames], "blurry")
    kernel = _motion_kernel(max(9, int(0.05 * side) | 1), float(rng.uniform(0, 180)))
    derive("motion", "blur", [cv2.filter2D(f, -1, kernel) for f in base.frames], "blurry")
    derive("frozen", "frozen", [base.frames[0].copy() for _ in base.frames], "frozen")
    # A capture that stalls a third of the way in: the last picture repeated, capture times barely moving.
    cut = len(base.frames) // 3
    period = int(1e9 / base.fps)
    times = [k * period for k in range(cut)] + [cut * period + k * 1000 for k in range(len(base.frames) - cut)]
    derive("stalled", "frozen", base.frames[:cut] + [base.frames[cut].copy() for _ in range(len(base.frames) - cut)], "frozen", times)
    return out


def slowed(base: Clip, seed: int, factor: int = 3) -> Clip:
    """Slow, small movement under a fixed camera: the clip played at 1/factor speed, frames blended between the
    real ones, fresh sensor noise on each (never two identical frames, yet little changes)."""
    rng = np.random.default_rng(seed)
    frames, faces = [], []
    for k in range(len(base.frames) * factor // 2):
        pos = k / factor
        i = int(pos)
        a, b = base.frames[i], base.frames[min(i + 1, len(base.frames) - 1)]
        blend = cv2.addWeighted(a, 1 - (pos - i), b, pos - i, 0)
        frames.append(_noisy(blend, rng, 1.2))
        faces.append(base.faces[i] if base.faces else [])
    return Clip(f"{base.name}+slow", "still scene", frames, base.fps, base.expect, faces if base.faces else [])


def base_clips(sources: list[dict], cache: Path, mirror: Path | None, max_face_area: float, margin: float) -> list[Clip]:
    clips = []
    for n, source in enumerate(sources):
        path = source_file(source, cache, mirror)
        hands = bool(source["hands"])
        if source["kind"] == "image":
            image = _fit(cv2.imread(str(path)))
            for moving in (True, False):
                frames, matrices = camera_path(image, 4.0, 30.0, seed=n, moving=moving)
                h, w = frames[0].shape[:2]
                faces = []
                for matrix in matrices:
                    boxes = []
                    for fx1, fy1, fx2, fy2 in _face_boxes(source["faces"], 0.0, image.shape[1], image.shape[0]):
                        corners = np.array([[fx1, fy1], [fx2, fy1], [fx1, fy2], [fx2, fy2]]) @ matrix[:, :2].T + matrix[:, 2]
                        boxes.append((*corners.min(axis=0), *corners.max(axis=0)))
                    faces.append(boxes)
                category = ("gloves and tools" if source["gloves"] or source["tools"] else "good") if moving else "still scene"
                expect = "accept" if hands else "no_hands"
                clips.append(Clip(f"{source['id']}{'' if moving else '+still'}", category if hands else "no hands", frames, 30.0, expect, faces))
            continue
        frames, fps = read_excerpt(path, source)
        if not frames:
            raise RuntimeError(f"source {source['id']}: no frames read from {path}")
        h, w = frames[0].shape[:2]
        faces = [_face_boxes(source["faces"], k / fps, w, h) for k in range(len(frames))]
        largest = max((((b[2] - b[0]) * (1 + 2 * margin)) * ((b[3] - b[1]) * (1 + 2 * margin)) / (w * h) for f in faces for b in f), default=0.0)
        if not hands:
            expect, category = "no_hands", "no hands"
        elif largest > max_face_area:
            expect, category = "face_unblurrable", "face in view"
        else:
            expect = "accept"
            category = "face in view" if source["faces"] else "gloves and tools" if source["gloves"] or source["tools"] else "good"
        clips.append(Clip(source["id"], category, frames, fps, expect, faces, good=expect == "accept"))
    return clips


def write_bundle(clips_dir: Path, clip: Clip, key) -> Path:
    """The clip as the recorder would write it: an mp4v video and its capture times, signed."""
    h, w = clip.frames[0].shape[:2]
    video = clips_dir.parent / "eval-video.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (w, h))
    for frame in clip.frames:
        writer.write(frame)
    writer.release()
    times = clip.times or [round(k * 1e9 / clip.fps) for k in range(len(clip.frames))]
    path, _, _ = make_clip(clips_dir, video, key, capture_ns=times)
    return path


def _covers(blurred: list, face: tuple) -> bool:
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in blurred)


def _on_a_face(box: tuple, faces: list) -> bool:
    area = max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
    for f in faces:
        w = min(box[2], f[2]) - max(box[0], f[0])
        h = min(box[3], f[3]) - max(box[1], f[1])
        if w > 0 and h > 0 and w * h / area >= 0.1:
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--mirror", type=Path, default=None, help="directory of git mirrors <owner>+<name>/repo (no network needed)")
    parser.add_argument("--only", default="", help="comma-separated source ids")
    parser.add_argument("--json", type=Path, default=None, help="also write every clip's result here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    sources = load_sources()
    if args.only:
        sources = [s for s in sources if s["id"] in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="knack-label-eval-"))
    try:
        key, _ = load_or_create(work / "key.json", "eval", kdf="pbkdf2", iterations=1000)
        config = from_mapping({"data_dir": str(work / "data")}).validate()
        labeler = Labeler(config, key)
        bases = base_clips(sources, args.cache, args.mirror, config.policy.max_face_area, config.labeler.face_margin)
        clips = list(bases)
        clips += [dimmed(base, seed=n) for n, base in enumerate(b for b in bases if any(b.faces) and b.category != "still scene")]
        for n, base in enumerate(b for b in bases if b.expect == "accept" and b.category != "still scene"):
            clips += variants(base, seed=n)
            if base.category in ("good", "gloves and tools") and not base.name.endswith("+still") and n % 2 == 0:
                clips.append(slowed(base, seed=n))
        return evaluate(labeler, config, key, clips, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def evaluate(labeler: Labeler, config, key, clips: list[Clip], args) -> int:
    rows = []
    face_frames = face_blurred = false_frames = false_clips = 0
    dim_frames = dim_blurred = 0
    started = time.monotonic()
    video_seconds = 0.0
    for clip in clips:
        path = write_bundle(config.clips_path, clip, key)
        result = labeler.label(path)
        video_seconds += len(clip.frames) / clip.fps
        manifest = json.loads((path / "manifest.json").read_text())
        codes = [r["code"] for r in manifest["decision"]["reasons"]]
        blurred = result.blurred.get("cam", [])
        # Faces: only on clips whose picture is not degraded (a dark clip is rejected whatever it blurs).
        clip_face, clip_covered, clip_false = 0, 0, 0
        for k, truth in enumerate(clip.faces[: len(blurred)]):
            boxes = blurred[k]
            if clip.good or clip.category in ("face in view", "no hands", "still scene") or clip.expect is None:
                for face in truth:
                    clip_face += 1
                    clip_covered += _covers(boxes, face)
            clip_false += any(not _on_a_face(b, truth) for b in boxes)
        if clip.expect is None:
            dim_frames += clip_face
            dim_blurred += clip_covered
        else:
            face_frames += clip_face
            face_blurred += clip_covered
        false_frames += clip_false
        false_clips += clip_false > 0
        bad = clip.expect not in ("accept", None)
        accepted = manifest["decision"]["accepted"]
        right_reason = bad and not accepted and clip.expect in codes and set(codes) <= {clip.expect} | ALSO.get(clip.expect, set())
        correct = (not bad and accepted) or right_reason
        rows.append(
            {
                "clip": clip.name,
                "category": clip.category,
                "expect": clip.expect,
                "accepted": accepted,
                "reasons": codes,
                "correct": correct,
                "bad": bad,
                "good": clip.good,
            }
        )
        rows[-1].update(
            {
                "face_frames": clip_face,
                "face_frames_blurred": clip_covered,
                "frames_blurred_without_a_face": clip_false,
                "hand_fraction": manifest["labels"]["hands"]["hand_fraction"] if manifest["labels"]["hands"] else None,
                "camera": manifest["quality"]["cameras"].get("cam"),
                "summary": manifest["decision"]["summary"],
            }
        )
        if clip.expect is None:
            rows[-1].update({"correct": None, "bad": None})
        if args.verbose or (not correct and clip.expect is not None) or clip_false or clip_covered < clip_face:
            cam = manifest["quality"]["cameras"].get("cam", {})
            print(
                f"{'ok ' if correct else 'BAD'} {clip.name:38s} {clip.category:17s} expect {clip.expect:16s} got {','.join(codes) or 'accepted':30s} "
                f"hands {rows[-1]['hand_fraction']} blur {cam.get('edge_blur_px')} luma {cam.get('luma_mean')} over {cam.get('overexposed_fraction')} "
                f"frozen {cam.get('frozen_fraction')} faces {clip_covered}/{clip_face} false {clip_false}",
                flush=True,
            )
    elapsed = time.monotonic() - started
    dim = [r for r in rows if r["expect"] is None]
    rows = [r for r in rows if r["expect"] is not None]
    accepted = [r for r in rows if r["accepted"]]
    bad = [r for r in rows if r["bad"]]
    rejected_bad = [r for r in bad if not r["accepted"]]
    good = [r for r in rows if r["good"]]
    precision = sum(not r["bad"] for r in accepted) / max(1, len(accepted))
    recall = len(rejected_bad) / max(1, len(bad))
    reasons = sum(r["correct"] for r in rejected_bad) / max(1, len(rejected_bad))
    good_accepted = sum(r["accepted"] for r in good) / max(1, len(good))
    print()
    print(
        f"{len(rows)} clips ({sum(not r['bad'] for r in rows)} to accept, {len(bad)} to reject) and {len(dim)} dim copies for faces, "
        f"{video_seconds:.0f} s of video labeled in {elapsed:.0f} s"
    )
    print(f"  precision of accepted clips   {precision:.3f}  ({sum(not r['bad'] for r in accepted)}/{len(accepted)})")
    print(f"  recall of bad clips           {recall:.3f}  ({len(rejected_bad)}/{len(bad)})")
    print(f"  reason accuracy               {reasons:.3f}  ({sum(r['correct'] for r in rejected_bad)}/{len(rejected_bad)})")
    print(f"  face-blur recall              {face_blurred / max(1, face_frames):.3f}  ({face_blurred}/{face_frames} frames with a face in view)")
    print(f"  face-blur recall, dim light   {dim_blurred / max(1, dim_frames):.3f}  ({dim_blurred}/{dim_frames} frames, copies at a third of the light)")
    print(f"  blurred where no face is      {false_frames} frames in {false_clips} clips (hands or objects blurred as faces)")
    print(f"  good clips accepted           {good_accepted:.3f}  ({sum(r['accepted'] for r in good)}/{len(good)})")
    print()
    table = defaultdict(list)
    for r in rows:
        table[r["category"]].append(r)
    print(f"  {'category':18s} {'clips':>5s} {'accepted':>8s} {'correct':>7s}")
    for category in sorted(table):
        group = table[category]
        print(f"  {category:18s} {len(group):5d} {sum(r['accepted'] for r in group):8d} {sum(r['correct'] for r in group):7d}")
    if args.json:
        args.json.write_text(json.dumps(rows + dim, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
