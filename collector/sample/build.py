"""Build the bundled sample: hands.mp4 cut from a real video of a hand, imu.csv synthesized from the hand's measured motion.

python -m collector.sample.build SRC_VIDEO [--out DIR] [--start 6] [--seconds 7] [--speed 2] [--imu-rate 200]
"""

import argparse
import pathlib
import sys

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 360
FPS = 30
SEED = 20230906
G = 9.81

# Scales that turn the hand's image track into glove motion. An adult palm is about 8 cm across (index to
# little-finger knuckle); the camera stood about 0.6 m from the hand.
PALM_M = 0.08
DEPTH_M = 0.6
# The landmark track jitters by a pixel or two: smooth it before differentiating twice. Sigmas in seconds.
TRACK_SMOOTH_S = 0.07
IMU_SMOOTH_S = 0.04
ACC_NOISE = 0.03
GYRO_NOISE = 0.003

WRIST, INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP = 0, 5, 9, 13, 17
PALM = [WRIST, INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP]


def cut_video(source, path, start_s, seconds, speed):
    """From `start_s` seconds into the source, every `speed`-th frame for `seconds` of sample, scaled to
    WIDTH x HEIGHT and written with OpenCV's mp4v."""
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise RuntimeError(f"cannot open source video {source}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if abs(fps - FPS) > 1e-3:
        raise RuntimeError(f"{source} runs at {fps} fps; the sample keeps the source's frames and needs {FPS} fps")
    if size[0] * HEIGHT != size[1] * WIDTH:
        raise RuntimeError(f"{source} is {size[0]}x{size[1]}; the sample scales whole frames and needs a 16:9 source")
    first, n_frames = round(start_s * FPS), round(seconds * FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open mp4v writer for {path}")
    index = written = 0
    while written < n_frames:
        ok, frame = cap.read()
        if not ok:
            break
        if index >= first and (index - first) % speed == 0:
            writer.write(cv2.resize(frame, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
            written += 1
        index += 1
    writer.release()
    cap.release()
    if written != n_frames:
        raise RuntimeError(f"{source} ends after {index} frames; {seconds:g} s from {start_s:g} s at {speed}x needs {first + (n_frames - 1) * speed + 1}")
    return n_frames


def read_frames(path):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"cannot read back {path}")
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return size, fps, frames


def verify_video(size, fps, frames, n_frames):
    if size != (WIDTH, HEIGHT) or abs(fps - FPS) > 1e-3 or len(frames) != n_frames:
        raise RuntimeError(f"the written sample is {size} at {fps} fps, {len(frames)} frames; expected {(WIDTH, HEIGHT)} at {FPS} fps, {n_frames} frames")


def track_hand(frames):
    """Per frame, the 21 landmarks (pixels) of the most confident hand, found by the labeler's shipped models on
    the written sample itself; NaN where no hand was found."""
    from collector.config import LabelerConfig
    from collector.labeling.models import Models

    hands = Models(LabelerConfig()).hands
    track = np.full((len(frames), 21, 2), np.nan)
    for i, frame in enumerate(frames):
        found = hands.detect([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])[0]
        if found:
            track[i] = max(found, key=lambda h: h.score).landmarks
    return track


def _fill(values):
    """Linear interpolation over the frames where the hand was not found."""
    ok = ~np.isnan(values)
    if not ok.any():
        raise RuntimeError("no hand was found in the sample: nothing to derive the IMU log from")
    idx = np.arange(len(values))
    return np.interp(idx, idx[ok], values[ok])


def _smooth(values, sigma):
    """Gaussian smoothing along axis 0, edges reflected so the ends do not bend towards zero."""
    radius = max(1, int(round(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, [(radius, radius)] + [(0, 0)] * (values.ndim - 1), mode="reflect")
    return np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), 0, padded)


def hand_motion(track):
    """From the landmark track: palm centre (x right, y down, pixels), palm size (pixels) and the hand's tilt in the
    image plane (radians, positive when the fingers lean to the right), each filled and smoothed, per frame."""
    palm = track[:, PALM]
    centre = palm.mean(axis=1)
    size = np.linalg.norm(palm - centre[:, None], axis=2).mean(axis=1)
    axis = track[:, MIDDLE_MCP] - track[:, WRIST]
    tilt = np.arctan2(axis[:, 0], -axis[:, 1])
    raw = np.stack([centre[:, 0], centre[:, 1], size, tilt], axis=1)
    filled = np.stack([_fill(raw[:, k]) for k in range(raw.shape[1])], axis=1)
    filled[:, 3] = np.unwrap(filled[:, 3])
    width = np.nanmedian(np.linalg.norm(track[:, INDEX_MCP] - track[:, PINKY_MCP], axis=1))
    return _smooth(filled, TRACK_SMOOTH_S * FPS), PALM_M / width


def synth_imu(motion, m_per_px, n_frames, rate):
    """Glove IMU (sensor x to the image's right, y towards the camera, z up along the hand) following the measured
    hand. Small-angle model: the in-plane tilt feeds gravity into x and is the y gyro rate; linear acceleration is
    not rotated into the sensor frame; the other two rotation axes are not seen in the video and carry noise only."""
    seconds = n_frames / FPS
    n = round(seconds * rate)
    t = np.arange(n) / rate
    dt = 1.0 / rate
    frame_t = np.arange(n_frames) / FPS
    at = np.stack([np.interp(t, frame_t, motion[:, k]) for k in range(motion.shape[1])], axis=1)
    at = _smooth(at, IMU_SMOOTH_S * rate)
    cx, cy, size, tilt = at.T
    pos = np.stack([cx * m_per_px, DEPTH_M * np.log(size / np.median(size)), -cy * m_per_px], axis=1)
    acc = np.gradient(np.gradient(pos, dt, axis=0, edge_order=2), dt, axis=0, edge_order=2)
    tilt = tilt - tilt.mean()
    gyro = np.zeros((n, 3))
    gyro[:, 1] = np.gradient(tilt, dt, edge_order=2)
    acc[:, 0] -= G * np.sin(tilt)
    acc[:, 2] += G * np.cos(tilt)
    rng = np.random.default_rng(SEED)
    acc += rng.normal(0.0, ACC_NOISE, acc.shape)
    gyro += rng.normal(0.0, GYRO_NOISE, gyro.shape)
    t_us = np.rint(t * 1e6).astype(np.int64)
    return t_us, acc, gyro


def write_imu(path, t_us, acc, gyro):
    with open(path, "w", newline="\n") as f:
        f.write("t_us,seq,ax,ay,az,gx,gy,gz\n")
        for seq, (ts, a, g) in enumerate(zip(t_us, acc, gyro)):
            f.write(f"{ts},{seq}," + ",".join(f"{v:.4f}" for v in (*a, *g)) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m collector.sample.build", description=__doc__.splitlines()[0])
    p.add_argument("source", type=pathlib.Path, metavar="SRC_VIDEO")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    p.add_argument("--start", type=float, default=6.0, help="seconds into the source where the sample begins")
    p.add_argument("--seconds", type=float, default=7.0, help="length of the sample")
    p.add_argument("--speed", type=int, default=2, help="keep every SPEED-th source frame (the sample plays SPEED times faster)")
    p.add_argument("--imu-rate", type=int, default=200)
    args = p.parse_args(argv)
    if args.start < 0 or args.seconds < 1 or args.speed < 1:
        p.error("--start must be 0 or more, --seconds at least 1 and --speed at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    video, imu = args.out / "hands.mp4", args.out / "imu.csv"

    n_frames = cut_video(args.source, video, args.start, args.seconds, args.speed)
    size, fps, frames = read_frames(video)
    verify_video(size, fps, frames, n_frames)
    track = track_hand(frames)
    found = int((~np.isnan(track[:, 0, 0])).sum())
    motion, m_per_px = hand_motion(track)
    t_us, acc, gyro = synth_imu(motion, m_per_px, n_frames, args.imu_rate)
    write_imu(imu, t_us, acc, gyro)
    print(f"{video}: {video.stat().st_size} bytes, {n_frames} frames, {n_frames / FPS:.2f} s, a hand in {found} of them")
    print(f"{imu}: {len(t_us)} samples at {args.imu_rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
