"""The LeRobot dataset format, v3.0, as its loader (lerobot 0.4 and 0.6) reads it from a local directory:

    meta/info.json                       codebase_version "v3.0", fps, features, paths, totals, splits
    meta/stats.json                      per feature min/max/mean/std/count and quantiles q01..q99
    meta/tasks.parquet                   one row per task, the task string as the pandas index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: where its frames and videos are
    data/chunk-XXX/file-YYY.parquet      one row per frame: state, action, timestamp, indices
    videos/<key>/chunk-XXX/file-YYY.mp4  AV1, yuv420p, a keyframe every 2 frames, one file per episode

Frame timestamps are exactly frame_index / fps, and each video frame's presentation time is the same number,
so the loader's 0.1 ms tolerance always holds. Extra episode columns (knack/…, the provenance) are kept by
the loader. Writing needs only numpy, pyarrow, pandas and PyAV."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knack.dataset.episode import Episode, Layout

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_MB = 100  # a data file is closed once it holds about this much
KEYFRAME_EVERY = 2  # LeRobot's g=2: random access to any frame decodes at most one other
MAX_PIXELS = 4096 * 4096  # a camera picture larger than this is not a camera's
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STAT_FRAMES = 64  # frames per episode sampled for the image statistics
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
STAGED_FRAMES = "frames.parquet"  # an episode's rows as a worker leaves them, before their global indices


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


def features(layout: Layout) -> dict:
    out: dict = {}
    for camera, height, width in layout.cameras:
        out[video_key(camera)] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": height,
                "video.width": width,
                "video.codec": "av1",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": layout.fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    if layout.state_names:  # a camera alone has no state (Arrow has no empty fixed-size list either)
        out["observation.state"] = {"dtype": "float32", "shape": [len(layout.state_names)], "names": list(layout.state_names)}
    if layout.action_names:
        out["action"] = {"dtype": "float32", "shape": [len(layout.action_names)], "names": list(layout.action_names)}
    out["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        out[name] = {"dtype": "int64", "shape": [1], "names": None}
    return out


# --- statistics ----------------------------------------------------------------------------------------
def array_stats(values: np.ndarray) -> dict:
    """LeRobot's per-feature statistics of a (frames, n) array, as lists."""
    values = np.asarray(values, dtype=np.float64)
    out = {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "count": [int(values.shape[0])],
    }
    for q, qv in zip(QUANTILES, np.quantile(values, QUANTILES, axis=0)):
        out[f"q{round(q * 100):02d}"] = qv.tolist()
    return out


def image_stats(frames: list[np.ndarray]) -> dict:
    """Per channel (RGB), over pixels scaled to 0..1, shaped (3, 1, 1) as LeRobot keeps them."""
    pixels = np.concatenate([f[::4, ::4, ::-1].reshape(-1, 3) for f in frames]).astype(np.float64) / 255.0  # BGR -> RGB, every 4th pixel
    stats = array_stats(pixels)
    stats["count"] = [len(frames)]
    return {k: (v if k == "count" else [[[x]] for x in v]) for k, v in stats.items()}


def aggregate(per_episode: list[dict]) -> dict:
    """Dataset statistics from each episode's: exact min, max, mean and std (pooled by count); quantiles as the
    count-weighted mean of the episodes' (what LeRobot's own aggregate_stats does)."""
    if not per_episode:
        return {}
    counts = np.array([s["count"][0] for s in per_episode], dtype=np.float64)
    weights = counts / counts.sum()
    mean = sum(w * np.asarray(s["mean"], dtype=np.float64) for w, s in zip(weights, per_episode))
    var = sum(w * (np.asarray(s["std"], dtype=np.float64) ** 2 + (np.asarray(s["mean"], dtype=np.float64) - mean) ** 2) for w, s in zip(weights, per_episode))
    out = {
        "min": np.min([np.asarray(s["min"]) for s in per_episode], axis=0).tolist(),
        "max": np.max([np.asarray(s["max"]) for s in per_episode], axis=0).tolist(),
        "mean": np.asarray(mean).tolist(),
        "std": np.sqrt(var).tolist(),
        "count": [int(counts.sum())],
    }
    for q in QUANTILES:
        key = f"q{round(q * 100):02d}"
        out[key] = np.asarray(sum(w * np.asarray(s[key], dtype=np.float64) for w, s in zip(weights, per_episode))).tolist()
    return out


# --- one episode, written by a worker ------------------------------------------------------------------
def write_staged_frames(path: Path, episode: Episode) -> None:
    """The episode's rows without their dataset-wide indices (assigned when the dataset is put together)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    k = np.arange(episode.length, dtype=np.int64)
    columns = {"observation.state": _vectors(episode.state)} if episode.state.shape[1] else {}
    if episode.action is not None:
        columns["action"] = _vectors(episode.action)
    columns["timestamp"] = pa.array((k / episode.fps).astype(np.float32))
    columns["frame_index"] = pa.array(k)
    pq.write_table(pa.table(columns), path)


def _vectors(values: np.ndarray):
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def encode_camera(source: Path, picks: np.ndarray, out: Path, fps: int) -> tuple[int, int, dict]:
    """Writes the frames `picks` names (positions in `source`, one per grid point, in order) as the episode's
    video, AV1 with a keyframe every KEYFRAME_EVERY frames and presentation times k/fps; returns (height,
    width, image stats). Decodes `source` once, front to back."""
    from collector.video import VideoReader, VideoWriter, choose_encoder

    wanted = np.asarray(picks, dtype=np.int64)
    if len(wanted) == 0:
        raise ValueError("no frames to encode")
    sample_at = set(np.linspace(0, len(wanted) - 1, min(IMAGE_STAT_FRAMES, len(wanted))).round().astype(int).tolist())
    sampled: list[np.ndarray] = []
    writer = None
    k = 0
    with VideoReader(source) as reader:
        if reader.info.width * reader.info.height > MAX_PIXELS:
            raise ValueError(f"{source.name} is {reader.info.width}x{reader.info.height}, larger than any camera's picture")
        for position, image in enumerate(reader):
            while k < len(wanted) and wanted[k] == position:
                if writer is None:
                    writer = VideoWriter(out, fps, image.shape[1], image.shape[0], encoder=choose_encoder("av1"), keyframe_every=KEYFRAME_EVERY)
                writer.write(image)
                if k in sample_at:
                    sampled.append(image[: writer.height, : writer.width])
                k += 1
            if k == len(wanted) or wanted[k] < position:
                break
    if writer is None or k < len(wanted):
        if writer is not None:
            writer.abandon()
        raise ValueError(f"{source.name} ends before frame {int(wanted[k])} that frames.parquet lists")
    writer.close()
    return writer.height, writer.width, image_stats(sampled)


# --- the dataset, put together by the driver ------------------------------------------------------------
@dataclass
class DatasetWriter:
    """Takes staged episodes in order, gives them their indices, and writes the dataset's files. Holds one
    row of metadata per episode, never an episode's frames: memory stays flat however many clips."""

    root: Path
    layout: Layout
    tasks: dict[str, int] = field(default_factory=dict)
    episodes: list[dict] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)
    frames: int = 0
    _writer: object = None
    _file: tuple[int, int] = (0, 0)
    _file_bytes: int = 0

    def add(self, staged: Path, task: str, length: int, episode_stats: dict, provenance: dict) -> int:
        """Moves one staged episode into the dataset; returns its episode index."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        index = len(self.episodes)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        table = pq.read_table(staged / STAGED_FRAMES)
        if table.num_rows != length:
            raise ValueError(f"the staged episode has {table.num_rows} rows, not {length}")
        table = table.append_column("episode_index", pa.array(np.full(length, index, dtype=np.int64)))
        table = table.append_column("index", pa.array(np.arange(self.frames, self.frames + length, dtype=np.int64)))
        table = table.append_column("task_index", pa.array(np.full(length, task_index, dtype=np.int64)))
        chunk, file = self._data_file(table.schema, (staged / STAGED_FRAMES).stat().st_size)
        self._writer.write_table(table)
        row = {
            "episode_index": index,
            "tasks": [task],
            "length": length,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + length,
        }
        for camera, _, _ in self.layout.cameras:
            key = video_key(camera)
            vchunk, vfile = divmod(index, CHUNKS_SIZE)
            target = self.root / VIDEO_PATH.format(video_key=key, chunk_index=vchunk, file_index=vfile)
            target.parent.mkdir(parents=True, exist_ok=True)
            (staged / f"{camera}.mp4").replace(target)
            row |= {
                f"videos/{key}/chunk_index": vchunk,
                f"videos/{key}/file_index": vfile,
                f"videos/{key}/from_timestamp": 0.0,
                f"videos/{key}/to_timestamp": length / self.layout.fps,
            }
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        row |= {f"knack/{k}": v for k, v in provenance.items()}
        self.episodes.append(row)
        self.stats.append(episode_stats)
        self.frames += length
        return index

    def _data_file(self, schema, incoming: int) -> tuple[int, int]:
        import pyarrow.parquet as pq

        if self._writer is not None and self._file_bytes + incoming > DATA_FILE_MB << 20:
            self._writer.close()
            self._writer = None
            chunk, file = self._file
            self._file = (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)
            self._file_bytes = 0
        if self._writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self._file[0], file_index=self._file[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, schema)
        self._file_bytes += incoming
        return self._file

    def finish(self) -> dict:
        """Writes the metadata; returns info.json's contents."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is not None:
            self._writer.close()
            self._writer = None
        meta = self.root / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())}, index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(meta / "tasks.parquet")
        path = self.root / EPISODES_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), path)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": None,
            "total_episodes": len(self.episodes),
            "total_frames": self.frames,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": 200,
            "fps": self.layout.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.layout.cameras else None,
            "features": features(self.layout),
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4) + "\n")
        (meta / "stats.json").write_text(json.dumps(self.dataset_stats(), indent=4) + "\n")
        return info

    def dataset_stats(self) -> dict:
        out = {}
        for key in self.stats[0] if self.stats else ():
            out[key] = aggregate([s[key] for s in self.stats])
        # The index columns, exactly: what LeRobot's own writer also records.
        if self.episodes:
            lengths = np.array([e["length"] for e in self.episodes], dtype=np.int64)
            frame_index = np.concatenate([np.arange(n) for n in lengths])
            out["timestamp"] = array_stats((frame_index / self.layout.fps).reshape(-1, 1))
            out["frame_index"] = array_stats(frame_index.reshape(-1, 1))
            out["episode_index"] = array_stats(np.repeat(np.arange(len(lengths)), lengths).reshape(-1, 1))
            out["index"] = array_stats(np.arange(self.frames).reshape(-1, 1))
            out["task_index"] = array_stats(np.array([self.tasks[e["tasks"][0]] for e in self.episodes]).repeat(lengths).reshape(-1, 1))
        return out
