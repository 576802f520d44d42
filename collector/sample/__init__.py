"""Bundled sample recording (real video of a hand, IMU log synthesized from its measured motion) for demos and tests."""

import pathlib

SAMPLE_DIR = pathlib.Path(__file__).parent
SAMPLE_VIDEO = SAMPLE_DIR / "hands.mp4"
SAMPLE_IMU = SAMPLE_DIR / "imu.csv"
