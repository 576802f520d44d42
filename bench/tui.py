"""What `knack tui` costs capture: the same recording with the app running and headless, in one run.

Each round records the bundled sample video as camera and a 500 Hz IMU glove over a real pty, once with
no app (as `knack record`) and once with the Textual app open on its Record screen (live preview,
sparklines and cards at their normal refresh rate, rendered at 160x48 by Textual's headless driver).
Labeling is off in both, so the difference is the app's alone. Two figures per mode:

  paced     the camera plays at 30 fps as a live camera would: real-time factor = frames captured
            / (30 x wall seconds), and frames late (the capture thread woke after a frame slot passed);
  flat-out  the camera is read as fast as decoding and writing allow: frames per second, the capture
            headroom the app eats into.

    .venv/bin/python bench/tui.py [--seconds 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.config import from_mapping  # noqa: E402
from collector.identity import load_or_create  # noqa: E402
from collector.sample import SAMPLE_VIDEO  # noqa: E402
from collector.simulator import IMU_FIELDS, SerialSimulator, SimulatorConfig  # noqa: E402
from knack.session import DeviceSession  # noqa: E402
from tui.app import CHAIN_EVERY_S, KnackApp  # noqa: E402


@dataclasses.dataclass
class Result:
    frames: int
    late: int
    samples: int
    wall: float


def record(config, key, seconds: float, with_app: bool) -> Result:
    config = dataclasses.replace(config, labeler=dataclasses.replace(config.labeler, label_on_record=False))
    session = DeviceSession(config, key, chain_every_s=CHAIN_EVERY_S)
    session.start(record=True)
    wall0 = time.monotonic()
    if with_app:

        async def drive() -> None:
            app = KnackApp(session)
            async with app.run_test(size=(160, 48)) as pilot:
                await pilot.pause(seconds)

        asyncio.run(drive())
    else:
        time.sleep(seconds)
    camera = next(s for s in session.recorder.sources if s.kind == "camera")
    frames, late, samples = camera.stats.received, camera.stats.late, session.recorder.totals.samples
    wall = time.monotonic() - wall0
    session.close()
    return Result(frames, late, samples, wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="knack-bench-tui-"))
    key, _ = load_or_create(work / "key.json", "bench", kdf="pbkdf2", iterations=1000)
    results: dict[tuple[str, bool], list[Result]] = {}
    with SerialSimulator(SimulatorConfig(rate=500.0, protocol="csv")) as sim:
        time.sleep(0.5)
        for round_ in range(args.rounds):
            for paced in (True, False):
                for with_app in (False, True):  # alternated, so drift on the machine hits both alike
                    config = from_mapping(
                        {
                            "data_dir": str(work / f"data-{round_}-{paced}-{with_app}"),
                            "recorder": {"clip_seconds": 10.0},
                            "camera": [{"name": "cam", "source": str(SAMPLE_VIDEO), "loop": True, "fps": 30.0, "realtime": paced}],
                            "serial": [
                                {
                                    "name": "imu",
                                    "port": sim.port,
                                    "protocol": "csv",
                                    "csv_columns": list(IMU_FIELDS),
                                    "seq_field": "seq",
                                    "device_time_field": "t_us",
                                    "nominal_rate": 500.0,
                                }
                            ],
                        }
                    ).validate()
                    results.setdefault(("paced" if paced else "flat-out", with_app), []).append(record(config, key, args.seconds, with_app))

    print(f"knack tui cost: sample video + 500 Hz serial, {args.rounds} round(s) of {args.seconds:g} s per mode, labeling off")
    for mode in ("paced", "flat-out"):
        figures = {}
        for with_app in (False, True):
            runs = results[(mode, with_app)]
            fps = statistics.median(r.frames / r.wall for r in runs)
            late = sum(r.late for r in runs) / max(1, sum(r.frames for r in runs))
            sps = statistics.median(r.samples / r.wall for r in runs)
            figures[with_app] = fps
            label = "with the app" if with_app else "headless    "
            extra = f"real-time factor {fps / 30:.3f}   late {late:.2%}" if mode == "paced" else f"{fps:.1f} frames/s"
            print(f"  {mode:<9} {label}  {fps:6.1f} frames/s  {sps:6.0f} samples/s   {extra}")
        target = "; target at most 10%" if mode == "paced" else "; of the spare capacity, not of real time"
        print(f"  {mode:<9} app / headless = {figures[True] / figures[False]:.3f}   (cost {1 - figures[True] / figures[False]:+.1%}{target})")
    print("  (flat-out starves the in-process sensor simulator too: its samples/s there say nothing of a real port)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
