"""Perceptual prints and the near-duplicate index, on the bundled real video and IMU log: what an attacker does
with OpenCV to a paid clip still matches it, other content does not, and hostile input never crashes."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector import fingerprint
from collector.bundle import write_sensor_log
from collector.fingerprint import (
    SENSOR_THRESHOLD,
    VIDEO_THRESHOLD,
    FingerprintError,
    SensorPrint,
    VideoPrint,
    print_frames,
    sensor_print,
    sensor_print_of,
    video_print,
)
from collector.sample import SAMPLE_IMU, SAMPLE_VIDEO
from storage.validator.near_duplicates import NearDuplicateIndex

FPS = 30.0
PAID = slice(0, 90)  # the paid clip: the sample's first 3 s


def write(path: Path, frames: list[np.ndarray], fps: float = FPS, fourcc: str = "mp4v") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def retimed(frames: list[np.ndarray], fps: float) -> list[np.ndarray]:
    return [frames[min(len(frames) - 1, round(i * FPS / fps))] for i in range(int(len(frames) * fps / FPS))]


def cropped(frames: list[np.ndarray], share: float, resize: bool) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    dy, dx = int(h * share), int(w * share)
    out = [f[dy : h - dy, dx : w - dx] for f in frames]
    return [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in out] if resize else out


@pytest.fixture(scope="module")
def sample_frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(SAMPLE_VIDEO))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def paid(sample_frames, media) -> tuple[list[np.ndarray], VideoPrint]:
    """The paid clip as the recorder wrote it (mp4v), decoded as an attacker would get it, and its stored print."""
    path = write(media / "paid.mp4", sample_frames[PAID])
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while (frame := capture.read()[1]) is not None:
        decoded.append(frame)
    return decoded, video_print(path, query=False)


def similarity_to_paid(paid, path: Path) -> float:
    return video_print(path).similarity(paid[1])[0]


# --- video: what must still match ------------------------------------------------------------------------------------
def test_a_clip_re_encoded_as_mjpeg_matches_the_paid_one(paid, media):
    assert similarity_to_paid(paid, write(media / "mjpg.avi", paid[0], fourcc="MJPG")) >= VIDEO_THRESHOLD


def test_a_clip_re_encoded_at_half_the_size_matches_the_paid_one(paid, media):
    small = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in paid[0]]
    assert similarity_to_paid(paid, write(media / "small.mp4", small)) >= VIDEO_THRESHOLD


@pytest.mark.parametrize("fps", [29.0, 15.0])
def test_a_clip_at_another_frame_rate_matches_the_paid_one(paid, media, fps):
    assert similarity_to_paid(paid, write(media / f"fps{fps:.0f}.mp4", retimed(paid[0], fps), fps)) >= VIDEO_THRESHOLD


def test_a_clip_trimmed_at_both_ends_matches_the_paid_one(paid, media):
    assert similarity_to_paid(paid, write(media / "trim.mp4", paid[0][7:-15])) >= VIDEO_THRESHOLD


@pytest.mark.parametrize("resize", [True, False], ids=["resized-back", "smaller"])
def test_a_clip_cropped_by_5_percent_per_side_matches_the_paid_one(paid, media, resize):
    assert similarity_to_paid(paid, write(media / f"crop-{resize}.mp4", cropped(paid[0], 0.05, resize))) >= VIDEO_THRESHOLD


@pytest.mark.parametrize(("gain", "contrast"), [(1.2, 1.0), (0.85, 1.0), (1.0, 0.8), (1.0, 1.2)])
def test_a_clip_with_brightness_or_contrast_changed_matches_the_paid_one(paid, media, gain, contrast):
    toned = [cv2.convertScaleAbs(f, alpha=gain * contrast, beta=128 * (1 - contrast)) for f in paid[0]]
    assert similarity_to_paid(paid, write(media / f"tone-{gain}-{contrast}.mp4", toned)) >= VIDEO_THRESHOLD


def test_a_window_overlapping_the_paid_clip_by_two_thirds_matches_it(paid, sample_frames, media):
    assert similarity_to_paid(paid, write(media / "overlap.mp4", sample_frames[30:120])) >= VIDEO_THRESHOLD


# --- video: what must not match --------------------------------------------------------------------------------------
def test_a_later_window_of_the_same_video_does_not_match_the_paid_clip(paid, sample_frames, media):
    """Same desk, same hand, same camera: only what the hand does differs."""
    assert similarity_to_paid(paid, write(media / "later.mp4", sample_frames[120:210])) < VIDEO_THRESHOLD


def test_a_video_of_other_content_does_not_match_the_paid_clip(paid, media):
    rng = np.random.default_rng(1)
    background = cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), (31, 31), 0)
    frames = []
    for i in range(90):
        frame = background.copy()
        cv2.circle(frame, (100 + 5 * i, 180 + int(80 * np.sin(i / 8))), 40, (40, 200, 240), -1)
        frames.append(frame)
    assert similarity_to_paid(paid, write(media / "other.mp4", frames)) < VIDEO_THRESHOLD


# --- the index -------------------------------------------------------------------------------------------------------
def synthetic_prints(count: int, seed: int = 0) -> list[VideoPrint]:
    rng = np.random.default_rng(seed)
    return [
        VideoPrint(rng.integers(0, 1 << 32, (49, 4), dtype=np.uint32).tobytes(), rng.integers(0, 1 << 63, 49, dtype=np.uint64).tobytes(), bytes([255]) * 196)
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def index(paid, sample_frames, media) -> NearDuplicateIndex:
    index = NearDuplicateIndex()
    for i, vp in enumerate(synthetic_prints(300)):
        index.add(f"synthetic-{i}", video=vp)
    index.add("paid", video=paid[1])
    index.add("later", video=video_print(write(media / "later-stored.mp4", sample_frames[120:210]), query=False))
    return index


def test_the_index_finds_the_paid_clip_behind_a_re_encoded_trimmed_cropped_copy(index, paid, media):
    copy = cropped(retimed(paid[0][5:], 24.0), 0.04, True)
    match = index.match_video(video_print(write(media / "copy.avi", copy, 24.0, "MJPG")))
    assert match is not None and (match.key, match.kind) == ("paid", "video") and match.similarity >= VIDEO_THRESHOLD


def test_the_index_finds_nothing_for_new_content(index, sample_frames, media):
    assert index.match_video(video_print(write(media / "middle.mp4", sample_frames[90:120] + sample_frames[180:210]))) is None


def test_the_index_counts_clips_and_reports_its_memory(index):
    assert len(index) == 302
    assert 302 * 500 < index.memory_bytes() < 302 * 5000


def test_the_index_finds_a_clip_added_after_lookups_and_after_a_merge(paid):
    index = NearDuplicateIndex()
    index.add("first", video=synthetic_prints(1, seed=9)[0])
    assert index.match_video(paid[1]) is None
    index.add("paid", video=paid[1])
    assert index.match_video(paid[1]).key == "paid"  # among the keys added since the last merge
    for i, vp in enumerate(synthetic_prints(1400, seed=10)):  # more keys than are kept apart before a merge
        index.add(f"synthetic-{i}", video=vp)
    assert index.match_video(paid[1]).key == "paid"


# --- sensors ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imu() -> tuple[np.ndarray, np.ndarray]:
    with open(SAMPLE_IMU) as f:
        rows = list(csv.DictReader(f))
    times = np.array([int(r["t_us"]) * 1000 for r in rows], np.int64) + 1_700_000_000_000_000_000
    return times, np.array([[float(r[k]) for k in ("ax", "ay", "az", "gx", "gy", "gz")] for r in rows])


def write_sensors(path: Path, stream: str, times: np.ndarray, values: np.ndarray) -> Path:
    """sensors.parquet with the recorder's columns."""
    write_sensor_log(path, [stream] * len(times), times.tolist(), [None] * len(times), values.tolist(), {stream: []})
    return path


def test_a_sensor_log_reused_shifted_noisy_offset_and_scaled_matches_the_paid_one(imu, tmp_path):
    times, values = imu[0][:600], imu[1][:600]  # 3 s at 200 Hz
    stored = sensor_print(write_sensors(tmp_path / "paid.parquet", "imu", times, values), query=False)
    noise = np.random.default_rng(2).normal(0, 0.05, values[7:].shape) * values.std(axis=0)
    reused = values[7:] * 1.1 + 0.5 * values.std(axis=0) + noise
    query = sensor_print(write_sensors(tmp_path / "reused.parquet", "glove", times[7:] + 123_456_789, reused))
    assert query.similarity(stored)[0] >= SENSOR_THRESHOLD


def test_a_sensor_log_resampled_to_half_the_rate_matches_the_paid_one(imu):
    times, values = imu[0][:600], imu[1][:600]
    assert sensor_print_of({"glove": (times[1::2], values[1::2])}).similarity(sensor_print_of({"imu": (times, values)}, query=False))[0] >= SENSOR_THRESHOLD


def test_a_later_window_of_the_sensor_log_does_not_match_the_paid_one(imu):
    stored = sensor_print_of({"imu": (imu[0][:600], imu[1][:600])}, query=False)
    assert sensor_print_of({"imu": (imu[0][800:1400], imu[1][800:1400])}).similarity(stored)[0] < SENSOR_THRESHOLD


def test_two_unrelated_logs_whose_dead_channels_agree_do_not_match():
    """Constant axes (unplugged, or efforts of an idle arm) give constant bits; they must not count as agreement."""
    rng = np.random.default_rng(3)
    times = np.arange(600) * 5_000_000

    def log() -> np.ndarray:
        moving = np.cumsum(rng.normal(0, 1, (600, 2)), axis=0)
        return np.concatenate([moving, np.zeros((600, 4))], axis=1)

    assert sensor_print_of({"a": (times, log())}).similarity(sensor_print_of({"a": (times, log())}, query=False))[0] < SENSOR_THRESHOLD


def test_the_index_finds_a_reused_sensor_log_under_the_clip_that_paid_for_it(imu, paid):
    index = NearDuplicateIndex()
    index.add("paid", video=paid[1], sensors=sensor_print_of({"imu": (imu[0][:600], imu[1][:600])}, query=False))
    index.add("later", sensors=sensor_print_of({"imu": (imu[0][800:1400], imu[1][800:1400])}, query=False))
    match = index.match_sensors(sensor_print_of({"new": (imu[0][5:600] + 10**9, imu[1][5:600] * 0.9)}))
    assert match is not None and (match.key, match.kind) == ("paid", "sensors")


# --- bytes -----------------------------------------------------------------------------------------------------------
def test_prints_survive_to_bytes_and_back(paid, imu):
    sensors = sensor_print_of({"imu": (imu[0][:600], imu[1][:600])})
    assert VideoPrint.from_bytes(paid[1].to_bytes()) == paid[1]
    assert SensorPrint.from_bytes(sensors.to_bytes()) == sensors
    assert len(paid[1].to_bytes()) == 8 + 28 * len(paid[1])


@pytest.mark.parametrize("cut", ["empty", "magic", "short", "long", "count"])
def test_malformed_print_bytes_raise_value_error(paid, imu, cut):
    for good in (paid[1].to_bytes(), sensor_print_of({"imu": (imu[0][:600], imu[1][:600])}).to_bytes()):
        bad = {
            "empty": b"",
            "magic": b"XXXX" + good[4:],
            "short": good[:-1],
            "long": good + b"\0",
            "count": good[:4] + b"\xff\xff\xff\xff" + good[8:],
        }[cut]
        with pytest.raises(ValueError):
            (VideoPrint if good.startswith(b"KNV") else SensorPrint).from_bytes(bad)


# --- hostile files ---------------------------------------------------------------------------------------------------
def test_garbage_named_like_a_video_raises_fingerprint_error(tmp_path):
    garbage = tmp_path / "video.mp4"
    garbage.write_bytes(np.random.default_rng(4).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    with pytest.raises(FingerprintError):
        video_print(garbage)


def test_an_empty_or_missing_file_raises_fingerprint_error(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path in (tmp_path / "empty.mp4", tmp_path / "missing.mp4"):
        with pytest.raises(FingerprintError):
            video_print(path)


def test_a_truncated_video_gives_a_print_none_or_fingerprint_error(paid, tmp_path):
    whole = write(tmp_path / "whole.avi", paid[0], fourcc="MJPG").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 3])
    try:
        result = video_print(cut)
    except FingerprintError:
        return
    assert result is None or isinstance(result, VideoPrint)


def test_a_video_of_huge_frames_raises_fingerprint_error(tmp_path):
    huge = write(tmp_path / "huge.avi", [np.zeros((2592, 4608, 3), np.uint8)] * 2, fourcc="MJPG")  # 12 MP, over the bound
    with pytest.raises(FingerprintError):
        video_print(huge)


def test_frames_over_the_pixel_bound_raise_fingerprint_error(paid, media, monkeypatch):
    monkeypatch.setattr(fingerprint, "MAX_PIXELS", 320 * 180)
    with pytest.raises(FingerprintError):
        video_print(media / "paid.mp4")


def test_printing_stops_at_max_frames(media):
    path = media / "paid.mp4"
    assert video_print(path, max_frames=30).seconds <= 1.0 < video_print(path).seconds


def test_no_frames_give_no_print():
    assert print_frames([], 30.0) is None


def test_a_parquet_without_the_sensor_columns_raises_fingerprint_error(tmp_path):
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "sensors.parquet")
    with pytest.raises(FingerprintError):
        sensor_print(tmp_path / "sensors.parquet")


def test_garbage_named_like_a_sensor_log_raises_fingerprint_error(tmp_path):
    (tmp_path / "sensors.parquet").write_bytes(b"PAR1" + bytes(1000) + b"PAR1")
    with pytest.raises(FingerprintError):
        sensor_print(tmp_path / "sensors.parquet")


def test_sensor_rows_past_max_rows_are_not_read(imu, tmp_path):
    path = write_sensors(tmp_path / "sensors.parquet", "imu", *imu)
    assert len(sensor_print(path, max_rows=300, query=False)) < len(sensor_print(path, query=False))


def test_a_sensor_log_shorter_than_one_window_gives_no_print(imu):
    assert sensor_print_of({"imu": (imu[0][:50], imu[1][:50])}) is None
