"""knack.toml into frozen dataclasses, with errors that name the key, the bad value and what is expected.

Lookup order (DESIGN.md): --config, then $KNACK_CONFIG, then the user config directory; KNACK_* variables
override single values. This is the one module that reads the environment for configuration.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.bundle import MAX_TASK_CHARS, task_problem


class ConfigError(ValueError):
    """A configuration problem, worded for the person who edits knack.toml."""


class _Choice(enum.StrEnum):
    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"{value!r} is not one of {', '.join(repr(m.value) for m in cls)}")


class SerialProtocol(_Choice):
    CSV = "csv"
    JSONL = "jsonl"
    KV = "kv"
    BINARY = "binary"


class Parity(_Choice):
    NONE = "N"
    EVEN = "E"
    ODD = "O"
    MARK = "M"
    SPACE = "S"


class TimeUnit(_Choice):
    NS = "ns"
    US = "us"
    MS = "ms"
    S = "s"

    @property
    def ns(self) -> int:
        return {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[self.value]


@dataclass(frozen=True)
class CameraConfig:
    name: str = "cam0"
    # A device index ("0"), a /dev/video* or udev symlink path, a video file, or a stream URL.
    source: str = "0"
    width: int = 640
    height: int = 480
    fps: float = 30.0
    fourcc: str = ""
    # Video files only: pace frames at `fps` like a live camera, and start again at the end.
    realtime: bool = True
    loop: bool = False
    queue_size: int = 64

    def validate(self, key: str) -> None:
        _require(bool(self.name), f"{key}.name", self.name, "a non-empty stream name")
        _require(self.width > 0 and self.height > 0, f"{key}.width/height", (self.width, self.height), "positive pixel sizes")
        _require(0 < self.fps <= 1000, f"{key}.fps", self.fps, "a frame rate between 0 and 1000")
        _require(self.fourcc == "" or len(self.fourcc) == 4, f"{key}.fourcc", self.fourcc, 'four characters such as "MJPG", or "" for the camera default')
        _require(self.queue_size >= 2, f"{key}.queue_size", self.queue_size, "at least 2")


@dataclass(frozen=True)
class SerialConfig:
    name: str = "imu"
    port: str = "/dev/ttyUSB0"
    baudrate: int = 115200
    bytesize: int = 8
    parity: Parity = Parity.NONE
    stopbits: float = 1
    protocol: SerialProtocol = SerialProtocol.CSV
    # Channel names in stored order; empty means "as the device names them" (CSV header, first JSON/kv sample).
    channels: tuple[str, ...] = ()
    device_time_field: str = ""
    device_time_unit: TimeUnit = TimeUnit.US
    # A device counter that makes lost samples countable, not just guessable from timing.
    seq_field: str = ""
    nominal_rate: float = 0.0
    # CSV only: the column names, for a device that sends its header line only at boot.
    csv_columns: tuple[str, ...] = ()
    # Binary protocol only: struct format of one frame's payload and the names of its values.
    binary_format: str = ""
    binary_fields: tuple[str, ...] = ()
    queue_size: int = 16384

    def validate(self, key: str) -> None:
        _require(bool(self.name), f"{key}.name", self.name, "a non-empty stream name")
        _require(bool(self.port), f"{key}.port", self.port, "a serial device path such as /dev/ttyUSB0")
        _require(self.baudrate > 0, f"{key}.baudrate", self.baudrate, "a positive baud rate such as 115200")
        _require(self.bytesize in (5, 6, 7, 8), f"{key}.bytesize", self.bytesize, "5, 6, 7 or 8")
        _require(self.stopbits in (1, 1.5, 2), f"{key}.stopbits", self.stopbits, "1, 1.5 or 2")
        _require(self.nominal_rate >= 0, f"{key}.nominal_rate", self.nominal_rate, "samples per second, or 0 if unknown")
        _require(self.queue_size >= 16, f"{key}.queue_size", self.queue_size, "at least 16")
        if self.protocol is SerialProtocol.BINARY:
            _require(bool(self.binary_format), f"{key}.binary_format", self.binary_format, 'a struct format such as "<QI6f" for the binary protocol')
            _require(bool(self.binary_fields), f"{key}.binary_fields", self.binary_fields, "the names of the values in binary_format")
            import struct

            try:
                count = len(struct.unpack(self.binary_format, bytes(struct.calcsize(self.binary_format))))
            except struct.error as exc:
                raise ConfigError(f"{key}.binary_format = {self.binary_format!r} is not a valid struct format ({exc})") from None
            _require(count == len(self.binary_fields), f"{key}.binary_fields", self.binary_fields, f"{count} names, one per value of binary_format")


JOINT_FIELDS = ("position", "velocity", "effort")


@dataclass(frozen=True)
class JointStateConfig:
    """A robot's joint states (collector/sources/joints.py has the wire format), from a serial port or a recording."""

    name: str = "joints"
    # Exactly one: a serial device path, or a JSON-lines recording replayed as if it were the robot.
    port: str = ""
    file: str = ""
    protocol: SerialProtocol = SerialProtocol.JSONL
    joints: tuple[str, ...] = ()
    # Stored per joint, and in this order in a binary frame's payload.
    fields: tuple[str, ...] = JOINT_FIELDS
    device_time_field: str = "t_us"
    device_time_unit: TimeUnit = TimeUnit.US
    seq_field: str = "seq"
    nominal_rate: float = 0.0
    baudrate: int = 115200
    queue_size: int = 16384
    # Files only: pace samples by their recorded device time (or nominal_rate without one), and start again at the end.
    realtime: bool = True
    loop: bool = False

    def validate(self, key: str) -> None:
        _require(bool(self.name), f"{key}.name", self.name, "a non-empty stream name")
        _require(
            bool(self.port) != bool(self.file),
            f"{key}.port/file",
            (self.port, self.file),
            "exactly one of port (a serial device such as /dev/ttyUSB0) or file (a JSON-lines recording)",
        )
        _require(
            self.protocol in (SerialProtocol.JSONL, SerialProtocol.BINARY),
            f"{key}.protocol",
            self.protocol.value,
            "'jsonl' or 'binary' for a joint-state stream",
        )
        _require(not self.file or self.protocol is SerialProtocol.JSONL, f"{key}.protocol", self.protocol.value, "'jsonl' for a recording in a file")
        _require(
            bool(self.joints) and all(self.joints) and len(set(self.joints)) == len(self.joints),
            f"{key}.joints",
            self.joints,
            "a non-empty list of distinct joint names",
        )
        _require(
            bool(self.fields) and self.fields == tuple(f for f in JOINT_FIELDS if f in self.fields) and set(self.fields) <= set(JOINT_FIELDS),
            f"{key}.fields",
            self.fields,
            f"some of {', '.join(repr(f) for f in JOINT_FIELDS)}, in that order",
        )
        if self.protocol is SerialProtocol.BINARY:
            # A binary frame always starts with (device time, sequence): these name its two header values.
            _require(bool(self.device_time_field), f"{key}.device_time_field", self.device_time_field, 'a name for the frame\'s device time, such as "t_us"')
            _require(bool(self.seq_field), f"{key}.seq_field", self.seq_field, 'a name for the frame\'s sequence counter, such as "seq"')
        _require(self.nominal_rate >= 0, f"{key}.nominal_rate", self.nominal_rate, "samples per second, or 0 if unknown")
        if self.file and self.realtime and not self.device_time_field:
            _require(
                self.nominal_rate > 0,
                f"{key}.nominal_rate",
                self.nominal_rate,
                "samples per second to pace a recording without device time (or realtime = false)",
            )
        _require(self.baudrate > 0, f"{key}.baudrate", self.baudrate, "a positive baud rate such as 115200")
        _require(self.queue_size >= 16, f"{key}.queue_size", self.queue_size, "at least 16")


# The pinned video's codec (collector/video.py): auto = AV1, else H.264.
VIDEO_CODECS = ("auto", "av1", "h264")


@dataclass(frozen=True)
class RecorderConfig:
    # 0 cuts clips only on the operator's start/stop/split.
    clip_seconds: float = 10.0
    # How long a clip waits for a slow source before it is closed without it.
    max_source_lag_s: float = 1.0
    # The pinned video's codec: "auto" is AV1 (NVENC on a GPU, else SVT-AV1), H.264 where no AV1 encoder opens.
    video_codec: str = "auto"
    # Capture (sources, clock, segmenter, encoder) in a process of its own, so that labeling, pinning, the chain
    # and the app never stall it; false runs it in threads of the session's process (a debugger, a tiny board).
    own_process: bool = True
    # What the hands do, signed into every clip's manifest ("solder a header onto a PCB"); "" names none. The
    # operator may change it while recording (`knack tui`): the clip is split there. Surrounding spaces are dropped.
    task: str = ""

    def validate(self, key: str) -> None:
        _require(self.video_codec in VIDEO_CODECS, f"{key}.video_codec", self.video_codec, f"one of {', '.join(VIDEO_CODECS)}")
        _require(
            task_problem(self.task) is None,
            f"{key}.task",
            self.task if len(self.task) <= 80 else self.task[:80] + "…",
            f"one line of at most {MAX_TASK_CHARS} characters with no control characters (newlines, tabs, escapes)",
        )
        _require(self.clip_seconds == 0 or self.clip_seconds >= 0.5, f"{key}.clip_seconds", self.clip_seconds, "0 (manual) or at least 0.5 seconds")
        _require(0.05 <= self.max_source_lag_s <= 30, f"{key}.max_source_lag_s", self.max_source_lag_s, "between 0.05 and 30 seconds")


@dataclass(frozen=True)
class IdentityConfig:
    # Default: <data_dir>/device-key.json. The password never lives here (KNACK_DEVICE_PASSWORD or a prompt).
    keystore: str = ""
    # The EVM address paid for this device's clips; default: the device key's own address.
    contributor: str = ""

    def validate(self, key: str) -> None:
        if self.contributor:
            ok = self.contributor.startswith("0x") and len(self.contributor) == 42
            try:
                int(self.contributor, 16)
            except ValueError:
                ok = False
            _require(ok, f"{key}.contributor", self.contributor, "an EVM address: 0x followed by 40 hex digits")


@dataclass(frozen=True)
class StorageConfig:
    # Empty means the embedded defaults; set these to use a real IPFS daemon / JSON-RPC chain.
    ipfs_api: str = ""
    chain_rpc: str = ""
    # An IPFS Pinning Service API endpoint (a pinning service or IPFS Cluster) that also keeps each
    # pinned clip; its bearer token comes from KNACK_PINNING_TOKEN, never from this file.
    pinning_service: str = ""
    # An IPFS HTTP gateway (trustless, e.g. https://trustless-gateway.link) that `knack dataset build` and
    # `knack review` read clips from when this machine has no daemon and no block store of its own.
    ipfs_gateway: str = ""

    def validate(self, key: str) -> None:
        _require(self.ipfs_api == "" or self.ipfs_api.startswith("/"), f"{key}.ipfs_api", self.ipfs_api, "a multiaddr such as /ip4/127.0.0.1/tcp/5001/http")
        _require(self.chain_rpc == "" or "://" in self.chain_rpc, f"{key}.chain_rpc", self.chain_rpc, "a URL such as http://127.0.0.1:8545")
        _require(
            self.pinning_service == "" or self.pinning_service.startswith(("http://", "https://")),
            f"{key}.pinning_service",
            self.pinning_service,
            "an https:// URL of an IPFS Pinning Service API endpoint",
        )
        _require(
            self.ipfs_gateway == "" or self.ipfs_gateway.startswith(("http://", "https://")),
            f"{key}.ipfs_gateway",
            self.ipfs_gateway,
            "an http(s):// URL of an IPFS gateway that serves raw blocks (?format=raw)",
        )


class Device(_Choice):
    AUTO = "auto"
    CUDA = "cuda"
    TENSORRT = "tensorrt"
    CPU = "cpu"


@dataclass(frozen=True)
class LabelerConfig:
    # auto: TensorRT, then CUDA, when a GPU is there; CPU otherwise. A GPU asked for but absent falls back to CPU.
    device: Device = Device.AUTO
    # Frames per second of video that the models see; every frame is still checked for freezes and blurred.
    sample_fps: float = 4.0
    batch_size: int = 8
    # onnxruntime threads per session; 0 lets onnxruntime choose (all cores).
    threads: int = 0
    # Cards (TOML) of models that replace the shipped ones; empty means the shipped model.
    hand_card: str = ""
    face_card: str = ""
    # Cards of extra classifiers (e.g. an activity model for a trade); their labels go into the manifest.
    extra_cards: tuple[str, ...] = ()
    max_hands: int = 4
    blur_faces: bool = True
    # Blurred area around a detected face, as a fraction of its size on each side.
    face_margin: float = 0.25
    # `knack record` and `knack demo` label each clip as soon as it is written.
    label_on_record: bool = True

    def validate(self, key: str) -> None:
        _require(0 < self.sample_fps <= 240, f"{key}.sample_fps", self.sample_fps, "frames per second between 0 and 240")
        _require(1 <= self.batch_size <= 256, f"{key}.batch_size", self.batch_size, "between 1 and 256")
        _require(0 <= self.threads <= 256, f"{key}.threads", self.threads, "0 (automatic) or a thread count")
        _require(1 <= self.max_hands <= 16, f"{key}.max_hands", self.max_hands, "between 1 and 16")
        _require(0 <= self.face_margin <= 2, f"{key}.face_margin", self.face_margin, "a fraction between 0 and 2")


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of the accept/reject decision; each one that a clip misses is one stated reason."""

    min_duration_s: float = 1.0
    # Fraction of sampled frames that must show at least one hand.
    min_hand_fraction: float = 0.5
    # How far the strongest edges are smeared, in pixels of the frame scaled to 480 px wide (worst direction):
    # crisp 1-1.5, soft but usable 2-3, defocus or motion blur beyond. Independent of resolution and contrast.
    max_edge_blur_px: float = 3.2
    # Mean luma (0-255) of the sampled frames.
    min_luma: float = 40.0
    max_luma: float = 220.0
    # Fractions of pixels crushed to black or blown to white, over the frame and over the hands' boxes; where
    # hands were seen, their own pixels decide over-exposure (a white backdrop behind them is fine).
    max_underexposed_fraction: float = 0.5
    max_overexposed_fraction: float = 0.4
    max_hands_overexposed_fraction: float = 0.3
    # Where the hands are well exposed, the backdrop may be blown out up to this (a white bench, a window).
    max_backdrop_overexposed_fraction: float = 0.55
    # Fraction of frames identical to the one before (a frozen or duplicating camera).
    max_frozen_fraction: float = 0.2
    # Video frames dropped or late, as a fraction of the frames expected.
    max_frame_drop_fraction: float = 0.05
    # Sensor samples lost, and lines/frames that did not parse, as fractions of samples expected.
    max_sample_loss_fraction: float = 0.05
    max_parse_error_rate: float = 0.05
    # Longest time any stream may be missing inside a clip (unplugged, stalled).
    max_gap_s: float = 1.0
    # A face larger than this fraction of the frame cannot be blurred without destroying the clip.
    max_face_area: float = 0.15

    def validate(self, key: str) -> None:
        for name in (
            "min_hand_fraction",
            "max_frozen_fraction",
            "max_frame_drop_fraction",
            "max_sample_loss_fraction",
            "max_parse_error_rate",
            "max_face_area",
            "max_underexposed_fraction",
            "max_overexposed_fraction",
            "max_hands_overexposed_fraction",
            "max_backdrop_overexposed_fraction",
        ):
            value = getattr(self, name)
            _require(0 <= value <= 1, f"{key}.{name}", value, "a fraction between 0 and 1")
        _require(0 <= self.min_luma < self.max_luma <= 255, f"{key}.min_luma/max_luma", (self.min_luma, self.max_luma), "0 <= min_luma < max_luma <= 255")
        _require(self.max_edge_blur_px > 0, f"{key}.max_edge_blur_px", self.max_edge_blur_px, "pixels, more than 0 (the old min_sharpness is gone)")
        _require(self.min_duration_s >= 0, f"{key}.min_duration_s", self.min_duration_s, "seconds, 0 or more")
        _require(self.max_gap_s >= 0, f"{key}.max_gap_s", self.max_gap_s, "seconds, 0 or more")


@dataclass(frozen=True)
class RobotConfig:
    """`knack robot`, the headless service: health and metrics, stop grace, disk limits, chain rounds."""

    # /healthz and /metrics listen here; loopback by default (put a reverse proxy in front to expose them).
    health_host: str = "127.0.0.1"
    health_port: int = 9477  # 0: no HTTP endpoint
    # SIGTERM/SIGINT: seal the open clip and finish labeling/pinning for at most this long, then exit 0.
    grace_s: float = 20.0
    # How often pinned clips are submitted and settlements read back (when the chain is reachable).
    chain_every_s: float = 15.0
    # Also act as the validator (the embedded chain of a demo or a test bench); a fleet has its own validator.
    act_as_validator: bool = False
    # Recording pauses (a logged reason and a metric) when the data directory would pass its quota or the
    # disk's free space would fall below the floor; it resumes on its own once there is room again.
    disk_quota_mb: float = 0.0  # 0: no quota
    min_free_mb: float = 512.0
    # Clips rejected on the device are deleted once older than this (0: kept); accepted clips never are.
    prune_rejected_after_h: float = 0.0
    # A status line (clips, streams, outbox) in the log this often.
    status_every_s: float = 60.0

    def validate(self, key: str) -> None:
        _require(bool(self.health_host), f"{key}.health_host", self.health_host, "an address to listen on, such as 127.0.0.1")
        _require(0 <= self.health_port <= 65535, f"{key}.health_port", self.health_port, "a TCP port (0 turns the endpoint off)")
        _require(0 <= self.grace_s <= 3600, f"{key}.grace_s", self.grace_s, "seconds between 0 and 3600")
        _require(1 <= self.chain_every_s <= 86400, f"{key}.chain_every_s", self.chain_every_s, "seconds between 1 and 86400")
        _require(self.disk_quota_mb >= 0, f"{key}.disk_quota_mb", self.disk_quota_mb, "megabytes, 0 for no quota")
        _require(self.min_free_mb >= 0, f"{key}.min_free_mb", self.min_free_mb, "megabytes, 0 or more")
        _require(self.prune_rejected_after_h >= 0, f"{key}.prune_rejected_after_h", self.prune_rejected_after_h, "hours, 0 to keep rejected clips")
        _require(self.status_every_s >= 1, f"{key}.status_every_s", self.status_every_s, "seconds, at least 1")


@dataclass(frozen=True)
class ValidatorConfig:
    """`knack validate`: how far a device's claim may differ from the validator's own measurement, and the
    bounds on a clip from elsewhere, enforced before anything in it is decoded."""

    # A clip whose device-reported quality differs from the validator's by more than this is `claim_mismatch`:
    # devices label the pixels before the face blur and the validator the pinned ones: on the sample the gap is
    # at most 0.003, and 0.1 leaves room for another execution provider. The validator pays its own measurement
    # either way: the tolerance decides only which claims are false (a strike).
    claim_tolerance: float = 0.1
    max_clip_mb: float = 512.0
    # The most work one clip can ask of the validator: labeling takes about 0.8 s per 2.5 s of video on two CPU
    # cores, so 120 s of video is about 40 s (devices cut 10 s clips by default).
    max_clip_seconds: float = 120.0

    def validate(self, key: str) -> None:
        _require(0 <= self.claim_tolerance <= 1, f"{key}.claim_tolerance", self.claim_tolerance, "a quality difference between 0 and 1")
        _require(0 < self.max_clip_mb <= 1 << 20, f"{key}.max_clip_mb", self.max_clip_mb, "megabytes, more than 0")
        _require(0 < self.max_clip_seconds <= 86400, f"{key}.max_clip_seconds", self.max_clip_seconds, "seconds, more than 0")


@dataclass(frozen=True)
class Config:
    data_dir: str = ""
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    labeler: LabelerConfig = field(default_factory=LabelerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    validator: ValidatorConfig = field(default_factory=ValidatorConfig)
    camera: tuple[CameraConfig, ...] = ()
    serial: tuple[SerialConfig, ...] = ()
    joints: tuple[JointStateConfig, ...] = ()
    source: str = "defaults"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def clips_path(self) -> Path:
        return self.data_path / "clips"

    @property
    def keystore_path(self) -> Path:
        return Path(self.identity.keystore).expanduser() if self.identity.keystore else self.data_path / "device-key.json"

    def validate(self) -> Config:
        self.recorder.validate("recorder")
        self.identity.validate("identity")
        self.storage.validate("storage")
        self.labeler.validate("labeler")
        self.policy.validate("policy")
        self.robot.validate("robot")
        self.validator.validate("validator")
        names: set[str] = set()
        for kind, streams in (("camera", self.camera), ("serial", self.serial), ("joints", self.joints)):
            for i, stream in enumerate(streams):
                stream.validate(f"{kind}[{i}]")
                _require(stream.name not in names, f"{kind}[{i}].name", stream.name, "a name no other stream uses")
                names.add(stream.name)
        return self


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not valid: expected {expected}")


def _convert(cls, data: Mapping[str, Any], key: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{key} = {data!r} is not valid: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            raise ConfigError(f"{key}.{name} is not a known setting: expected one of {', '.join(sorted(fields))}")
        kwargs[name] = _coerce(fields[name].type, value, f"{key}.{name}")
    return cls(**kwargs)


_SECTIONS = {
    "recorder": RecorderConfig,
    "identity": IdentityConfig,
    "storage": StorageConfig,
    "labeler": LabelerConfig,
    "policy": PolicyConfig,
    "robot": RobotConfig,
    "validator": ValidatorConfig,
}

# [[name]] arrays of tables, one per stream.
_STREAMS = {"camera": CameraConfig, "serial": SerialConfig, "joints": JointStateConfig}


def _coerce(type_name: str, value: Any, key: str):
    expected = {"str": str, "int": int, "float": (int, float), "bool": bool}
    if type_name in expected:
        if isinstance(value, bool) and type_name != "bool" or not isinstance(value, expected[type_name]):
            words = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}
            raise ConfigError(f"{key} = {value!r} is not valid: expected {words[type_name]}")
        return float(value) if type_name == "float" else value
    if type_name == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} = {value!r} is not valid: expected a list of strings")
        return tuple(value)
    choice = {"Parity": Parity, "SerialProtocol": SerialProtocol, "TimeUnit": TimeUnit, "Device": Device}.get(type_name)
    if choice is not None:
        try:
            return choice(value)
        except ValueError as exc:
            raise ConfigError(f"{key} = {value!r} is not valid: expected {str(exc).split(' is not ', 1)[1]}") from None
    raise AssertionError(f"no conversion for {type_name}")


def from_mapping(data: Mapping[str, Any], source: str = "mapping") -> Config:
    kwargs: dict[str, Any] = {"source": source}
    for name, value in data.items():
        if name in _SECTIONS:
            kwargs[name] = _convert(_SECTIONS[name], value, name)
        elif name in _STREAMS:
            cls = _STREAMS[name]
            if not isinstance(value, list):
                raise ConfigError(f"{name} is not valid: expected [[{name}]] tables")
            kwargs[name] = tuple(_convert(cls, v, f"{name}[{i}]") for i, v in enumerate(value))
        elif name == "data_dir":
            kwargs[name] = _coerce("str", value, name)
        else:
            raise ConfigError(f"{name} is not a known setting: expected one of {', '.join(sorted(['data_dir', *_STREAMS, *_SECTIONS]))}")
    return Config(**kwargs)


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")) / ".local" / "share")
    return Path(base) / "knack"


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base) / "knack" / "knack.toml"


def _parse_env(type_name: str, text: str, var: str) -> Any:
    """An environment variable's text as the setting's type; lists are comma-separated."""
    try:
        if type_name == "float":
            return float(text)
        if type_name == "int":
            return int(text)
    except ValueError:
        raise ConfigError(f"{var} = {text!r} is not valid: expected {'a number' if type_name == 'float' else 'an integer'}") from None
    if type_name == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{var} = {text!r} is not valid: expected true or false")
        return text.lower() in ("1", "true", "yes")
    if type_name == "tuple[str, ...]":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    """KNACK_DATA_DIR and KNACK_<SECTION>_<KEY> (e.g. KNACK_RECORDER_CLIP_SECONDS=5) override one value each."""
    if env.get("KNACK_DATA_DIR"):
        config = dataclasses.replace(config, data_dir=env["KNACK_DATA_DIR"])
    for section, cls in _SECTIONS.items():
        changes = {}
        for f in dataclasses.fields(cls):
            var = f"KNACK_{section}_{f.name}".upper()
            if var in env:
                text = env[var]
                value: Any = _parse_env(f.type, text, var)
                changes[f.name] = _coerce(f.type, value, var)
        if changes:
            config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)})
    return config


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    candidate = Path(path) if path else Path(env["KNACK_CONFIG"]) if env.get("KNACK_CONFIG") else default_config_path(env)
    explicit = bool(path or env.get("KNACK_CONFIG"))
    if candidate.exists():
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{candidate} is not valid TOML: {exc}") from None
        config = from_mapping(data, source=str(candidate))
    elif explicit:
        raise ConfigError(f"config file {candidate} does not exist")
    else:
        config = Config(source="defaults (no knack.toml found)")
    config = _apply_env(config, env)
    if not config.data_dir:
        config = dataclasses.replace(config, data_dir=str(default_data_dir(env)))
    return config.validate()


def _scalar(v: Any) -> str:
    if isinstance(v, enum.Enum):
        v = v.value
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def stream_toml(kind: str, stream) -> str:
    """One [[camera]], [[serial]] or [[joints]] table that pastes into knack.toml as is: the values that
    differ from the defaults, one per line."""
    default = type(stream)()
    lines = [f"[[{kind}]]"]
    lines += [
        f"{f.name} = {_scalar(getattr(stream, f.name))}"
        for f in dataclasses.fields(stream)
        if f.name == "name" or getattr(stream, f.name) != getattr(default, f.name)
    ]
    return "\n".join(lines) + "\n"


def to_toml(config: Config) -> str:
    """The effective configuration as TOML, for `knack doctor` (it holds no secrets by design)."""
    scalar = _scalar

    lines = [f"# from {config.source}", f"data_dir = {scalar(config.data_dir)}"]
    for section in _SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{f.name} = {scalar(getattr(getattr(config, section), f.name))}" for f in dataclasses.fields(_SECTIONS[section])]
    for kind in _STREAMS:
        for stream in getattr(config, kind):
            lines += ["", f"[[{kind}]]"]
            lines += [f"{f.name} = {scalar(getattr(stream, f.name))}" for f in dataclasses.fields(stream)]
    return "\n".join(lines) + "\n"
