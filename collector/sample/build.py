"""Build the bundled sample: hands.mp4 panned from two real photos, imu.csv synthesized to match it.

    python -m collector.sample.build SRC_IMG1 SRC_IMG2 [--out DIR] [--seconds 6] [--fps 30] [--imu-rate 200]
"""

import argparse
import pathlib
import sys

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
FADE_S = 1.0
SEED = 20210611
G = 9.81

# Per photo, the camera window (centre x, centre y, height) as fractions of the photo, start -> end.
# Picked by eye on the geaxgx photos: raised hand near (0.17, 0.36), lowered hand near (0.38, 0.63).
SHOTS = (
    ((0.50, 0.50, 1.00), (0.28, 0.49, 0.60)),  # whole room -> both hands
    ((0.22, 0.42, 0.50), (0.32, 0.52, 0.58)),  # raised hand and face -> both hands
)

# Scales that turn the camera path into glove motion: photo width ~ 2 m of room, zoom ~ reach.
PAN_M = 2.0
ZOOM_M = 0.3
TREMOR_M = 0.015  # working-hand oscillation, scaled by how fast the camera moves
TILT_RAD = 0.12
ACC_NOISE = 0.03
GYRO_NOISE = 0.003


def _ease(u):
    # Half linear, half cosine: the camera is already moving at frame 0 (a pipeline sees motion
    # throughout) but still accelerates, so the IMU has more than gravity and noise to show.
    # Not clamped: IMU samples run a few ms past the last frame and a clamp there would be a jolt.
    return 0.5 * u + 0.25 * (1.0 - np.cos(np.pi * u))


def _timeline(seconds, fps):
    n_frames = round(seconds * fps)
    clip = (n_frames + round(FADE_S * fps)) // 2
    t_b = (n_frames - clip) / fps  # photo B appears
    span = (clip - 1) / fps  # each photo's move; also when photo A's last frame is shown
    return n_frames, t_b, span


def _camera(t, seconds, fps):
    """Per time: window of photo A, window of photo B (each (x, y, h) fractions) and B's fade weight."""
    _, t_b, span = _timeline(seconds, fps)
    t = np.asarray(t, dtype=float)
    wins = []
    for (start, end), t0 in zip(SHOTS, (0.0, t_b)):
        e = _ease((t - t0) / span)[..., None]
        wins.append(np.asarray(start) + (np.asarray(end) - np.asarray(start)) * e)
    # Cosine fade so the blended path (and the IMU derived from it) has no velocity jumps.
    alpha = 0.5 * (1.0 - np.cos(np.pi * np.clip((t - t_b) / (span - t_b), 0.0, 1.0)))
    return wins[0], wins[1], alpha


def _render(img, win):
    h_img, w_img = img.shape[:2]
    h = win[2] * h_img
    w = min(h * WIDTH / HEIGHT, w_img)
    h = w * HEIGHT / WIDTH
    cx = float(np.clip(win[0] * w_img, w / 2, w_img - w / 2))
    cy = float(np.clip(win[1] * h_img, h / 2, h_img - h / 2))
    # Sub-pixel affine crop at 2x then area-downscale: smooth motion without aliasing shimmer.
    s = 2 * WIDTH / w
    m = np.float32([[s, 0, -(cx - w / 2) * s], [0, s, -(cy - h / 2) * s]])
    big = cv2.warpAffine(img, m, (2 * WIDTH, 2 * HEIGHT), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    return cv2.resize(big, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def build_video(images, path, seconds, fps):
    n_frames = _timeline(seconds, fps)[0]
    win_a, win_b, alpha = _camera(np.arange(n_frames) / fps, seconds, fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open mp4v writer for {path}")
    for i in range(n_frames):
        a = alpha[i]
        if a <= 0.0:
            frame = _render(images[0], win_a[i])
        elif a >= 1.0:
            frame = _render(images[1], win_b[i])
        else:
            frame = cv2.addWeighted(_render(images[0], win_a[i]), 1.0 - a,
                                    _render(images[1], win_b[i]), a, 0.0)
        writer.write(frame)
    writer.release()
    return n_frames


def verify_video(path, n_frames, fps):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"cannot read back {path}")
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    got_fps = cap.get(cv2.CAP_PROP_FPS)
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    if size != (WIDTH, HEIGHT) or abs(got_fps - fps) > 1e-3 or count != n_frames:
        raise RuntimeError(f"{path}: {size} at {got_fps} fps, {count} frames; "
                           f"expected {(WIDTH, HEIGHT)} at {fps} fps, {n_frames} frames")


def synth_imu(seconds, fps, rate):
    """Glove IMU whose motion follows the camera path. Small-angle model: the tilt feeds gravity
    into x/y and the gyro, linear acceleration is not rotated into the sensor frame."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    dt = 1.0 / rate
    win_a, win_b, alpha = _camera(t, seconds, fps)
    cam = (1.0 - alpha)[:, None] * win_a + alpha[:, None] * win_b
    # Pan moves the hand across, zooming in brings it towards the camera.
    path = np.stack([cam[:, 0] * PAN_M, cam[:, 1] * PAN_M, -np.log(cam[:, 2]) * ZOOM_M], axis=1)
    speed = np.linalg.norm(np.gradient(path, dt, axis=0, edge_order=2), axis=1)
    env = speed / speed.max()
    tw = 2 * np.pi * t
    pos = path + TREMOR_M * env[:, None] * np.stack(
        [np.sin(tw * 2.2), np.sin(tw * 1.7 + 1.0), 0.5 * np.sin(tw * 2.9 + 2.0)], axis=1)
    acc = np.gradient(np.gradient(pos, dt, axis=0, edge_order=2), dt, axis=0, edge_order=2)
    roll = TILT_RAD * env * np.sin(tw * 1.3)
    pitch = 0.7 * TILT_RAD * env * np.sin(tw * 0.9 + 1.0)
    yaw = 0.5 * cam[:, 0]
    gyro = np.gradient(np.stack([roll, pitch, yaw], axis=1), dt, axis=0, edge_order=2)
    acc[:, 0] -= G * np.sin(pitch)
    acc[:, 1] += G * np.sin(roll) * np.cos(pitch)
    acc[:, 2] += G * np.cos(roll) * np.cos(pitch)
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
    p.add_argument("images", nargs=2, type=pathlib.Path, metavar="SRC_IMG")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--imu-rate", type=int, default=200)
    args = p.parse_args(argv)
    if args.seconds < 2 * FADE_S + 1:
        p.error(f"--seconds must be at least {2 * FADE_S + 1:g} to fit the cross-fade")

    images = []
    for path in args.images:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            p.error(f"cannot read image {path}")
        images.append(img)
    args.out.mkdir(parents=True, exist_ok=True)
    video, imu = args.out / "hands.mp4", args.out / "imu.csv"

    n_frames = build_video(images, video, args.seconds, args.fps)
    verify_video(video, n_frames, args.fps)
    t_us, acc, gyro = synth_imu(args.seconds, args.fps, args.imu_rate)
    write_imu(imu, t_us, acc, gyro)
    print(f"{video}: {video.stat().st_size} bytes, {n_frames} frames, {n_frames / args.fps:.2f} s")
    print(f"{imu}: {len(t_us)} samples at {args.imu_rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
