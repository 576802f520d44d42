"""Perceptual prints of a clip's video and sensor log: what the validator compares to find near duplicates of content
already paid for (pure computation; the only I/O is reading the two files).

A video print has five samples a second, placed in *time* (frame index / frame rate), so a changed frame rate lands
on the same samples. Each sample looks at the frames smoothed in time around its instant, through the central 85%
of the picture shrunk to 32x32 grey, and holds
- motion: the signs of the low 4x4 DCT coefficients of how each quarter of the picture changed over 0.1 s and over
  0.3 s (128 bits). Signs of a change do not move with brightness or contrast, and they tell two clips of one still
  scene (a workbench under a fixed camera) apart by what the hands did in them;
- appearance: a 63-bit DCT hash of the picture (signs against the median coefficient), which decides where nothing
  moves;
- strength: how much each quarter moved, 0 (still) to 255, which weighs motion against appearance.

A sensor print does the same for every stream of sensors.parquet: resampled to 50 Hz on capture time, five windows
of 0.64 s a second, each of up to 8 channels described by the signs of its DCT coefficients 1..8 (never the mean),
which an offset, a scale or a little noise leave as they are; a strength (how far the window rises above each
channel's own noise) and the channels that ever move make a resting sensor, or a dead axis, count for nothing.

Two prints are compared at every shift of one against the other (`similarity`: 1.0 equal, about 0 unrelated); the
shifts worth trying are proposed by an index of 20-bit keys (`index_keys` of a stored print, `probe_keys` of a
query), see storage/validator/near_duplicates.py. A print computed from a file also carries query-only tracks that undo a crop (the
picture's region 7% and 14% wider) and a trim (samples 1/4, 1/2, 3/4 of a step later; 1/8 .. 7/8 for sensors);
`to_bytes` keeps only what an index stores.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import cv2
import numpy as np

from collector.video import VideoError, VideoReader

RATE_HZ = 5.0  # print samples (video) and steps (sensors) a second
# Two prints are near duplicates when at least this share of the shorter one lines up at similarity >= the
# threshold; two distinct windows of one video that overlap by more than half of the shorter therefore match.
MIN_OVERLAP = 0.5
MIN_OVERLAP_SAMPLES = 4
# Measured on real footage (bench/dedup.py): copies made with OpenCV scored 0.55 and up (median 0.85), distinct clips
# of one desk or room at most 0.53 (median 0.12); derived sensor logs 0.78 and up against 0.57 at most.
VIDEO_THRESHOLD = 0.55
SENSOR_THRESHOLD = 0.65

# Bounds on what a hostile file can cost: frames decoded, seconds printed, pixels per frame, rows read.
MAX_FRAMES = 3600
MAX_SECONDS = 120.0
MAX_PIXELS = 4096 * 2304
MAX_SENSOR_ROWS = 250_000
MAX_SENSOR_BYTES = 64 << 20
MAX_CHANNELS = 8
_MAX_SAMPLES = int(MAX_SECONDS * RATE_HZ) + 2
_MAX_STREAMS = 16

_SIDE = 32  # the sampled picture, split into 2x2 cells of 16x16 for motion
_CELL = 16
_REGION = 0.85  # central share of width and height: a crop of a few % per side stays outside it
_ZOOMS = (1.0, 1.07, 1.14)  # query-only: regions 7% and 14% wider undo a crop that was resized back
# Pictures are taken twice a step (motion is measured over 0.1 s and 0.3 s); a query also takes them half a picture
# later, and reads both from the even and from the odd pictures: samples 0, 1/4, 1/2 and 3/4 of a step later, so
# that what a trim by some frames leaves misaligned is at most 25 ms, which the smoothing in time absorbs.
_PICTURE_HZ = 2 * RATE_HZ
_PICTURE_PHASES = (0.0, 0.5)
_TAU_S = 0.15  # half-width of the triangle that smooths frames in time around each sample
_SPANS = (1, 3)  # motion over 1 and 3 picture steps: 0.1 s and 0.3 s
_STILL = 0.05  # motion energy relative to the picture's detail below which a cell counts as still
_STILL_WEIGHT = 0.25  # what a sample in which nothing moves weighs against one in which something does
_MAX_DECODED_FPS = 40.0  # faster video is thinned before processing; the smoothing does not need more
_WORK_WIDTH = 256

_SENSOR_HZ = 50.0
_SENSOR_WINDOW = 32  # samples at 50 Hz: 0.64 s
_SENSOR_COEFS = 8  # per channel: coefficients 1..8 of a 0.64 s window, up to 6 Hz; 8 channels fill 64 bits
_SENSOR_NOISE_COEFS = slice(20, 32)  # a window's highest frequencies: what a smooth movement leaves to noise
_SENSOR_QUIET, _SENSOR_MOVING = 2.0, 4.0  # low coefficients this many times the noise: still below, moving above
_SENSOR_MIN_WEIGHT = 4.0  # moving steps (0.8 s) two sensor prints must line up before their similarity counts
# Query-only: steps 1/8 .. 7/8 of a step later. A shifted log is misaligned by at most 12.5 ms, which leaves the signs
# of coefficients up to 6 Hz alone (25 ms already flips many).
_SENSOR_PHASES = tuple(i / 8 for i in range(8))

_VIDEO_MAGIC = b"KNV1"
_SENSOR_MAGIC = b"KNS1"

# Index keys: 20 bits a sample. Video: the steadiest motion bits (below); still samples use 20 low appearance bits
# instead, in their own key space. Sensors: the lowest coefficients of every channel.
_KEY_BITS = 20
_STILL_KEY_FLAG = 1 << _KEY_BITS
_PROBE_FLIPS = 4  # a query probes every combination of its 4 least certain key bits
INDEX_STRIDE = 1  # a stored print keeps the key of every sample (5 a second); a query probes all of its samples too


class FingerprintError(ValueError):
    """The file cannot be printed: not a video, absurd dimensions or frame rate, unreadable parquet."""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.astype(np.float32)


_DCT_CELL = _dct_matrix(_CELL)[:4]  # 4 x 16: the low 4x4 block of a cell
_DCT_SIDE = _dct_matrix(_SIDE)[:8]  # 8 x 32: the low 8x8 block of the picture
_DCT_WINDOW = _dct_matrix(_SENSOR_WINDOW)
# Bit positions in the (cell, 32 bits) motion layout (span index * 16 + u * 4 + v within each cell's word), the
# steadiest first as measured over re-encodes, crops and trims of real footage: each cell's mean change over 0.3 s
# and 0.1 s, then its lowest horizontal and vertical frequencies over 0.3 s, then over 0.1 s.
_VIDEO_KEY_POS = np.array(
    [c * 32 + 16 + 0 for c in range(4)]
    + [c * 32 + 0 for c in range(4)]
    + [c * 32 + 16 + uv for c in range(4) for uv in (1, 4)]
    + [c * 32 + uv for c in range(4) for uv in (1, 4)]
)[:_KEY_BITS]
_VIDEO_SAMPLE_BYTES = 16 + 8 + 4
# The appearance bits of the lowest frequencies (u + v), in the row-major 8x8 block without its DC coefficient.
_APPEARANCE_KEY_POS = np.array(sorted(range(63), key=lambda i: ((i + 1) // 8 + (i + 1) % 8, i))[:_KEY_BITS])


def _pack(bits: np.ndarray) -> np.ndarray:
    """(n, 64*w) booleans -> (n, w) uint64, bit i of word j = column 64*j + i."""
    n, width = bits.shape
    if width % 64:
        bits = np.concatenate([bits, np.zeros((n, 64 - width % 64), bool)], axis=1)
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").reshape(n, -1)


if hasattr(np, "bitwise_count"):
    _popcount = np.bitwise_count
else:  # numpy < 2.0
    _BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        return _BYTE_COUNTS[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


_KEY_WEIGHTS = (1 << np.arange(_KEY_BITS)).astype(np.int64)
_MOTION_KEY_WORDS, _MOTION_KEY_SHIFTS = _VIDEO_KEY_POS // 32, (_VIDEO_KEY_POS % 32).astype(np.uint32)
_PICTURE_KEY_SHIFTS = _APPEARANCE_KEY_POS.astype(np.uint64)


def _motion_keys(motion: np.ndarray) -> np.ndarray:
    bits = (motion[:, _MOTION_KEY_WORDS] >> _MOTION_KEY_SHIFTS) & np.uint32(1)
    return (bits.astype(np.int64) @ _KEY_WEIGHTS).astype(np.uint32)


def _appearance_keys(appearance: np.ndarray) -> np.ndarray:
    bits = (appearance[:, None] >> _PICTURE_KEY_SHIFTS) & np.uint64(1)
    return (bits.astype(np.int64) @ _KEY_WEIGHTS).astype(np.uint32) | np.uint32(_STILL_KEY_FLAG)


def _low_bits_keys(hashes: np.ndarray) -> np.ndarray:
    """Sensor keys: the first _KEY_BITS bits of each hash."""
    return (hashes & np.uint64((1 << _KEY_BITS) - 1)).astype(np.uint32)


def _probe(keys: np.ndarray, doubt: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each key with every combination of its `_PROBE_FLIPS` least certain bits flipped (multi-probe LSH)."""
    if not len(keys):
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    weakest = np.argsort(-doubt, axis=1)[:, :_PROBE_FLIPS].astype(np.uint32)
    masks = [np.zeros(len(keys), np.uint32)]
    for j in range(_PROBE_FLIPS):
        flip = np.uint32(1) << weakest[:, j]
        masks += [m ^ flip for m in masks]
    probed = np.stack([keys ^ m for m in masks], axis=1)
    return probed.ravel(), np.repeat(positions, len(masks))


@dataclass(frozen=True)
class VideoPrint:
    """Per sample (RATE_HZ a second): motion (one 32-bit word per cell), appearance (64 bits), strength (one byte
    per cell, 255 = moving)."""

    motion: bytes
    appearance: bytes
    strength: bytes
    # Query-only, never stored: the same clip zoomed and sampled later (11 tracks), and how unsure each key bit is.
    probes: tuple[VideoPrint, ...] = field(default=(), compare=False, repr=False)
    doubt: bytes = field(default=b"", compare=False, repr=False)

    kind = "video"
    threshold = VIDEO_THRESHOLD

    def __len__(self) -> int:
        return len(self.appearance) // 8

    @property
    def seconds(self) -> float:
        return len(self) / RATE_HZ

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self)
        motion = np.frombuffer(self.motion, "<u4").reshape(n, 4)
        appearance = np.frombuffer(self.appearance, "<u8")
        weight = np.frombuffer(self.strength, np.uint8).reshape(n, 4).astype(np.float32) / 255
        return motion, appearance, weight

    def to_bytes(self) -> bytes:
        return _VIDEO_MAGIC + struct.pack("<I", len(self)) + self.motion + self.appearance + self.strength

    @classmethod
    def from_bytes(cls, data: bytes) -> VideoPrint:
        data = bytes(data)
        if len(data) < 8 or data[:4] != _VIDEO_MAGIC:
            raise ValueError("not a video print")
        (n,) = struct.unpack_from("<I", data, 4)
        if n > _MAX_SAMPLES or len(data) != 8 + _VIDEO_SAMPLE_BYTES * n:
            raise ValueError(f"video print of {len(data)} bytes does not hold {n} samples")
        return cls(data[8 : 8 + 16 * n], data[8 + 16 * n : 8 + 24 * n], data[8 + 24 * n :])

    def index_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, sample positions) that an index stores for this print: every INDEX_STRIDE-th sample."""
        n = len(self)
        at = np.arange(0, n, INDEX_STRIDE, dtype=np.int32)
        motion = np.frombuffer(self.motion, "<u4").reshape(n, 4)[at]
        moving = np.frombuffer(self.strength, np.uint8).reshape(n, 4)[at].max(axis=1) >= 128
        if moving.all():
            return _motion_keys(motion), at
        keys = np.empty(len(at), np.uint32)
        keys[moving] = _motion_keys(motion[moving])
        keys[~moving] = _appearance_keys(np.frombuffer(self.appearance, "<u8")[at[~moving]])
        return keys, at

    def probe_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, sample positions) a query looks up: every sample of every track, each key with its least certain
        bits flipped (multi-probe). A sample between still and moving probes both kinds of key, since the stored
        print chose one at 0.5."""
        lengths, (motion, appearance, weight) = self._tracks
        positions = np.concatenate([np.arange(n) for n in lengths]) if lengths else np.zeros(0, np.int64)
        strength = weight.max(axis=1)
        at_motion, at_picture = np.flatnonzero(strength >= 0.25), np.flatnonzero(strength < 1.0)
        motion_keys, picture_keys = _motion_keys(motion[at_motion]), _appearance_keys(appearance[at_picture])
        doubts = [t.doubt for t in (self, *self.probes)]
        if all(doubts):
            doubt = np.frombuffer(b"".join(doubts), np.float16).reshape(-1, 2 * _KEY_BITS).astype(np.float32)
            motion_keys, at_motion = _probe(motion_keys, doubt[at_motion, :_KEY_BITS], at_motion)
            picture_keys, at_picture = _probe(picture_keys, doubt[at_picture, _KEY_BITS:], at_picture)
        return np.concatenate([motion_keys, picture_keys]), positions[np.concatenate([at_motion, at_picture])].astype(np.int32)

    def similarity(self, stored: VideoPrint, offsets: np.ndarray | None = None) -> tuple[float, int]:
        """(best similarity, offset) of this query, over its tracks, against `stored`; offset o lines up query
        sample i with stored sample i + o. Only `offsets` are tried when given."""
        lengths, arrays = self._tracks
        return _best_alignment(lengths, len(stored), partial(_video_distance, arrays, stored._arrays), offsets)

    @cached_property
    def _tracks(self) -> tuple[list[int], tuple[np.ndarray, ...]]:
        """Every track's length, and their arrays end to end."""
        tracks = (self, *self.probes)
        return [len(t) for t in tracks], tuple(np.concatenate(parts) for parts in zip(*(t._arrays for t in tracks)))


def _video_distance(query, stored, qs: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per lined-up sample: (distance times weight, weight); distance 0 is equal, 0.5 unrelated."""
    q_motion, q_appearance, q_weight = query
    s_motion, s_appearance, s_weight = stored
    # Each quarter of the picture counts as much as it moves in either clip: a still quarter's motion bits are noise.
    cells = _popcount(q_motion[qs] ^ s_motion[ss]) / 32
    w = np.maximum(q_weight[qs], s_weight[ss])
    moving = w.max(axis=1)
    motion = (w * cells).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-6)
    picture = _popcount(q_appearance[qs] ^ s_appearance[ss]) / 63
    # Where nothing moves the picture decides, with less weight: two clips of one workbench share its still moments
    # but not what the hands did.
    weight = moving + (1 - moving) * _STILL_WEIGHT
    return moving * motion + (1 - moving) * _STILL_WEIGHT * picture, weight


def _best_alignment(tracks: list[int], ns: int, distance, offsets: np.ndarray | None, min_weight: float = 0.0) -> tuple[float, int]:
    """(similarity, offset) at the best offset of any query track (tracks: their lengths, stored end to end) that
    lines up enough of both: similarity is 1 - 2 * the weighted mean distance, so 1 is equal and 0 chance.
    `distance(query rows, stored rows)` gives (distance * weight, weight) per lined-up pair."""
    lengths_q = np.asarray(tracks, np.int64)
    if offsets is None:
        tried = np.arange(-int(lengths_q.max(initial=1)) + 1, ns)
    else:
        tried = np.unique(np.asarray(offsets, np.int64))
    # Every (track, offset): those that line up too little are dropped; the rest, one segment after the other.
    nq = np.repeat(lengths_q, len(tried))
    base, tried = np.repeat(np.cumsum(lengths_q) - lengths_q, len(tried)), np.tile(tried, len(lengths_q))
    starts, ends = np.maximum(0, -tried), np.minimum(nq, ns - tried)
    keep = ends - starts >= np.maximum(MIN_OVERLAP_SAMPLES, np.ceil(MIN_OVERLAP * np.minimum(nq, ns)))
    if not keep.any():
        return (-1.0, 0)
    base, tried, starts, ends = base[keep], tried[keep], starts[keep], ends[keep]
    best = (-1.0, 0)
    # Every lined-up pair of a run of (track, offset)s at once, a million pairs at most (two long prints compared
    # at every offset would be hundreds of millions).
    for lo, hi in _runs(np.cumsum(ends - starts), 1 << 20):
        lengths = ends[lo:hi] - starts[lo:hi]
        first = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum())) - np.repeat(first - starts[lo:hi], lengths)
        weighted, weights = distance(rows + np.repeat(base[lo:hi], lengths), rows + np.repeat(tried[lo:hi], lengths))
        totals = np.add.reduceat(weights, first)
        scores = 1.0 - 2.0 * np.add.reduceat(weighted, first) / np.maximum(totals, 1e-9)
        scores[(totals <= 0) | (totals < min_weight)] = -1.0
        top = int(np.argmax(scores))
        best = max(best, (float(scores[top]), int(tried[lo + top])))
    return best


def _runs(cumulative: np.ndarray, size: int):
    """(start, end) ranges of items whose sizes (given as their running total) add up to at most `size` each, or
    one item."""
    lo = 0
    while lo < len(cumulative):
        before = cumulative[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(cumulative, before + size, "right")))
        yield lo, hi
        lo = hi


class _Sampler:
    """Frames in, one smoothed 32x32 grey picture per sample out, for every zoom and phase at once."""

    def __init__(self, zooms: tuple[float, ...], phases: tuple[float, ...]):
        self.zooms, self.phases = zooms, phases
        self.sums = {(z, p): [] for z in zooms for p in phases}
        self.weights = {(z, p): [] for z in zooms for p in phases}
        self.last_t = -1.0

    def add(self, t: float, grey: np.ndarray) -> None:
        h, w = grey.shape
        if w > _WORK_WIDTH:
            grey = cv2.resize(grey, (_WORK_WIDTH, max(1, round(h * _WORK_WIDTH / w))), interpolation=cv2.INTER_AREA)
            h, w = grey.shape
        small = {}
        for z in self.zooms:
            rh, rw = min(h, h * _REGION * z), min(w, w * _REGION * z)
            y0, x0 = int((h - rh) / 2), int((w - rw) / 2)
            region = grey[y0 : max(y0 + 1, int(y0 + rh)), x0 : max(x0 + 1, int(x0 + rw))]
            small[z] = cv2.resize(region, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
        for p in self.phases:
            first = max(0, math.ceil((t - _TAU_S) * _PICTURE_HZ - p))
            last = math.floor((t + _TAU_S) * _PICTURE_HZ - p)
            for k in range(first, last + 1):
                weight = 1.0 - abs(t - (k + p) / _PICTURE_HZ) / _TAU_S
                if weight <= 0:
                    continue
                for z in self.zooms:
                    sums, weights = self.sums[(z, p)], self.weights[(z, p)]
                    while len(sums) <= k:
                        sums.append(np.zeros((_SIDE, _SIDE), np.float32))
                        weights.append(0.0)
                    sums[k] += weight * small[z]
                    weights[k] += weight
        self.last_t = t

    def pictures(self, zoom: float, phase: float) -> np.ndarray:
        count = max(0, math.floor(self.last_t * _PICTURE_HZ - phase) + 1)
        sums, weights = self.sums[(zoom, phase)][:count], self.weights[(zoom, phase)][:count]
        if not sums:
            return np.zeros((0, _SIDE, _SIDE), np.float32)
        return np.stack(sums) / np.maximum(np.array(weights, np.float32), 1e-6)[:, None, None]


def _video_tracks(pictures: np.ndarray) -> tuple[VideoPrint, VideoPrint]:
    """The prints of pictures taken at _PICTURE_HZ: from the even pictures, and from the odd ones."""
    n = max(0, len(pictures) - max(_SPANS))
    if n == 0:
        return VideoPrint(b"", b"", b""), VideoPrint(b"", b"", b"")
    cells = pictures.reshape(-1, 2, _CELL, 2, _CELL).transpose(0, 1, 3, 2, 4).reshape(-1, 4, _CELL, _CELL)
    coefs = (_DCT_CELL @ cells @ _DCT_CELL.T).reshape(len(pictures), 4, 16)
    changes = np.concatenate([coefs[span : span + n] - coefs[:n] for span in _SPANS], axis=2)  # (n, cell, 32)
    motion = (changes > 0).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    motion = motion.sum(axis=2, dtype=np.uint32)
    picture = (_DCT_SIDE @ pictures[:n] @ _DCT_SIDE.T).reshape(n, 64)[:, 1:]
    appearance = _pack(picture > np.median(picture, axis=1, keepdims=True))[:, 0]
    # How much each cell moved, against the whole picture's detail (a flat cell's own detail is codec noise).
    detail = np.abs(coefs[:n, :, 1:]).sum(axis=2).mean(axis=1, keepdims=True)
    energy = np.abs(changes).sum(axis=2) / (len(_SPANS) * detail + 1e-6)
    strength = np.clip(np.round(255 * energy / _STILL), 0, 255).astype(np.uint8)
    # How far each key bit's coefficient is from flipping, relative to the sample's own changes: a query probes
    # its least certain bits.
    flat = changes.reshape(n, -1)
    centred = picture - np.median(picture, axis=1, keepdims=True)
    doubt = np.concatenate(
        [
            -np.abs(flat[:, _VIDEO_KEY_POS]) / (np.abs(flat).mean(axis=1, keepdims=True) + 1e-6),
            -np.abs(centred[:, _APPEARANCE_KEY_POS]) / (np.abs(centred).mean(axis=1, keepdims=True) + 1e-6),
        ],
        axis=1,
    )
    motion, appearance, doubt = motion.astype("<u4"), appearance.astype("<u8"), doubt.astype(np.float16)
    return tuple(
        VideoPrint(motion[start::2].tobytes(), appearance[start::2].tobytes(), strength[start::2].tobytes(), doubt=doubt[start::2].tobytes())
        for start in (0, 1)
    )


def print_frames(frames: Iterable[np.ndarray], fps: float, *, query: bool = True) -> VideoPrint | None:
    """The print of decoded frames (BGR or grey arrays) at `fps`, their first MAX_SECONDS; None when there are
    none. `query` adds the zoomed and later-sampled tracks a lookup uses."""
    # A step's four phases: pictures at phase 0 and 0.5, each read from the even and from the odd pictures.
    zooms, picture_phases = (_ZOOMS, _PICTURE_PHASES) if query else ((1.0,), (0.0,))
    sampler = _Sampler(zooms, picture_phases)
    for index, frame in enumerate(frames):
        if index / fps > MAX_SECONDS:
            break
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        sampler.add(index / fps, grey)
    if sampler.last_t < 0:
        return None
    tracks = []
    for z in zooms:
        for p in picture_phases:
            even, odd = _video_tracks(sampler.pictures(z, p))
            tracks += [even, odd] if query else [even]
    main = tracks[0]
    return VideoPrint(main.motion, main.appearance, main.strength, probes=tuple(tracks[1:]), doubt=main.doubt)


def video_print(path: Path, *, max_frames: int = MAX_FRAMES, max_seconds: float = MAX_SECONDS, query: bool = True) -> VideoPrint | None:
    """The print of a video file's first `max_seconds` (at most MAX_SECONDS, and at most `max_frames` frames); None
    when it has no frame.

    Raises FingerprintError for a file that cannot be opened as a video, or one whose frame rate or frame size is absurd."""
    try:
        reader = VideoReader(path)
    except VideoError as exc:
        raise FingerprintError(f"{path}: {exc}") from exc
    with reader:
        fps, width, height = reader.info.fps, reader.info.width, reader.info.height
        if not (math.isfinite(fps) and 1.0 <= fps <= 1000.0):
            raise FingerprintError(f"{path}: frame rate {fps} is not between 1 and 1000")
        if width * height > MAX_PIXELS:
            raise FingerprintError(f"{path}: {width:.0f}x{height:.0f} frames are over {MAX_PIXELS} pixels")
        every = max(1, math.ceil(fps / _MAX_DECODED_FPS))
        limit = min(max_frames, math.ceil(max_seconds * fps))

        def frames():
            for index, frame in enumerate(reader):
                if index >= limit:
                    return
                if index % every:
                    continue
                if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
                    raise FingerprintError(f"{path}: frame {index} is {frame.shape[1]}x{frame.shape[0]}")
                yield frame

        try:
            return print_frames(frames(), fps / every, query=query)
        except cv2.error as exc:
            raise FingerprintError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class SensorPrint:
    """Per stream, per step (RATE_HZ a second): 8 hash bits per channel (up to 8 channels; bit 8k + c is coefficient
    k + 1 of channel c) and a strength (0 resting .. 255 moving)."""

    streams: tuple[tuple[int, int, bytes, bytes], ...]  # (channels, bit mask of the channels that move, hashes, strengths)
    probes: tuple[SensorPrint, ...] = field(default=(), compare=False, repr=False)
    doubt: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    kind = "sensors"
    threshold = SENSOR_THRESHOLD

    def __len__(self) -> int:
        return sum(len(strength) for *_, strength in self.streams)

    @cached_property
    def _arrays(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        return [(c, moving, np.frombuffer(h, "<u8"), np.frombuffer(s, np.uint8).astype(np.float32) / 255) for c, moving, h, s in self.streams]

    def to_bytes(self) -> bytes:
        out = [_SENSOR_MAGIC, struct.pack("<B", len(self.streams))]
        for channels, moving, hashes, strength in self.streams:
            out += [struct.pack("<BBI", channels, moving, len(strength)), hashes, strength]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> SensorPrint:
        data = bytes(data)
        if len(data) < 5 or data[:4] != _SENSOR_MAGIC:
            raise ValueError("not a sensor print")
        count, at, streams = data[4], 5, []
        if count > _MAX_STREAMS:
            raise ValueError(f"sensor print of {count} streams (at most {_MAX_STREAMS})")
        for _ in range(count):
            if len(data) < at + 6:
                raise ValueError("sensor print cut short")
            channels, moving, n = struct.unpack_from("<BBI", data, at)
            at += 6
            if not 0 < channels <= MAX_CHANNELS or moving >> channels or n > _MAX_SAMPLES or len(data) < at + 9 * n:
                raise ValueError(f"sensor print stream of {channels} channels and {n} steps does not fit")
            streams.append((channels, moving, data[at : at + 8 * n], data[at + 8 * n : at + 9 * n]))
            at += 9 * n
        if at != len(data):
            raise ValueError(f"{len(data) - at} bytes after the last stream of a sensor print")
        return cls(tuple(streams))

    def index_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, positions) for an index: every INDEX_STRIDE-th moving step; stream j's positions start at
        j * _MAX_SAMPLES."""
        keys, positions = [], []
        for stream, (*_, hashes, strength) in enumerate(self.streams):
            weight = np.frombuffer(strength, np.uint8)
            at = np.arange(0, len(weight), INDEX_STRIDE, dtype=np.int32)
            at = at[weight[at] >= 128]
            keys.append(_low_bits_keys(np.frombuffer(hashes, "<u8")[at]))
            positions.append(at + stream * _MAX_SAMPLES)
        if len(keys) == 1:
            return keys[0], positions[0]
        return _concat(keys, np.uint32), _concat(positions, np.int32)

    def probe_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, step positions) a query looks up: the moving steps of every track and stream, multi-probed."""
        keys, positions = [], []
        for track in (self, *self.probes):
            for stream, (*_, hashes, weight) in enumerate(track._arrays):
                at = np.flatnonzero(weight >= 0.25)
                found = _low_bits_keys(hashes[at])
                if stream < len(track.doubt):
                    doubt = np.frombuffer(track.doubt[stream], np.float16).reshape(-1, _KEY_BITS).astype(np.float32)
                    found, at = _probe(found, doubt[at], at)
                keys.append(found)
                positions.append(at)
        return _concat(keys, np.uint32), _concat(positions, np.int32)

    def similarity(self, stored: SensorPrint, offsets: np.ndarray | None = None) -> tuple[float, int]:
        """(best similarity, offset) of any stream of this query (any track) against any stream of `stored` with
        as many channels: a log reused under another stream name still matches. Only `offsets` are tried when
        given, as an index votes them (stored stream j's steps counted from j * _MAX_SAMPLES on, see index_keys)."""
        best = (-1.0, 0)
        for j, s_stream in enumerate(stored._arrays):
            mine = [q for track in (self, *self.probes) for q in track._arrays if q[0] == s_stream[0]]
            if mine and mine[0][1] | s_stream[1]:  # some channel moves in one of them: else nothing to compare
                query = (np.concatenate([q[2] for q in mine]), np.concatenate([q[3] for q in mine]))
                distance = partial(_sensor_distance, query, s_stream, _channel_bits(s_stream[0], mine[0][1] | s_stream[1]))
                tried = None if offsets is None else np.asarray(offsets) - j * _MAX_SAMPLES
                best = max(best, _best_alignment([len(q[3]) for q in mine], len(s_stream[3]), distance, tried, _SENSOR_MIN_WEIGHT))
        return best


def _channel_bits(channels: int, moving: int) -> np.uint64:
    """The hash bits of the channels in the `moving` bit mask (bit 8k + c is coefficient k + 1 of channel c)."""
    return np.uint64(sum(1 << (k * channels + c) for c in range(channels) if moving >> c & 1 for k in range(_SENSOR_COEFS)))


def _sensor_distance(query, stored, bits: np.uint64, qs: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q_hashes, q_weight = query
    *_, s_hashes, s_weight = stored
    # A step counts as much as it moves in either log, and only the channels that move in either do: a resting
    # sensor's noise, or a dead axis's constant bits, say nothing.
    counted = int(_popcount(np.array([bits]))[0])
    w = np.maximum(q_weight[qs], s_weight[ss])
    return w * _popcount((q_hashes[qs] ^ s_hashes[ss]) & bits) / counted, w


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def _sensor_track(times_s: np.ndarray, values: np.ndarray, phase: float) -> tuple[int, int, bytes, bytes, bytes] | None:
    """One stream's (channels, moving channels, hashes, strengths, doubt): resampled to 50 Hz, a 0.64 s window every
    step, the signs of each channel's DCT coefficients 1..8, the lowest coefficient of every channel first."""
    grid = np.arange(times_s[0] + phase / RATE_HZ, times_s[-1], 1.0 / _SENSOR_HZ)
    per_step = round(_SENSOR_HZ / RATE_HZ)
    steps = (len(grid) - _SENSOR_WINDOW) // per_step + 1
    if steps <= 0:
        return None
    channels = values.shape[1]
    # The mean of each 20 ms around a grid point (from the running integral), not a point: faster logs lose their
    # noise rather than folding it into the low frequencies.
    integral = np.concatenate([np.zeros((1, channels)), np.cumsum((values[1:] + values[:-1]) / 2 * np.diff(times_s)[:, None], axis=0)])
    half = 0.5 / _SENSOR_HZ
    lo, hi = np.maximum(grid - half, times_s[0]), np.minimum(grid + half, times_s[-1])
    resampled = np.stack(
        [(np.interp(hi, times_s, integral[:, c]) - np.interp(lo, times_s, integral[:, c])) / np.maximum(hi - lo, 1e-9) for c in range(channels)],
        axis=1,
    )
    windows = np.stack([resampled[s : s + _SENSOR_WINDOW] for s in range(0, steps * per_step, per_step)])
    spectrum = np.einsum("kw,swc->sck", _DCT_WINDOW, windows)  # (steps, channels, 32)
    low = spectrum[:, :, 1 : _SENSOR_COEFS + 1]
    bits = (low > 0).transpose(0, 2, 1).reshape(steps, -1)
    # Each channel against its own noise (its windows' median high-frequency content), so the ratio ignores a
    # scale or units; a log whose channels all sit at their noise is resting.
    noise = np.median(np.abs(spectrum[:, :, _SENSOR_NOISE_COEFS]).mean(axis=2), axis=0) + 1e-12
    rise = np.abs(low).mean(axis=2) / noise  # (steps, channels)
    strength = np.clip((rise.max(axis=1) - _SENSOR_QUIET) / (_SENSOR_MOVING - _SENSOR_QUIET), 0, 1)
    moving = sum(1 << c for c in range(channels) if (rise[:, c] >= _SENSOR_MOVING).any())
    relative = low / (np.abs(low).mean(axis=(1, 2), keepdims=True) + 1e-12)
    doubt = -np.abs(relative.transpose(0, 2, 1).reshape(steps, -1))
    doubt = np.pad(doubt, ((0, 0), (0, max(0, _KEY_BITS - doubt.shape[1]))), constant_values=-np.inf)[:, :_KEY_BITS]
    return (
        channels,
        moving,
        _pack(bits)[:, 0].astype("<u8").tobytes(),
        np.round(255 * strength).astype(np.uint8).tobytes(),
        np.maximum(doubt, -6e4).astype(np.float16).tobytes(),
    )


def sensor_print_of(streams: dict[str, tuple[np.ndarray, np.ndarray]], *, query: bool = True) -> SensorPrint | None:
    """The print of sensor streams given as {name: (capture times in ns, values (n, channels))}; None when no
    stream holds one window (0.64 s). `query` adds the tracks a lookup uses, stepped 1/8 .. 7/8 of a step later."""
    phases = _SENSOR_PHASES if query else (0.0,)
    tracks: dict[float, list] = {p: [] for p in phases}
    for name in sorted(streams)[:_MAX_STREAMS]:
        times, values = streams[name]
        times = np.asarray(times, np.float64)
        values = np.asarray(values, np.float64).reshape(len(times), -1)[:, :MAX_CHANNELS]
        keep = np.isfinite(times) & np.isfinite(values).all(axis=1)
        times, values = times[keep], values[keep]
        if len(times) < 2 or values.shape[1] == 0:
            continue
        order = np.argsort(times, kind="stable")
        times_s, values = (times[order] - times[order][0]) / 1e9, values[order]
        distinct = np.concatenate([[True], np.diff(times_s) > 0])
        times_s, values = times_s[distinct], values[distinct]
        if times_s[-1] > MAX_SECONDS:
            cut = int(np.searchsorted(times_s, MAX_SECONDS))
            times_s, values = times_s[:cut], values[:cut]
        for p in phases:
            track = _sensor_track(times_s, values, p) if len(times_s) >= 2 else None
            if track is not None:
                tracks[p].append(track)
    if not tracks[0.0]:
        return None

    def build(items) -> SensorPrint:
        return SensorPrint(tuple(item[:4] for item in items), doubt=tuple(item[4] for item in items))

    main = build(tracks[0.0])
    probes = tuple(build(tracks[p]) for p in phases[1:] if len(tracks[p]) == len(tracks[0.0]))
    return SensorPrint(main.streams, probes=probes, doubt=main.doubt)


def sensor_print(path: Path, *, max_rows: int = MAX_SENSOR_ROWS, query: bool = True) -> SensorPrint | None:
    """The print of a clip's sensors.parquet (columns stream, capture_ns, values), its first `max_rows` rows;
    None when no stream holds 0.64 s of samples. Raises FingerprintError for a file that is not such a table."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = ["stream", "capture_ns", "values"]
    try:
        parquet = pq.ParquetFile(str(path))
        names = parquet.schema_arrow.names
        if not set(columns) <= set(names):
            raise FingerprintError(f"{path}: columns {names} lack one of {columns}")
        # What the row groups up to max_rows unpack to, from the footer, before anything is read.
        rows, size = 0, 0
        for group in range(parquet.metadata.num_row_groups):
            if rows >= max_rows:
                break
            meta = parquet.metadata.row_group(group)
            rows += meta.num_rows
            size += sum(meta.column(c).total_uncompressed_size for c in range(meta.num_columns) if meta.column(c).path_in_schema.split(".")[0] in columns)
        if size > MAX_SENSOR_BYTES:
            raise FingerprintError(f"{path}: {size} bytes to unpack for {rows} rows (at most {MAX_SENSOR_BYTES})")
        batches, rows = [], 0
        for batch in parquet.iter_batches(batch_size=65536, columns=columns):
            batches.append(batch.slice(0, max_rows - rows))
            rows += batches[-1].num_rows
            if rows >= max_rows:
                break
        if not rows:
            return None
        table = pa.Table.from_batches(batches).combine_chunks()
        stream = table.column("stream").to_numpy(zero_copy_only=False)
        times = table.column("capture_ns").to_numpy(zero_copy_only=False).astype(np.float64)
        values = table.column("values").chunk(0)
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
        starts = values.offsets.to_numpy()[:-1]  # into values.values, which ignores slicing and null lists
        flat = pc.fill_null(pc.cast(values.values, pa.float64()), math.nan).to_numpy(zero_copy_only=False)
    except (OSError, pa.ArrowException, ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, FingerprintError):
            raise
        raise FingerprintError(f"{path}: {exc}") from exc
    streams = {}
    for name in sorted({s for s in stream if isinstance(s, str)})[:_MAX_STREAMS]:
        rows_of = np.flatnonzero(stream == name)
        # The stream's usual row width; rows narrower than it (a parse slip) are left out.
        widths, counts = np.unique(np.minimum(lengths[rows_of], MAX_CHANNELS), return_counts=True)
        width = int(widths[np.argmax(counts)])
        rows_of = rows_of[lengths[rows_of] >= width]
        if width == 0:
            continue
        streams[name] = (times[rows_of], flat[starts[rows_of, None] + np.arange(width)])
    return sensor_print_of(streams, query=query)
