"""Near-duplicate lookup over the perceptual prints of paid clips (collector/fingerprint.py's VideoPrint and
SensorPrint), in memory, for the validator.

What matches: a query print matches a stored print of the same kind when, at some shift of one against the other
that lines up at least half of the shorter (and at least 0.8 s), the query's `similarity` reaches its kind's
threshold (`VideoPrint.threshold`, `SensorPrint.threshold`). For video that holds for a re-encode (another codec or
bitrate), another frame rate, a trim of some frames at either end, a crop of a few % per side (resized back or not)
and brightness or contrast changed by 10-20%; and for a window of a paid clip that overlaps it by more than half.
Two windows of one video that do not overlap do not match, unless nothing moves in either (one still picture is
one content). For sensors it holds for a log re-timed or resampled, shifted by some samples, with a small offset,
scale or noise added, under any stream name. `match_*` returns the best-matching stored key, or None.

How: every sample of a stored print (five a second) contributes a 20-bit key (its steadiest motion bits; picture
bits where nothing moves) to posting arrays sorted by key. A query looks up every sample of each of its tracks, each
key with its 4 least certain bits flipped (16 probes), counts the hits per stored print and shift, and verifies the
(at most 8) stored prints with 2 or more hits at one shift with the full alignment around the voted shifts. A
lookup costs a few binary searches per probe and a few alignments, so it grows with the number of stored clips only
through the hits per key (about 50 per key at a million 10 s clips), not through a scan. A key shared by over 512
stored samples (one still scene stored again and again) is only followed to its first 512.

Memory per stored clip: its print (`to_bytes`: 28 bytes per video sample, 9 per sensor step and stream), 10 bytes
per key (one per video sample, one per moving sensor step), and the clip's key string: about 2.9 kB for a 10 s clip with video and one sensor
stream (`memory_bytes` counts what is actually held).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_CANDIDATES = 8  # stored prints verified per lookup, by votes
_MIN_VOTES = 2  # a single key in common is chance at a million clips; a true duplicate of 1 s brings several
_MAX_POSTINGS_PER_KEY = 512  # a key this common (one still scene stored many times) says little; its tail is skipped
_PENDING = 1 << 16  # keys added since the last merge are kept apart (sorted on their own) until there are this many
_SHIFT_BITS, _SHIFT_BIAS = 20, 1 << 19  # a vote is (entry << 20) | (shift + 2^19)


class Print(Protocol):
    kind: str
    threshold: float

    def __len__(self) -> int: ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Print: ...

    def index_keys(self) -> tuple[np.ndarray, np.ndarray]: ...

    def probe_keys(self) -> tuple[np.ndarray, np.ndarray]: ...

    def similarity(self, stored: Print, offsets: np.ndarray | None = None) -> tuple[float, int]: ...


@dataclass(frozen=True)
class Match:
    key: str
    similarity: float
    kind: str  # "video" or "sensors"
    offset: int  # query sample i lines up with stored sample i + offset (collector.fingerprint.RATE_HZ a second)


def _sorted(levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = np.concatenate([k for k, _, _ in levels])
    order = np.argsort(keys, kind="stable")  # sorted runs: merged in linear time
    return keys[order], np.concatenate([e for _, e, _ in levels])[order], np.concatenate([p for _, _, p in levels])[order]


def _lookup(probes: np.ndarray, keys: np.ndarray, entries: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Distinct probes in order: fewer binary searches, and neighbouring ones touch neighbouring memory.
    distinct, inverse = np.unique(probes, return_inverse=True)
    left = np.searchsorted(keys, distinct, "left")
    counts = np.minimum(np.searchsorted(keys, distinct, "right") - left, _MAX_POSTINGS_PER_KEY)
    left, counts = left[inverse], counts[inverse]
    which = np.repeat(np.arange(len(probes)), counts)
    at = np.repeat(left - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
    return which, entries[at], positions[at]


class _Table:
    """One kind of print: the prints' bytes end to end, and posting arrays sorted by key."""

    def __init__(self) -> None:
        self.blobs = bytearray()
        self.blob_ends = array("Q")
        self.owners = array("I")  # entry -> index of its clip key
        self.keys = np.zeros(0, np.uint32)
        self.entries = np.zeros(0, np.uint32)
        self.positions = np.zeros(0, np.uint16)
        self.pending: list[tuple[np.ndarray, int, np.ndarray]] = []  # (keys, entry, positions) added since the last merge
        self.pending_count = 0
        self.pending_sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, owner: int, item: Print) -> None:
        entry = len(self.owners)
        self.blobs += item.to_bytes()
        self.blob_ends.append(len(self.blobs))
        self.owners.append(owner)
        keys, positions = item.index_keys()
        if len(keys):
            self.pending.append((keys, entry, positions))
            self.pending_count += len(keys)
            self.pending_sorted = None

    def blob(self, entry: int) -> bytes:
        start = self.blob_ends[entry - 1] if entry else 0
        return bytes(self.blobs[start : self.blob_ends[entry]])

    def merge(self) -> None:
        if self.pending:
            self.keys, self.entries, self.positions = _sorted([(self.keys, self.entries, self.positions), self._pending_arrays()])
            self.pending, self.pending_count, self.pending_sorted = [], 0, None

    def _pending_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = np.concatenate([k for k, _, _ in self.pending]).astype(np.uint32)
        entries = np.repeat(np.array([e for _, e, _ in self.pending], np.uint32), [len(k) for k, _, _ in self.pending])
        return keys, entries, np.concatenate([p for _, _, p in self.pending]).astype(np.uint16)

    def hits(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probe index, entry, position) of every stored key equal to a probe."""
        if self.pending_count > _PENDING:
            self.merge()
        levels = [(self.keys, self.entries, self.positions)]
        if self.pending:
            if self.pending_sorted is None:
                self.pending_sorted = _sorted([self._pending_arrays()])
            levels.append(self.pending_sorted)
        found = [_lookup(probes, *level) for level in levels]
        return tuple(np.concatenate(parts) for parts in zip(*found))

    def nbytes(self) -> int:
        arrays = self.keys.nbytes + self.entries.nbytes + self.positions.nbytes + 10 * self.pending_count
        return len(self.blobs) + self.blob_ends.itemsize * len(self.blob_ends) + self.owners.itemsize * len(self.owners) + arrays


class NearDuplicateIndex:
    """The prints of every paid clip, video and sensors, each under the clip's key (its CID)."""

    def __init__(self) -> None:
        self._names = bytearray()
        self._name_ends = array("Q")
        self._tables = {"video": _Table(), "sensors": _Table()}

    def __len__(self) -> int:
        return len(self._name_ends)

    def add(self, key: str, *, video: Print | None = None, sensors: Print | None = None) -> None:
        """Remember one clip's prints under `key` (either may be None: a clip without video or sensors)."""
        owner = len(self._name_ends)
        self._names += key.encode()
        self._name_ends.append(len(self._names))
        for item in (video, sensors):
            if item is not None:
                self._tables[item.kind].add(owner, item)

    def match_video(self, query: Print) -> Match | None:
        return self._match(self._tables["video"], query)

    def match_sensors(self, query: Print) -> Match | None:
        return self._match(self._tables["sensors"], query)

    def match(self, query: Print) -> Match | None:
        return self._match(self._tables[query.kind], query)

    def compact(self) -> None:
        """Merge what was added into the sorted arrays now (after a bulk load) rather than at the next lookups."""
        for table in self._tables.values():
            table.merge()

    def memory_bytes(self) -> int:
        """Bytes the index holds: prints, postings and keys (its buffers; Python's fixed overhead aside)."""
        return len(self._names) + self._name_ends.itemsize * len(self._name_ends) + sum(t.nbytes() for t in self._tables.values())

    def _key(self, owner: int) -> str:
        start = self._name_ends[owner - 1] if owner else 0
        return self._names[start : self._name_ends[owner]].decode()

    def _match(self, table: _Table, query: Print) -> Match | None:
        if not len(table.owners):
            return None
        keys, positions = query.probe_keys()
        which, entries, stored_at = table.hits(keys)
        if not len(which):
            return None
        # Votes per (stored print, shift): the stored prints with the most votes at one shift are verified there
        # (and one sample either side).
        shifts = stored_at.astype(np.int64) - positions[which]
        codes, counts = np.unique(entries.astype(np.int64) << _SHIFT_BITS | (shifts + _SHIFT_BIAS), return_counts=True)
        keep = counts >= _MIN_VOTES
        order = np.argsort(-counts[keep], kind="stable")
        codes, counts = codes[keep][order], counts[keep][order]
        entries = codes >> _SHIFT_BITS
        _, first = np.unique(entries, return_index=True)
        candidates = {}
        for entry in entries[np.sort(first)[:_CANDIDATES]]:
            mine = entries == entry
            strong = counts[mine] * 2 >= counts[mine][0]
            voted = (codes[mine][strong][:4] & ((1 << _SHIFT_BITS) - 1)) - _SHIFT_BIAS
            candidates[int(entry)] = np.unique(voted[:, None] + np.array([-1, 0, 1])[None, :])
        best: Match | None = None
        for entry, shifts in candidates.items():
            score, offset = query.similarity(type(query).from_bytes(table.blob(entry)), shifts)
            if score >= query.threshold and (best is None or score > best.similarity):
                best = Match(self._key(table.owners[entry]), round(score, 4), query.kind, offset)
        return best
