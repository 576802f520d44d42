import csv

import cv2
import numpy as np
import pytest

from collector.sample import SAMPLE_DIR, SAMPLE_IMU, SAMPLE_VIDEO

SOURCE_COMMIT = "97731232fffd467e8de2c3a34ab8382962bb385e"


def _read_frames(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return fps, size, declared, frames


@pytest.fixture(scope="module")
def video():
    return _read_frames(SAMPLE_VIDEO)


@pytest.fixture(scope="module")
def imu():
    with open(SAMPLE_IMU, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_sample_video_is_640x480_at_30fps(video):
    fps, size, declared, frames = video
    assert size == (640, 480)
    assert fps == pytest.approx(30.0)
    assert frames and frames[0].shape == (480, 640, 3)
    # Container's count agrees with what decodes; 5-6 s is what the sample is built for.
    assert len(frames) == declared
    assert 5.0 <= len(frames) / fps <= 6.0 + 1e-9


def test_sample_video_frames_move(video):
    _, _, _, frames = video
    # A pan/zoom, not a frozen still: every second of video changes visibly, and so does each step.
    diffs = [np.abs(frames[i + 30].astype(int) - frames[i]).mean() for i in range(0, len(frames) - 30, 30)]
    assert min(diffs) > 5.0
    steps = [np.abs(frames[i + 1].astype(int) - frames[i]).mean() for i in range(len(frames) - 1)]
    assert min(steps) > 0.2


def test_sample_imu_log_matches_video_duration(video, imu):
    fps, _, _, frames = video
    header, data = imu
    assert header == ["t_us", "seq", "ax", "ay", "az", "gx", "gy", "gz"]
    t_us, seq = data[:, 0], data[:, 1]
    assert np.array_equal(seq, np.arange(len(data)))
    assert t_us[0] == 0
    period_us = np.diff(t_us)
    assert np.all(period_us == period_us[0])
    rate = 1e6 / period_us[0]
    assert rate == pytest.approx(200.0)
    assert abs(len(data) / rate - len(frames) / fps) <= 1.0 / rate


def test_sample_imu_values_are_plausible(imu):
    _, data = imu
    acc, gyro = data[:, 2:5], data[:, 5:8]
    # Gravity mostly on z, hand motion on top, nothing a glove could not do.
    assert acc[:, 2].mean() == pytest.approx(9.81, abs=0.2)
    assert np.abs(acc[:, :2].mean(axis=0)).max() < 0.5
    assert acc.std(axis=0).min() > 0.1
    assert np.abs(acc).max() < 40.0 and np.abs(gyro).max() < 10.0


def test_sample_ships_attribution():
    text = (SAMPLE_DIR / "ATTRIBUTION.md").read_text()
    assert SOURCE_COMMIT in text
    assert "MIT" in text and "Copyright (c) [2021] [geax]" in text
    assert "synthetic" in text.lower()
