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

from storage.chain import Chain
from storage.cid import DAG_PB, Cid
from storage.contracts.encoding import bitmap, pack_qualities
from storage.ipfs import ContentStore
from storage.sqlite import open_wal
from storage.submitter import REASONS
from storage.unixfs import read_directory, read_file

log = logging.getLogger("knack.validator")
CODES = {text: code for code, text in REASONS.items()}


@dataclass(frozen=True)
class Verdict:
    cid: str
    accepted: bool
    quality_bps: int = 0
    reason: int = 0
    detail: str = ""


class Validator:
    def __init__(self, chain: Chain, store: ContentStore, key, db_path: Path):
        self.chain, self.store, self.key = chain, store, key
        self._db = open_wal(db_path)
        self._db.execute("CREATE TABLE IF NOT EXISTS seen_cids (cid TEXT PRIMARY KEY, batch_id INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen_videos (sha256 TEXT PRIMARY KEY, clip_id TEXT NOT NULL)")

    def check(self, cid: Cid, contributor: str, batch_id: int) -> Verdict:
        from collector.bundle import canonical
        from collector.identity import IdentityError, recover_signer

        text = str(cid)
        try:
            files = read_directory(self.store.get, cid)
            manifest = json.loads(b"".join(read_file(self.store.get, files["manifest.json"])))
        except Exception as exc:  # missing blocks, a corrupt DAG, no manifest: one reason for all
            return Verdict(text, False, reason=1, detail=f"{type(exc).__name__}: {exc}")
        try:
            signer = recover_signer(canonical(manifest), manifest.get("signature") or {})
        except (IdentityError, ValueError, TypeError):
            signer = None
        if signer is None or signer.lower() != str(manifest.get("device_id", "")).lower() or signer.lower() != contributor.lower():
            return Verdict(text, False, reason=2, detail=f"signed by {signer}, submitted by {contributor}")
        listed = {entry["name"]: entry for entry in manifest.get("files", [])}
        if set(listed) != set(files) - {"manifest.json"}:
            return Verdict(text, False, reason=3, detail="the clip's files differ from the manifest's list")
        video_hash = None
        for name, entry in listed.items():
            digest = hashlib.sha256()
            for chunk in read_file(self.store.get, files[name]):
                digest.update(chunk)
            if digest.hexdigest() != entry.get("sha256"):
                return Verdict(text, False, reason=3, detail=f"{name} does not match its sha256")
            if name.startswith("video"):
                video_hash = entry["sha256"]
        decision = manifest.get("decision") or {}
        if not decision.get("accepted"):
            return Verdict(text, False, reason=4, detail=decision.get("summary", "no decision"))
        if self._db.execute("SELECT 1 FROM seen_cids WHERE cid = ? AND batch_id != ?", (text, batch_id)).fetchone():
            return Verdict(text, False, reason=5)
        if video_hash:
            row = self._db.execute("SELECT clip_id FROM seen_videos WHERE sha256 = ?", (video_hash,)).fetchone()
            if row and row[0] != manifest.get("clip_id"):
                return Verdict(text, False, reason=6, detail=f"same video as clip {row[0]}")
            self._db.execute("INSERT OR IGNORE INTO seen_videos (sha256, clip_id) VALUES (?, ?)", (video_hash, manifest.get("clip_id")))
        self._db.execute("INSERT OR IGNORE INTO seen_cids (cid, batch_id) VALUES (?, ?)", (text, batch_id))
        score = float((manifest.get("quality") or {}).get("score") or 0.0)
        return Verdict(text, True, quality_bps=max(0, min(10000, round(score * 10000))))

    def pending_batches(self) -> list[tuple[int, str, list[bytes]]]:
        """(batch id, contributor, digests) of every submitted batch not yet settled."""
        registry = self.chain.registry
        out = []
        for log_entry in registry.events.BatchSubmitted().get_logs(from_block=self.chain.deployment.block):
            args = log_entry["args"]
            batch_id = int(args["batchId"])
            if not registry.functions.batch(batch_id).call()[3]:
                out.append((batch_id, args["contributor"], list(args["digests"])))
        return out

    def settle(self, batch_id: int, contributor: str, digests: list[bytes]) -> list[Verdict]:
        verdicts = [self.check(Cid(DAG_PB, bytes(d)), contributor, batch_id) for d in digests]
        words = bitmap([v.accepted for v in verdicts])
        qualities = pack_qualities(v.quality_bps for v in verdicts if v.accepted)
        reasons = bytes(v.reason for v in verdicts if not v.accepted)
        self.chain.fund(self.key.address)
        self.chain.transact(self.key, self.chain.registry.functions.settleBatch(batch_id, words, qualities, reasons))
        for v in verdicts:
            if not v.accepted:
                log.info("batch %d: rejected %s: %s %s", batch_id, v.cid, REASONS[v.reason], v.detail)
        return verdicts

    def run_once(self) -> dict[int, list[Verdict]]:
        return {batch_id: self.settle(batch_id, contributor, digests) for batch_id, contributor, digests in self.pending_batches()}
