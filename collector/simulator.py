"""A sensor on a pseudo-terminal: streams a realistic 6-axis IMU glove, or a robot arm's joint states, so the
real serial path runs without hardware.

The simulated device stamps samples with the host's monotonic clock in microseconds (it runs on the same
host), which makes the recorder's serial latency and clock alignment measurable.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import random
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from collector.sources.protocols import encode_frame, joint_binary_format

log = logging.getLogger("knack.simulate")

IMU_FIELDS = ("t_us", "seq", "ax", "ay", "az", "gx", "gy", "gz")
IMU_BINARY_FORMAT = "<QI6f"
PROTOCOLS = ("csv", "jsonl", "kv", "binary")
STREAMS = ("imu", "joints")
JOINT_PROTOCOLS = ("jsonl", "binary")
SIM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
# Samples nobody reads are gone after this long, as on a UART whose transmit buffer overflows, rather than
# arriving seconds later with a capture time that lies about when they were measured. Judged by time, not by
# bytes: a burst owed after the simulator's own thread was held up fills the pty (about 16 KB) at once, and a
# reader that is there drains it within milliseconds.
OVERFLOW_AFTER_S = 0.5


@dataclass(frozen=True)
class SimulatorConfig:
    rate: float = 200.0
    protocol: str = "csv"
    garbage: float = 0.0  # probability per sample of injecting noise bytes (or a corrupt binary frame)
    replay: str = ""  # a CSV log with IMU_FIELDS columns whose values are streamed in a loop
    link: str = ""  # a stable path symlinked to the pty, like a udev rule's /dev/knack/... name
    seed: int = 1
    header_every_s: float = 1.0  # CSV: repeat the header so a reader that joins late can parse
    stream: str = "imu"  # or "joints": a robot arm's joint states (jsonl or binary, see collector/sources/joints.py)
    joints: int = 6  # joints stream: how many, named by joint_names()


def _synthetic(seq: int, rate: float, rng: random.Random) -> tuple[float, ...]:
    t = seq / rate
    # A hand at work: slow reaching motion plus a faster tool rhythm, with gravity on z and sensor noise.
    ax = 1.2 * math.sin(2 * math.pi * 0.4 * t) + 0.3 * math.sin(2 * math.pi * 3.1 * t) + rng.gauss(0, 0.05)
    ay = 0.8 * math.cos(2 * math.pi * 0.25 * t) + rng.gauss(0, 0.05)
    az = 9.81 + 0.4 * math.sin(2 * math.pi * 0.7 * t) + rng.gauss(0, 0.05)
    gx = 0.6 * math.cos(2 * math.pi * 0.4 * t) + rng.gauss(0, 0.01)
    gy = 0.3 * math.sin(2 * math.pi * 1.3 * t) + rng.gauss(0, 0.01)
    gz = 0.2 * math.sin(2 * math.pi * 0.2 * t) + rng.gauss(0, 0.01)
    return ax, ay, az, gx, gy, gz


def joint_names(count: int) -> tuple[str, ...]:
    """A 6-axis arm's joint names, then joint_7, joint_8, ... for more."""
    return SIM_JOINTS[:count] + tuple(f"joint_{i + 1}" for i in range(len(SIM_JOINTS), count))


def joint_state(t: float, count: int, rng: random.Random) -> tuple[list[float], list[float], list[float]]:
    """Positions (rad), velocities (rad/s) and efforts (N m) of an arm moving smoothly at time t (s)."""
    positions, velocities, efforts = [], [], []
    for i in range(count):
        # Each joint sweeps at its own slow frequency; velocity is the exact derivative of position.
        amplitude, frequency, phase = 0.8 / (1 + 0.3 * i), 0.15 + 0.07 * i, 0.9 * i
        w = 2 * math.pi * frequency
        position = amplitude * math.sin(w * t + phase) + 0.1 * i
        velocity = amplitude * w * math.cos(w * t + phase)
        # Holding against gravity plus a little for acceleration, with motor current noise.
        effort = 2.0 / (1 + i) * math.cos(position) - 0.05 * amplitude * w * w * math.sin(w * t + phase) + rng.gauss(0, 0.01)
        positions.append(position)
        velocities.append(velocity)
        efforts.append(effort)
    return positions, velocities, efforts


def encode_joints(protocol: str, t_us: int, seq: int, names: tuple[str, ...], state: tuple[list[float], list[float], list[float]]) -> bytes:
    """One joint-state sample on the wire, every joint with position, velocity and effort."""
    if protocol == "binary":
        return encode_frame(joint_binary_format(len(names), 3), (t_us, seq, *state[0], *state[1], *state[2]))
    if protocol == "jsonl":
        record = {"t_us": t_us, "seq": seq, "name": list(names), **{k: [round(x, 6) for x in v] for k, v in zip(("position", "velocity", "effort"), state)}}
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()
    raise ValueError(f"protocol {protocol!r} is not one of {', '.join(JOINT_PROTOCOLS)} for joint states")


def write_joint_recording(path: str | Path, joints: int = 6, seconds: float = 1.0, rate: float = 100.0, start_us: int = 0, seed: int = 1) -> Path:
    """A JSON-lines joint-state recording, as a `[[joints]] file = ...` stream replays it; device time from start_us."""
    rng, names = random.Random(seed), joint_names(joints)
    with open(path, "wb") as f:
        for seq in range(int(seconds * rate)):
            f.write(encode_joints("jsonl", start_us + int(seq * 1e6 / rate), seq, names, joint_state(seq / rate, joints, rng)))
    return Path(path)


def load_replay(path: str | Path) -> list[tuple[float, ...]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(name not in rows[0] for name in IMU_FIELDS[2:]):
        raise ValueError(f"{path} is not an IMU log: expected columns {', '.join(IMU_FIELDS)}")
    return [tuple(float(row[name]) for name in IMU_FIELDS[2:]) for row in rows]


def encode(protocol: str, t_us: int, seq: int, values: tuple[float, ...]) -> bytes:
    if protocol == "binary":
        return encode_frame(IMU_BINARY_FORMAT, (t_us, seq, *values))
    v = [f"{x:.4f}" for x in values]
    if protocol == "csv":
        return f"{t_us},{seq},{','.join(v)}\n".encode()
    if protocol == "kv":
        return (f"t_us={t_us} seq={seq} " + " ".join(f"{k}={x}" for k, x in zip(IMU_FIELDS[2:], v)) + "\n").encode()
    if protocol == "jsonl":
        record = {"t_us": t_us, "seq": seq, **{k: round(x, 4) for k, x in zip(IMU_FIELDS[2:], values)}}
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()
    raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


class SerialSimulator:
    """Owns a pty pair; `port` is the path a serial reader opens. Runs its writer in a thread."""

    def __init__(self, config: SimulatorConfig):
        if config.stream not in STREAMS:
            raise ValueError(f"stream {config.stream!r} is not one of {', '.join(STREAMS)}")
        protocols = JOINT_PROTOCOLS if config.stream == "joints" else PROTOCOLS
        if config.protocol not in protocols:
            raise ValueError(f"protocol {config.protocol!r} is not one of {', '.join(protocols)}{' for joint states' if config.stream == 'joints' else ''}")
        if config.stream == "joints" and (config.replay or not 1 <= config.joints <= 64):
            raise ValueError("a joint-state simulator has 1 to 64 joints and replays no IMU log")
        if not 0 < config.rate <= 10_000:
            raise ValueError(f"rate {config.rate} is not between 0 and 10000 samples per second")
        self.config = config
        self.replay = load_replay(config.replay) if config.replay else None
        self.joint_names = joint_names(config.joints) if config.stream == "joints" else ()
        self.sent = 0  # samples generated
        self.overrun = 0  # times the transmit buffer overflowed because nobody read the port
        self.corrupted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master, self._slave = os.openpty()
        # Raw mode before anyone opens the port: no echo back into the generator, no newline translation.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.pty_path = os.ttyname(self._slave)
        self.port = self.pty_path
        if config.link:
            link = Path(config.link)
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.pty_path)
            os.replace(tmp, link)
            self.port = str(link)

    def start(self) -> SerialSimulator:
        self._thread = threading.Thread(target=self._run, name="knack-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops streaming and removes the port, as when a device is unplugged. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.config.link:
            try:
                if os.readlink(self.config.link) == self.pty_path:
                    os.unlink(self.config.link)
            except OSError:
                pass
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> SerialSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def header(self) -> bytes:
        return (",".join(IMU_FIELDS) + "\n").encode() if self.config.protocol == "csv" else b""

    def _encode(self, t_us: int, seq: int, rng: random.Random) -> bytes:
        if self.config.stream == "joints":
            return encode_joints(self.config.protocol, t_us, seq, self.joint_names, joint_state(seq / self.config.rate, self.config.joints, rng))
        return encode(self.config.protocol, t_us, seq, self._values(seq, rng))

    def _values(self, seq: int, rng: random.Random) -> tuple[float, ...]:
        if self.replay:
            return self.replay[seq % len(self.replay)]
        return _synthetic(seq, self.config.rate, rng)

    def _corrupt(self, chunk: bytes, rng: random.Random) -> bytes:
        self.corrupted += 1
        if self.config.protocol == "binary":
            # Flip one payload bit: the CRC must catch it.
            i = rng.randrange(4, len(chunk) - 4)
            return chunk[:i] + bytes([chunk[i] ^ (1 << rng.randrange(8))]) + chunk[i + 1 :]
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        cut = rng.randrange(len(chunk))
        return chunk[:cut] + noise + chunk[cut:]

    def _run(self) -> None:
        rng = random.Random(self.config.seed)
        pending = bytearray(self.header())
        start = time.monotonic_ns()
        period_ns = 1e9 / self.config.rate
        last_header = start
        blocked_since = None  # when the port last refused what is pending
        while not self._stop.is_set():
            now = time.monotonic_ns()
            due = int((now - start) / period_ns) + 1
            out = bytearray()
            if self.config.protocol == "csv" and now - last_header >= self.config.header_every_s * 1e9:
                out += self.header()
                last_header = now
            while self.sent < due:
                t_us = int(start + self.sent * period_ns) // 1000
                chunk = self._encode(t_us, self.sent, rng)
                if self.config.garbage and rng.random() < self.config.garbage:
                    chunk = self._corrupt(chunk, rng)
                out += chunk
                self.sent += 1
            pending += out
            while pending:
                try:
                    written = os.write(self._master, pending)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EIO):
                        raise
                    break
                if not written:
                    break
                del pending[:written]
            if not pending:
                blocked_since = None
            elif blocked_since is None:
                blocked_since = now
            elif now - blocked_since > OVERFLOW_AFTER_S * 1e9:
                self.overrun += 1
                pending.clear()
                blocked_since = None
            self._stop.wait(0.0005)


def stream_config(config: SimulatorConfig, port: str):
    """The knack.toml stream that reads what this simulator sends on `port`: a SerialConfig for the IMU,
    a JointStateConfig for the arm (`knack simulate` prints it as a table to paste)."""
    from collector.config import JointStateConfig, SerialConfig, SerialProtocol

    protocol = SerialProtocol(config.protocol)
    if config.stream == "joints":
        return JointStateConfig(name="arm", port=port, protocol=protocol, joints=joint_names(config.joints), nominal_rate=config.rate)
    return SerialConfig(
        name="glove",
        port=port,
        protocol=protocol,
        device_time_field="t_us",
        seq_field="seq",
        nominal_rate=config.rate,
        csv_columns=IMU_FIELDS if protocol is SerialProtocol.CSV else (),
        binary_format=IMU_BINARY_FORMAT if protocol is SerialProtocol.BINARY else "",
        binary_fields=IMU_FIELDS if protocol is SerialProtocol.BINARY else (),
    )
