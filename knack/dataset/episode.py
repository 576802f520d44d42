"""One verified clip as one training episode, in plain arrays: frames on an exact k/fps grid, the robot or
glove state at each frame, the action of a robot arm, and which captured frame of each camera stands at each
grid point. Pure: it reads the bundle's tables and returns numbers; encoding and writing are elsewhere.

Why a grid: training code (LeRobot) asks for the frame at `frame_index / fps` and refuses one more than
`tolerance_s` (0.1 ms) away, but real capture times jitter by milliseconds. So each grid point k takes the
captured frame nearest to `t0 + k/fps` on the recorder's clock; the largest distance is recorded, and a clip
where it exceeds half a frame (a dropped frame, a camera at another rate) is left out rather than stretched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collector.bundle import FRAMES, MAX_FILES, SENSOR_CHANNELS, SENSORS, frames_by_camera, is_bundle_name, video_name

NS = 1_000_000_000
MAX_CHANNELS = 1024  # state values per frame: a 64-joint arm with three fields and a few IMUs is far below


class EpisodeRejected(Exception):
    """A clip that cannot be an episode of this dataset, in one sentence."""


@dataclass(frozen=True)
class Layout:
    """What every episode of one dataset shares: its features."""

    fps: int
    cameras: tuple[tuple[str, int, int], ...]  # (name, height, width) of each camera's encoded video
    state_names: tuple[str, ...]  # "<stream>.<channel>"
    action_names: tuple[str, ...]  # the joint channels of robot arms; () for human hands

    def to_dict(self) -> dict:
        return {"fps": self.fps, "cameras": [list(c) for c in self.cameras], "state_names": list(self.state_names), "action_names": list(self.action_names)}

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        return cls(int(d["fps"]), tuple((str(n), int(h), int(w)) for n, h, w in d["cameras"]), tuple(d["state_names"]), tuple(d["action_names"]))

    def difference(self, other: Layout) -> str:
        """'' when the two are the same features, else what differs, in words."""
        if self.fps != other.fps:
            return f"{other.fps} fps, not {self.fps}"
        if self.cameras != other.cameras:
            return f"cameras {_cams(other.cameras)}, not {_cams(self.cameras)}"
        if self.state_names != other.state_names:
            return f"state channels {', '.join(other.state_names) or 'none'}, not {', '.join(self.state_names) or 'none'}"
        if self.action_names != other.action_names:
            return f"action channels {', '.join(other.action_names) or 'none'}, not {', '.join(self.action_names) or 'none'}"
        return ""


def _cams(cameras) -> str:
    return ", ".join(f"{n} {w}x{h}" for n, h, w in cameras) or "none"


@dataclass
class Episode:
    fps: int
    t0_ns: int  # the capture time of frame 0 on the recorder's clock
    length: int
    picks: dict[str, np.ndarray]  # camera -> the video frame (position in the clip's video) at each grid point
    max_error_s: float  # the largest distance between a grid point and the frame taken for it
    state_names: tuple[str, ...]
    state: np.ndarray  # (length, n) float32
    action_names: tuple[str, ...] = ()
    action: np.ndarray | None = None  # (length, m) float32
    notes: list[str] = field(default_factory=list)


def grid(times_by_camera: dict[str, np.ndarray], fps: int) -> tuple[int, int, dict[str, np.ndarray], float]:
    """(t0, length, picks, max error in s): the k/fps grid over the span every camera covers, and for each
    camera the index of its captured frame nearest to each grid point. Pure, on capture times in ns."""
    if not times_by_camera:
        raise EpisodeRejected("the clip has no camera frames")
    for name, times in times_by_camera.items():
        if len(times) == 0:
            raise EpisodeRejected(f"camera {name} has no frames")
        if np.any(np.diff(times) <= 0):
            raise EpisodeRejected(f"camera {name}'s capture times do not increase")
    t0 = max(int(t[0]) for t in times_by_camera.values())
    t_end = min(int(t[-1]) for t in times_by_camera.values())
    if t_end < t0:
        raise EpisodeRejected("the cameras' recordings do not overlap in time")
    # Within half a frame of the grid, each grid point has a frame of its own: a span that would need more grid
    # points than a camera has frames is refused before anything that size is allocated (a hostile time span).
    fewest = min(len(t) for t in times_by_camera.values())
    if (t_end - t0) > (fewest + 1) * NS // fps:
        raise EpisodeRejected(f"the cameras' frames span {(t_end - t0) / NS:.3g} s but one holds only {fewest} frames: not {fps} fps")
    # Integer ns arithmetic: k * NS // fps is exact for every frame, however long the clip. The last grid point
    # may lie up to half a frame after the last common frame (a camera a little faster than its nominal rate).
    length = ((t_end - t0) * 2 * fps + NS) // (2 * NS) + 1
    points = t0 + (np.arange(length, dtype=np.int64) * NS) // fps
    picks, worst = {}, 0
    for name, times in times_by_camera.items():
        after = np.clip(np.searchsorted(times, points), 0, len(times) - 1)
        before = np.clip(after - 1, 0, len(times) - 1)
        nearer = np.where(np.abs(times[before] - points) <= np.abs(times[after] - points), before, after)
        picks[name] = nearer
        worst = max(worst, int(np.max(np.abs(times[nearer] - points))))
    return t0, int(length), picks, worst / NS


def sample_times(capture_ns: np.ndarray, device_ns: np.ndarray | None) -> np.ndarray:
    """When each sample was taken, on the recorder's clock. A serial port delivers samples in bursts (the
    capture time is when a read returned), so where the device stamps its own samples those stamps are moved
    onto the recorder's clock by the smallest capture-minus-device offset in the clip (the sample that waited
    least in the buffers): the spacing the device measured, at the earliest time the recorder saw them."""
    if device_ns is None or len(device_ns) == 0:
        return capture_ns
    offset = int(np.min(capture_ns - device_ns))
    return device_ns + offset


def last_at_or_before(times: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The last sample at or before each point (the first sample before the stream began)."""
    idx = np.clip(np.searchsorted(times, points, side="right") - 1, 0, len(times) - 1)
    return values[idx]


def interpolate(times: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each channel linearly between the samples around each point (held at the ends)."""
    t = (times - times[0]).astype(np.float64)
    p = (points - times[0]).astype(np.float64)
    return np.stack([np.interp(p, t, values[:, j]) for j in range(values.shape[1])], axis=1) if values.shape[1] else np.zeros((len(points), 0))


def read_frames(clip: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """camera -> (capture times in ns, video frame positions), in frame-index order."""
    import pyarrow.parquet as pq

    grouped = frames_by_camera(pq.read_table(clip / FRAMES, columns=["camera", "frame_index", "capture_ns"]).to_pydict())
    for camera in grouped:
        # Camera names from elsewhere name files: only those the bundle format allows (no path, no hidden name).
        if not is_bundle_name(video_name(camera, 2)):
            raise EpisodeRejected(f"{FRAMES} names camera {camera[:40]!r}, which is not a camera name of the bundle format")
    if len(grouped) > MAX_FILES:
        raise EpisodeRejected(f"{FRAMES} names {len(grouped)} cameras")
    return {camera: (np.asarray(times, dtype=np.int64), np.asarray(indices, dtype=np.int64)) for camera, (indices, times) in grouped.items()}


def read_sensors(clip: Path) -> tuple[dict[str, list[str]], dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]]]:
    """(channel names by stream, stream -> (capture ns, device ns or None, values (n, channels)))."""
    import pyarrow.parquet as pq

    path = clip / SENSORS
    if not path.exists():
        return {}, {}
    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(SENSOR_CHANNELS.encode(), b"{}")
    try:
        channels = json.loads(meta)
    except ValueError:
        raise EpisodeRejected(f"{SENSORS} names its channels in unreadable JSON") from None
    if not isinstance(channels, dict) or not all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in channels.values()):
        raise EpisodeRejected(f"{SENSORS} names its channels in a shape other than stream -> list of names")
    data = table.to_pydict()
    rows: dict[str, list[int]] = {}
    for i, stream in enumerate(data["stream"]):
        rows.setdefault(str(stream), []).append(i)
    streams = {}
    for stream, idx in rows.items():
        names = channels.get(stream)
        if names is None:
            raise EpisodeRejected(f"{SENSORS} has samples of stream {stream!r} but names no channels for it")
        values = [data["values"][i] for i in idx]
        if any(v is None or len(v) != len(names) for v in values):
            raise EpisodeRejected(f"stream {stream!r} has samples whose values do not match its {len(names)} channels")
        capture = np.asarray([data["capture_ns"][i] for i in idx], dtype=np.int64)
        device = [data["device_ns"][i] for i in idx]
        device_ns = np.asarray(device, dtype=np.int64) if all(d is not None for d in device) else None
        order = np.argsort(capture, kind="stable")
        streams[stream] = (
            capture[order],
            device_ns[order] if device_ns is not None else None,
            np.asarray(values, dtype=np.float64).reshape(len(idx), len(names))[order],
        )
    return channels, streams


def stream_kinds(manifest: dict) -> dict[str, str]:
    return {str(s.get("name")): str(s.get("kind")) for s in manifest.get("streams", []) if isinstance(s, dict)}


def episode_of(clip: Path, manifest: dict, fps: int) -> Episode:
    """The clip as an episode at `fps`; raises EpisodeRejected with the reason when it cannot be one."""
    frames = read_frames(clip)
    t0, length, grid_picks, max_error = grid({c: t for c, (t, _) in frames.items()}, fps)
    if max_error > 0.5 / fps:
        raise EpisodeRejected(
            f"a camera frame is {max_error * 1000:.1f} ms from its place on the 1/{fps} s grid (more than half a frame:"
            " dropped frames, or a camera at another rate)"
        )
    picks = {camera: frames[camera][1][grid_picks[camera]] for camera in sorted(frames)}
    points = t0 + (np.arange(length, dtype=np.int64) * NS) // fps
    channels, streams = read_sensors(clip)
    kinds = stream_kinds(manifest)
    names, columns, joint_names, joint_columns, notes = [], [], [], [], []
    for stream in sorted(streams):
        capture, device, values = streams[stream]
        if kinds.get(stream) == "joints":
            # A joint state holds until the next one: the last reading at or before the frame.
            at = last_at_or_before(capture, values, points)
            joint_names += [f"{stream}.{c}" for c in channels[stream]]
            joint_columns.append(at)
        else:
            at = interpolate(sample_times(capture, device), values, points)
        names += [f"{stream}.{c}" for c in channels[stream]]
        columns.append(at)
        if capture[0] > points[0] or capture[-1] < points[-1]:
            notes.append(
                f"stream {stream} covers {max(0, (min(capture[-1], points[-1]) - max(capture[0], points[0])) / NS):.2f} s of the episode; held at its ends"
            )
    if len(names) > MAX_CHANNELS:
        raise EpisodeRejected(f"{SENSORS} has {len(names)} channels (at most {MAX_CHANNELS})")
    state = np.concatenate(columns, axis=1).astype(np.float32) if columns else np.zeros((length, 0), np.float32)
    action = None
    if joint_columns:
        # A robot arm's action at frame k is where its joints are at frame k+1 (the last frame holds its own).
        joints = np.concatenate(joint_columns, axis=1).astype(np.float32)
        action = np.concatenate([joints[1:], joints[-1:]], axis=0)
    return Episode(fps, t0, length, picks, max_error, tuple(names), state, tuple(joint_names), action, notes)


def nominal_fps(manifest: dict) -> int | None:
    """The first camera's nominal frame rate, rounded: a dataset's default fps."""
    for s in manifest.get("streams", []):
        if isinstance(s, dict) and s.get("kind") == "camera":
            rate = s.get("nominal_rate") or s.get("measured_rate")
            if isinstance(rate, (int, float)) and 0 < rate <= 1000:
                return max(1, round(rate))
    return None
