"""The validator: rebuilds each submitted clip from its CID, re-derives the verdict from the content with the
network's own labeler and policy, refuses what was paid before (exact or near), and settles the batch.

Nothing a device writes is taken on trust: the manifest must be signed for this network by the device that
submitted the batch, every file must match it and the bundle format, the quality paid is the validator's
own, and a device whose claim is far from what the validator measured is rejected as `claim_mismatch`
(a strike against the device, counted on chain). Every check of one clip is total: whatever goes wrong
with a clip rejects that clip with a reason, and the batch still settles."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from collector.bundle import MANIFEST, SENSORS, BundleFormatError, canonical, is_video, parse_manifest, sha256_file
from collector.config import Config
from storage.content.cid import DAG_PB, Cid
from storage.content.ipfs import ContentStore, StoreUnavailable
from storage.ledger.base import ChainError, Ledger, SubmittedBatch
from storage.ledger.reasons import Reason
from storage.validator.fetch import ClipFormatError, Limits, fetch_clip
from storage.validator.memory import Content, Known, PaidMemory, content_of

log = logging.getLogger("knack.validator")


class NetworkMismatch(ChainError):
    """This validator's model and policy digest is not the one the registry names: it must not settle."""


@dataclass(frozen=True)
class Verdict:
    cid: str
    accepted: bool
    quality_bps: int = 0
    reason: Reason | None = None
    detail: str = ""


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str = ""):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _Batch(Known):
    """What this batch has accepted so far, with each clip's content to remember once the batch is paid."""

    def __init__(self) -> None:
        super().__init__()
        self.content: dict[str, Content] = {}

    def add(self, cid: str, batch_id: int, content: Content) -> None:
        self.content[cid] = content
        self.remember(cid, batch_id, content)


def _line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


class Validator:
    def __init__(self, chain: Ledger, store: ContentStore, key, db_path: Path, config: Config, labeler=None):
        self.chain, self.store, self.key, self.config = chain, store, key, config
        self.memory = PaidMemory(db_path)
        self.limits = Limits(max_bytes=int(config.validator.max_clip_mb * (1 << 20)))
        self._labeler = labeler
        self._digest: bytes | None = None

    # --- the network's rules ---------------------------------------------------------------------
    @property
    def labeler(self):
        if self._labeler is None:
            from collector.labeling.labeler import Labeler

            self._labeler = Labeler(self.config, None)
        return self._labeler

    @property
    def provider(self) -> str | None:
        return self._labeler.provider if self._labeler is not None else None

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            from collector.labeling.network import network_digest

            self._digest = network_digest(self.config)
        return self._digest

    def check_network(self) -> None:
        """Raises NetworkMismatch unless the registry names this validator's model and policy digest."""
        onchain = bytes(self.chain.policy_digest())
        if onchain != self.digest:
            raise NetworkMismatch(
                f"the registry's model and policy digest is {onchain.hex()[:16]}…, this validator's is {self.digest.hex()[:16]}…:"
                " it settles nothing until it runs the network's [policy], [labeler] and model files (`knack doctor` shows its digest)"
            )

    def sync(self) -> int:
        """Brings the paid memory up to the chain's record."""
        deployment = self.chain.deployment
        key = f"{deployment.chain_id}:{deployment.registry}".lower() if deployment else "none"
        return self.memory.sync(self.chain, self.store.get, self.limits, key)

    # --- one clip --------------------------------------------------------------------------------
    def check(self, cid: Cid, batch: SubmittedBatch, seen: _Batch | None = None) -> tuple[Verdict, Content | None]:
        """The verdict on one clip, and its content when accepted. Never raises for anything about the clip;
        raises StoreUnavailable when the content store itself is down (the batch waits for the next round)."""
        text = str(cid)
        seen = seen if seen is not None else _Batch()
        scratch = Path(tempfile.mkdtemp(prefix="knack-validate-"))
        try:
            quality, content = self._check(cid, text, batch, seen, scratch)
            return Verdict(text, True, quality_bps=quality), content
        except _Reject as r:
            return Verdict(text, False, reason=r.reason, detail=r.detail), None
        except StoreUnavailable:
            raise
        except Exception as exc:  # a clip no check foresaw: rejected with what went wrong, the batch goes on
            log.warning("clip %s: %s", text, _line(exc))
            return Verdict(text, False, reason=Reason.MALFORMED, detail=_line(exc)), None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _check(self, cid: Cid, text: str, batch: SubmittedBatch, seen: _Batch, scratch: Path) -> tuple[int, Content]:
        from collector.identity import IdentityError, recover_signer, signature_domain

        # 1. Exact duplicates first: no fetch needed.
        if text in self.memory.cids:
            raise _Reject(Reason.DUPLICATE_CID, f"paid in batch {self.memory.cids[text]}")
        if text in seen.cids:
            raise _Reject(Reason.DUPLICATE_CID, "earlier in this batch")
        # 2. The content, rebuilt block by block within the bundle's bounds.
        try:
            sizes = fetch_clip(self.store.get, cid, scratch, self.limits)
        except ClipFormatError as exc:
            raise _Reject(Reason.FILE_MISMATCH, str(exc)) from None
        except StoreUnavailable:
            raise
        except Exception as exc:  # missing blocks, a corrupt DAG: the content cannot be had
            raise _Reject(Reason.UNREADABLE, _line(exc)) from None
        try:
            manifest = parse_manifest((scratch / MANIFEST).read_bytes())
        except BundleFormatError as exc:
            raise _Reject(Reason.MALFORMED, str(exc)) from None
        # 3. Signed for this network by the device that submitted the batch.
        signature = manifest["signature"]
        try:
            domain = signature_domain(signature)
            signer = recover_signer(canonical(manifest), signature)
        except IdentityError as exc:
            raise _Reject(Reason.BAD_SIGNATURE, str(exc)) from None
        network = self.chain.domain()
        if domain is None:
            raise _Reject(
                Reason.BAD_SIGNATURE, "the manifest's signature is bound to no network (EIP-191): relabel the clip on a device that knows its network"
            )
        if not domain.matches(network):
            raise _Reject(
                Reason.BAD_SIGNATURE,
                f"signed for chain {domain.chain_id}, registry {domain.registry}; this network is chain {network.chain_id}, registry {network.registry}",
            )
        device = batch.device or batch.contributor
        if signer.lower() != manifest["device_id"].lower() or signer.lower() != device.lower():
            raise _Reject(Reason.BAD_SIGNATURE, f"signed by {signer} for device {manifest['device_id']}, submitted by {device}")
        # 4. Every file is the manifest's, and the bundle has a video.
        listed = {entry["name"]: entry for entry in manifest["files"]}
        present = set(sizes) - {MANIFEST}
        if set(listed) != present:
            extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
            raise _Reject(Reason.FILE_MISMATCH, f"files not in the manifest: {extra or 'none'}; listed but missing: {missing or 'none'}")
        for name, entry in sorted(listed.items()):
            if sizes[name] != entry["size"]:
                raise _Reject(Reason.FILE_MISMATCH, f"{name} is {sizes[name]} bytes, the manifest says {entry['size']}")
            if sha256_file(scratch / name) != entry["sha256"]:
                raise _Reject(Reason.FILE_MISMATCH, f"{name} does not match its sha256")
        if not any(is_video(name) for name in listed):
            raise _Reject(Reason.NO_VIDEO, "the clip has no video file")
        decision = manifest.get("decision")
        if not decision or not decision["accepted"]:
            raise _Reject(Reason.DEVICE_REJECTED, str((decision or {}).get("summary", "the manifest has no decision"))[:300])
        # 5. Content paid before: the same files, or the same footage or sensor log changed a little.
        for name, entry in sorted(listed.items(), key=lambda item: (not is_video(item[0]), item[0])):  # videos first
            if not (is_video(name) or name == SENSORS):
                continue
            earlier = self.memory.files.get(entry["sha256"]) or seen.files.get(entry["sha256"])
            if earlier:
                raise _Reject(Reason.DUPLICATE_VIDEO if is_video(name) else Reason.DUPLICATE_SENSORS, f"{name} is the same file as paid clip {earlier}")
        content = content_of(scratch, manifest)
        for vp in content.video_prints:
            match = self.memory.index.match_video(vp) or seen.index.match_video(vp)
            if match is not None:
                raise _Reject(Reason.NEAR_DUPLICATE_VIDEO, f"the video matches clip {match.key} (similarity {match.similarity:.2f})")
        if content.sensor_print is not None:
            match = self.memory.index.match_sensors(content.sensor_print) or seen.index.match_sensors(content.sensor_print)
            if match is not None:
                raise _Reject(Reason.NEAR_DUPLICATE_SENSORS, f"the sensor log matches clip {match.key} (similarity {match.similarity:.2f})")
        # 6. The verdict, re-derived from the pixels with the network's labeler and policy.
        try:
            own = self.labeler.assess(scratch, manifest, max_seconds=self.config.validator.max_clip_seconds)
        except Exception as exc:  # LabelError (an unreadable or oversized video) and anything the decoder raises
            raise _Reject(Reason.MALFORMED, f"the video cannot be labeled: {_line(exc)}") from None
        measured = float(own["quality"]["score"])
        claimed = (manifest.get("quality") or {}).get("score")
        tolerance = self.config.validator.claim_tolerance
        if claimed is None:
            raise _Reject(Reason.MALFORMED, "the manifest claims no quality score")
        if abs(float(claimed) - measured) > tolerance:
            raise _Reject(
                Reason.CLAIM_MISMATCH, f"the device claimed quality {float(claimed):.2f}, the validator measured {measured:.2f} (tolerance {tolerance:g})"
            )
        if not own["decision"]["accepted"]:
            raise _Reject(Reason.POLICY_REJECTED, own["decision"]["summary"][:300])
        seen.add(text, batch.batch_id, content)
        return max(0, min(10000, round(measured * 10000))), content

    # --- batches ---------------------------------------------------------------------------------
    def pending_batches(self) -> list[SubmittedBatch]:
        """Every submitted batch not yet settled."""
        return self.chain.pending_batches()

    def settle(self, batch: SubmittedBatch) -> list[Verdict]:
        seen = _Batch()
        verdicts = [self.check(Cid(DAG_PB, bytes(d)), batch, seen)[0] for d in batch.digests]
        self.chain.settle(
            self.key,
            batch.batch_id,
            [v.accepted for v in verdicts],
            [v.quality_bps for v in verdicts if v.accepted],
            [int(v.reason) for v in verdicts if not v.accepted],
        )
        device = batch.device or batch.contributor
        for v in verdicts:  # paid now: remembered at once, as the next sync would from the chain
            if v.accepted:
                self.memory.add(v.cid, batch.batch_id, device, seen.content.get(v.cid))
            else:
                log.debug("batch %d: rejected %s: %s %s", batch.batch_id, v.cid, v.reason.text, v.detail)
        return verdicts

    def run_once(self) -> dict[int, list[Verdict]]:
        """Settles every pending batch; raises NetworkMismatch (settling nothing) when the registry names
        other rules, ChainError when the chain refuses or cannot be reached."""
        batches = self.pending_batches()
        if not batches:
            return {}
        self.check_network()
        self.sync()
        return {batch.batch_id: self.settle(batch) for batch in batches}

    def close(self) -> None:
        self.memory.close()
