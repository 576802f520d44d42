"""`knack demo`: the flow so far on embedded defaults — the bundled sample video as camera, the simulator as
serial port, and the shipped models labeling every clip."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from collector.bundle import verify_bundle
from collector.config import CameraConfig, Config, SerialConfig, SerialProtocol
from collector.sample import SAMPLE_IMU, SAMPLE_VIDEO
from collector.simulator import IMU_FIELDS, SerialSimulator, SimulatorConfig


def demo_config(base: Config, data_dir: Path, port: str, clip_seconds: float) -> Config:
    return dataclasses.replace(
        base,
        data_dir=str(data_dir),
        recorder=dataclasses.replace(base.recorder, clip_seconds=clip_seconds),
        camera=(CameraConfig(name="bench", source=str(SAMPLE_VIDEO), fps=30.0, realtime=True, loop=False),),
        serial=(SerialConfig(name="glove", port=port, protocol=SerialProtocol.CSV, csv_columns=IMU_FIELDS, device_time_field="t_us", seq_field="seq", nominal_rate=200.0),),
        source=f"{base.source} + demo sources",
    ).validate()


def reward_step(config: Config, key, run) -> dict:
    """Submit the pinned clips to the registry on the embedded chain, let the validator check and settle
    them, and show what the contributor earned."""
    from collector.cli import ensure_deployed, open_ledger, validator_key
    from collector.session import open_outbox
    from storage.content.ipfs import open_store
    from storage.ledger.rewards import rewards_view
    from storage.outbox.settlement import settle_round
    from storage.outbox.submitter import REASONS
    from storage.validator import Validator

    print("4. reward   pinned clips submitted to the registry on the embedded chain; the validator checks them by CID and settles")
    outbox, _ = open_outbox(config)
    chain = ensure_deployed(config, open_ledger(config))
    validator = Validator(chain, open_store(config.storage.ipfs_api, config.data_path), validator_key(config), config.data_path / "validator.sqlite")
    report = settle_round(outbox, chain, key, validator)
    for result in report.submitted:
        print(f"   batch {result.batch_id}: {len(result.clip_ids)} clip(s) submitted" if not result.error else f"   not submitted: {result.error}")
    for batch_id, verdicts in report.verdicts.items():
        accepted = sum(v.accepted for v in verdicts)
        print(f"   batch {batch_id} settled by validator: {accepted} accepted, {len(verdicts) - accepted} rejected")
        for v in verdicts:
            if not v.accepted:
                print(f"     rejected {v.cid}: {REASONS[v.reason]}")
    view = rewards_view(chain, key.address)
    print(f"   contributor {view['address']}: {view['accepted']} clip(s) accepted, {view['pending']} pending, {view['rejected']} rejected on chain")
    chain.close()
    return view


def run_demo(base: Config, data_dir: str | None = None, clip_seconds: float = 2.5) -> int:
    from collector.cli import device_key, run_recording

    target = Path(data_dir) if data_dir else base.data_path / "demo"
    print("Knack demo: bundled sample recording (real hands at work) + simulated IMU glove on a pseudo-terminal")
    # Unlock the key first: a sensor streaming while someone types a password would only fill buffers.
    key = device_key(dataclasses.replace(base, data_dir=str(target)))
    with SerialSimulator(SimulatorConfig(rate=200.0, protocol="csv", replay=str(SAMPLE_IMU))) as sim:
        config = demo_config(base, target, sim.port, clip_seconds)
        print(f"1. capture  camera={SAMPLE_VIDEO.name}  serial={sim.port}  -> {config.clips_path}")
        print("2. label    hands, faces (blurred), picture and stream quality, accept/reject: each clip as it is written")
        run = run_recording(config, key, duration=30.0, until_sources_end=True, quiet=True)
    recorder, written, labeled = run.recorder, run.written, run.labeled
    print(f"   {recorder.totals.frames} frames and {recorder.totals.samples} sensor samples on one clock, cut into {len(written)} clip(s)")
    for result in sorted(labeled, key=lambda r: r.clip_id):
        manifest = json.loads((result.path / "manifest.json").read_text())
        hands = manifest["labels"]["hands"] or {}
        faces = manifest["privacy"]
        print(f"   {'ACCEPTED' if result.accepted else 'REJECTED'} {result.clip_id}  hands in {hands.get('hand_fraction', 0):.0%} of frames, "
              f"{faces['faces']} face(s) blurred in {faces['frames_blurred']} frames, quality {result.score:.2f}  [{manifest['labels']['execution_provider']}]")
        if not result.accepted:
            print(f"            {result.summary}")
    print("3. store    accepted clips pinned by CID in the embedded IPFS block store, through the outbox")
    for result in run.pinned:
        print(f"   {'PINNED  ' if not result.error else 'NOT YET '} {result.clip_id}  {result.cid or ''}{'  ' + result.error if result.error else ''}")
    if not run.pinned:
        print("   no clip was accepted, so none was pinned")
    view = reward_step(config, key, run)
    print("5. verify   every file hash and the device signature (re-signed after labeling)")
    failed = 0
    for clip in written:
        result = verify_bundle(clip.path)
        failed += not result.ok
        print(f"   {'OK    ' if result.ok else 'FAILED'} {clip.clip_id}  {clip.frames:4d} frames {clip.samples:5d} samples" + ("" if result.ok else "  " + "; ".join(result.problems)))
    if not written:
        print("   no clip was written: see the messages above")
        return 1
    if len(labeled) != len(written):
        print(f"   {len(written) - len(labeled)} clip(s) could not be labeled: see the messages above")
        failed += len(written) - len(labeled)
    print(f"\nDone: {len(written) - failed} verified clip bundle(s) under {config.clips_path}")
    print(f"Check one yourself:  knack verify {written[0].path}")
    if any(not p.error for p in run.pinned):
        first = next(p for p in run.pinned if not p.error)
        print(f"Its content id, computed again from the files:  knack cid {config.clips_path / first.clip_id}   (expect {first.cid})")
    print(f"Outbox:  knack status   (KNACK_DATA_DIR={target})")
    print(f"\nContributor {view['address']} balance: {view['balance_tokens']} KNACK   (knack rewards, KNACK_DATA_DIR={target})")
    return 1 if failed else 0
