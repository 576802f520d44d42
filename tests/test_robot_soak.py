"""bench/robot_soak.py for 20 s instead of 10 minutes: the harness itself works, and nothing leaks fast."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_soak_records_settles_and_stops_cleanly_without_leaking_descriptors():
    out = subprocess.run(
        [sys.executable, "bench/robot_soak.py", "--seconds", "20", "--every", "2", "--clip-seconds", "3", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["exit_code"] == 0 and result["clips_written"] >= 2
    assert result["samples_per_s"] > 300 and result["frames_per_s"] > 15
    # A port, file or socket opened per clip would show here already (a clip every 3 s).
    assert result["fds_end"] <= result["fds_warm"] + 8
    assert result["rss_peak_mb"] < 2048
