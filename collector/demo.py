"""`knack demo`: the flow so far on embedded defaults — the bundled sample video as camera, the simulator as serial port."""
from __future__ import annotations

import dataclasses
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


def run_demo(base: Config, data_dir: str | None = None, clip_seconds: float = 2.5) -> int:
    from collector.cli import device_key, run_recording

    target = Path(data_dir) if data_dir else base.data_path / "demo"
    print("Knack demo: bundled sample recording (real hands at work) + simulated IMU glove on a pseudo-terminal")
    # Unlock the key first: a sensor streaming while someone types a password would only fill buffers.
    key = device_key(dataclasses.replace(base, data_dir=str(target)))
    with SerialSimulator(SimulatorConfig(rate=200.0, protocol="csv", replay=str(SAMPLE_IMU))) as sim:
        config = demo_config(base, target, sim.port, clip_seconds)
        print(f"1. capture  camera={SAMPLE_VIDEO.name}  serial={sim.port}  -> {config.clips_path}")
        recorder, written = run_recording(config, key, duration=30.0, until_sources_end=True, quiet=True)
    print(f"   {recorder.totals.frames} frames and {recorder.totals.samples} sensor samples on one clock, cut into {len(written)} clip(s)")
    print("2. verify   every file hash and the device signature")
    failed = 0
    for clip in written:
        result = verify_bundle(clip.path)
        failed += not result.ok
        print(f"   {'OK    ' if result.ok else 'FAILED'} {clip.clip_id}  {clip.frames:4d} frames {clip.samples:5d} samples" + ("" if result.ok else "  " + "; ".join(result.problems)))
    if not written:
        print("   no clip was written: see the messages above")
        return 1
    print(f"\nDone: {len(written) - failed} verified clip bundle(s) under {config.clips_path}")
    print(f"Check one yourself:  knack verify {written[0].path}")
    return 1 if failed else 0
