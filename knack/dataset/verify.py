"""`knack dataset verify DIR`: re-checks every episode's provenance against the chain, trusting nothing in the
dataset but the CID, batch and position it names: the batch root is read from the registry again, the
registry's own `verify` answers for the proof, and the clip is fetched by CID and checked end to end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from collector.config import Config, ConfigError
from knack.dataset.lerobot import EPISODES_PATH


@dataclass(frozen=True)
class Line:
    ok: bool
    text: str


def verify_dataset(config: Config, root: Path) -> Iterator[Line]:
    import pyarrow.parquet as pq

    from knack import wiring
    from storage.content.cid import Cid
    from storage.validator.provenance import PaidClip, ProvenanceError, verify_paid_clip

    path = root / EPISODES_PATH
    if not path.is_file():
        raise ConfigError(f"{root} is not a dataset built by knack: {EPISODES_PATH} is missing")
    rows = pq.read_table(path).to_pylist()
    ledger = wiring.open_ledger(config)
    store = wiring.reading_store(config)
    try:
        if ledger.deployment is None:
            raise ConfigError(f"{wiring.ledger_name(config)} has no registry here to verify against (set storage.chain_rpc)")
        domain = ledger.domain()
        for row in rows:
            episode, cid = row.get("episode_index"), str(row.get("knack/cid", ""))
            if row.get("knack/source") != "chain":
                yield Line(False, f"episode {episode}: {cid or '?'} came from a local directory, not from the chain: nothing to verify it against")
                continue
            try:
                digest = Cid.parse(cid).digest
                batch, index = int(row["knack/batch"]), int(row["knack/batch_index"])
                proof = [bytes.fromhex(str(p).removeprefix("0x")) for p in row["knack/merkle_proof"]]
                # The registry's own answer first; verify_paid_clip recomputes the proof against the root it stores.
                if not ledger.verify_inclusion(batch, index, digest, proof):
                    raise ProvenanceError(f"the registry does not hold {cid} as clip {index} of batch {batch} by this proof")
                root_onchain = bytes(ledger.batch_root(batch))
                settlement = ledger.settlement(batch)
                if settlement is None or index >= len(settlement.accepted) or not settlement.accepted[index]:
                    raise ProvenanceError(f"batch {batch} did not accept clip {index}: it was not paid")
                paid = PaidClip(
                    cid, digest.hex(), batch, index, settlement.contributor, settlement.device, 0, root_onchain.hex(), tuple(p.hex() for p in proof), 0, ""
                )
                scratch = Path(tempfile.mkdtemp(prefix="knack-verify-"))
                try:
                    manifest = verify_paid_clip(store.get, paid, domain, scratch)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                if manifest.get("clip_id") != row.get("knack/clip_id"):
                    raise ProvenanceError(f"the bundle is clip {manifest.get('clip_id')}, the dataset says {row.get('knack/clip_id')}")
                yield Line(
                    True, f"OK      episode {episode}: {cid} is clip {index} of batch {batch}, paid to {settlement.contributor}, bytes and signature verified"
                )
            except Exception as exc:  # one episode's failure is its line; the others are still checked
                text = (str(exc).splitlines() or [type(exc).__name__])[0]
                yield Line(False, f"FAILED  episode {episode}: {cid}: {text}")
    finally:
        ledger.close()
        getattr(store, "close", lambda: None)()
