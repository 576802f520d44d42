"""The `knack` command line: argument parsing only. Each subcommand names the function that runs it as
"module:function" (knack.commands, and the app's and the service's own entry points in tui/ and robot/, the
way console scripts name theirs), imported once the arguments are read: `knack --help` loads no model, chain
or camera, and the layers below never import the command line back."""

from __future__ import annotations

import argparse
import importlib
import sys

from storage.outbox.states import STATES


def _setup_logging(verbose: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("knack: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535; 0: none)")
    return int(text)


class _Intermixed(argparse.ArgumentParser):
    """Positionals on both sides of options (`dataset build OUT --workers 2 CLIP…`): plain argparse takes the
    first run of positionals only and refuses the rest."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knack", description="Record, label and contribute recordings of skilled hands at work.")
    parser.add_argument("--config", help="path to knack.toml (default: $KNACK_CONFIG, then the user config directory)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole flow on the bundled sample recording and the sensor simulator")
    p.add_argument("--data-dir", help="where the demo writes (default: <data_dir>/demo)")
    p.add_argument("--clip-seconds", type=float, default=2.5)
    p.set_defaults(func="knack.commands:cmd_demo")

    p = sub.add_parser("tui", help="the operator's terminal app: record, clips, rewards, devices")
    p.add_argument("--demo", action="store_true", help="on the bundled sample recording and the sensor simulator, in <data_dir>/demo")
    p.add_argument("--data-dir", help="with --demo: where it writes (default: <data_dir>/demo)")
    p.add_argument("--clip-seconds", type=float, default=5.0, help="with --demo: clip length while recording (0: cut only on start/stop/split)")
    p.set_defaults(func="tui.command:cmd_tui")

    p = sub.add_parser("robot", help="run headless as a service: capture, label, upload and settle; JSON-line logs, /healthz and /metrics")
    p.set_defaults(func="robot.command:cmd_robot")

    p = sub.add_parser("record", help="record clips from the configured sources until Ctrl-C")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--clip-seconds", type=float, help="override recorder.clip_seconds")
    p.add_argument("--task", help='the task being done, signed into every clip (e.g. "solder a header onto a PCB"); overrides recorder.task')
    p.add_argument("--until-end", action="store_true", help="stop when every video-file camera has ended")
    p.add_argument("--no-label", action="store_true", help="do not label clips as they are written (label them later with `knack label`)")
    p.set_defaults(func="knack.commands:cmd_record")

    p = sub.add_parser("simulate", help="simulate hardware for testing without it")
    simsub = p.add_subparsers(dest="what", required=True)
    s = simsub.add_parser("serial", help="stream a 6-axis IMU glove on a pseudo-terminal")
    s.add_argument("--rate", type=float, default=200.0, help="samples per second (up to 10000)")
    s.add_argument("--protocol", choices=["csv", "jsonl", "kv", "binary"], default="csv")
    s.add_argument("--garbage", type=float, default=0.0, help="probability per sample of injected noise or a corrupt frame")
    s.add_argument("--replay", help="stream the values of this IMU CSV log instead of synthetic motion")
    s.add_argument("--link", help="also make this path a symlink to the port (a stable name, like a udev rule)")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    s.set_defaults(func="knack.commands:cmd_simulate")
    s = simsub.add_parser("joints", help="stream a robot arm's joint states (position, velocity, effort) on a pseudo-terminal")
    s.add_argument("--joints", type=int, default=6, help="how many joints (1 to 64)")
    s.add_argument("--rate", type=float, default=100.0, help="samples per second (up to 10000)")
    s.add_argument("--protocol", choices=["jsonl", "binary"], default="jsonl")
    s.add_argument("--garbage", type=float, default=0.0, help="probability per sample of injected noise or a corrupt frame")
    s.add_argument("--link", help="also make this path a symlink to the port (a stable name, like a udev rule)")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    s.set_defaults(func="knack.commands:cmd_simulate")

    p = sub.add_parser("label", help="label clips again: hands, faces blurred, quality, accept/reject (re-signs the manifest)")
    p.add_argument("clip_dir", nargs="+")
    p.add_argument(
        "--as-new",
        action="store_true",
        help="for a clip already pinned or on chain (never rewritten): label a copy under a new clip id, the old one its parent",
    )
    p.set_defaults(func="knack.commands:cmd_label")

    p = sub.add_parser("cid", help="print the IPFS CID of a file or directory without storing it (ipfs add -r -Q --only-hash --cid-version=1)")
    p.add_argument("path")
    p.set_defaults(func="knack.commands:cmd_cid")

    p = sub.add_parser("pin", help="pin every accepted clip that is due to the content store now")
    p.set_defaults(func="knack.commands:cmd_pin")

    p = sub.add_parser("status", help="clips by state in the outbox, the oldest pending one, and errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="knack.commands:cmd_status")

    p = sub.add_parser("retry", help="try failed or waiting uploads again now")
    p.add_argument("clip_id", nargs="*", help="clip ids (default: every pending clip)")
    p.set_defaults(func="knack.commands:cmd_retry")

    p = sub.add_parser("clips", help="every clip with its state, quality, reason, CID, transaction and reward")
    p.add_argument("clip_id", nargs="?", help="one clip in full: manifest, CID, transaction and reward")
    p.add_argument("--state", choices=STATES, help="only clips in this state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="knack.commands:cmd_clips")

    p = sub.add_parser("outbox", help="the outbox itself: `knack outbox rebuild` when it is damaged or lost")
    o = p.add_subparsers(dest="outbox_command", required=True, metavar="COMMAND")
    r = o.add_parser("rebuild", help="rebuild the outbox from the clips on disk, the content store and the chain (the old file is kept)")
    r.add_argument("--force", action="store_true", help="rebuild even an outbox that reads fine")
    r.set_defaults(func="knack.commands:cmd_outbox_rebuild")

    p = sub.add_parser("discard", help="delete clips not shared yet (recorded, labeled, accepted or rejected): files and outbox row")
    p.add_argument("clip_id", nargs="+")
    p.set_defaults(func="knack.commands:cmd_discard")

    p = sub.add_parser("export-car", help="write a clip as a CARv1 file that any IPFS node imports")
    p.add_argument("clip", help="a clip directory or clip id")
    p.add_argument("-o", "--output", help="file to write (default: <clip_id>.car)")
    p.set_defaults(func="knack.commands:cmd_export_car")

    p = sub.add_parser("chain", help="the chain: deploy the registry and token")
    chainsub = p.add_subparsers(dest="what", required=True)
    c = chainsub.add_parser("deploy", help="deploy ClipRegistry and KnackToken; addresses go into the data directory")
    c.set_defaults(func="knack.commands:cmd_chain_deploy")

    c = chainsub.add_parser("policy", help="the network's model and policy digest (validators must run it) beside this configuration's")
    c.add_argument("--set", action="store_true", help="make this configuration's digest the network's (admin key)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func="knack.network:cmd_chain_policy")

    p = sub.add_parser("device", help="this device on chain: register it to a contributor, show, revoke, clear strikes")
    devsub = p.add_subparsers(dest="what", required=True)
    keystore_help = "the contributor's keystore (default: $KNACK_CONTRIBUTOR_KEY, else contributor-key.json in the data directory)"
    d = devsub.add_parser("register", help="register this device's key to a contributor (both sign; the device relays)")
    d.add_argument("--contributor-keystore", help=keystore_help)
    d.set_defaults(func="knack.network:cmd_device_register")
    d = devsub.add_parser("show", help="a device's contributor, status and strikes")
    d.add_argument("device", nargs="?", help="a device address (default: this device)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func="knack.network:cmd_device_show")
    d = devsub.add_parser("revoke", help="revoke a device for good (the contributor's key)")
    d.add_argument("device", nargs="?", help="a device address (default: this device)")
    d.add_argument("--contributor-keystore", help=keystore_help)
    d.set_defaults(func="knack.network:cmd_device_revoke")
    d = devsub.add_parser("clear-strikes", help="unblock a device that collected strikes (the contributor's key)")
    d.add_argument("device", nargs="?", help="a device address (default: this device)")
    d.add_argument("--contributor-keystore", help=keystore_help)
    d.set_defaults(func="knack.network:cmd_device_clear")

    p = sub.add_parser("submit", help="submit pinned clips to the registry in batches, and read settlements back")
    p.set_defaults(func="knack.commands:cmd_submit")

    p = sub.add_parser("validate", help="check submitted clips by CID and settle their batches on chain (validator role)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="run as a service: a round every --interval until SIGTERM, JSON-line logs, /healthz and /metrics (as `knack robot`)",
    )
    p.add_argument("--interval", type=_positive, default=10.0, help="with --watch: seconds between the starts of two rounds (default 10)")
    p.add_argument("--health-host", default="127.0.0.1", help="with --watch: where /healthz and /metrics listen (default 127.0.0.1)")
    p.add_argument("--health-port", type=_port, default=9478, help="with --watch: their port (default 9478; 0: none)")
    p.add_argument("--log-format", choices=["json", "text"], default="json", help="with --watch: JSON lines on stdout (default) or text on stderr")
    p.add_argument("--grace", type=_positive, default=30.0, help="with --watch: seconds a round in flight may finish after SIGTERM (default 30)")
    p.set_defaults(func="knack.commands:cmd_validate")

    p = sub.add_parser("rewards", help="a contributor's token balance, accepted/pending/rejected clips and reward events")
    p.add_argument("address", nargs="?", help="an EVM address (default: this device's contributor)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="knack.commands:cmd_rewards")

    p = sub.add_parser("verify", help="check every file hash and the device signature of clip bundles")
    p.add_argument("clip_dir", nargs="+")
    p.set_defaults(func="knack.commands:cmd_verify")

    p = sub.add_parser("devices", help="list cameras and serial ports, to write knack.toml (stable names: knack udev)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="knack.commands:cmd_devices")

    p = sub.add_parser("udev", help="print udev rules giving USB cameras and serial ports stable names under /dev/knack/ (see udev/README.md)")
    p.add_argument(
        "path", nargs="*", help="device paths such as /dev/video0, /dev/ttyUSB0 or a /dev/serial/by-id link (default: every USB camera and serial port)"
    )
    p.add_argument("--name", help="with one path: the link name under /dev/knack/, e.g. wrist_cam (default: kind-vendor-product-serial)")
    p.set_defaults(func="knack.commands:cmd_udev")

    p = sub.add_parser("dataset", help="LeRobot v3.0 datasets from the clips paid on chain, verified end to end")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND", parser_class=_Intermixed)
    d = dsub.add_parser("build", help="write settled, accepted clips (or local clip directories) as a LeRobot v3.0 dataset in OUT")
    d.add_argument("out", help="a new directory for the dataset")
    d.add_argument("clip_dir", nargs="*", help="local clip directories instead of the chain's paid clips")
    d.add_argument("--contributor", help="only clips paid to this address")
    d.add_argument("--task", help="only clips of this task (as the operator named it)")
    d.add_argument("--since", help="only clips recorded at or after this UTC date or time (2026-12-01, 2026-12-01T08:00)")
    d.add_argument("--limit", type=int, help="at most this many clips, in settlement order")
    d.add_argument("--fps", type=int, help="the dataset's frame rate (default: the first clip's camera rate)")
    d.add_argument("--workers", type=int, default=0, help="worker processes on this machine (default: one per CPU)")
    d.add_argument("--ray", metavar="ADDRESS", help="run on this Ray cluster (pip install 'knack[ray]'; OUT on storage every node shares)")
    d.add_argument("--license", default="other", help="the dataset's licence for its card, an SPDX id such as cc-by-4.0 (default: other)")
    d.add_argument("--name", help="the dataset's title on its card")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func="knack.dataset.command:cmd_dataset_build")
    d = dsub.add_parser("verify", help="re-check every episode of a dataset against the chain: Merkle proof, CID, signature, files")
    d.add_argument("dataset")
    d.set_defaults(func="knack.dataset.command:cmd_dataset_verify")

    p = sub.add_parser("review", help="write a clip as a Rerun recording (.rrd): its video, sensors, hand and face boxes and verdict")
    p.add_argument("clip", help="a clip directory, a clip id, or a CID (fetched from the content store and verified)")
    p.add_argument("-o", "--output", help="file to write (default: <clip_id>.rrd in the current directory)")
    p.add_argument("--spawn", action="store_true", help="then open the Rerun viewer on it (when one is installed and a display is present)")
    p.add_argument("--no-boxes", action="store_true", help="leave out the labeler's per-frame hand and face boxes (no models are run)")
    p.set_defaults(func="knack.review:cmd_review")

    p = sub.add_parser("doctor", help="print the effective configuration and which real parts are reachable")
    p.set_defaults(func="knack.commands:cmd_doctor")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    module, _, function = args.func.partition(":")
    try:
        return getattr(importlib.import_module(module), function)(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `knack verify … | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if isinstance(exc, expected_errors()):
            print(f"knack: error: {exc}", file=sys.stderr)
            return 2
        raise


def expected_errors() -> tuple[type[Exception], ...]:
    """What a person can act on (a bad configuration, a wrong password, a model card that does not match, a
    chain that refuses): one line and exit 2, never a traceback. Imported only when something went wrong."""
    from collector.capture_process import CaptureFailed
    from collector.config import ConfigError
    from collector.identity import IdentityError
    from collector.labeling.cards import CardError
    from collector.recorder import RecorderBusy
    from collector.video import VideoError
    from knack.dataset.build import BuildError
    from storage.ledger.base import ChainError
    from storage.outbox.db import OutboxDamaged

    return (ConfigError, IdentityError, CardError, ChainError, OutboxDamaged, CaptureFailed, RecorderBusy, VideoError, BuildError)


if __name__ == "__main__":
    sys.exit(main())
