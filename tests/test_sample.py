"""The bundled sample recording: its format, that it shows a live moving hand, that its IMU log covers it, that the
default policy accepts every clip the demo cuts from it, and that its sources are attributed."""

import csv
import json

import cv2
import numpy as np
import pytest

from collector.config import LabelerConfig, from_mapping
from collector.labeling import Labeler
from collector.labeling.models import Models
from collector.sample import SAMPLE_DIR, SAMPLE_IMU, SAMPLE_VIDEO
from collector.sample.build import read_frames

SOURCE_COMMIT = "3f56141bc8bd2760d5e452e382937269554ebb21"
DEMO_CLIP_S = 2.5  # knack demo's clip length


def _read_frames(path):
    """(fps, size, frame count the container declares, decoded frames), read as build.py reads its output."""
    size, fps, frames = read_frames(path)
    cap = cv2.VideoCapture(str(path))
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
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


def test_sample_video_is_640x360_at_30fps_for_6_to_10_seconds(video):
    fps, size, declared, frames = video
    assert size == (640, 360)
    assert fps == pytest.approx(30.0)
    assert frames and frames[0].shape == (360, 640, 3)
    assert len(frames) == declared  # the container's count agrees with what decodes
    assert 6.0 <= len(frames) / fps <= 10.0


def test_sample_video_is_small():
    assert SAMPLE_VIDEO.stat().st_size < 1_500_000


def test_sample_video_is_live_in_every_frame(video):
    _, _, _, frames = video
    # The labeler counts a frame as frozen when under 0.5% of its pixels changed at all. A real camera on a mostly
    # still bench: some such frames, but far fewer than the policy's 20% in any clip the demo cuts.
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    still = np.array([np.count_nonzero(cv2.absdiff(a, b)) / a.size < 0.005 for a, b in zip(greys, greys[1:])])
    window = round(DEMO_CLIP_S * 30)
    assert max(still[s : s + window].mean() for s in range(0, len(still) - window + 1, 15)) < 0.12
    # ... and the hand visibly moves every second.
    seconds = [np.abs(frames[i + 30].astype(int) - frames[i]).mean() for i in range(0, len(frames) - 30, 30)]
    assert min(seconds) > 1.5


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
    assert acc[:, 2].mean() == pytest.approx(9.81, abs=0.3)
    assert np.abs(acc[:, :2].mean(axis=0)).max() < 0.5
    assert acc.std(axis=0).min() > 0.1
    assert gyro.std(axis=0).max() > 0.1  # the hand's tilt is measured on one axis
    assert np.abs(acc).max() < 40.0 and np.abs(gyro).max() < 10.0
    # Smooth motion plus sensor noise: no sample jumps like a glitch would.
    assert np.abs(np.diff(acc, axis=0)).max() < 1.0


def test_every_clip_the_demo_cuts_from_the_sample_is_accepted_by_the_default_policy(video, make_clip, tmp_path, device_key):
    fps, _, _, frames = video
    labeler = Labeler(from_mapping({"data_dir": str(tmp_path / "data")}).validate(), device_key, Models(LabelerConfig(threads=2)))
    step = round(DEMO_CLIP_S * fps)
    for start in range(0, len(frames), step):
        result = labeler.label(make_clip(frames[start : start + step], fps=fps))
        assert result.accepted, f"clip at {start / fps:.1f} s: {result.summary}"
        manifest = json.loads((result.path / "manifest.json").read_text())
        camera = manifest["quality"]["cameras"]["cam"]
        # With margin over the policy's 0.5 and 3.5 px.
        assert manifest["labels"]["hands"]["hand_fraction"] >= 0.9
        assert camera["edge_blur_px"] <= 2.6


def test_sample_ships_attribution():
    text = (SAMPLE_DIR / "ATTRIBUTION.md").read_text()
    assert "dexsuite/dex-retargeting" in text and SOURCE_COMMIT in text
    assert "MIT" in text and "Copyright (c) 2023 Yuzhe Qin" in text
    assert "synthetic" in text.lower()
