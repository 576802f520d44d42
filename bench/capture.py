"""Capture benchmark: 640x480@30 fps from a video file plus a 1 kHz serial stream through a real pty.

Prints the real-time factor (stream seconds recorded per wall second), serial samples lost (by the
device's sequence counter, across every clip boundary), frames dropped, CPU use and peak RSS.

    .venv/bin/python bench/capture.py [--seconds 60] [--rate 1000] [--protocol csv]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.bundle import verify_bundle  # noqa: E402
from collector.config import from_mapping  # noqa: E402
from collector.identity import load_or_create  # noqa: E402
from collector.recorder import Recorder  # noqa: E402
from collector.sample import SAMPLE_VIDEO  # noqa: E402
from collector.simulator import IMU_BINARY_FORMAT, IMU_FIELDS, SerialSimulator, SimulatorConfig  # noqa: E402
from collector.sources import make_sources  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--protocol", choices=["csv", "jsonl", "kv", "binary"], default="csv")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="knack-bench-"))
    key, _ = load_or_create(work / "key.json", "bench", kdf="pbkdf2", iterations=1000)
    serial = {"name": "imu", "protocol": args.protocol, "seq_field": "seq", "device_time_field": "t_us", "nominal_rate": args.rate}
    if args.protocol == "csv":
        serial["csv_columns"] = list(IMU_FIELDS)
    if args.protocol == "binary":
        serial.update(binary_format=IMU_BINARY_FORMAT, binary_fields=list(IMU_FIELDS))
    written = []
    with SerialSimulator(SimulatorConfig(rate=args.rate, protocol=args.protocol)) as sim:
        time.sleep(0.5)  # the port is up and streaming before recording starts, as with a real sensor
        config = from_mapping(
            {
                "data_dir": str(work / "data"),
                "recorder": {"clip_seconds": args.clip_seconds},
                "camera": [{"name": "cam", "source": str(SAMPLE_VIDEO), "loop": True, "fps": 30.0}],
                "serial": [dict(serial, port=sim.port)],
            }
        ).validate()
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        recorder = Recorder(config, make_sources(config), key, on_clip=written.append).start()
        time.sleep(args.seconds)
        recorder.close()
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0

    manifests = [json.loads((c.path / "manifest.json").read_text()) for c in written]
    stream_s = sum(m["duration_s"] for m in manifests)
    seqs = []
    for c in sorted(written, key=lambda c: c.clip_id):
        table = pq.read_table(c.path / "sensors.parquet")
        channels = json.loads(table.schema.metadata[b"knack.channels"])["imu"]
        seqs += [int(v[channels.index("seq")]) for v in table.column("values").to_pylist()]
    lost = (seqs[-1] - seqs[0] + 1) - len(seqs) if seqs else 0
    duplicates = len(seqs) - len(set(seqs))
    frames = sum(m["streams"][0]["count"] for m in manifests)
    dropped = sum(m["streams"][0]["dropped"] + m["streams"][0]["late"] for m in manifests)
    serial_dropped = sum(m["streams"][1]["dropped"] for m in manifests)
    errors = sum(sum(m["streams"][1]["parse_errors"].values()) for m in manifests)
    verified = sum(verify_bundle(c.path).ok for c in written)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"capture benchmark: 640x480@30 fps file camera + {args.rate:g} Hz {args.protocol} serial over a pty, {args.seconds:g} s")
    print(f"  clips written (verified)     {len(written)} ({verified})")
    print(f"  stream seconds recorded      {stream_s:.2f} in {wall:.2f} s wall")
    print(
        f"  real-time factor             {stream_s / wall:.3f}   (stream s per wall s; the end waits {config.recorder.max_source_lag_s:g} s at most for late data)"
    )
    print(f"  frames recorded / expected   {frames} / {int(stream_s * 30)}   dropped or late: {dropped}")
    print(f"  serial samples recorded      {len(seqs)}   lost: {lost}   duplicated: {duplicates}   queue drops: {serial_dropped}   parse errors: {errors}")
    print(f"  CPU                          {cpu:.1f} s = {100 * cpu / wall:.0f}% of one core")
    print(f"  peak RSS                     {rss_mib:.0f} MiB")
    return 0 if lost == 0 and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
