"""`knack review`: one clip as a Rerun recording (.rrd), for engineers who look at multimodal data in Rerun: every
camera's video, every sensor channel, the labeler's hand boxes and blurred face regions per frame, and its
verdict, on the recorder's one clock. A clip is read from its directory, its id, or its CID (fetched bounded
and verified first); the pure helpers below build what is logged, `write_review` logs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collector.bundle import (
    FRAMES,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SENSOR_CHANNELS,
    SENSORS,
    BundleFormatError,
    NotRegular,
    frames_by_camera,
    open_regular,
    parse_manifest,
    verify_bundle,
    video_name,
)
from collector.config import Config

# What the Rerun viewer decodes (AV1 natively, H.264 with FFmpeg beside it), as PyAV names them. Any other codec
# (OpenCV's mp4v in clips recorded before AV1) is re-encoded for the review with the recorder's own encoder, so a
# reviewer still gets a seekable video rather than one image per frame (ten times the bytes); the clip is untouched.
PLAYABLE = ("av1", "h264")
# Timelines. `capture_time` is the recorder's monotonic clock itself (the numbers in frames.parquet and
# sensors.parquet), so any row can be found again; `clip_time` is the same instant from the clip's start, what a
# reviewer scrubs and talks about ("the hand slips at 1.8 s") and what the viewer opens on. The wall clock of the
# start (manifest start.utc) is the recording's start time, so the viewer can still show when it happened.
CAPTURE_TIME = "capture_time"
CLIP_TIME = "clip_time"
# Rows read from a bundle's tables, bounded before they are read (a clip from a CID may be anyone's): a 10-minute
# clip of a 1 kHz sensor and a 500 Hz arm is 900,000 rows.
MAX_FRAME_ROWS = 1_000_000
MAX_SENSOR_ROWS = 10_000_000
MAX_SENSOR_VALUES = 64_000_000
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HANDS_COLOR = (40, 220, 90)
FACES_COLOR = (230, 60, 60)


class ReviewError(Exception):
    """A clip that cannot be reviewed (none there, a store that lacks it or is down, a bundle that does not
    verify), in one sentence."""


# --- the clip's content as plain data ---------------------------------------------------------------------
@dataclass(frozen=True)
class Channel:
    entity: str  # entity path of its scalars
    plot: str  # the entity path of the plot it is drawn in (its stream's, or its field's for an arm)
    values: np.ndarray  # float64, one per sample


@dataclass(frozen=True)
class SensorStream:
    name: str
    capture_ns: np.ndarray  # int64, one per sample
    channels: list[Channel]


@dataclass
class Review:
    """What a review wrote: the file and what it holds, for the line a person reads."""

    path: Path
    clip_id: str
    bytes: int = 0
    frames: dict[str, int] = field(default_factory=dict)  # camera -> frame references logged
    channels: int = 0
    samples: int = 0
    hand_frames: int = 0  # sampled frames with a hand box
    face_frames: int = 0  # frames with a blurred face region
    marks: int = 0
    boxes: bool = False  # whether the labeler's boxes were looked for
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why
    seconds: float = 0.0

    def line(self) -> str:
        cameras = ", ".join(f"{name} {n} frames" for name, n in self.frames.items()) or "no video"
        size = f"{self.bytes / 1e6:.1f} MB" if self.bytes >= 1e5 else f"{self.bytes / 1e3:.0f} kB"
        boxes = f"hands on {self.hand_frames} sampled frames, faces blurred on {self.face_frames}" if self.boxes else "no boxes"
        return f"wrote {self.path} ({size}, {self.seconds:.1f} s): {cameras}; {self.channels} sensor channels, {self.samples} samples; {boxes}; {self.marks} mark(s)"


def entity_part(name: str) -> str:
    """A name from a manifest as one entity path part (a '/' in it must not make a new level)."""
    import rerun as rr

    return rr.escape_entity_path_part(name)


def channel_entities(stream: str, channels: list[str], stream_info: Mapping | None = None) -> list[tuple[str, str]]:
    """(entity path, plot path) of each channel: `sensors/<stream>/<channel>`, drawn in its stream's plot; a robot
    arm's `<joint>.<field>` channels as `sensors/<stream>/<field>/<joint>`, drawn in their field's plot, so that
    positions, velocities and efforts (each in its own unit) are each one plot of every joint."""
    info = stream_info or {}
    joints, fields = set(info.get("joints") or ()), set(info.get("fields") or ())
    base = f"sensors/{entity_part(stream)}"
    out = []
    for channel in channels:
        joint, dot, field_name = channel.rpartition(".")
        if dot and joint in joints and field_name in fields:
            plot = f"{base}/{entity_part(field_name)}"
            out.append((f"{plot}/{entity_part(joint)}", plot))
        else:
            out.append((f"{base}/{entity_part(channel)}", base))
    return out


def pair_frames(capture_ns: np.ndarray, video_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Frame i of the table (its capture time) with frame i of the video (its presentation timestamp); a count that
    differs (a truncated video) pairs what both have and says so."""
    video_ns = np.sort(np.asarray(video_ns, np.int64))
    n = min(len(capture_ns), len(video_ns))
    note = (
        None if len(capture_ns) == len(video_ns) else f"frames.parquet lists {len(capture_ns)} frames, the video holds {len(video_ns)}: the first {n} are shown"
    )
    return np.asarray(capture_ns[:n], np.int64), video_ns[:n], note


def face_changes(faces: list[list[tuple]], capture_ns: np.ndarray) -> list[tuple[int, list[tuple]]]:
    """(capture time, boxes) where the blurred regions change from the frame before: a region stays drawn while it
    stays the same, and is cleared (an empty list) on the first frame without it."""
    out, before = [], []
    for boxes, at in zip(faces, capture_ns):
        boxes = [tuple(b) for b in boxes]
        if boxes != before:
            out.append((int(at), boxes))
            before = boxes
    return out


def utc_ns(text) -> int | None:
    """A manifest's UTC time ("2026-01-01T00:00:00.123456789Z") in nanoseconds since the epoch; None if it is not one."""
    try:
        return int(np.datetime64(str(text).removesuffix("Z"), "ns").astype(np.int64))
    except ValueError:
        return None


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()#!<>|~])")  # what can open emphasis, a link, an image, HTML or a cell


def md(value) -> str:
    """A value from a manifest as inert Markdown on one line: no link, image or HTML can come of it (the viewer
    renders the document, and a manifest from a CID is anyone's)."""
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", "".join(c for c in text if c.isprintable()))[:500]


def summary_markdown(manifest: dict, signer: str | None, source: str) -> str:
    """The clip's verdict as a document: decision and reasons, quality score and metrics, labels, privacy."""
    decision = manifest.get("decision") or {}
    quality = manifest.get("quality") or {}
    labels = manifest.get("labels") or {}
    privacy = manifest.get("privacy") or {}
    verdict = ("ACCEPTED" if decision.get("accepted") else "REJECTED") if decision else "NOT LABELED YET"
    lines = [f"# Clip {md(manifest.get('clip_id'))}", "", f"**{verdict}**: {md(decision.get('summary', 'the labeler has not run on this clip'))}", ""]
    reasons = [r for r in decision.get("reasons") or [] if isinstance(r, dict)]
    lines += [f"- {md(r.get('code'))}: {md(r.get('message'))}" for r in reasons] + ([""] if reasons else [])
    lines += [
        f"- source: {md(source)}",
        f"- device: {md(manifest.get('device_id'))} (signature verified{', signed by ' + md(signer) if signer else ''})",
        f"- contributor: {md(manifest.get('contributor'))}",
        f"- start: {md((manifest.get('start') or {}).get('utc'))}, {md(manifest.get('duration_s'))} s",
    ]
    if manifest.get("task"):
        lines.append(f"- task: {md(manifest['task'])}")
    if quality:
        lines += ["", f"## Quality {md(quality.get('score'))}", "", "| where | metric | value |", "| --- | --- | --- |"]
        for group in ("cameras", "streams"):
            for name, metrics in (quality.get(group) or {}).items():
                for key, value in (metrics or {}).items() if isinstance(metrics, dict) else ():
                    lines.append(f"| {md(name)} | {md(key)} | {md(value)} |")
    if labels:
        lines += ["", "## Labels", ""]
        lines += [f"- {md(k)}: {md(v)}" for k, v in (labels.get("hands") or {}).items()]
        lines += [f"- model {md(m.get('name'))} {md(m.get('version'))} on {md(m.get('provider'))}" for m in labels.get("models") or [] if isinstance(m, dict)]
        lines += [f"- {md(name)}: {md(extra.get('labels'))}" for name, extra in (labels.get("extra") or {}).items() if isinstance(extra, dict)]
    if privacy:
        lines += ["", "## Privacy", "", f"- {md(privacy.get('frames_blurred'))} frames blurred, {md(privacy.get('faces'))} faces at most"]
        lines.append(f"- method: {md(privacy.get('method'))}")
    lines += [
        "",
        "## In this recording",
        "",
        "- hand boxes and landmarks: the labeler's sampled frames, each drawn until the next sample",
        "- face regions: what the labeler's blur covers on these pixels; on a labeled clip they are the pinned, already"
        " blurred pixels, so a region here is a face the blur would still cover (the validator sees the same)",
    ]
    return "\n".join(lines)


# --- reading the bundle -----------------------------------------------------------------------------------
def _table(path: Path, max_rows: int, max_values: int | None = None):
    """A bundle table, its size read from the footer before the rows are."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open_regular(path) as f:
            meta = pq.ParquetFile(f).metadata
            if meta.num_rows > max_rows:
                raise ReviewError(f"{path.name} has {meta.num_rows:,} rows (a review reads at most {max_rows:,})")
            if max_values is not None:
                values = sum(meta.row_group(g).column(c).num_values for g in range(meta.num_row_groups) for c in range(meta.num_columns))
                if values > max_values:
                    raise ReviewError(f"{path.name} holds {values:,} values (a review reads at most {max_values:,})")
            f.seek(0)
            return pq.read_table(f)
    except (OSError, NotRegular, pa.ArrowException, ValueError) as exc:
        raise ReviewError(f"{path.name} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def frame_times(clip: Path) -> dict[str, np.ndarray]:
    """Per camera, the capture time of each frame in frame-index order."""
    if not (clip / FRAMES).exists():
        return {}
    grouped = frames_by_camera(_table(clip / FRAMES, MAX_FRAME_ROWS).to_pydict())
    return {camera: np.array(times, np.int64) for camera, (_, times) in grouped.items()}


def sensor_streams(clip: Path, manifest: dict) -> list[SensorStream]:
    """Every stream of sensors.parquet, each channel named by the table's `knack.channels` metadata (the
    manifest's stream channels where the table has none)."""
    if not (clip / SENSORS).exists():
        return []
    import pyarrow.compute as pc

    table = _table(clip / SENSORS, MAX_SENSOR_ROWS, MAX_SENSOR_VALUES)
    try:
        named = json.loads((table.schema.metadata or {}).get(SENSOR_CHANNELS.encode(), b"{}"))
    except ValueError:
        named = {}
    info = {s["name"]: s for s in manifest.get("streams", []) if isinstance(s, dict)}
    out = []
    for stream in sorted(set(table.column("stream").to_pylist())):
        rows = table.filter(pc.equal(table.column("stream"), stream))
        channels = named.get(stream) if isinstance(named, dict) else None
        channels = [str(c) for c in (channels or info.get(stream, {}).get("channels") or [])]
        values = rows.column("values").combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
        width = int(lengths.max(initial=0))
        channels += [f"value_{i}" for i in range(len(channels), width)]  # a value the table does not name is still shown
        if len(lengths) and (lengths == len(channels)).all():  # as the recorder writes it: one reshape
            matrix = np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False), np.float64).reshape(len(lengths), len(channels))
        else:  # rows of differing length: what a row lacks is NaN
            matrix = np.full((len(values), len(channels)), np.nan)
            for r, row in enumerate(values.to_pylist()):
                if row:
                    matrix[r, : len(row)] = np.array(row, np.float64)[: len(channels)]
        entities = channel_entities(stream, channels, info.get(stream))
        out.append(
            SensorStream(
                stream,
                np.asarray(rows.column("capture_ns").to_numpy(zero_copy_only=False), np.int64),
                [Channel(entity, plot, matrix[:, i]) for i, (entity, plot) in enumerate(entities)],
            )
        )
    return out


def cameras(manifest: dict) -> list[str]:
    return [s["name"] for s in manifest.get("streams", []) if s.get("kind") == "camera"]


# --- writing the recording --------------------------------------------------------------------------------
def _times(capture_ns: np.ndarray, start_ns: int):
    import rerun as rr

    capture_ns = np.asarray(capture_ns, np.int64)
    return [
        rr.TimeColumn(CAPTURE_TIME, duration=capture_ns.astype("timedelta64[ns]")),
        rr.TimeColumn(CLIP_TIME, duration=(capture_ns - start_ns).astype("timedelta64[ns]")),
    ]


def _at(rec, capture_ns: int, start_ns: int) -> None:
    rec.set_time(CAPTURE_TIME, duration=np.timedelta64(int(capture_ns), "ns"))
    rec.set_time(CLIP_TIME, duration=np.timedelta64(int(capture_ns) - start_ns, "ns"))


def playable_video(video: Path, scratch: Path, max_seconds: float) -> tuple[Path, str, str | None]:
    """The video as Rerun plays it: the clip's own file when its codec is one the viewer decodes, else a
    re-encoded copy in `scratch`. Returns (file, codec, a note when it was re-encoded)."""
    from collector.video import VideoError, VideoReader, VideoWriter, choose_encoder, probe

    try:
        info = probe(video)
    except VideoError as exc:
        raise ReviewError(str(exc)) from None
    if info.codec in PLAYABLE:
        return video, info.codec, None
    if info.fps <= 0 or info.frames / info.fps > max_seconds:
        raise ReviewError(f"{video.name} is {info.codec}, which Rerun cannot play, and too long ({info.frames} frames at {info.fps:g} fps) to re-encode")
    encoder = choose_encoder()
    copy = scratch / f"{video.stem}-{encoder.codec}{video.suffix}"
    writer = None
    try:
        with VideoReader(video) as reader:
            for frame in reader:
                if writer is None:
                    writer = VideoWriter(copy, info.fps, frame.shape[1], frame.shape[0], encoder)
                writer.write(frame)
        if writer is not None:
            writer.close()
    except (OSError, VideoError) as exc:
        if writer is not None:
            writer.abandon()
        raise ReviewError(f"{video.name} is {info.codec}, which Rerun cannot play, and could not be re-encoded: {exc}") from None
    return copy, encoder.codec, f"{video.name} is {info.codec}, which Rerun cannot play: shown re-encoded as {encoder.codec} (the clip is unchanged)"


def _blueprint(camera_names: list[str], streams: list[SensorStream]):
    """The viewer's layout: cameras with their boxes on the left, a plot per sensor stream (per field of an arm)
    and the verdict on the right, on the clip's own timeline."""
    import rerun.blueprint as rrb

    videos = [rrb.Spatial2DView(origin=f"cameras/{entity_part(c)}", name=c) for c in camera_names]
    plots = []
    for stream in streams:
        base = f"sensors/{entity_part(stream.name)}"
        for plot in dict.fromkeys(c.plot for c in stream.channels if c.entity != f"{base}/seq"):
            # The sequence counter climbs through the thousands and would flatten every other curve of the plot.
            contents = ["+ $origin/*", "- $origin/seq"] if plot == base else ["+ $origin/*"]
            plots.append(rrb.TimeSeriesView(origin=plot, contents=contents, name=stream.name if plot == base else f"{stream.name} {plot.rpartition('/')[2]}"))
    text = rrb.Tabs(
        rrb.TextDocumentView(origin="review/summary", name="verdict"),
        rrb.TextLogView(origin="/", contents=["+ review/**", "+ marks/**", "+ streams/**"], name="log"),
    )
    right = rrb.Vertical(*plots, text) if plots else text
    layout = rrb.Horizontal(rrb.Vertical(*videos), right) if videos else right
    return rrb.Blueprint(layout, rrb.TimePanel(timeline=CLIP_TIME), collapse_panels=False)


def write_review(
    clip: Path,
    out: Path,
    *,
    config: Config,
    signer: str | None = None,
    source: str | None = None,
    detections: Callable[[Path], object] | None = None,
) -> Review:
    """Writes `clip` (a verified bundle) as a Rerun recording to `out`, complete or not at all (a temporary name
    renamed into place). `detections`: a video's per-frame boxes (Labeler.detections), None for none."""
    import rerun as rr

    started = time.monotonic()
    manifest = _manifest_of(clip)
    clip_id = manifest["clip_id"]
    start_ns = int((manifest.get("start") or {}).get("mono_ns") or 0)
    review = Review(Path(out), clip_id, boxes=detections is not None)
    camera_names = cameras(manifest)
    times = frame_times(clip)
    streams = sensor_streams(clip, manifest)
    max_seconds = config.validator.max_clip_seconds
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    scratch = Path(tempfile.mkdtemp(prefix="knack-review-video-"))
    rec = rr.RecordingStream("knack", send_properties=False)
    try:
        rec.set_log_tick_enabled(False)  # the recorder's clock is the only time there is
        rec.set_log_time_enabled(False)
        rec.save(partial, default_blueprint=_blueprint(camera_names, streams))
        rec.send_recording_name(f"clip {clip_id}")
        if (utc := utc_ns((manifest.get("start") or {}).get("utc"))) is not None:
            rec.send_recording_start_time_nanos(utc)
        rec.log("review/summary", rr.TextDocument(summary_markdown(manifest, signer, source or str(clip)), media_type=rr.MediaType.MARKDOWN), static=True)
        _at(rec, start_ns, start_ns)
        decision = manifest.get("decision") or {}
        rec.log(
            "review/decision",
            rr.TextLog(str(decision.get("summary", "not labeled yet")), level=rr.TextLogLevel.INFO if decision.get("accepted") else rr.TextLogLevel.WARN),
        )
        for camera in camera_names:
            video = clip / video_name(camera, len(camera_names))
            if not video.exists() or camera not in times:
                review.notes.append(f"camera {camera} delivered no frame in this clip")
                continue
            _camera(rec, camera, video, times[camera], start_ns, scratch, max_seconds, detections, review)
        for stream in streams:
            for channel in stream.channels:
                rec.send_columns(channel.entity, indexes=_times(stream.capture_ns, start_ns), columns=rr.Scalars.columns(scalars=channel.values))
            review.channels += len(stream.channels)
            review.samples += len(stream.capture_ns)
        for mark in manifest.get("marks") or []:
            if isinstance(mark, dict) and isinstance(mark.get("t_ns"), int):
                _at(rec, mark["t_ns"], start_ns)
                rec.log("marks", rr.TextLog(str(mark.get("label", "mark")), level=rr.TextLogLevel.INFO))
                review.marks += 1
        for stream in manifest.get("streams") or []:
            for gap in stream.get("gaps") or []:
                if isinstance(gap, dict) and isinstance(gap.get("start_ns"), int) and isinstance(gap.get("end_ns"), int):
                    _at(rec, gap["start_ns"], start_ns)
                    seconds = (gap["end_ns"] - gap["start_ns"]) / 1e9
                    rec.log(
                        f"streams/{entity_part(stream['name'])}/gaps",
                        rr.TextLog(f"{stream['name']}: no data for {seconds:.2f} s ({gap.get('reason', 'gap')})", level=rr.TextLogLevel.WARN),
                    )
        rec.flush()
        rec.disconnect()
        os.replace(partial, out)
    except BaseException:
        rec.disconnect()
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    review.bytes = out.stat().st_size
    review.seconds = time.monotonic() - started
    return review


def _camera(rec, camera: str, video: Path, capture_ns: np.ndarray, start_ns: int, scratch: Path, max_seconds: float, detections, review: Review) -> None:
    """One camera: its video (static) with a frame reference at each frame's capture time, and the boxes."""
    import rerun as rr

    base = f"cameras/{entity_part(camera)}"
    playable, _, note = playable_video(video, scratch, max_seconds)
    if note:
        review.notes.append(note)
    asset = rr.AssetVideo(path=playable)
    try:
        video_ns = asset.read_frame_timestamps_nanos()
    except Exception as exc:  # Rerun's own MP4 parser: what it cannot read, the viewer cannot show
        raise ReviewError(f"{video.name} cannot be read by Rerun: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    rec.log(f"{base}/video", asset, static=True)
    times, timestamps, mismatch = pair_frames(capture_ns, video_ns)
    if mismatch:
        review.notes.append(f"camera {camera}: {mismatch}")
    rec.send_columns(f"{base}/video", indexes=_times(times, start_ns), columns=rr.VideoFrameReference.columns_nanos(timestamps))
    review.frames[camera] = len(times)
    if detections is None:
        return
    from collector.labeling import LabelError

    try:
        found = detections(video)
    except LabelError as exc:
        review.notes.append(f"camera {camera}: no boxes ({exc})")
        return
    for index, hands in sorted(found.hands.items()):
        if index >= len(capture_ns):
            continue
        _at(rec, capture_ns[index], start_ns)
        if not hands:
            rec.log(f"{base}/hands", rr.Clear(recursive=True))
            continue
        rec.log(
            f"{base}/hands",
            rr.Boxes2D(
                array=np.array([h.box for h in hands]), array_format=rr.Box2DFormat.XYXY, labels=[f"hand {h.score:.2f}" for h in hands], colors=HANDS_COLOR
            ),
        )
        rec.log(f"{base}/hands/landmarks", rr.Points2D(np.concatenate([h.landmarks for h in hands]), radii=1.5, colors=HANDS_COLOR))
        review.hand_frames += 1
    for at, boxes in face_changes(found.faces[: len(capture_ns)], capture_ns):
        _at(rec, at, start_ns)
        if boxes:
            rec.log(
                f"{base}/faces",
                rr.Boxes2D(array=np.array(boxes, np.float64), array_format=rr.Box2DFormat.XYXY, labels=["blurred"] * len(boxes), colors=FACES_COLOR),
            )
        else:
            rec.log(f"{base}/faces", rr.Clear(recursive=False))
    review.face_frames += sum(bool(b) for b in found.faces[: len(capture_ns)])


# --- where a clip comes from -------------------------------------------------------------------------------
def _manifest_of(clip: Path) -> dict:
    try:
        with open_regular(clip / MANIFEST) as f:
            return parse_manifest(f.read(MAX_MANIFEST_BYTES + 1))
    except (OSError, BundleFormatError) as exc:
        raise ReviewError(f"{clip}: {exc}") from None


def _verified(clip: Path, what: str) -> str | None:
    """The signer of a bundle that verifies; ReviewError with its problems on one line otherwise."""
    check = verify_bundle(clip)
    if not check.ok:
        raise ReviewError(f"{what} is refused: it does not verify ({'; '.join(check.problems[:3])}{'; …' if len(check.problems) > 3 else ''})")
    return check.signer


@contextmanager
def opened(target: str, config: Config, store=None) -> Iterator[tuple[Path, str, str | None, str]]:
    """The clip `target` names, as (directory, output stem, signer, where it came from): a clip directory, a clip
    id under the configured clips, or a CID, fetched from the content store into a scratch directory within the
    bundle's bounds and removed afterwards. Every bundle must verify."""
    from storage.content.cid import Cid, CidError

    path = Path(target)
    if not (path / MANIFEST).is_file() and _SAFE_NAME.fullmatch(target) and (config.clips_path / target / MANIFEST).is_file():
        path = config.clips_path / target
    if (path / MANIFEST).is_file():
        signer = _verified(path, f"clip {path}")
        yield path, _stem(_manifest_of(path)["clip_id"], path.resolve().name), signer, str(path)
        return
    try:
        cid = Cid.parse(target)
    except CidError:
        raise ReviewError(f"no clip {target}: it is not a clip directory, a clip id under {config.clips_path}, or a CID") from None
    scratch = Path(tempfile.mkdtemp(prefix="knack-review-"))
    try:
        _fetch(store, cid, scratch, config)
        signer = _verified(scratch, f"CID {cid}")
        yield scratch, _stem(_manifest_of(scratch)["clip_id"], str(cid)), signer, f"CID {cid}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stem(clip_id: str, otherwise: str) -> str:
    """The review's default file name: a clip id is anyone's text in a bundle from elsewhere ("../../x" is one),
    so only a plain name becomes a file name."""
    return next((name for name in (clip_id, otherwise) if _SAFE_NAME.fullmatch(name)), "review")


def _fetch(store, cid, scratch: Path, config: Config) -> None:
    from knack import wiring
    from storage.content.blockstore import BlockError
    from storage.content.ipfs import StoreUnavailable
    from storage.validator.fetch import ClipFormatError, fetch_clip

    try:
        store = store or wiring.reading_store(config)
    except (StoreUnavailable, OSError) as exc:
        raise ReviewError(f"the content store cannot be opened: {exc}") from None
    try:
        fetch_clip(store.get, cid, scratch)
    except ClipFormatError as exc:
        raise ReviewError(f"CID {cid} is refused: {exc}") from None
    except StoreUnavailable as exc:
        raise ReviewError(str(exc)) from None
    except BlockError as exc:
        raise ReviewError(f"CID {cid} cannot be had from the {store.name} content store: {exc}") from None
    except (OSError, ValueError) as exc:  # a corrupt DAG, a block that is not what its CID says
        raise ReviewError(f"CID {cid} cannot be read as a clip: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def review(target: str, config: Config, out: Path | None = None, *, boxes: bool = True, store=None, labeler=None) -> Review:
    """Reviews the clip `target` names into `out` (default `<clip_id>.rrd` in the current directory)."""
    with opened(target, config, store) as (clip, stem, signer, source):
        if boxes and labeler is None:
            from collector.labeling import Labeler

            labeler = Labeler(config, None)  # assesses only: it never writes a clip
        bound = config.validator.max_clip_seconds
        detections = (lambda video: labeler.detections(video, max_seconds=bound)) if boxes else None
        return write_review(clip, Path(out) if out else Path(f"{stem}.rrd"), config=config, signer=signer, source=source, detections=detections)


# --- the viewer ----------------------------------------------------------------------------------------------
def viewer_binary() -> str | None:
    """The Rerun viewer rerun-sdk ships (rerun_cli/rerun), else a `rerun` on PATH."""
    import importlib.util

    spec = importlib.util.find_spec("rerun_cli")
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "rerun"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return str(shipped)
    return shutil.which("rerun")


def no_display(env: Mapping[str, str], platform: str = sys.platform) -> bool:
    """On Linux a window needs an X or Wayland display; macOS and Windows always have one."""
    return platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def open_viewer(path: Path, env: Mapping[str, str]) -> str:
    """Opens the Rerun viewer on `path` in its own session (it outlives this command); says what happened."""
    binary = viewer_binary()
    if binary is None:
        return f"no Rerun viewer is installed here: open {path} where one is (`pip install rerun-sdk`, then `rerun {path}`)"
    if no_display(env):
        return f"no display here ($DISPLAY and $WAYLAND_DISPLAY are unset): open {path} on a machine with one (`rerun {path}`)"
    process = subprocess.Popen([binary, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        code = process.wait(timeout=1.0)  # a viewer that cannot open its window ends at once
    except subprocess.TimeoutExpired:
        return f"opened the Rerun viewer on {path} (pid {process.pid})"
    return f"the Rerun viewer ended at once (exit {code}): open {path} yourself with `rerun {path}`"


def review_in_data_dir(clip: Path, config: Config, env: Mapping[str, str]) -> str:
    """The app's review of one of its clips (run in a worker): written to <data_dir>/reviews/<clip_id>.rrd, then the
    viewer opened on it where one is installed and a display is present; one line to show. Raises ReviewError."""
    result = review(str(clip), config, config.data_path / "reviews" / f"{Path(clip).name}.rrd")
    line = f"review of {result.clip_id} written: {result.path} ({result.bytes / 1e6:.1f} MB)"
    if viewer_binary() is not None and not no_display(env):
        line += "; " + open_viewer(result.path, env)
    return line


def cmd_review(args) -> int:
    from collector.config import load

    config = load(args.config)
    try:
        result = review(args.clip, config, Path(args.output) if args.output else None, boxes=not args.no_boxes)
    except ReviewError as exc:
        print(f"knack: error: {exc}", file=sys.stderr)
        return 2
    print(result.line())
    for note in result.notes:
        print(f"note: {note}")
    if args.spawn:
        print(open_viewer(result.path, os.environ))
    return 0
