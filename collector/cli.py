"""The `knack` command line: one command, a subcommand per job; every failure is one line and an exit code."""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from collector.config import ConfigError, load
from collector.identity import IdentityError
from collector.labeling.cards import CardError
from collector.session import open_outbox, remote_pinning
from storage.ledger.chain import ChainError
from storage.outbox import STATES

log = logging.getLogger("knack")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("knack: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def device_password(confirm: bool) -> str:
    """From KNACK_DEVICE_PASSWORD, else asked at the terminal; never stored or logged."""
    password = os.environ.get("KNACK_DEVICE_PASSWORD", "")
    if password or not sys.stdin.isatty():
        return password
    password = getpass.getpass("Password for the device key: ")
    if confirm and getpass.getpass("Repeat it: ") != password:
        raise IdentityError("the two passwords differ")
    return password


def device_key(config, announce=print):
    from collector.identity import load_or_create

    path = config.keystore_path
    key, created = load_or_create(path, device_password(confirm=not path.exists()))
    if created:
        announce(f"Created device key {key.address} in {path} (encrypted; keep its password safe)")
    return key


def _load(args):
    return load(args.config)


def cmd_devices(args) -> int:
    from collector.devices import devices_as_dict, format_devices, list_cameras, list_serial_ports

    cameras, ports = list_cameras(), list_serial_ports()
    print(json.dumps(devices_as_dict(cameras, ports), indent=2) if args.json else format_devices(cameras, ports))
    return 0


def cmd_udev(args) -> int:
    from collector.devices import list_cameras, list_serial_ports, usb_interface_of
    from collector.udev_rules import UdevRuleError, no_usb_identity, rule_for, rules_file, rules_for

    cameras, ports = list_cameras(), list_serial_ports()
    interfaces = {d.path: usb_interface_of(d.path) for d in (*cameras, *ports)}
    by_node = {Path(os.path.realpath(d.path)): d for d in (*cameras, *ports)}
    try:
        if not args.path:
            text = rules_for(cameras, ports, interfaces)
        elif args.name and len(args.path) > 1:
            raise UdevRuleError("--name names one device: give one path")
        else:
            rules = []
            for path in args.path:
                node = Path(os.path.realpath(path))
                if not node.exists():
                    raise UdevRuleError(f"{path}: no such device")
                if node not in by_node:  # a pty, a file: nothing udev could match
                    raise no_usb_identity(path)
                device = by_node[node]
                rules.append(rule_for(device, interfaces[device.path], args.name))
            text = rules_file(rules)
    except UdevRuleError as exc:
        print(f"knack: error: {exc}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


def cmd_doctor(args) -> int:
    from collector.doctor import run_checks
    from collector.config import to_toml

    config = _load(args)
    print("Effective configuration:\n")
    print(to_toml(config))
    print(f"Data directory: {config.data_path}")
    print("\nReal parts:")
    worst = 0
    for check in run_checks(config):
        print(f"  {check.status:<5} {check.part:<22} {check.detail}")
        worst = max(worst, {"ok": 0, "info": 0, "warn": 0, "fail": 1}[check.status])
    return worst


def cmd_verify(args) -> int:
    from collector.bundle import verify_bundle

    failed = 0
    for clip in args.clip_dir:
        result = verify_bundle(Path(clip))
        if result.ok:
            print(f"OK      {clip}  (every file matches; signed by device {result.signer})")
        else:
            failed += 1
            print(f"FAILED  {clip}")
            for problem in result.problems:
                print(f"        - {problem}")
    return 1 if failed else 0


def cmd_simulate(args) -> int:
    from collector.simulator import SerialSimulator, SimulatorConfig

    if args.what == "joints":
        sim = SerialSimulator(SimulatorConfig(rate=args.rate, protocol=args.protocol, garbage=args.garbage, link=args.link or "", stream="joints", joints=args.joints))
        print(f"Simulated {args.joints}-joint arm on {sim.port} ({args.protocol}, {args.rate:g} Hz); stop with Ctrl-C", flush=True)
        names = ", ".join(f'"{n}"' for n in sim.joint_names)
        print(f'  knack.toml:  [[joints]]  port = "{sim.port}"  protocol = "{args.protocol}"  joints = [{names}]', flush=True)
    else:
        sim = SerialSimulator(SimulatorConfig(rate=args.rate, protocol=args.protocol, garbage=args.garbage, replay=args.replay or "", link=args.link or ""))
        print(f"Simulated IMU on {sim.port} ({args.protocol}, {args.rate:g} Hz); stop with Ctrl-C", flush=True)
        print(f'  knack.toml:  [[serial]]  port = "{sim.port}"  protocol = "{args.protocol}"', flush=True)
    stop = _stop_event()
    with sim:
        stop.wait(args.duration if args.duration else None)
    print(f"sent {sim.sent} samples ({sim.corrupted} corrupted on purpose, {sim.overrun} buffer overruns with no reader)")
    return 0


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _progress_line(recorder) -> str:
    parts = []
    for s in recorder.sources:
        st = s.stats
        errors = sum(st.errors.values())
        if s.kind == "camera":
            parts.append(f"{s.name}: {st.received} frames ({st.rate:.1f} fps), {st.dropped} dropped, {st.late} late [{st.state}]")
        else:
            parts.append(f"{s.name}: {st.received} samples ({st.rate:.0f}/s), {st.lost} lost, {errors} bad [{st.state}]")
    return " | ".join(parts) + f" | clips {recorder.totals.clips}"


def _print_labeled(result) -> None:
    mark = "ACCEPTED" if result.accepted else "REJECTED"
    blurred = f", faces blurred in {result.faces_blurred_frames} frames" if result.faces_blurred_frames else ""
    print(f"  {mark} {result.clip_id}  quality {result.score:.2f}{blurred}  ({result.seconds:.1f} s)", flush=True)
    if not result.accepted:
        print(f"           {result.summary}", flush=True)


@dataclass
class Recording:
    recorder: object
    written: list  # ClipWritten, as sealed
    labeled: list  # Labeled results
    pinned: list  # PinResult of each pinning attempt


def run_recording(config, key, duration: float | None, until_sources_end: bool = False, quiet: bool = False, label: bool | None = None) -> Recording:
    """Records until Ctrl-C, `duration`, or (for file cameras) their end.

    Each clip is labeled in the background as soon as it is sealed (labeler.label_on_record), and each
    accepted clip goes through the outbox to the content store (pinned), also in the background."""
    from collector.session import CaptureSession

    tty = sys.stdout.isatty()

    def on_pinned(result) -> None:
        if not quiet:
            print(f"  {'pinned' if not result.error else 'not pinned'} {result.clip_id}  {result.cid or ''}{'  ' + result.error if result.error else ''}", flush=True)

    def on_clip(clip) -> None:
        if not quiet:
            # On a terminal the progress line is rewritten in place: start the clip's line below it.
            print(f"{chr(10) if tty else ''}clip {clip.clip_id}: {clip.frames} frames, {clip.samples} samples -> {clip.path}", flush=True)

    session = CaptureSession(config, key, label=label, on_clip=on_clip, on_labeled=None if quiet else _print_labeled, on_pinned=on_pinned)
    stop = _stop_event()
    session.start()
    recorder = session.recorder
    for message in recorder.recovered:
        print(message)
    if session.backlog and not quiet:
        print(f"{len(session.backlog)} earlier clip(s) not labeled yet: labeling them in the background", flush=True)
    started = time.monotonic()
    last_print = 0.0
    while not stop.wait(0.2):
        now = time.monotonic()
        if duration and now - started >= duration:
            break
        if until_sources_end and recorder.sources_ended():
            break
        if not quiet and (now - last_print >= (1 if tty else 5)):
            print(("\r" if tty else "") + _progress_line(recorder), end="" if tty else "\n", flush=True)
            last_print = now
    recorder.close(at_ns=recorder.files_end_ns() if until_sources_end and recorder.sources_ended() else None)
    if not quiet:
        print(("\n" if tty else "") + _progress_line(recorder))
    if session.labels is not None and session.labels.pending and not quiet:
        print(f"labeling the last {session.labels.pending} clip(s)...", flush=True)
    session.close()
    for clip, reason in session.label_failures:
        print(f"clip {clip.name} was not labeled: {reason} (run `knack label {clip}` to try again)")
    return Recording(recorder, session.written, session.labeled, session.pinned)


def cmd_record(args) -> int:
    import dataclasses

    config = _load(args)
    if args.clip_seconds is not None:
        config = dataclasses.replace(config, recorder=dataclasses.replace(config.recorder, clip_seconds=args.clip_seconds)).validate()
    if not config.camera and not config.serial and not config.joints:
        raise ConfigError("no sources configured: add [[camera]], [[serial]] or [[joints]] tables to knack.toml (see `knack devices`)")
    key = device_key(config)
    print(f"Recording to {config.clips_path} as device {key.address}; stop with Ctrl-C")
    run = run_recording(config, key, args.duration, until_sources_end=args.until_end, label=False if args.no_label else None)
    accepted = sum(r.accepted for r in run.labeled)
    pinned = sum(not p.error for p in run.pinned)
    print(f"{len(run.written)} clip(s) written, {run.recorder.totals.failed} failed; {len(run.labeled)} labeled: {accepted} accepted, {len(run.labeled) - accepted} rejected; {pinned} pinned")
    return 1 if run.recorder.totals.failed else 0


def cmd_label(args) -> int:
    from collector.labeling import LabelError, Labeler

    config = _load(args)
    key = device_key(config)
    labeler = Labeler(config, key)
    print(f"Labeling on {labeler.provider}: " + ", ".join(f"{m['name']} {m['version']}" for m in labeler.models.describe()))
    failed = rejected = 0
    for clip in args.clip_dir:
        try:
            result = labeler.label(Path(clip))
        except LabelError as exc:
            failed += 1
            print(f"  FAILED   {clip}: {exc}")
            continue
        rejected += not result.accepted
        _print_labeled(result)
    print(f"{len(args.clip_dir) - failed - rejected} accepted, {rejected} rejected, {failed} not labeled")
    return 1 if failed else 0


def cmd_cid(args) -> int:
    from storage.content.unixfs import UnixfsError, add_path

    try:
        print(add_path(args.path).cid)
    except UnixfsError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def cmd_pin(args) -> int:
    from storage.outbox.pinner import pin_due

    config = _load(args)
    outbox, store = open_outbox(config)
    failed = 0
    for result in pin_due(outbox, store, remote=remote_pinning(config)):
        failed += bool(result.error)
        print(f"{'pinned ' if not result.error else 'FAILED '} {result.clip_id}  {result.cid or ''}{'  ' + result.error if result.error else ''}")
    counts = outbox.counts()
    print(f"{counts['pinned']} pinned, {counts['accepted']} waiting to be pinned")
    return 1 if failed else 0


def cmd_status(args) -> int:
    import datetime

    outbox, store = open_outbox(_load(args))
    counts = outbox.counts()
    if args.json:
        oldest = outbox.oldest_pending()
        print(json.dumps({"counts": counts, "store": store.name, "oldest_pending": oldest.__dict__ if oldest else None, "clips": [e.__dict__ for e in outbox.entries()]}, indent=2, default=str))
        return 0
    print(f"Store: {store.name}")
    print("  ".join(f"{state} {n}" for state, n in counts.items()))
    oldest = outbox.oldest_pending()
    if oldest:
        age = datetime.timedelta(seconds=int(time.time() - oldest.created))
        print(f"Oldest pending: {oldest.clip_id} ({oldest.state}, waiting {age})" + (f", last error: {oldest.last_error}" if oldest.last_error else ""))
    for entry in outbox.entries():
        if entry.last_error:
            print(f"  {entry.clip_id}  {entry.state}  try {entry.attempts}: {entry.last_error}")
    return 0


def cmd_retry(args) -> int:
    outbox, _ = open_outbox(_load(args))
    count = outbox.retry(args.clip_id or None)
    print(f"{count} clip(s) will be tried again at once (run `knack pin`, or they go with the next recording)")
    return 0


def cmd_clips(args) -> int:
    import dataclasses as dc

    from collector.clips import clip_view, clip_views, describe

    outbox, _ = open_outbox(_load(args))
    if args.clip_id:
        entry = outbox.get(args.clip_id)
        if entry is None or entry.state == "discarded":
            print(f"no clip {args.clip_id} in the outbox (`knack clips` lists them)", file=sys.stderr)
            return 1
        view = clip_view(outbox, entry)
        print(json.dumps(dc.asdict(view), indent=2, default=str) if args.json else "\n".join(describe(view)))
        return 0
    views = clip_views(outbox, args.state)
    if args.json:
        print(json.dumps([{k: v for k, v in dc.asdict(view).items() if k != "manifest"} for view in views], indent=2, default=str))
        return 0
    for v in views:
        quality = f"{v.quality:.2f}" if v.quality is not None else "-"
        reward = f"+{v.reward_tokens} KNACK" if v.reward_tokens else ""
        print(f"{v.clip_id}  {v.state:<9} {quality:>5}  {v.hands:<14} {reward:<16} {v.reason}")
    if not views:
        print("no clips" + (f" in state {args.state}" if args.state else "") + " in the outbox")
    return 0


def cmd_discard(args) -> int:
    from storage.outbox.discard import DiscardError, discard

    config = _load(args)
    outbox, _ = open_outbox(config)
    failed = 0
    for clip_id in args.clip_id:
        try:
            discard(outbox, config.clips_path, clip_id)
            print(f"discarded {clip_id}")
        except (DiscardError, OSError) as exc:
            print(f"not discarded: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_export_car(args) -> int:
    from collector.bundle import MANIFEST
    from storage.content.ipfs import EmbeddedStore

    config = _load(args)
    clip = Path(args.clip)
    if not (clip / MANIFEST).is_file():
        candidate = config.clips_path / args.clip
        clip = candidate if (candidate / MANIFEST).is_file() else clip
    if not (clip / MANIFEST).is_file():
        raise ConfigError(f"{args.clip} is not a clip directory or a clip id under {config.clips_path}")
    store = EmbeddedStore(config.data_path / "ipfs" / "blocks.sqlite")
    root = store.add(clip)
    out = Path(args.output or f"{clip.name}.car")
    with open(out, "wb") as f:
        blocks = store.export_car(root, f)
    print(f"{out}: CARv1 with root {root}, {blocks} blocks (import with `ipfs dag import {out}`)")
    return 0


def validator_key(config, announce=print):
    """The validator's account: KNACK_VALIDATOR_KEY (hex) if set, else its own encrypted keystore in the
    data directory, password from KNACK_VALIDATOR_PASSWORD (else the device password, for a device
    that validates its own demo)."""
    from collector.identity import from_environment, load_or_create

    if (key := from_environment("KNACK_VALIDATOR_KEY")) is not None:
        return key
    password = os.environ.get("KNACK_VALIDATOR_PASSWORD") or device_password(confirm=False)
    key, created = load_or_create(config.data_path / "validator-key.json", password)
    if created:
        announce(f"Created validator key {key.address} in {config.data_path / 'validator-key.json'} (encrypted)")
    return key


def open_ledger(config):
    from storage.ledger.chain import open_chain

    return open_chain(config.storage.chain_rpc, config.data_path)


def cmd_chain_deploy(args) -> int:
    config = _load(args)
    chain = open_ledger(config)
    admin = validator_key(config)
    deployment = chain.deploy(admin, admin.address)
    where = config.storage.chain_rpc or "the embedded chain"
    print(f"Deployed on {where} (chain id {deployment.chain_id}): ClipRegistry {deployment.registry}, KnackToken {deployment.token}; admin and validator {admin.address}")
    return 0


def ensure_deployed(config, chain):
    """The embedded chain deploys itself on first use; a real chain needs `knack chain deploy`."""
    if chain.deployment is None and chain.embedded:
        admin = validator_key(config)
        chain.deploy(admin, admin.address)
    return chain


def cmd_submit(args) -> int:
    from storage.outbox.submitter import submit_due, sync_settlements

    config = _load(args)
    outbox, _ = open_outbox(config)
    chain = ensure_deployed(config, open_ledger(config))
    key = device_key(config)
    failed = 0
    for result in submit_due(outbox, chain, key):
        failed += bool(result.error)
        print(f"batch {result.batch_id}: {len(result.clip_ids)} clip(s) submitted in {result.tx_hash}" if not result.error else f"NOT SUBMITTED {len(result.clip_ids)} clip(s): {result.error}")
    print(f"{sync_settlements(outbox, chain)} clip(s) newly settled by the validator")
    return 1 if failed else 0


def cmd_validate(args) -> int:
    from storage.content.ipfs import open_store
    from storage.validator import Validator
    from storage.outbox.submitter import REASONS

    config = _load(args)
    chain = ensure_deployed(config, open_ledger(config))
    validator = Validator(chain, open_store(config.storage.ipfs_api, config.data_path), validator_key(config), config.data_path / "validator.sqlite")
    while True:
        settled = validator.run_once()
        for batch_id, verdicts in settled.items():
            accepted = sum(v.accepted for v in verdicts)
            print(f"batch {batch_id}: {accepted} accepted, {len(verdicts) - accepted} rejected")
            for v in verdicts:
                if not v.accepted:
                    print(f"  rejected {v.cid}: {REASONS[v.reason]}{' (' + v.detail + ')' if v.detail else ''}")
        if not args.watch:
            return 0
        time.sleep(args.interval)


def _contributor_address(config, address: str | None) -> str:
    if address:
        return address
    if config.identity.contributor:
        return config.identity.contributor
    try:  # the keystore names its address in clear: no password needed to look at rewards
        return "0x" + json.loads(config.keystore_path.read_text())["address"].removeprefix("0x")
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"no address given and no device key at {config.keystore_path}: pass one, e.g. `knack rewards 0x…`") from None


def cmd_rewards(args) -> int:
    from storage.ledger.rewards import rewards_view

    config = _load(args)
    chain = open_ledger(config)
    view = rewards_view(chain, _contributor_address(config, args.address))
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"Contributor {view['address']} on {config.storage.chain_rpc or 'the embedded chain'}")
    print(f"  balance   {view['balance_tokens']} KNACK")
    print(f"  clips     {view['accepted']} accepted, {view['pending']} pending, {view['rejected']} rejected")
    for reason, count in view["rejected_reasons"].items():
        print(f"            {count} x {reason}")
    for event in view["events"][-10:]:
        print(f"  block {event['block']:>6}  batch {event['batch']:>4}  {event['accepted']} accepted  {event['rejected']} rejected  +{event['reward_tokens']} KNACK")
    return 0


def cmd_demo(args) -> int:
    from collector.demo import run_demo

    return run_demo(_load(args), data_dir=args.data_dir, clip_seconds=args.clip_seconds)


DEMO_HAND_FRACTION, DEMO_SHARPNESS = 0.2, 30.0


def cmd_tui(args) -> int:
    """The Textual app; with --demo on the bundled sample video (looping) and the sensor simulator."""
    import dataclasses

    from tui.app import run

    base = _load(args)
    if not args.demo:
        return run(base, device_key(base))
    from collector.demo import demo_config
    from collector.sample import SAMPLE_IMU
    from collector.simulator import SerialSimulator, SimulatorConfig

    target = Path(args.data_dir) if args.data_dir else base.data_path / "demo"
    # Both keys are unlocked before the app owns the terminal: in a demo the app validates its own clips.
    keys_config = dataclasses.replace(base, data_dir=str(target))
    key, validator = device_key(keys_config), validator_key(keys_config)
    with SerialSimulator(SimulatorConfig(rate=200.0, protocol="csv", replay=str(SAMPLE_IMU))) as sim:  # replays in a loop
        config = demo_config(base, target, sim.port, args.clip_seconds)
        # The sample loops, so the preview goes on for as long as the operator wants to record. Half of it is
        # a cross-fade and a photo with lines drawn over the hands, which the default policy rightly rejects;
        # the demo lowers two thresholds so that a clip started at any moment can go all the way to a reward.
        policy = dataclasses.replace(config.policy, min_hand_fraction=min(config.policy.min_hand_fraction, DEMO_HAND_FRACTION), min_sharpness=min(config.policy.min_sharpness, DEMO_SHARPNESS))
        config = dataclasses.replace(config, policy=policy, camera=tuple(dataclasses.replace(c, loop=True) for c in config.camera)).validate()
        return run(config, key, demo=True, validator_key=validator)


def cmd_robot(args) -> int:
    from robot.command import cmd_robot as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knack", description="Record, label and contribute recordings of skilled hands at work.")
    parser.add_argument("--config", help="path to knack.toml (default: $KNACK_CONFIG, then the user config directory)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole flow on the bundled sample recording and the sensor simulator")
    p.add_argument("--data-dir", help="where the demo writes (default: <data_dir>/demo)")
    p.add_argument("--clip-seconds", type=float, default=2.5)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("tui", help="the operator's terminal app: record, clips, rewards, devices")
    p.add_argument("--demo", action="store_true", help="on the bundled sample recording and the sensor simulator, in <data_dir>/demo")
    p.add_argument("--data-dir", help="with --demo: where it writes (default: <data_dir>/demo)")
    p.add_argument("--clip-seconds", type=float, default=5.0, help="with --demo: clip length while recording (0: cut only on start/stop/split)")
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("robot", help="run headless as a service: capture, label, upload and settle; JSON-line logs, /healthz and /metrics")
    p.set_defaults(func=cmd_robot)

    p = sub.add_parser("record", help="record clips from the configured sources until Ctrl-C")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--clip-seconds", type=float, help="override recorder.clip_seconds")
    p.add_argument("--until-end", action="store_true", help="stop when every video-file camera has ended")
    p.add_argument("--no-label", action="store_true", help="do not label clips as they are written (label them later with `knack label`)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("simulate", help="simulate hardware for testing without it")
    simsub = p.add_subparsers(dest="what", required=True)
    s = simsub.add_parser("serial", help="stream a 6-axis IMU glove on a pseudo-terminal")
    s.add_argument("--rate", type=float, default=200.0, help="samples per second (up to 10000)")
    s.add_argument("--protocol", choices=["csv", "jsonl", "kv", "binary"], default="csv")
    s.add_argument("--garbage", type=float, default=0.0, help="probability per sample of injected noise or a corrupt frame")
    s.add_argument("--replay", help="stream the values of this IMU CSV log instead of synthetic motion")
    s.add_argument("--link", help="also make this path a symlink to the port (a stable name, like a udev rule)")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    s.set_defaults(func=cmd_simulate)
    s = simsub.add_parser("joints", help="stream a robot arm's joint states (position, velocity, effort) on a pseudo-terminal")
    s.add_argument("--joints", type=int, default=6, help="how many joints (1 to 64)")
    s.add_argument("--rate", type=float, default=100.0, help="samples per second (up to 10000)")
    s.add_argument("--protocol", choices=["jsonl", "binary"], default="jsonl")
    s.add_argument("--garbage", type=float, default=0.0, help="probability per sample of injected noise or a corrupt frame")
    s.add_argument("--link", help="also make this path a symlink to the port (a stable name, like a udev rule)")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    s.set_defaults(func=cmd_simulate)

    p = sub.add_parser("label", help="label clips again: hands, faces blurred, quality, accept/reject (re-signs the manifest)")
    p.add_argument("clip_dir", nargs="+")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("cid", help="print the IPFS CID of a file or directory without storing it (ipfs add -r -Q --only-hash --cid-version=1)")
    p.add_argument("path")
    p.set_defaults(func=cmd_cid)

    p = sub.add_parser("pin", help="pin every accepted clip that is due to the content store now")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("status", help="clips by state in the outbox, the oldest pending one, and errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("retry", help="try failed or waiting uploads again now")
    p.add_argument("clip_id", nargs="*", help="clip ids (default: every pending clip)")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("clips", help="every clip with its state, quality, reason, CID, transaction and reward")
    p.add_argument("clip_id", nargs="?", help="one clip in full: manifest, CID, transaction and reward")
    p.add_argument("--state", choices=STATES, help="only clips in this state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clips)

    p = sub.add_parser("discard", help="delete clips not shared yet (recorded, labeled, accepted or rejected): files and outbox row")
    p.add_argument("clip_id", nargs="+")
    p.set_defaults(func=cmd_discard)

    p = sub.add_parser("export-car", help="write a clip as a CARv1 file that any IPFS node imports")
    p.add_argument("clip", help="a clip directory or clip id")
    p.add_argument("-o", "--output", help="file to write (default: <clip_id>.car)")
    p.set_defaults(func=cmd_export_car)

    p = sub.add_parser("chain", help="the chain: deploy the registry and token")
    chainsub = p.add_subparsers(dest="what", required=True)
    c = chainsub.add_parser("deploy", help="deploy ClipRegistry and KnackToken; addresses go into the data directory")
    c.set_defaults(func=cmd_chain_deploy)

    p = sub.add_parser("submit", help="submit pinned clips to the registry in batches, and read settlements back")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("validate", help="check submitted clips by CID and settle their batches on chain (validator role)")
    p.add_argument("--watch", action="store_true", help="keep watching for new batches")
    p.add_argument("--interval", type=float, default=10.0)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("rewards", help="a contributor's token balance, accepted/pending/rejected clips and reward events")
    p.add_argument("address", nargs="?", help="an EVM address (default: this device's contributor)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rewards)

    p = sub.add_parser("verify", help="check every file hash and the device signature of clip bundles")
    p.add_argument("clip_dir", nargs="+")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("devices", help="list cameras and serial ports, to write knack.toml (stable names: knack udev)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("udev", help="print udev rules giving USB cameras and serial ports stable names under /dev/knack/ (see udev/README.md)")
    p.add_argument("path", nargs="*", help="device paths such as /dev/video0, /dev/ttyUSB0 or a /dev/serial/by-id link (default: every USB camera and serial port)")
    p.add_argument("--name", help="with one path: the link name under /dev/knack/, e.g. wrist_cam (default: kind-vendor-product-serial)")
    p.set_defaults(func=cmd_udev)

    p = sub.add_parser("doctor", help="print the effective configuration and which real parts are reachable")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, IdentityError, CardError, ChainError) as exc:
        print(f"knack: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
