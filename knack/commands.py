"""What each `knack` subcommand does (knack/cli.py parses the arguments): it opens what it needs through
knack.wiring, runs it, and prints what a person reads; a failure is one line and an exit code."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from collector.config import ConfigError, load
from knack import wiring
from knack.wiring import device_key, ledger_name, validator_key


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
    from collector.config import to_toml
    from knack.doctor import run_checks

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
            bound = (
                f"for chain {result.network.chain_id}, registry {result.network.registry}" if result.network else "for no network yet (validators refuse it)"
            )
            print(f"OK      {clip}  (every file matches; signed by device {result.signer} {bound})")
        else:
            failed += 1
            print(f"FAILED  {clip}")
            for problem in result.problems:
                print(f"        - {problem}")
    return 1 if failed else 0


def cmd_simulate(args) -> int:
    from collector.config import stream_toml
    from collector.simulator import SerialSimulator, SimulatorConfig, stream_config
    from knack.record import stop_event

    if args.what == "joints":
        sim_config = SimulatorConfig(rate=args.rate, protocol=args.protocol, garbage=args.garbage, link=args.link or "", stream="joints", joints=args.joints)
        what, kind = f"{args.joints}-joint arm", "joints"
    else:
        sim_config = SimulatorConfig(rate=args.rate, protocol=args.protocol, garbage=args.garbage, replay=args.replay or "", link=args.link or "")
        what, kind = "IMU glove", "serial"
    sim = SerialSimulator(sim_config)
    print(f"Simulated {what} on {sim.port} ({args.protocol}, {args.rate:g} Hz); stop with Ctrl-C", flush=True)
    print("Paste this into knack.toml to record it:\n", flush=True)
    print(stream_toml(kind, stream_config(sim_config, args.link or sim.port)), flush=True)
    stop = stop_event()
    with sim:
        stop.wait(args.duration if args.duration else None)
    print(f"sent {sim.sent} samples ({sim.corrupted} corrupted on purpose, {sim.overrun} buffer overruns with no reader)")
    return 0


def cmd_record(args) -> int:
    import dataclasses

    from knack.record import run_recording
    from knack.session import DeviceSession

    config = _load(args)
    if args.clip_seconds is not None:
        config = dataclasses.replace(config, recorder=dataclasses.replace(config.recorder, clip_seconds=args.clip_seconds)).validate()
    if args.task is not None:
        config = dataclasses.replace(config, recorder=dataclasses.replace(config.recorder, task=args.task)).validate()
    if not config.camera and not config.serial and not config.joints:
        raise ConfigError("no sources configured: add [[camera]], [[serial]] or [[joints]] tables to knack.toml (see `knack devices`)")
    from collector.sources.camera import source_kind

    for camera in config.camera:
        # A live camera may be plugged in later and is waited for; a video file that is not there is a typo,
        # and waiting for it would record nothing and exit 0.
        if source_kind(camera.source) == "file" and not Path(camera.source).exists():
            raise ConfigError(f"camera {camera.name}: the video file {camera.source} does not exist")
    key = device_key(config)
    print(f"Recording to {config.clips_path} as device {key.address}; stop with Ctrl-C")
    if config.recorder.task.strip():
        print(f"Task: {config.recorder.task.strip()}")
    session = DeviceSession(config, key, label=False if args.no_label else None)
    run = run_recording(session, args.duration, until_sources_end=args.until_end)
    accepted = sum(r.accepted for r in run.labeled)
    pinned = sum(not p.error for p in run.pinned)
    print(
        f"{len(run.written)} clip(s) written, {run.recorder.totals.failed} failed; {len(run.labeled)} labeled: {accepted} accepted, {len(run.labeled) - accepted} rejected; {pinned} pinned"
    )
    return 1 if run.recorder.totals.failed else 0


def cmd_label(args) -> int:
    from collector.bundle import BundleFormatError, copy_as_new
    from collector.labeling import Labeler, LabelError
    from knack.record import labeled_line

    config = _load(args)
    key = device_key(config)
    labeler = Labeler(config, key)
    outbox = wiring.open_outbox(config)
    print(f"Labeling on {labeler.provider}: " + ", ".join(f"{m['name']} {m['version']}" for m in labeler.models.describe()))
    failed = rejected = 0
    for clip in args.clip_dir:
        try:
            shared = _shared(outbox, Path(clip))
            if shared and not args.as_new:
                raise LabelError(
                    f"{shared}: labeling it again would change its CID while the outbox and the chain keep the old one "
                    "(`knack label --as-new` labels a copy under a new clip id)"
                )
            if shared:
                copy = copy_as_new(Path(clip), key)
                print(f"  copied   {clip} -> {copy.name} (its parent)")
                clip = copy
            result = labeler.label(Path(clip))
        except (LabelError, BundleFormatError, OSError) as exc:
            failed += 1
            print(f"  FAILED   {clip}: {exc}")
            continue
        rejected += not result.accepted
        print(labeled_line(result))
    print(f"{len(args.clip_dir) - failed - rejected} accepted, {rejected} rejected, {failed} not labeled")
    return 1 if failed else 0


def _shared(outbox, clip: Path) -> str | None:
    """Why the clip must not be rewritten (pinned, submitted or settled: its CID is known beyond this device),
    or None."""
    from collector.bundle import MANIFEST
    from storage.outbox.db import DISCARDABLE

    try:
        clip_id = json.loads((clip / MANIFEST).read_bytes()[: 1 << 20]).get("clip_id")
    except (OSError, ValueError, AttributeError):
        return None  # not a readable clip: the labeler says what is wrong with it
    entry = outbox.get(clip_id) if isinstance(clip_id, str) else None
    if entry is None or entry.state in DISCARDABLE:
        return None
    return f"clip {clip_id} is {entry.state} as {entry.cid}"


def cmd_outbox_rebuild(args) -> int:
    from storage.outbox.db import Outbox, OutboxDamaged

    config = _load(args)
    path = config.data_path / "outbox.sqlite"
    if path.exists() and not args.force:
        try:
            Outbox(path).close()
            raise ConfigError(f"the outbox {path} is readable: nothing to rebuild (`--force` rebuilds it anyway, keeping this one beside it)")
        except OutboxDamaged:
            pass
    result = wiring.rebuild_outbox(config, say=print)
    for kept in result.kept:
        print(f"kept the damaged file as {kept}")
    for note in result.notes:
        print(f"note: {note}")
    counts = {state: n for state, n in result.outbox.counts().items() if n}
    print(f"rebuilt {path}: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "no labeled clip on disk"))
    result.outbox.close()
    return 0


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
    outbox, store = wiring.open_outbox(config), wiring.open_store(config)
    failed = 0
    for result in pin_due(outbox, store, remote=wiring.remote_pinning(config)):
        failed += bool(result.error)
        print(f"{'pinned ' if not result.error else 'FAILED '} {result.clip_id}  {result.cid or ''}{'  ' + result.error if result.error else ''}")
    counts = outbox.counts()
    print(f"{counts['pinned']} pinned, {counts['accepted']} waiting to be pinned")
    return 1 if failed else 0


def cmd_status(args) -> int:
    import datetime

    config = _load(args)
    outbox, store = wiring.open_outbox(config), wiring.open_store(config)
    counts = outbox.counts()
    if args.json:
        oldest = outbox.oldest_pending()
        print(
            json.dumps(
                {"counts": counts, "store": store.name, "oldest_pending": oldest.__dict__ if oldest else None, "clips": [e.__dict__ for e in outbox.entries()]},
                indent=2,
                default=str,
            )
        )
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
    outbox = wiring.open_outbox(_load(args))
    count = outbox.retry(args.clip_id or None)
    print(f"{count} clip(s) will be tried again at once (run `knack pin`, or they go with the next recording)")
    return 0


def cmd_clips(args) -> int:
    import dataclasses as dc

    from knack.clips import clip_view, clip_views, describe

    outbox = wiring.open_outbox(_load(args))
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
    outbox = wiring.open_outbox(config)
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
    from collector.bundle import MANIFEST, verify_bundle

    config = _load(args)
    clip = Path(args.clip)
    if not (clip / MANIFEST).is_file():
        candidate = config.clips_path / args.clip
        clip = candidate if (candidate / MANIFEST).is_file() else clip
    if not (clip / MANIFEST).is_file():
        raise ConfigError(f"{args.clip} is not a clip directory or a clip id under {config.clips_path}")
    # Only a bundle that verifies goes into the block store: a tampered one (or one with a link out of it) would
    # be kept there, and a CAR of it carries its bytes to every node that imports it.
    check = verify_bundle(clip)
    if not check.ok:
        raise ConfigError(f"{clip} is not exported: it does not verify ({'; '.join(check.problems[:3])})")
    store = wiring.embedded_store(config)
    root = store.add(clip)
    out = Path(args.output or f"{clip.name}.car")
    with open(out, "wb") as f:
        blocks = store.export_car(root, f)
    print(f"{out}: CARv1 with root {root}, {blocks} blocks (import with `ipfs dag import {out}`)")
    return 0


def cmd_chain_deploy(args) -> int:
    config = _load(args)
    ledger = wiring.open_ledger(config)
    from collector.labeling.network import network_digest

    admin = validator_key(config)
    deployment = ledger.deploy(admin, admin.address, policy=network_digest(config))
    print(
        f"Deployed on {ledger_name(config)} (chain id {deployment.chain_id}): ClipRegistry {deployment.registry}, KnackToken {deployment.token}; admin and validator {admin.address}"
    )
    print("Validators must run this configuration's models and policy (`knack chain policy`); devices join with `knack device register`.")
    return 0


def _deployed_ledger(config):
    """The embedded chain deploys itself on first use, administered by the validator key (asked for only
    then); a real chain needs `knack chain deploy`."""
    return wiring.open_ledger(config, deployer=lambda: validator_key(config))


def cmd_submit(args) -> int:
    from storage.outbox.submitter import submit_due, sync_settlements

    config = _load(args)
    outbox = wiring.open_outbox(config)
    ledger = _deployed_ledger(config)
    key = device_key(config)
    failed = 0
    for result in submit_due(outbox, ledger, key):
        failed += bool(result.error)
        print(
            f"batch {result.batch_id}: {len(result.clip_ids)} clip(s) submitted in {result.tx_hash}"
            if not result.error
            else f"NOT SUBMITTED {len(result.clip_ids)} clip(s): {result.error}"
        )
    print(f"{sync_settlements(outbox, ledger)} clip(s) newly settled by the validator")
    return 1 if failed else 0


def verdict_lines(batch_id: int, verdicts) -> list[str]:
    accepted = sum(v.accepted for v in verdicts)
    lines = [f"batch {batch_id}: {accepted} accepted, {len(verdicts) - accepted} rejected"]
    lines += [f"  rejected {v.cid}: {v.reason.text}{' (' + v.detail + ')' if v.detail else ''}" for v in verdicts if not v.accepted]
    return lines


def cmd_validate(args) -> int:
    if args.watch:
        return _validate_service(args)
    config = _load(args)
    ledger = _deployed_ledger(config)
    validator = wiring.open_validator(config, ledger, wiring.open_store(config), validator_key(config))
    for batch_id, verdicts in validator.run_once().items():
        print("\n".join(verdict_lines(batch_id, verdicts)))
    return 0


def _validate_service(args) -> int:
    """`knack validate --watch`: nothing printed but log lines (JSON on stdout unless --log-format text); the key
    comes from KNACK_VALIDATOR_KEY or the validator keystore's password in the environment (a service has no
    terminal to ask at)."""
    import logging

    from knack.logs import LastProblem, event, install
    from knack.validate import ValidatorParts, ValidatorService

    if args.log_format == "json":
        problems = install(logging.DEBUG if args.verbose else logging.INFO)
    else:
        problems = LastProblem()
        logging.getLogger().addHandler(problems)
    log = logging.getLogger("knack.validate")
    config = _load(args)
    key = validator_key(config, lambda text: event(log, "key.created", "%s", text))
    parts = ValidatorParts(config, key)
    service = ValidatorService(
        parts.open,
        interval=args.interval,
        address=key.address,
        where=ledger_name(config),
        health_host=args.health_host,
        health_port=args.health_port,
        grace_s=args.grace,
        close=parts.close,
        problems=problems,
    )
    code = service.run()
    if not service.finished:
        # The grace period ran out mid-round: end now rather than let the interpreter tear down around a
        # model mid-inference. Nothing is settled until its transaction is mined; the next start settles it.
        logging.shutdown()
        os._exit(code)
    return code


def cmd_rewards(args) -> int:
    from storage.ledger.rewards import rewards_view

    config = _load(args)
    ledger = wiring.open_ledger(config)
    if ledger.deployment is None:
        raise ConfigError(
            f"nothing is deployed on {ledger_name(config)} in {config.data_path} yet: no rewards to show (run `knack demo`, or `knack chain deploy` for a real chain)"
        )
    address = wiring.contributor_address(config, args.address)
    if not args.address and not config.identity.contributor:  # this device: show the contributor it pays
        record = ledger.device(address)
        address = record.contributor if record is not None else address
    view = rewards_view(ledger, address)
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"Contributor {view['address']} on {ledger_name(config)}")
    print(f"  balance   {view['balance_tokens']} KNACK")
    print(f"  clips     {view['accepted']} accepted, {view['pending']} pending, {view['rejected']} rejected")
    for reason, count in view["rejected_reasons"].items():
        print(f"            {count} x {reason}")
    for device in view.get("devices", []):
        state = "BLOCKED" if device["blocked"] else device["status"]
        print(
            f"  device {device['device']}  {state}, {device['strikes']} strike(s): {device['accepted']} accepted, {device['rejected']} rejected,"
            f" {device['pending']} pending, +{device['reward_tokens']} KNACK"
        )
    for event in view["events"][-10:]:
        print(
            f"  block {event['block']:>6}  batch {event['batch']:>4}  {event['accepted']} accepted  {event['rejected']} rejected  +{event['reward_tokens']} KNACK"
        )
    return 0


def cmd_demo(args) -> int:
    from knack.demo import run_demo

    return run_demo(_load(args), data_dir=args.data_dir, clip_seconds=args.clip_seconds)
