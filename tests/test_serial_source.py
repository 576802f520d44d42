"""The serial source on a real pseudo-terminal driven by the simulator: protocols, garbage, a vanishing port."""

import queue
import time

import pytest

from collector.clock import Clock
from collector.config import SerialConfig, from_mapping
from collector.sources.serial_port import SerialSource
from tests.conftest import imu_serial, wait_until


def serial_config(port, protocol="csv", **extra) -> SerialConfig:
    return from_mapping({"serial": [imu_serial(port, protocol, **extra)]}).serial[0]


def drain(source, n, timeout=10.0):
    items, deadline = [], time.monotonic() + timeout
    while len(items) < n and time.monotonic() < deadline:
        try:
            items.append(source.items.get(timeout=0.1))
        except queue.Empty:
            pass
    return items


def capture(port, protocol, n, **extra):
    """Reads n samples through a real SerialSource, then stops it; returns the source and the samples."""
    source = SerialSource(serial_config(port, protocol, **extra))
    source.start(Clock())
    try:
        return source, drain(source, n)
    finally:
        source.stop()


@pytest.mark.parametrize("protocol", ["csv", "jsonl", "kv", "binary"])
def test_every_protocol_delivers_every_sample_in_order(simulator, protocol):
    sim = simulator(rate=500, protocol=protocol)
    source, samples = capture(sim.port, protocol, 300)
    assert len(samples) == 300
    seqs = [s.values[source.channels.index("seq")] for s in samples]
    assert seqs == list(range(int(seqs[0]), int(seqs[0]) + 300))
    assert source.stats.lost == 0
    az = samples[10].values[source.channels.index("az")]
    assert 8 < az < 12  # gravity, decoded as a number, not as garbage


def test_host_capture_time_and_device_time_share_the_clock(simulator):
    # The simulated device stamps with this host's monotonic clock, so capture - device is the real latency.
    sim = simulator(rate=500, protocol="binary")
    source, samples = capture(sim.port, "binary", 200)
    latencies = sorted((s.capture_ns - s.device_ns) / 1e6 for s in samples)
    # Never before it was sampled; how soon after is speed (bench/capture.py), so only a same-clock bound here:
    # a busy host can hold the simulator's thread and have it deliver a backlog late, not lose it.
    assert latencies[0] >= 0 and latencies[len(latencies) // 2] < 1000, (latencies[0], latencies[-1])
    assert all(b.capture_ns >= a.capture_ns for a, b in zip(samples, samples[1:]))


@pytest.mark.parametrize("protocol", ["csv", "binary"])
def test_garbage_is_counted_and_skipped_never_stored(simulator, protocol):
    sim = simulator(rate=1000, protocol=protocol, garbage=0.05, seed=7)
    source, samples = capture(sim.port, protocol, 800)
    assert len(samples) == 800
    assert sum(source.stats.errors.values()) > 0
    seq_i, az_i = source.channels.index("seq"), source.channels.index("az")
    # Every stored value is one the device meant: sequence numbers are whole and increasing, gravity in range.
    seqs = [s.values[seq_i] for s in samples]
    assert all(b > a for a, b in zip(seqs, seqs[1:]))
    assert all(8 < s.values[az_i] < 12 for s in samples)
    if protocol == "binary":
        assert source.stats.errors["crc mismatch"] > 0
        # Each corrupt frame costs exactly one sample (the last may not be counted as lost yet).
        crc = source.stats.errors["crc mismatch"]
        assert crc - 1 <= source.stats.lost <= crc


def test_errors_are_reported_at_most_once_a_second(simulator, caplog):
    sim = simulator(rate=1000, protocol="csv", garbage=0.2)
    source = SerialSource(serial_config(sim.port, "csv"))
    with caplog.at_level("WARNING", logger="knack.capture"):
        source.start(Clock())
        time.sleep(2.2)
        source.stop()
    reports = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert 1 <= len(reports) <= 4  # ~400 bad records in 2.2 s, at most one line a second (+ the final flush)


def test_a_vanished_port_is_reopened_when_it_returns(simulator, tmp_path):
    link = tmp_path / "knack-imu"
    first = simulator(rate=500, protocol="jsonl", link=str(link))
    source = SerialSource(serial_config(str(link), "jsonl"))
    source.start(Clock())
    try:
        assert len(drain(source, 100)) == 100
        first.stop()  # unplugged: the pty closes and the stable name disappears
        assert wait_until(lambda: source.stats.state.startswith("waiting"), 5)
        gaps = source.take_gaps()
        assert gaps and gaps[0].end_ns is None and "disappeared" in gaps[0].reason
        while not source.items.empty():
            source.items.get_nowait()
        simulator(rate=500, protocol="jsonl", link=str(link))  # plugged back in, under the same name
        assert len(drain(source, 100)) == 100
        assert source.stats.state == "recording"
        closed = source.take_gaps()
        assert closed and closed[0].end_ns is not None and closed[0].end_ns > closed[0].start_ns
    finally:
        source.stop()


def test_a_port_that_is_not_there_is_waited_for_without_crashing(tmp_path, caplog):
    source = SerialSource(serial_config(str(tmp_path / "nothing"), "csv"))
    with caplog.at_level("WARNING", logger="knack.capture"):
        source.start(Clock())
        time.sleep(0.8)
        source.stop()
    assert source.ended() and source.stats.received == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "cannot open" in messages[0]


def test_a_slow_consumer_shows_up_as_counted_drops(simulator):
    sim = simulator(rate=2000, protocol="binary")
    source = SerialSource(serial_config(sim.port, "binary", queue_size=64))
    source.start(Clock())
    time.sleep(0.5)  # nobody drains the queue
    source.stop()
    assert source.items.qsize() == 64
    assert source.stats.dropped > 100


def test_the_measured_rate_follows_the_device(simulator):
    sim = simulator(rate=400, protocol="binary")
    source = SerialSource(serial_config(sim.port, "binary"))
    source.start(Clock())
    try:
        drain(source, 1000)
    finally:
        source.stop()
    assert 360 < source.stats.rate < 440


def test_a_simulator_held_up_by_a_busy_host_loses_nothing(simulator, monkeypatch):
    # A busy host (the labeler loading its models, say) can hold the simulator's thread for a moment; it then
    # owes a burst. The port takes it: only a port nobody reads may overflow the simulated transmit buffer.
    import types

    import collector.simulator as simulator_module

    jump = {"ns": 0}
    monkeypatch.setattr(simulator_module, "time", types.SimpleNamespace(monotonic_ns=lambda: time.monotonic_ns() + jump["ns"]))
    sim = simulator(rate=500, protocol="csv")
    source = SerialSource(serial_config(sim.port, "csv"))
    source.start(Clock())
    try:
        samples = drain(source, 50)
        jump["ns"] = 600_000_000  # 0.6 s that the thread "slept through": 300 samples, about 25 KB at once
        samples += drain(source, 500)
    finally:
        source.stop()
    seqs = [s.values[source.channels.index("seq")] for s in samples]
    assert len(seqs) == 550 and seqs == list(range(int(seqs[0]), int(seqs[0]) + 550))
    assert sim.overrun == 0 and source.stats.lost == 0


@pytest.mark.parametrize("protocol", ["csv", "jsonl", "kv", "binary"])
def test_the_table_knack_simulate_prints_pastes_into_knack_toml_and_reads_every_sample(tmp_path, protocol):
    """`knack simulate serial` prints a [[serial]] table; pasted as is into knack.toml, it reads the simulator
    with no parse error from the first line on (a CSV device sends its header only at boot: csv_columns)."""
    import os
    import subprocess
    import sys

    from collector.config import load
    from collector.sources import make_sources

    proc = subprocess.Popen(
        [sys.executable, "-m", "knack", "simulate", "serial", "--protocol", protocol, "--duration", "20"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        lines = []
        while not (lines and lines[-1] == "" and any(line.startswith("[[serial]]") for line in lines)):
            line = proc.stdout.readline()
            assert line, "knack simulate ended before printing its table"
            lines.append(line.rstrip("\n"))
        table = "\n".join(lines[lines.index("[[serial]]") :])
        (tmp_path / "knack.toml").write_text(table)
        config = load(tmp_path / "knack.toml", env={})
        [source] = make_sources(config)
        source.start(Clock())
        try:
            samples = drain(source, 100)
        finally:
            source.stop()
    finally:
        proc.terminate()
        proc.wait(10)
    errors = dict(source.stats.errors)
    assert errors.pop("partial line", 0) <= 1  # the port opened in the middle of a line: that line is cut
    assert len(samples) == 100 and not errors, errors
    assert config.serial[0].protocol.value == protocol
