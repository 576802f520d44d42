"""What the network has paid for, rebuilt from the chain: every accepted clip's CID, the sha256 of its video and
sensor files, and their perceptual prints (collector.fingerprint) in a near-duplicate index.

The chain is the record (`Ledger.paid_clips`: digests of accepted clips from the registry's events); the
SQLite file only caches what was derived from each paid clip's content, so a validator started from
nothing, or a second validator, fetches the same content and refuses the same duplicates."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from collector.bundle import SENSORS, is_video, parse_manifest
from storage.content.cid import DAG_PB, Cid
from storage.ledger.base import Ledger
from storage.sqlite import open_wal
from storage.validator.fetch import Limits, fetch_clip
from storage.validator.near_duplicates import NearDuplicateIndex

log = logging.getLogger("knack.validator")


@dataclass(frozen=True)
class Content:
    """What a clip's content says about its identity: file hashes and perceptual prints."""

    videos: tuple[str, ...] = ()  # sha256 of each video file
    sensors: str = ""  # sha256 of sensors.parquet
    video_prints: tuple = ()  # collector.fingerprint.VideoPrint, one per video (computed from the file: a query print)
    sensor_print: object = None  # collector.fingerprint.SensorPrint; stored as to_bytes(), which keeps what an index needs


def content_of(clip: Path, manifest: dict) -> Content:
    """From a clip already checked against its manifest (file hashes are the manifest's, verified)."""
    from collector.fingerprint import sensor_print, video_print

    hashes = {e["name"]: e["sha256"] for e in manifest["files"]}
    videos = sorted(name for name in hashes if is_video(name))
    prints = tuple(p for p in (video_print(clip / name) for name in videos) if p is not None)
    sensors = (clip / SENSORS).is_file()
    return Content(
        videos=tuple(hashes[n] for n in videos),
        sensors=hashes.get(SENSORS, ""),
        video_prints=prints,
        sensor_print=sensor_print(clip / SENSORS) if sensors else None,
    )


class Known:
    """Content by CID, by file sha256 and by perceptual print, in memory: what the chain paid (PaidMemory), or
    what one batch has accepted so far (so a later clip of the same batch is checked against it too)."""

    def __init__(self) -> None:
        self.cids: dict[str, int] = {}  # cid -> batch id it was paid (or accepted) in
        self.files: dict[str, str] = {}  # video or sensor sha256 -> cid
        self.index = NearDuplicateIndex()

    def __len__(self) -> int:
        return len(self.cids)

    def remember(self, cid: str, batch_id: int, content: Content | None) -> None:
        self.cids[cid] = batch_id
        if content is None:  # its content could not be had: the CID alone still counts
            return
        for digest in (*content.videos, content.sensors):
            if digest:
                self.files.setdefault(digest, cid)
        for vp in content.video_prints:
            self.index.add(cid, video=vp)
        if content.sensor_print is not None:
            self.index.add(cid, sensors=content.sensor_print)


class PaidMemory(Known):
    """Known content of every paid clip, cached in SQLite with the last block synced from the chain."""

    def __init__(self, db_path: Path):
        super().__init__()
        self._db = open_wal(db_path)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS paid (
                cid TEXT PRIMARY KEY, batch_id INTEGER NOT NULL, device TEXT NOT NULL,
                fetched INTEGER NOT NULL, videos TEXT NOT NULL, sensors TEXT NOT NULL, video_prints BLOB, sensor_print BLOB
            );
            CREATE TABLE IF NOT EXISTS synced (chain TEXT PRIMARY KEY, block INTEGER NOT NULL);
            """
        )
        for cid, batch_id, videos, sensors, vp, sp in self._db.execute("SELECT cid, batch_id, videos, sensors, video_prints, sensor_print FROM paid"):
            self.remember(cid, batch_id, _decode(videos, sensors, vp, sp))
        self.index.compact()  # one merge after the bulk load, not one per added print

    def add(self, cid: str, batch_id: int, device: str, content: Content | None) -> None:
        """A clip the chain has paid (or this validator just settled as paid)."""
        if cid in self.cids:
            return
        row = _encode(content)
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO paid (cid, batch_id, device, fetched, videos, sensors, video_prints, sensor_print) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, batch_id, device, content is not None, *row),
            )
        self.remember(cid, batch_id, content)

    def sync(self, ledger: Ledger, get, limits: Limits, chain_key: str) -> int:
        """Adds every clip the chain paid since the last sync; returns how many were new."""
        row = self._db.execute("SELECT block FROM synced WHERE chain = ?", (chain_key,)).fetchone()
        since = row[0] if row else 0
        head = ledger.head()
        added = 0
        for digest, batch_id, device in ledger.paid_clips(since):
            cid = str(Cid(DAG_PB, bytes(digest)))
            if cid in self.cids:
                continue
            self.add(cid, batch_id, device, _fetch_content(get, Cid(DAG_PB, bytes(digest)), limits))
            added += 1
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO synced (chain, block) VALUES (?, ?)", (chain_key, head + 1))
        if added:
            log.info("paid memory: %d clip(s) added from the chain, %d in all", added, len(self))
        self.refetch(get, limits)
        return added

    def refetch(self, get, limits: Limits, at_most: int = 16) -> int:
        """Paid clips whose content could not be fetched when they were remembered are tried again, a few a
        round (oldest first), so a store that was down does not leave their near duplicates unchecked."""
        rows = self._db.execute("SELECT cid, batch_id FROM paid WHERE fetched = 0 ORDER BY batch_id LIMIT ?", (at_most,)).fetchall()
        found = 0
        for cid, batch_id in rows:
            content = _fetch_content(get, Cid.parse(cid), limits, quiet=True)
            if content is None:
                continue
            with self._db:
                self._db.execute(
                    "UPDATE paid SET fetched = 1, videos = ?, sensors = ?, video_prints = ?, sensor_print = ? WHERE cid = ?", (*_encode(content), cid)
                )
            self.remember(cid, batch_id, content)
            found += 1
        return found

    def close(self) -> None:
        self._db.close()


def _fetch_content(get, cid: Cid, limits: Limits, quiet: bool = False) -> Content | None:
    """A paid clip's content, or None when it cannot be fetched now (its CID alone is still remembered)."""
    scratch = Path(tempfile.mkdtemp(prefix="knack-paid-"))
    try:
        fetch_clip(get, cid, scratch, limits)
        return content_of(scratch, parse_manifest((scratch / "manifest.json").read_bytes()))
    except Exception as exc:  # content gone from the network, or unreadable: the exact CID still counts
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "paid clip %s: content not available for duplicate checks yet (%s)",
            cid,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _encode(content: Content | None) -> tuple:
    if content is None:
        return ("", "", None, None)
    vp = b"".join(len(b).to_bytes(4, "big") + b for b in (p.to_bytes() for p in content.video_prints))
    sp = content.sensor_print.to_bytes() if content.sensor_print is not None else None
    return (",".join(content.videos), content.sensors, vp, sp)


def _decode(videos: str, sensors: str, vp: bytes | None, sp: bytes | None) -> Content | None:
    from collector.fingerprint import SensorPrint, VideoPrint

    prints, pos = [], 0
    data = bytes(vp or b"")
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        prints.append(VideoPrint.from_bytes(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return Content(tuple(v for v in videos.split(",") if v), sensors, tuple(prints), SensorPrint.from_bytes(bytes(sp)) if sp else None)
