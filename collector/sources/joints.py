"""A robot's joint-state stream: positions, velocities and efforts per joint, from a serial port or a recording.

Wire format (`[[joints]]` in knack.toml names `joints`, `fields`, `device_time_field`, `seq_field`):

- JSON lines (`protocol = "jsonl"`), shaped like ROS sensor_msgs/JointState, one object per line:
  `{"t_us": 1234, "seq": 7, "name": ["shoulder", "elbow"], "position": [0.1, 0.2], "velocity": [..], "effort": [..]}`.
  `name` is optional. With it, every configured joint must be named and values are taken by name (other
  orders and extra joints are fine); without it, each array holds exactly the configured joints, in order.
  A line with a missing joint, a missing or wrong-length array, or a value that is not a finite number is
  skipped and counted under its reason, never stored with a guessed value. A recording in a file is the same.
- Binary frames (`protocol = "binary"`): the SYNC | u16 length | payload | CRC-32 frame of protocols.py, whose
  payload is `<QI` (device time, sequence) then len(joints) * len(fields) little-endian float32, field-major:
  every joint's position, then every joint's velocity, then every joint's effort (`joint_binary_format`).

Stored channels in sensors.parquet: the sequence field (`seq`), then `<joint>.<field>` field-major
(`shoulder.position`, `elbow.position`, `shoulder.velocity`, ...); the device time goes into `device_ns`.
"""

from __future__ import annotations

import logging
from typing import Any

from collector.config import JointStateConfig, SerialConfig, SerialProtocol
from collector.sources.base import ErrorReporter, Sample, SequenceCounter, ThreadedSource
from collector.sources.protocols import Decoder, JointStateDecoder, joint_binary_format, joint_channels
from collector.sources.serial_port import ByteStream, SerialSource

log = logging.getLogger("knack.capture")


def stored_channels(config: JointStateConfig) -> tuple[str, ...]:
    return ((config.seq_field,) if config.seq_field else ()) + joint_channels(config.joints, config.fields)


def serial_config(config: JointStateConfig) -> SerialConfig:
    """The serial settings of a joint-state port; a binary frame is then an ordinary binary-protocol frame."""
    binary = config.protocol is SerialProtocol.BINARY
    return SerialConfig(
        name=config.name,
        port=config.port,
        baudrate=config.baudrate,
        protocol=config.protocol,
        channels=stored_channels(config),
        device_time_field=config.device_time_field,
        device_time_unit=config.device_time_unit,
        seq_field=config.seq_field,
        nominal_rate=config.nominal_rate,
        binary_format=joint_binary_format(len(config.joints), len(config.fields)) if binary else "",
        binary_fields=(config.device_time_field, config.seq_field, *joint_channels(config.joints, config.fields)) if binary else (),
        queue_size=config.queue_size,
    )


def _describe(config: JointStateConfig, channels: tuple[str, ...], kind: str) -> dict[str, Any]:
    return {
        "joints": list(config.joints),
        "fields": list(config.fields),
        "channels": list(channels),
        "device_time_field": config.device_time_field or None,
        "source_kind": kind,
    }


class JointSerialSource(SerialSource):
    """SerialSource's port, reconnects and loss counting, with the joint-state decoder."""

    kind = "joints"

    def __init__(self, config: JointStateConfig, stream: ByteStream | None = None):
        self.joint_config = config
        super().__init__(serial_config(config), stream)

    def _make_decoder(self) -> Decoder:
        c = self.joint_config
        if c.protocol is SerialProtocol.JSONL:
            return JointStateDecoder(c.joints, c.fields, c.device_time_field, c.seq_field)
        return super()._make_decoder()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **_describe(self.joint_config, self.channels, "serial")}


class JointFileSource(ThreadedSource):
    """Replays a JSON-lines joint-state recording as if the robot sent it now: each sample gets the shared
    clock's capture time, paced by its recorded device time (as a video file is paced by its frame rate)."""

    kind = "joints"

    def __init__(self, config: JointStateConfig):
        super().__init__(config.name, config.queue_size)
        self.config = config
        self.channels = stored_channels(config)
        self.reporter = ErrorReporter(f"joints {self.name}")
        self._anchor: tuple[int, int] | None = None  # (device ns, host ns) that pacing counts from
        self._last: tuple[int, int] | None = None  # (device ns, host ns due) of the sample before
        self._step_ns = 0  # the last interval between samples, to keep the rhythm across a loop

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.config.file,
            "protocol": self.config.protocol.value,
            "nominal_rate": self.config.nominal_rate or None,
            **_describe(self.config, self.channels, "file"),
        }

    def _decoder(self) -> JointStateDecoder:
        c = self.config
        return JointStateDecoder(c.joints, c.fields, c.device_time_field, c.seq_field)

    def _open(self) -> str | None:
        try:
            self._file = open(self.config.file, "rb")
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def _run(self) -> None:
        says = lambda why: f"joints {self.name}: cannot open {self.config.file} ({why}); retrying with backoff"  # noqa: E731
        if not self._open_with_backoff(self._open, 0.5, 5.0, says):
            self.stats.state = "stopped"
            return
        self._resume(f"joints {self.name}: {self.config.file}")
        try:
            while self._play_once() and self.config.loop and not self._stop.is_set():
                self._file.seek(0)
        finally:
            self._file.close()
            self.reporter.flush(self.clock.now_ns(), force=True)
        if self._stop.is_set():
            self.stats.state = "stopped"
        else:
            log.info("joints %s: recording %s ended after %d samples", self.name, self.config.file, self.stats.received)
            self.stats.state = "ended"

    def _play_once(self) -> int:
        """Plays the file from where it stands to its end; returns how many samples it held."""
        unit_ns = self.config.device_time_unit.ns
        period_ns = int(1e9 / self.config.nominal_rate) if self.config.nominal_rate else 0
        decoder, sequence = self._decoder(), SequenceCounter()
        played = 0
        for line in self._file:
            if self._stop.is_set():
                break
            result = decoder.feed(line if line.endswith(b"\n") else line + b"\n")
            if result.errors:
                self.stats.errors.update(result.errors)
                self.reporter.add(result.errors, self.clock.now_ns())
            for reading in result.readings:
                device_ns = None if reading.device_time is None else int(reading.device_time * unit_ns)
                if self.config.realtime and not self._wait_until_due(device_ns, period_ns):
                    return played
                if self.config.seq_field:
                    self.stats.lost += sequence.missing(int(reading.values[0]))
                played += 1
                self._emit(Sample(self.name, self.clock.now_ns(), device_ns, reading.values))
        return played

    def _wait_until_due(self, device_ns: int | None, period_ns: int) -> bool:
        """Sleeps until this sample's time comes; False when the source is stopped meanwhile."""
        now = self.clock.now_ns()
        if device_ns is None:
            due = now if self._last is None else self._last[1] + period_ns
            self._last = (0, due)
        else:
            if self._last is not None and device_ns < self._last[0]:
                # Time went backwards (the file looped, or the robot restarted): go on one step after the last.
                self._anchor = (device_ns, self._last[1] + self._step_ns)
            elif self._last is not None:
                self._step_ns = device_ns - self._last[0]
            if self._anchor is None:
                self._anchor = (device_ns, now)
            due = self._anchor[1] + device_ns - self._anchor[0]
            self._last = (device_ns, due)
        wait = due - now
        return wait <= 0 or self._sleep(wait / 1e9)


def make_joint_source(config: JointStateConfig) -> SerialSource | JointFileSource:
    return JointFileSource(config) if config.file else JointSerialSource(config)
