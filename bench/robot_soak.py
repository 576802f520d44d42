"""Soak: `knack robot` left running, as under systemd, watched through its own /metrics.

The service records the bundled sample video as a 30 fps camera (looping), a 1 kHz binary IMU stream and a
500 Hz joint-state stream, each over a real pty, labels every clip, pins it in the embedded store and settles it on the embedded chain
(the service is its own validator). Every few seconds the bench scrapes /metrics; at the end it sends
SIGTERM and checks the clean exit. It prints:

  RSS       resident memory of the service and its capture process together, after warm-up (the first clip labeled), at the end, the growth, and the median
            of each third of the run: a leak shows as medians that keep rising;
  fds       open file descriptors at warm-up and at the end (a leak of ports, files or sockets);
  clips     clips written, and per minute; how far they got (settled, rejected, waiting);
  streams   frames and samples per second, dropped, lost, late.

    .venv/bin/python bench/robot_soak.py [--seconds 600] [--every 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from collector.sample import SAMPLE_VIDEO  # noqa: E402
from collector.simulator import IMU_BINARY_FORMAT, IMU_FIELDS, SerialSimulator, SimulatorConfig, joint_names  # noqa: E402

JOINTS = joint_names(6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def tree_rss_bytes(pid: int) -> float:
    """Resident memory of the service and its children (the capture process): /metrics sees only its own."""
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total_kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue  # gone meanwhile
    return total_kb * 1024.0


def total(m: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))


def config_text(data: Path, port: int, joint_port: str, imu_port: str, clip_seconds: float) -> str:
    return f"""data_dir = "{data}"
[recorder]
clip_seconds = {clip_seconds}
[robot]
health_port = {port}
act_as_validator = true
chain_every_s = 5.0
status_every_s = 30.0
min_free_mb = 256.0
[[camera]]
name = "cam"
source = "{SAMPLE_VIDEO}"
loop = true
[[serial]]
name = "imu"
port = "{imu_port}"
protocol = "binary"
binary_format = "{IMU_BINARY_FORMAT}"
binary_fields = {json.dumps(list(IMU_FIELDS))}
device_time_field = "t_us"
seq_field = "seq"
nominal_rate = 1000.0
[[joints]]
name = "arm"
port = "{joint_port}"
protocol = "jsonl"
joints = {json.dumps(list(JOINTS))}
nominal_rate = 500.0
[policy]
# As `knack tui --demo`: half of the looping sample is a cross-fade and a photo with lines drawn over the
# hands, which the default thresholds rightly reject; these let most clips go all the way to the chain.
min_hand_fraction = 0.2
max_edge_blur_px = 4.0
"""


def soak(seconds: float, every: float, clip_seconds: float = 10.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="knack-soak-") as tmp:
        tmp = Path(tmp)
        sim = SerialSimulator(SimulatorConfig(rate=500.0, protocol="jsonl", stream="joints", joints=len(JOINTS))).start()
        imu = SerialSimulator(SimulatorConfig(rate=1000.0, protocol="binary")).start()
        port = free_port()
        config = tmp / "knack.toml"
        config.write_text(config_text(tmp / "data", port, sim.port, imu.port, clip_seconds))
        env = dict(os.environ, HOME=str(tmp), KNACK_DEVICE_PASSWORD="soak")
        env.pop("KNACK_DATA_DIR", None)
        log = open(tmp / "robot.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "knack", "--config", str(config), "robot"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        series = []  # (seconds since start, metrics)
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                time.sleep(min(every, max(0.0, seconds - (time.monotonic() - t0))))
                if proc.poll() is not None:
                    break
                try:
                    m = scrape(port)
                except OSError:
                    continue  # not listening yet
                m[("knack_bench_tree_rss_bytes", ())] = tree_rss_bytes(proc.pid)
                series.append((time.monotonic() - t0, m))
                print(
                    f"  {series[-1][0]:6.0f} s  RSS {total(m, 'knack_bench_tree_rss_bytes') / 2**20:7.1f} MB  fds {total(m, 'process_open_fds'):4.0f}"
                    f"  clips {total(m, 'knack_clip_events_total', event='written'):4.0f} written, {total(m, 'knack_clips', state='settled'):4.0f} settled",
                    flush=True,
                )
            wall = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
            t_stop = time.monotonic()
            code = proc.wait(timeout=120)
            stop_s = time.monotonic() - t_stop
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
            sim.stop()
            imu.stop()
        if not series:
            raise SystemExit("knack robot never answered on /metrics:\n" + (tmp / "robot.log").read_text()[-3000:])
        result = summarize(series, wall, code, stop_s)
        reasons = Counter()
        for line in (tmp / "robot.log").read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == "clip.labeled" and not entry.get("accepted"):
                reasons.update(r.strip().split(":")[0] for r in entry["msg"].split(" rejected: ", 1)[-1].split(";"))
        result["rejected_because"] = dict(reasons)
        return result


def rate(series: list, start: int, name: str) -> float:
    (t0, m0), (t1, m1) = series[start], series[-1]
    return round((total(m1, name) - total(m0, name)) / (t1 - t0), 1) if t1 > t0 else 0.0


def summarize(series: list, wall: float, code: int, stop_s: float) -> dict:
    rss = [(t, total(m, "knack_bench_tree_rss_bytes") / 2**20) for t, m in series]
    fds = [total(m, "process_open_fds") for _, m in series]
    # Warm-up: the models load and the first clip is labeled; memory after that is the baseline.
    warm = next(
        (
            i
            for i, (_, m) in enumerate(series)
            if total(m, "knack_clip_events_total", event="accepted") + total(m, "knack_clip_events_total", event="rejected") >= 1
        ),
        0,
    )
    # RSS swings by tens of MB between a clip being labeled and the pause before the next, so the trend is
    # read from the median of each third of the run after warm-up, not from single readings.
    after = [v for _, v in rss[warm:]]
    third = max(1, len(after) // 3)
    thirds = [statistics.median(after[:third]), statistics.median(after[third : 2 * third] or after), statistics.median(after[2 * third :] or after)]
    last = series[-1][1]
    return {
        "seconds": round(wall, 1),
        "rss_warm_mb": round(rss[warm][1], 1),
        "rss_end_mb": round(rss[-1][1], 1),
        "rss_peak_mb": round(max(v for _, v in rss), 1),
        "rss_growth_mb": round(rss[-1][1] - rss[warm][1], 1),
        "rss_median_by_third_mb": [round(f, 1) for f in thirds],
        "fds_warm": int(fds[warm]),
        "fds_end": int(fds[-1]),
        "fds_max": int(max(fds)),
        "clips_written": int(total(last, "knack_clip_events_total", event="written")),
        "clips_per_minute": round(total(last, "knack_clip_events_total", event="written") / wall * 60, 2),
        "clips_by_state": {dict(ls)["state"]: int(v) for (n, ls), v in last.items() if n == "knack_clips" and v},
        # Over the scrapes after warm-up, so start-up (loading the models) does not count against capture.
        "frames_per_s": rate(series, warm, "knack_frames_total"),
        "samples_per_s": rate(series, warm, "knack_samples_total"),
        "dropped": int(total(last, "knack_dropped_total")),
        "lost_samples": int(total(last, "knack_lost_samples_total")),
        "late_frames": int(total(last, "knack_late_frames_total")),
        "exit_code": code,
        "stop_seconds": round(stop_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between scrapes of /metrics")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object at the end")
    args = parser.parse_args()
    print(
        f"knack robot soak: {args.seconds:g} s, 30 fps camera (sample video, looping) + 1 kHz binary IMU + 500 Hz joint states over ptys, clips of {args.clip_seconds:g} s"
    )
    result = soak(args.seconds, args.every, args.clip_seconds)
    if args.json:
        print(json.dumps(result))
        return 0 if result["exit_code"] == 0 else 1
    print(
        f"RSS      {result['rss_warm_mb']} MB after warm-up -> {result['rss_end_mb']} MB at the end (growth {result['rss_growth_mb']:+} MB, peak {result['rss_peak_mb']} MB);"
        f" median by third of the run {' -> '.join(str(f) for f in result['rss_median_by_third_mb'])} MB"
    )
    print(f"fds      {result['fds_warm']} after warm-up -> {result['fds_end']} at the end (max {result['fds_max']})")
    print(
        f"clips    {result['clips_written']} written, {result['clips_per_minute']} per minute; outbox {result['clips_by_state']}; rejected because {result['rejected_because']}"
    )
    print(
        f"streams  {result['frames_per_s']} frames/s, {result['samples_per_s']} samples/s; dropped {result['dropped']}, lost {result['lost_samples']}, late {result['late_frames']}"
    )
    print(f"stop     SIGTERM -> exit {result['exit_code']} in {result['stop_seconds']} s")
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
