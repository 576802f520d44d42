"""The validator: fetches each submitted clip by its CID, checks it, and settles the batch on chain.

Checks per clip: the DAG is there and every block matches its CID; the manifest is signed by the
device that submitted the batch; every file matches the manifest's sha256; the device's own policy
accepted it; and it is new (not the same CID, nor the same video under another clip id). The validator
keeps what it has seen in its own SQLite file."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from collector.bundle import MANIFEST, canonical, is_video
from storage.content.cid import DAG_PB, Cid
from storage.content.ipfs import ContentStore
from storage.content.unixfs import read_directory, read_file
from storage.ledger.base import Ledger, SubmittedBatch
from storage.ledger.reasons import Reason
from storage.sqlite import open_wal

log = logging.getLogger("knack.validator")


@dataclass(frozen=True)
class Verdict:
    cid: str
    accepted: bool
    quality_bps: int = 0
    reason: Reason | None = None
    detail: str = ""


class Validator:
    def __init__(self, chain: Ledger, store: ContentStore, key, db_path: Path):
        self.chain, self.store, self.key = chain, store, key
        self._db = open_wal(db_path)
        self._db.execute("CREATE TABLE IF NOT EXISTS seen_cids (cid TEXT PRIMARY KEY, batch_id INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen_videos (sha256 TEXT PRIMARY KEY, clip_id TEXT NOT NULL)")

    def check(self, cid: Cid, contributor: str, batch_id: int) -> Verdict:
        from collector.identity import IdentityError, recover_signer

        text = str(cid)
        try:
            files = read_directory(self.store.get, cid)
            manifest = json.loads(b"".join(read_file(self.store.get, files[MANIFEST])))
        except Exception as exc:  # missing blocks, a corrupt DAG, no manifest: one reason for all
            return Verdict(text, False, reason=Reason.UNREADABLE, detail=f"{type(exc).__name__}: {exc}")
        try:
            signer = recover_signer(canonical(manifest), manifest.get("signature") or {})
        except (IdentityError, ValueError, TypeError):
            signer = None
        if signer is None or signer.lower() != str(manifest.get("device_id", "")).lower() or signer.lower() != contributor.lower():
            return Verdict(text, False, reason=Reason.BAD_SIGNATURE, detail=f"signed by {signer}, submitted by {contributor}")
        listed = {entry["name"]: entry for entry in manifest.get("files", [])}
        if set(listed) != set(files) - {MANIFEST}:
            return Verdict(text, False, reason=Reason.FILE_MISMATCH, detail="the clip's files differ from the manifest's list")
        video_hash = None
        for name, entry in listed.items():
            digest = hashlib.sha256()
            for chunk in read_file(self.store.get, files[name]):
                digest.update(chunk)
            if digest.hexdigest() != entry.get("sha256"):
                return Verdict(text, False, reason=Reason.FILE_MISMATCH, detail=f"{name} does not match its sha256")
            if is_video(name):
                video_hash = entry["sha256"]
        decision = manifest.get("decision") or {}
        if not decision.get("accepted"):
            return Verdict(text, False, reason=Reason.DEVICE_REJECTED, detail=decision.get("summary", "no decision"))
        if self._db.execute("SELECT 1 FROM seen_cids WHERE cid = ? AND batch_id != ?", (text, batch_id)).fetchone():
            return Verdict(text, False, reason=Reason.DUPLICATE_CID)
        if video_hash:
            row = self._db.execute("SELECT clip_id FROM seen_videos WHERE sha256 = ?", (video_hash,)).fetchone()
            if row and row[0] != manifest.get("clip_id"):
                return Verdict(text, False, reason=Reason.DUPLICATE_VIDEO, detail=f"same video as clip {row[0]}")
            self._db.execute("INSERT OR IGNORE INTO seen_videos (sha256, clip_id) VALUES (?, ?)", (video_hash, manifest.get("clip_id")))
        self._db.execute("INSERT OR IGNORE INTO seen_cids (cid, batch_id) VALUES (?, ?)", (text, batch_id))
        score = float((manifest.get("quality") or {}).get("score") or 0.0)
        return Verdict(text, True, quality_bps=max(0, min(10000, round(score * 10000))))

    def pending_batches(self) -> list[SubmittedBatch]:
        """Every submitted batch not yet settled."""
        return self.chain.pending_batches()

    def settle(self, batch: SubmittedBatch) -> list[Verdict]:
        verdicts = [self.check(Cid(DAG_PB, bytes(d)), batch.contributor, batch.batch_id) for d in batch.digests]
        self.chain.settle(
            self.key,
            batch.batch_id,
            [v.accepted for v in verdicts],
            [v.quality_bps for v in verdicts if v.accepted],
            [int(v.reason) for v in verdicts if not v.accepted],
        )
        for v in verdicts:
            if not v.accepted:
                log.info("batch %d: rejected %s: %s %s", batch.batch_id, v.cid, v.reason.text, v.detail)
        return verdicts

    def run_once(self) -> dict[int, list[Verdict]]:
        return {batch.batch_id: self.settle(batch) for batch in self.pending_batches()}
