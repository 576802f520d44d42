"""Labels a clip bundle on the device: one decoding pass over each video feeds the models (sampled frames, in
batches), the quality metrics (every frame) and the face blur (every frame, written as it goes); then the
policy decides, and the manifest is rewritten and re-signed."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import logging
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import collector
from collector.bundle import (
    FRAMES,
    MANIFEST,
    VIDEO_STEM,
    VIDEO_SUFFIX,
    frames_by_camera,
    is_video,
    link_unchanged,
    recover_staged,
    replace_clip,
    stage,
    verify_bundle,
    video_name,
    write_manifest,
)
from collector.config import Config
from collector.identity import DeviceKey
from collector.labeling import privacy
from collector.labeling.models import Models
from collector.labeling.policy import decide, decision
from collector.labeling.quality import PictureQuality, brightest_channel, hand_motion, quality_score, repeated_frames, stream_quality
from collector.labeling.tracking import FaceTracker, TrackerConfig, on_a_hand
from collector.video import VideoError, VideoReader, VideoWriter, choose_encoder, probe

log = logging.getLogger("knack.labeler")

# How faces are followed between sampled frames (thresholds relative to the face model card's own).
TRACKING = TrackerConfig()


class LabelError(Exception):
    """A clip that cannot be labeled (it does not verify, or its video cannot be read); it is left as it was."""


@dataclass(frozen=True)
class Labeled:
    clip_id: str
    path: Path
    accepted: bool
    summary: str
    score: float
    faces_blurred_frames: int
    seconds: float
    # Per camera, per frame, the face boxes blurred (x1, y1, x2, y2): for evaluation and review, not the manifest.
    blurred: dict[str, list[list[tuple[int, int, int, int]]]] = field(default_factory=dict)


@dataclass
class VideoResult:
    picture: PictureQuality = field(default_factory=PictureQuality)
    privacy: privacy.PrivacyLog = field(default_factory=privacy.PrivacyLog)
    hand_counts: list[int] = field(default_factory=list)
    tracks: list[tuple[float, list[np.ndarray]]] = field(default_factory=list)
    extra: list[list[np.ndarray]] = field(default_factory=list)
    blurred: list[list[tuple[int, int, int, int]]] = field(default_factory=list)  # per frame
    hands: dict[int, list] = field(default_factory=dict)  # per sampled frame index, the Hands found (for review)
    width: int = 0
    height: int = 0
    fps: float = 0.0

    def summary(self) -> dict:
        counts = self.hand_counts
        out = self.picture.summary()
        out.update(
            {
                "hand_fraction": round(sum(c > 0 for c in counts) / len(counts), 4) if counts else 0.0,
                "hands_max": max(counts, default=0),
                "hands_mean": round(float(np.mean(counts)), 3) if counts else 0.0,
                **hand_motion(self.tracks, max(1, self.width)),
                "width": self.width,
                "height": self.height,
                "fps": round(self.fps, 3),
            }
        )
        return out


def _check_complete(video: Path, frames: int) -> None:
    """Count what the blurred video holds before it may replace the original (a full disk gives a short file)."""
    try:
        written = probe(video).frames
    except VideoError:
        written = 0
    if written != frames:
        raise LabelError(f"the blurred video holds {written} of {frames} frames (disk full?): the clip keeps its original video and stays unlabeled")


def _copy_frames(path: Path, writer: VideoWriter, count: int) -> None:
    """The first `count` frames of the video, decoded again, into the writer: the frames before the first face."""
    copied = 0
    with VideoReader(path) as reader:
        for frame in reader:
            if copied == count:
                return
            writer.write(frame)
            copied += 1
    if copied < count:
        raise LabelError(f"{path.name} gave fewer frames when read a second time to blur a face: the clip keeps its original video and stays unlabeled")


def _repeated_frames(path: Path) -> dict[str, list[bool]]:
    """Per camera of the device's own clip, which frames its capture times say are no new picture (a frozen
    capture delivering one picture twice). The validator does not read this table: it is the device's word, and
    it could only ever make the device's verdict stricter."""
    if not path.exists():
        return {}
    try:
        table = pq.read_table(path, columns=["camera", "frame_index", "capture_ns"]).to_pydict()
    except (OSError, ValueError, pa.ArrowException) as exc:  # a table the recorder did not write: judge the pixels alone
        log.warning("%s cannot be read (%s): frozen frames are judged from the pixels alone", path, exc)
        return {}
    return {camera: repeated_frames(times) for camera, (_, times) in frames_by_camera(table).items()}


@dataclass(frozen=True)
class FrameDetections:
    """What the labeler finds in one video, frame by frame (Labeler.detections)."""

    width: int
    height: int
    fps: float
    frames: int
    hands: dict[int, list]  # sampled frame index -> its Hands (box x1, y1, x2, y2; presence score; 21 landmarks)
    faces: list[list[tuple[int, int, int, int]]]  # every frame -> the face regions the blur covers there


def _frame_limit(video: Path, max_seconds: float, max_pixels: int) -> int:
    """How many frames of a video from elsewhere may be decoded; LabelError for one too long, too large or with
    an absurd frame rate, said by its container before anything is decoded."""
    try:
        info = probe(video)
    except VideoError as exc:
        raise LabelError(str(exc)) from exc
    fps, frames, pixels = info.fps, info.frames, info.width * info.height
    if not 1.0 <= fps <= 1000.0:
        raise LabelError(f"{video.name} has a frame rate of {fps:g} fps")
    if pixels > max_pixels:
        raise LabelError(f"{video.name} is {pixels:,.0f} pixels a frame (at most {max_pixels:,})")
    if frames / fps > max_seconds:
        raise LabelError(f"{video.name} lasts {frames / fps:,.0f} s (at most {max_seconds:g} s)")
    return int(max_seconds * fps) + 1


class Labeler:
    """Holds the model sessions (created once) and labels clips one after another."""

    def __init__(self, config: Config, key: DeviceKey | None, models: Models | None = None):
        """`key` None: a labeler that only assesses (the validator's), which never writes a clip."""
        self.config, self.key = config, key
        self.models = models or Models(config.labeler)
        self.provider = self.models.provider
        if key is not None:
            for message in recover_staged(config.clips_path):
                log.info(message)

    def label(self, clip: Path) -> Labeled:
        started = time.monotonic()
        clip = Path(clip)
        check = verify_bundle(clip)
        if not check.ok:
            raise LabelError(f"{clip.name} was not labeled: it does not verify ({'; '.join(check.problems)})")
        manifest = json.loads((clip / MANIFEST).read_text(encoding="utf-8"))
        cameras = [s["name"] for s in manifest.get("streams", []) if s.get("kind") == "camera"]
        repeats = _repeated_frames(clip / FRAMES)
        staging = stage(clip)
        try:
            results: dict[str, VideoResult] = {}
            for name in cameras:
                video = clip / video_name(name, len(cameras))
                if not video.exists():
                    continue  # a camera that delivered no frame in this clip
                target = staging / video.name if self.config.labeler.blur_faces else None
                results[name] = self._video(video, target, repeated=repeats.get(name))
                if target is not None and not results[name].privacy.frames_blurred:
                    target.unlink(missing_ok=True)
                elif target is not None:
                    _check_complete(target, results[name].picture.frames)
                    # The labels are the pinned pixels': measured again on the blurred video, as the validator will
                    # (the faces found and blurred stay those of the original's pass).
                    measured = self._video(target, None, repeated=repeats.get(name))
                    results[name] = dataclasses.replace(measured, privacy=results[name].privacy, blurred=results[name].blurred)
            manifest = self._annotate(manifest, results)
            blurred = self.config.labeler.blur_faces and any(r.privacy.frames_blurred for r in results.values())
            if blurred:
                link_unchanged(clip, staging)
                write_manifest(staging, manifest, self.key)
                replace_clip(staging, clip)
            else:
                shutil.rmtree(staging)
                write_manifest(clip, manifest, self.key)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        outcome = manifest["decision"]
        labeled = Labeled(
            manifest["clip_id"],
            clip,
            outcome["accepted"],
            outcome["summary"],
            manifest["quality"]["score"],
            sum(r.privacy.frames_blurred for r in results.values()),
            time.monotonic() - started,
            {name: r.blurred for name, r in results.items()},
        )
        log.debug("clip %s: %s (quality %.2f, %.1f s)", labeled.clip_id, labeled.summary, labeled.score, labeled.seconds)
        return labeled

    def assess(self, clip: Path, manifest: dict, *, max_seconds: float = 600.0, max_pixels: int = 4096 * 2160) -> dict:
        """The labels, quality and decision this labeler's models and policy give the clip's own pixels (as
        pinned), writing nothing: the validator's verdict on a clip from elsewhere. The duration is measured
        from the video, not read from the manifest; a video too long or too large is refused before decoding."""
        videos = sorted(p for p in Path(clip).iterdir() if p.is_file() and is_video(p.name))
        results: dict[str, VideoResult] = {}
        duration = 0.0
        for video in videos:
            name = video.name.removeprefix(VIDEO_STEM).removeprefix("-").removesuffix(VIDEO_SUFFIX) or "video"
            results[name] = self._video(video, None, limit=_frame_limit(video, max_seconds, max_pixels))
            duration = max(duration, results[name].picture.frames / results[name].fps)
        return self._annotate(dict(manifest, duration_s=round(duration, 6)), results)

    def detections(self, video: Path, *, max_seconds: float = 600.0, max_pixels: int = 4096 * 2160) -> FrameDetections:
        """Per frame, the hands and the face regions this labeler finds in `video` by the very pass that labels it
        (the manifest keeps only clip-level labels): for review, writing nothing. On a labeled clip's video these
        are the pinned pixels', as the validator sees them. Bounded before decoding as `assess` is."""
        result = self._video(Path(video), None, limit=_frame_limit(Path(video), max_seconds, max_pixels))
        return FrameDetections(result.width, result.height, result.fps, result.picture.frames, result.hands, result.blurred)

    def _video(self, path: Path, target: Path | None, limit: int | None = None, repeated: list[bool] | None = None) -> VideoResult:
        """One decoding pass: hands and faces on sampled frames (in a worker), faces followed on the frames
        between them, quality on every frame, and the blurred copy written to `target` (None: measure only).
        `repeated`: per frame, whether the capture times say it is no new picture."""
        try:
            reader = VideoReader(path)
        except VideoError as exc:
            raise LabelError(str(exc)) from exc
        result = VideoResult(fps=reader.info.fps or 30.0)
        result.extra = [[] for _ in self.models.extra]
        # Frame i is sampled when it starts a new 1/sample_fps interval: exactly sample_fps on average.
        per_frame = min(1.0, self.config.labeler.sample_fps / result.fps)
        keep = min(TRACKING.keep, self.models.faces.threshold)
        tracking = dataclasses.replace(TRACKING, start=self.models.faces.threshold, keep=keep, margin=self.config.labeler.face_margin)
        tracker: FaceTracker | None = None
        writer = None
        pending: deque[tuple[int, np.ndarray]] = deque()
        batch: list[tuple[int, np.ndarray]] = []
        sampled: list[int] = []  # sample frame indices already run, in order
        faces_at: dict[int, list] = {}
        hands_at: dict[int, list[np.ndarray]] = {}
        greys: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # sampled frames waiting for their hands

        following: list[tuple[np.ndarray, int]] = []  # the last sampled frame's hands, followed into the next batch

        def infer(frames: list[np.ndarray]):
            return self.models.hands.detect(frames, following), self.models.faces.detect(frames, keep), [c.scores(frames) for c in self.models.extra]

        def record(indices: list[int], found) -> None:
            hands, faces, extra = found
            for k, index in enumerate(indices):
                result.hand_counts.append(len(hands[k]))
                result.tracks.append((index / result.fps, [h.landmarks for h in hands[k]]))
                grey, peak = greys.pop(index)
                result.picture.add_hands(grey, [h.landmarks for h in hands[k]], peak)
                faces_at[index] = faces[k]
                hands_at[index] = [h.landmarks for h in hands[k]]
                result.hands[index] = hands[k]
                sampled.append(index)
                for m, scores in enumerate(extra):
                    result.extra[m].append(scores[k])

        def verify(frame: np.ndarray, box) -> float:
            return self.models.verifier.score(frame, box)

        def may_be_face(index: int | None) -> bool:
            """A sampled frame's detection that could start a face track: a face's score, and not on a hand."""
            hands = hands_at.get(index, [])
            return any(f.score >= tracking.start and not on_a_hand(f.keypoints, f.box, hands) for f in faces_at.get(index) or [])

        def detect_between(frames: list[tuple[int, np.ndarray]], before: int | None, after: int | None) -> dict[int, list]:
            """Faces on every frame between two samples when a face is near (a track that may be a face is alive,
            or either sample saw a detection that could start one): a face that comes into view between samples
            and stays to the next one is caught from its first frame. Only a face in view for less than one
            sampling interval can pass unseen."""
            if not (tracker.following or may_be_face(before) or may_be_face(after)):
                return {}
            found = self.models.faces.detect([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for _, f in frames], keep)
            result.privacy.frames_searched += len(frames)
            return {index: faces for (index, _), faces in zip(frames, found)}

        def flush(final: bool) -> None:
            nonlocal writer
            last = sampled[-1] if sampled else -1
            ready: list[tuple[int, np.ndarray]] = []
            while pending and (final or pending[0][0] <= last):
                ready.append(pending.popleft())
            boxes: dict[int, list] = {}
            gap: list[tuple[int, np.ndarray]] = []

            def follow(frames: list[tuple[int, np.ndarray]], after: int | None) -> None:
                at = bisect.bisect_left(sampled, frames[0][0])
                before = sampled[at - 1] if at > 0 else None
                found = detect_between(frames, before, after)
                for index, frame in frames:
                    nearest = min((s for s in (before, after) if s is not None), key=lambda s: abs(s - index), default=None)
                    boxes[index] = tracker.update(index, found.get(index), hands_at.get(nearest, []), functools.partial(verify, frame))

            for index, frame in ready:
                if faces_at.get(index) is not None and index in hands_at:
                    if gap:
                        follow(gap, index)
                        gap = []
                    boxes[index] = tracker.update(index, faces_at[index], hands_at[index], functools.partial(verify, frame))
                else:
                    gap.append((index, frame))
            if gap:
                follow(gap, None)
            for index, box in tracker.take_backfill():
                if index in boxes:
                    boxes[index].append(box)
            for index, frame in ready:
                found = boxes[index]
                result.blurred.append(found)
                if found:
                    result.privacy.add_blurred(found, result.width, result.height)
                if target is None or (writer is None and not found):
                    continue  # most clips show no face: nothing is written until one must be blurred
                if found:
                    privacy.blur(frame, found)
                if writer is None:
                    try:
                        writer = VideoWriter(target, result.fps, result.width, result.height, choose_encoder(self.config.recorder.video_codec))
                    except (OSError, VideoError) as exc:
                        raise LabelError(f"cannot write the blurred video {target}: {exc}") from exc
                    _copy_frames(path, writer, index)
                writer.write(frame)
            result.privacy.faces_rejected_as_hands = tracker.rejected_as_hands

        # The models run on one batch in a worker thread while this thread decodes, measures and writes the
        # frames of the next: onnxruntime and OpenCV both release the GIL, so the two overlap on two cores.
        running: tuple[list[int], Future] | None = None

        def collect() -> None:
            nonlocal running
            if running is not None:
                indices, future = running
                running = None
                record(indices, future.result())
                flush(final=False)

        index = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="knack-models") as models:
            try:
                for frame in reader:
                    if limit is not None and index >= limit:
                        break
                    if index == 0:
                        result.height, result.width = frame.shape[:2]
                        tracker = FaceTracker(result.fps, result.width, result.height, tracking)
                    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                    result.picture.add_frame(grey, repeated=bool(repeated and index < len(repeated) and repeated[index]))
                    if index == 0 or int(index * per_frame) != int((index - 1) * per_frame):
                        peak = brightest_channel(frame)
                        result.picture.add_sample(grey, peak)
                        greys[index] = (grey, peak)
                        batch.append((index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                    pending.append((index, frame))
                    if len(batch) >= self.config.labeler.batch_size:
                        collect()
                        running = ([i for i, _ in batch], models.submit(infer, [rgb for _, rgb in batch]))
                        batch = []
                    index += 1
                collect()
                if batch:
                    record([i for i, _ in batch], infer([rgb for _, rgb in batch]))
                if tracker is not None:
                    flush(final=True)
            except BaseException:
                if writer is not None:
                    writer.abandon()  # the staged copy is thrown away with the error
                raise
            finally:
                if running is not None:
                    running[1].cancel()
                reader.close()
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:
                raise LabelError(f"the blurred video could not be finished ({exc}): the clip keeps its original video and stays unlabeled") from exc
        return result

    def _annotate(self, manifest: dict, results: dict[str, VideoResult]) -> dict:
        """The manifest with labels, quality, privacy and decision filled in from this labeling."""
        config = self.config
        cameras = {name: r.summary() for name, r in results.items()}
        streams = stream_quality(manifest)
        faces = max((r.privacy.max_faces for r in results.values()), default=0)
        privacy_facts = {
            "faces": faces,
            "face_detections": sum(r.privacy.detections for r in results.values()),
            "frames_blurred": sum(r.privacy.frames_blurred for r in results.values()),
            "largest_area": round(max((r.privacy.largest_area for r in results.values()), default=0.0), 4),
            "frames_searched": sum(r.privacy.frames_searched for r in results.values()),
            "faces_rejected_as_hands": sum(r.privacy.faces_rejected_as_hands for r in results.values()),
            "blurred": config.labeler.blur_faces,
            "method": privacy.METHOD if config.labeler.blur_faces else "none (labeler.blur_faces is off)",
            "margin": config.labeler.face_margin,
            "model": self.models.faces.detector.card.name,
            "verifier": self.models.verifier.detector.detector.card.name,
        }
        reasons = decide({"duration_s": manifest.get("duration_s"), "cameras": cameras, "streams": streams, "privacy": privacy_facts}, config.policy)
        best = max(cameras.values(), key=lambda c: c["hand_fraction"], default=None)
        score = quality_score(best["hand_fraction"], best, streams, config.policy) if best else 0.0
        extra = {}
        for m, classifier in enumerate(self.models.extra):
            scores = [s for r in results.values() for s in r.extra[m]]
            mean = np.mean(scores, axis=0) if scores else np.zeros(len(classifier.card.labels))
            threshold = float(classifier.card.decode.get("threshold", 0.5))
            extra[classifier.card.name] = {
                "labels": [label for label, value in zip(classifier.card.labels, mean) if value >= threshold],
                "top": classifier.card.labels[int(np.argmax(mean))] if scores else None,
                "scores": {label: round(float(value), 4) for label, value in zip(classifier.card.labels, mean)},
            }
        labels = {
            "labeled_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "labeler": collector.__version__,
            "execution_provider": self.provider,
            "sample_fps": config.labeler.sample_fps,
            "models": self.models.describe(),
            "hands": {k: best[k] for k in ("hand_fraction", "hands_max", "hands_mean", "hand_speed", "motion_energy")} if best else None,
            "cameras": {name: {k: c[k] for k in ("hand_fraction", "hands_max", "hands_mean", "hand_speed", "motion_energy")} for name, c in cameras.items()},
            "extra": extra,
        }
        quality = {
            "score": score,
            "cameras": {name: {k: v for k, v in c.items() if k not in labels["cameras"][name]} for name, c in cameras.items()},
            "streams": streams,
        }
        return dict(manifest, labels=labels, quality=quality, privacy=privacy_facts, decision=decision(reasons))
