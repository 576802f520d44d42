"""A clip rebuilt from its CID into a scratch directory, every block hash-checked by the store, with the
bundle's bounds enforced while the bytes arrive: a hostile DAG (a huge file, millions of links, names that
climb out of the directory) is refused with one sentence before it can fill a disk or a day."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.bundle import MANIFEST, MAX_FILES, MAX_MANIFEST_BYTES, is_bundle_name
from storage.content.cid import DAG_PB, RAW, Cid
from storage.content.unixfs import named_links


class ClipFormatError(ValueError):
    """The DAG is readable but is not a clip bundle (a name, a size, a shape the format does not have)."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 512 << 20  # the whole clip
    max_blocks: int = 200_000  # every block fetched, leaves and links together
    max_depth: int = 8  # a 256 KiB-chunk file of 2 GiB is 2 levels deep; more is a hostile DAG


class _Budget:
    def __init__(self, limits: Limits):
        self.limits, self.bytes, self.blocks = limits, 0, 0

    def block(self, size: int) -> None:
        self.blocks += 1
        self.bytes += size
        if self.blocks > self.limits.max_blocks:
            raise ClipFormatError(f"the clip's DAG has more than {self.limits.max_blocks:,} blocks")
        if self.bytes > self.limits.max_bytes:
            raise ClipFormatError(f"the clip is larger than {self.limits.max_bytes >> 20:,} MiB")


def _file(get: Callable[[Cid], bytes], cid: Cid, out, budget: _Budget, depth: int, cap: int | None, written: list[int]) -> None:
    if depth > budget.limits.max_depth:
        raise ClipFormatError(f"a file's DAG is more than {budget.limits.max_depth} levels deep")
    block = get(cid)
    budget.block(len(block))
    if cid.codec == RAW:
        written[0] += len(block)
        if cap is not None and written[0] > cap:
            raise ClipFormatError(f"{MANIFEST} is larger than {cap:,} bytes")
        out.write(block)
        return
    if cid.codec != DAG_PB:
        raise ClipFormatError(f"a file block has codec 0x{cid.codec:x}, not raw or dag-pb")
    for _, child in named_links(block):
        _file(get, child, out, budget, depth + 1, cap, written)


def _clip_directory(get: Callable[[Cid], bytes], root: Cid, limits: Limits) -> tuple[list[tuple[str, Cid]], _Budget]:
    """The clip directory's links, its names checked against the bundle format, and the budget it opened."""
    if root.codec != DAG_PB:
        raise ClipFormatError("the CID is a file, not a clip directory")
    block = get(root)
    budget = _Budget(limits)
    budget.block(len(block))
    links = named_links(block)
    if len(links) > MAX_FILES:
        raise ClipFormatError(f"the clip directory has {len(links)} entries (at most {MAX_FILES})")
    names = [name for name, _ in links]
    for name in names:
        if not is_bundle_name(name):
            raise ClipFormatError(f"the clip holds {name[:80]!r}, which is not a name of the bundle format")
    if len(set(names)) != len(names):
        raise ClipFormatError("the clip directory names a file twice")
    if MANIFEST not in names:
        raise ClipFormatError(f"the clip has no {MANIFEST}")
    return links, budget


def fetch_clip(get: Callable[[Cid], bytes], root: Cid, scratch: Path, limits: Limits = Limits()) -> dict[str, int]:
    """Writes the clip's files into `scratch` (an empty directory); returns their sizes by name."""
    links, budget = _clip_directory(get, root, limits)
    sizes = {}
    for name, cid in links:
        written = [0]
        with open(scratch / name, "wb") as out:
            _file(get, cid, out, budget, 1, MAX_MANIFEST_BYTES if name == MANIFEST else None, written)
        sizes[name] = written[0]
    return sizes


def fetch_manifest(get: Callable[[Cid], bytes], root: Cid, limits: Limits = Limits()) -> bytes:
    """Only the clip's manifest, bounded as fetch_clip bounds it: what a listing needs before the whole clip."""
    import io

    links, budget = _clip_directory(get, root, limits)
    out = io.BytesIO()
    _file(get, dict(links)[MANIFEST], out, budget, 1, MAX_MANIFEST_BYTES, [0])
    return out.getvalue()
