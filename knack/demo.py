"""`knack demo`: the whole flow on the embedded defaults — the bundled sample video as camera, the sensor
simulator replaying its IMU log on a pseudo-terminal, the shipped models, the embedded block store and the
embedded chain, with this process also acting as the validator — ending with the contributor's reward.

The demo writes into a data directory of its own (`<data_dir>/demo`), never the device's: its clips come
from a sample and are settled by a validator it runs itself, so they must not mix with real clips or reach
a real chain. It ends by printing the one `export KNACK_DATA_DIR=…` line after which every other command
(`knack clips`, `knack verify`, `knack rewards`, `knack tui`) works on what it recorded."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path

from collector.bundle import MANIFEST, verify_bundle
from collector.config import CameraConfig, Config
from collector.sample import SAMPLE_IMU, SAMPLE_VIDEO
from collector.simulator import SerialSimulator, SimulatorConfig, stream_config
from knack import events as ev
from knack import wiring

SIM = SimulatorConfig(rate=200.0, protocol="csv", replay=str(SAMPLE_IMU))  # replays the log in a loop
SAMPLE_TASK = "open, pinch, spread and close the fingers of one hand"  # what the sample shows (its ATTRIBUTION.md)
KEYS_NOTE = (
    "The demo uses three keys, all encrypted with the one password you give now:\n"
    "  - the device key signs every clip this device records and submits them;\n"
    "  - the contributor key registers the device on chain as its own and is paid the tokens;\n"
    "  - the validator key stands in for the network's validator, which checks clips and settles them on chain."
)


@dataclasses.dataclass(frozen=True)
class DemoKeys:
    device: object
    validator: object
    contributor: object


def demo_config(base: Config, data_dir: Path, port: str, clip_seconds: float, loop: bool = False) -> Config:
    return dataclasses.replace(
        base,
        data_dir=str(data_dir),
        recorder=dataclasses.replace(base.recorder, clip_seconds=clip_seconds, task=SAMPLE_TASK),
        camera=(CameraConfig(name="bench", source=str(SAMPLE_VIDEO), fps=30.0, realtime=True, loop=loop),),
        serial=(stream_config(SIM, port),),
        joints=(),
        source=f"{base.source} + demo sources",
    ).validate()


def demo_keys(base: Config, target: Path) -> DemoKeys:
    """The device, validator and contributor keys of the demo's data directory, unlocked with one password
    (asked once, unless KNACK_DEVICE_PASSWORD gives it)."""
    config = dataclasses.replace(base, data_dir=str(target))
    exists = config.keystore_path.exists()
    password = os.environ.get(wiring.DEVICE_PASSWORD_ENV, "")
    if not password:
        print(KEYS_NOTE, flush=True)
        prompt = "Password for the demo's keys: " if exists else "Choose a password for the demo's keys: "
        password = wiring.ask_password(prompt, confirm=False)
    try:
        key = wiring.device_key(config, password=password)
        validator = wiring.validator_key(config, password=password)
        contributor = wiring.contributor_key(config, password=password)
    except Exception as exc:
        if exists and "wrong password" in str(exc):
            raise type(exc)(f"{exc} (to start the demo afresh, remove {target})") from None
        raise
    return DemoKeys(key, validator, contributor)


def join_network(config: Config, keys: DemoKeys) -> tuple[Config, object]:
    """The embedded chain deployed (the validator key as admin), the device registered to the contributor
    (both sign; the device relays): the demo's configuration paying that contributor, and the device key
    bound to the network."""
    ledger = wiring.open_ledger(config, deployer=keys.validator)
    try:
        wiring.register_device(ledger, keys.device, keys.device, keys.contributor)
        domain = ledger.domain()
    finally:
        ledger.close()
    config = dataclasses.replace(config, identity=dataclasses.replace(config.identity, contributor=keys.contributor.address))
    return config, keys.device.bind(domain)


@contextlib.contextmanager
def looping_demo(base: Config, target: Path, clip_seconds: float):
    """The demo's configuration with the sample video looping and the simulator running, for `knack tui --demo`."""
    with SerialSimulator(SIM) as sim:
        yield demo_config(base, target, sim.port, clip_seconds, loop=True)


def run_demo(base: Config, data_dir: str | None = None, clip_seconds: float = 2.5) -> int:
    from knack.record import run_recording
    from knack.session import DeviceSession
    from storage.ledger.rewards import rewards_view

    target = Path(data_dir) if data_dir else base.data_path / "demo"
    print("Knack demo: the bundled sample recording (a real hand on camera, collector/sample/ATTRIBUTION.md) + a simulated IMU glove on a pseudo-terminal")
    print(f"Everything goes to the demo's own data directory, {target}")
    # Unlock the keys first: a sensor streaming while someone types a password would only fill buffers.
    keys = demo_keys(base, target)
    seen: list[ev.Event] = []
    with SerialSimulator(SIM) as sim:
        config, key = join_network(demo_config(base, target, sim.port, clip_seconds), keys)
        validator = keys.validator
        print(f"1. capture  camera={SAMPLE_VIDEO.name}  serial={sim.port}  -> {config.clips_path}")
        print("2. label    hands, faces (blurred), picture and stream quality, accept/reject: each clip as it is written")
        session = DeviceSession(config, key, validator_key=validator, listener=seen.append)
        run = run_recording(session, duration=60.0, until_sources_end=True, quiet=True)
    recorder, written, labeled = run.recorder, run.written, run.labeled
    print(f"   {recorder.totals.frames} frames and {recorder.totals.samples} sensor samples on one clock, cut into {len(written)} clip(s)")
    for result in sorted(labeled, key=lambda r: r.clip_id):
        manifest = json.loads((result.path / MANIFEST).read_text())
        hands = manifest["labels"]["hands"] or {}
        faces = manifest["privacy"]
        print(
            f"   {'ACCEPTED' if result.accepted else 'REJECTED'} {result.clip_id}  hands in {hands.get('hand_fraction', 0):.0%} of frames, "
            f"{faces['faces']} face(s) blurred in {faces['frames_blurred']} frames, quality {result.score:.2f}  [{manifest['labels']['execution_provider']}]"
        )
        if not result.accepted:
            print(f"            {result.summary}")
    print("3. store    accepted clips pinned by CID in the embedded IPFS block store, through the outbox")
    for result in run.pinned:
        print(f"   {'PINNED  ' if not result.error else 'NOT YET '} {result.clip_id}  {result.cid or ''}{'  ' + result.error if result.error else ''}")
    if not run.pinned:
        print("   no clip was accepted, so none was pinned")
    print("4. reward   pinned clips submitted to the registry on the embedded chain; the validator checks them by CID and settles")
    for event in seen:
        match event:
            case ev.BatchSubmitted(s):
                print(f"   batch {s.batch_id}: {len(s.clip_ids)} clip(s) submitted" if not s.error else f"   not submitted: {s.error}")
            case ev.BatchSettled(batch_id, verdicts):
                accepted = sum(v.accepted for v in verdicts)
                print(f"   batch {batch_id} settled by the validator: {accepted} accepted, {len(verdicts) - accepted} rejected")
                for v in verdicts:
                    if not v.accepted:
                        print(f"     rejected {v.cid}: {v.reason.text}")
            case ev.Problem(part, text):
                print(f"   {part}: {text}")
    copies = [v for e in seen if isinstance(e, ev.BatchSettled) for v in e.verdicts if v.reason is not None and v.reason.strike]
    if copies:
        print(f"   the sample was paid in an earlier demo run here: the network pays for the same footage once (to start afresh, remove {target})")
    ledger = wiring.open_ledger(config)
    view = rewards_view(ledger, keys.contributor.address) if ledger.deployment else None
    ledger.close()
    if view:
        print(f"   contributor {view['address']}: {view['accepted']} clip(s) accepted, {view['pending']} pending, {view['rejected']} rejected on chain")
        for device in view.get("devices", []):
            print(f"     device {device['device']}: {device['accepted']} accepted, {device['rejected']} rejected, {device['strikes']} strike(s)")
    print("5. verify   every file hash and the device signature (re-signed after labeling, for this chain and registry)")
    failed = 0
    for clip in written:
        result = verify_bundle(clip.path)
        failed += not result.ok
        print(
            f"   {'OK    ' if result.ok else 'FAILED'} {clip.clip_id}  {clip.frames:4d} frames {clip.samples:5d} samples"
            + ("" if result.ok else "  " + "; ".join(result.problems))
        )
    if not written:
        print("   no clip was written: see the messages above")
        return 1
    if len(labeled) != len(written):
        print(f"   {len(written) - len(labeled)} clip(s) could not be labeled: see the messages above")
        failed += len(written) - len(labeled)
    print(f"\nDone: {len(written) - failed} verified clip bundle(s) under {config.clips_path}")
    print("\nThe other commands work on what the demo recorded once this is set in your shell:\n")
    print(f"  {wiring.data_dir_line(target)}\n")
    print("  knack clips                            every clip: state, quality, reason, CID, reward")
    print('  knack verify "$KNACK_DATA_DIR"/clips/*  every file hash and the device signature')
    print("  knack rewards                          the contributor's balance and settled batches")
    print("  knack tui                              the operator's app over the same clips")
    print("  knack dataset build /tmp/ds            the paid clips as a LeRobot dataset, verified against the chain")
    print("  knack review <clip_id>                 one clip as a Rerun recording (.rrd)")
    if view:
        print(f"\nContributor {view['address']} balance: {view['balance_tokens']} KNACK")
    return 1 if failed else 0
