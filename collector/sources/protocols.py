"""Incremental decoders for serial sensor protocols: bytes in, validated samples and error counts out.

Pure and I/O-free so every corner case (garbage, partial lines, bad CRC) is tested without a port.
A decoder never guesses: anything it cannot parse completely is counted under a reason and skipped.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

# A line longer than this without a newline is garbage (e.g. a wrong baud rate), not a sample.
MAX_LINE = 4096

# Binary frame: SYNC | u16 little-endian payload length | payload | u32 little-endian CRC-32 of payload.
SYNC = b"\xa5\x5a"
_HEADER = struct.Struct("<2sH")
_CRC = struct.Struct("<I")
MAX_PAYLOAD = 1024


@dataclass(frozen=True)
class Reading:
    """One decoded sample: channel values in the stream's channel order, and the device's own time if sent."""

    values: tuple[float, ...]
    device_time: float | None = None


@dataclass
class DecodeResult:
    readings: list[Reading] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)


class Decoder(Protocol):
    channels: tuple[str, ...]

    def feed(self, data: bytes) -> DecodeResult: ...


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _LineDecoder:
    """Splits bytes into lines; subclasses turn one line into a mapping of channel -> value."""

    def __init__(self, channels: tuple[str, ...] = (), device_time_field: str | None = None):
        self.channels: tuple[str, ...] = tuple(channels)
        self.device_time_field = device_time_field
        self._buffer = bytearray()
        # The first line after opening a port is usually cut in the middle: never trust it.
        self._synced = False

    def feed(self, data: bytes) -> DecodeResult:
        result = DecodeResult()
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    result.errors["overlong line"] += 1
                    self._buffer.clear()
                    self._synced = False
                break
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if not self._synced:
                self._synced = True
                if not self._starts_clean(raw):
                    result.errors["partial line"] += 1
                    continue
            self._decode_line(raw, result)
        return result

    def _starts_clean(self, raw: bytes) -> bool:
        return False

    def _decode_line(self, raw: bytes, result: DecodeResult) -> None:
        if len(raw) > MAX_LINE:
            result.errors["overlong line"] += 1
            return
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            result.errors["garbage bytes"] += 1
            return
        if not line:
            return
        if any(ord(c) < 32 and c != "\t" for c in line):
            result.errors["garbage bytes"] += 1
            return
        fields, reason = self._fields(line)
        if fields is None:
            if reason:
                result.errors[reason] += 1
            return
        reading, reason = self._reading(fields)
        if reading is None:
            result.errors[reason] += 1
        else:
            result.readings.append(reading)

    def _fields(self, line: str) -> tuple[dict[str, float] | None, str | None]:
        raise NotImplementedError

    def _reading(self, fields: dict[str, float]) -> tuple[Reading | None, str]:
        if not self.channels:
            # Without configured channels the first good sample fixes them for the whole stream.
            self.channels = tuple(k for k in fields if k != self.device_time_field)
        device_time = None
        if self.device_time_field is not None:
            if self.device_time_field not in fields:
                return None, f"missing {self.device_time_field}"
            device_time = fields[self.device_time_field]
        missing = [c for c in self.channels if c not in fields]
        if missing:
            return None, f"missing {missing[0]}"
        return Reading(tuple(fields[c] for c in self.channels), device_time), ""


class CsvDecoder(_LineDecoder):
    """CSV with a header line naming the columns; the header may be repeated (e.g. on device reset).

    `columns` stands in for the header of a device that prints it only at boot, before anyone listens.
    """

    def __init__(self, channels: tuple[str, ...] = (), device_time_field: str | None = None, columns: tuple[str, ...] = ()):
        super().__init__(channels, device_time_field)
        self._header: tuple[str, ...] | None = tuple(columns) or None

    def _starts_clean(self, raw: bytes) -> bool:
        # A header line is recognisable on its own, so it is kept even as the first line.
        try:
            return self._parse_header(raw.decode("ascii").strip()) is not None
        except UnicodeDecodeError:
            return False

    def _parse_header(self, line: str) -> tuple[str, ...] | None:
        names = tuple(n.strip() for n in line.split(","))
        if all(names) and all(_number(n) is None for n in names) and all(n.replace("_", "").replace(".", "").isalnum() for n in names):
            return names
        return None

    def _fields(self, line: str):
        header = self._parse_header(line)
        if header is not None:
            self._header = header
            return None, None
        if self._header is None:
            return None, "no header yet"
        cells = line.split(",")
        if len(cells) != len(self._header):
            return None, "wrong column count"
        values = [_number(c) for c in cells]
        if any(v is None for v in values):
            return None, "not a number"
        return dict(zip(self._header, values)), None


def _json_object(line: str) -> tuple[dict | None, str]:
    try:
        obj = json.loads(line)
    except ValueError:
        return None, "bad json"
    return (obj, "") if isinstance(obj, dict) else (None, "json not an object")


class JsonLinesDecoder(_LineDecoder):
    """One JSON object per line; numeric members are channels, other members are ignored."""

    def _starts_clean(self, raw: bytes) -> bool:
        return raw.lstrip().startswith(b"{")

    def _fields(self, line: str):
        obj, reason = _json_object(line)
        if obj is None:
            return None, reason
        fields = {}
        for key, value in obj.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                return None, "not a number"
            fields[key] = float(value)
        return fields, None


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def joint_channels(joints: tuple[str, ...], fields: tuple[str, ...]) -> tuple[str, ...]:
    """`<joint>.<field>` names, field-major like the binary payload: every position, then every velocity, ..."""
    return tuple(f"{joint}.{name}" for name in fields for joint in joints)


def joint_binary_format(joints: int, fields: int) -> str:
    """Payload of a binary joint-state frame: u64 device time, u32 sequence, then float32 values field-major."""
    return f"<QI{joints * fields}f"


class JointStateDecoder(JsonLinesDecoder):
    """JSON lines shaped like ROS sensor_msgs/JointState (wire format: collector/sources/joints.py).

    With a `name` list, values are looked up by joint name, so a robot may send its joints in another order
    or send more of them; without one, each array holds exactly the configured joints in order."""

    def __init__(self, joints: tuple[str, ...], fields: tuple[str, ...], device_time_field: str = "t_us", seq_field: str = "seq"):
        self.joints, self.fields, self.seq_field = tuple(joints), tuple(fields), seq_field
        channels = ((seq_field,) if seq_field else ()) + joint_channels(self.joints, self.fields)
        super().__init__(channels, device_time_field or None)

    def _fields(self, line: str):
        obj, reason = _json_object(line)
        if obj is None:
            return None, reason
        fields: dict[str, float] = {}
        for key in (self.device_time_field, self.seq_field):
            if key and key in obj:
                value = _finite(obj[key])
                if value is None:
                    return None, f"{key} not a number"
                fields[key] = value
        names = obj.get("name")
        if names is None:
            positions, length = range(len(self.joints)), len(self.joints)
        else:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return None, "name not a list of strings"
            where = {n: i for i, n in enumerate(names)}
            if len(where) != len(names):
                return None, "duplicate joint name"
            missing = [j for j in self.joints if j not in where]
            if missing:
                return None, f"missing joint {missing[0]}"
            positions, length = [where[j] for j in self.joints], len(names)
        for name in self.fields:
            values = obj.get(name)
            if not isinstance(values, list):
                return None, f"missing {name}"
            if len(values) != length:
                return None, f"wrong {name} length"
            for joint, i in zip(self.joints, positions):
                value = _finite(values[i])
                if value is None:
                    return None, "not a number"
                fields[f"{joint}.{name}"] = value
        return fields, None


class KeyValueDecoder(_LineDecoder):
    """`key=value` pairs separated by spaces, commas or semicolons: `ax=0.12 ay=-0.5 az=9.81`."""

    def _fields(self, line: str):
        fields = {}
        for token in line.replace(",", " ").replace(";", " ").split():
            key, sep, text = token.partition("=")
            if not sep or not key:
                return None, "not key=value"
            value = _number(text)
            if value is None:
                return None, "not a number"
            fields[key] = value
        return (fields, None) if fields else (None, "not key=value")


class BinaryFrameDecoder:
    """Length-prefixed frames with a CRC-32 (see SYNC); the payload is one struct of `fmt` with `fields`.

    A frame whose CRC or length does not check is skipped by resynchronising on the next SYNC,
    so one flipped bit costs one frame, never a wrong value.
    """

    def __init__(self, fmt: str, fields: tuple[str, ...], device_time_field: str | None = None):
        self._payload = struct.Struct(fmt)
        if len(self._payload.unpack(bytes(self._payload.size))) != len(fields):
            raise ValueError(f"binary format {fmt!r} has {len(self._payload.unpack(bytes(self._payload.size)))} values but {len(fields)} fields are named")
        self.fields = tuple(fields)
        self.device_time_field = device_time_field
        self.channels = tuple(f for f in fields if f != device_time_field)
        self._buffer = bytearray()
        # Bytes before the first SYNC after opening are the tail of a frame sent before anyone listened.
        self._synced = False

    def feed(self, data: bytes) -> DecodeResult:
        result = DecodeResult()
        buf = self._buffer
        buf += data
        while True:
            start = buf.find(SYNC)
            if start < 0:
                # Keep a trailing first SYNC byte: the second may be in the next read.
                keep = 1 if buf.endswith(SYNC[:1]) else 0
                if len(buf) - keep > 0:
                    result.errors["garbage bytes" if self._synced else "partial frame"] += 1
                del buf[: len(buf) - keep]
                break
            if start > 0:
                result.errors["garbage bytes" if self._synced else "partial frame"] += 1
                del buf[:start]
            self._synced = True
            if len(buf) < _HEADER.size:
                break
            _, length = _HEADER.unpack_from(buf)
            if length != self._payload.size:
                result.errors["bad frame length"] += 1
                del buf[:1]
                continue
            total = _HEADER.size + length + _CRC.size
            if len(buf) < total:
                break
            payload = bytes(buf[_HEADER.size : _HEADER.size + length])
            (crc,) = _CRC.unpack_from(buf, _HEADER.size + length)
            if zlib.crc32(payload) != crc:
                result.errors["crc mismatch"] += 1
                del buf[:1]
                continue
            del buf[:total]
            values = dict(zip(self.fields, (float(v) for v in self._payload.unpack(payload))))
            if not all(math.isfinite(v) for v in values.values()):
                result.errors["not a number"] += 1
                continue
            device_time = values.pop(self.device_time_field) if self.device_time_field else None
            result.readings.append(Reading(tuple(values[c] for c in self.channels), device_time))
        return result


def encode_frame(fmt: str, values: tuple) -> bytes:
    """The device side of BinaryFrameDecoder (used by the simulator and by firmware authors as reference)."""
    payload = struct.pack(fmt, *values)
    return _HEADER.pack(SYNC, len(payload)) + payload + _CRC.pack(zlib.crc32(payload))
