"""The robot joint-state stream: the decoder, its config, a pty robot through the real serial path, a replayed
recording, and joint rows in sensors.parquet on the same clock as the video."""

import json
import math
import random

import pyarrow.parquet as pq
import pytest

from collector.clock import Clock
from collector.config import ConfigError, JointStateConfig, SerialProtocol, from_mapping, to_toml
from collector.labeling.quality import stream_quality
from collector.recorder import Recorder
from collector.simulator import encode_joints, joint_names, joint_state, write_joint_recording
from collector.sources import make_sources
from collector.sources.joints import JointFileSource, JointSerialSource, serial_config
from collector.sources.protocols import JointStateDecoder
from collector.sources.serial_port import make_decoder
from tests.conftest import wait_until, write_video
from tests.test_serial_source import drain

ARM = ("shoulder", "elbow", "wrist")


def joints_config(**values) -> JointStateConfig:
    return from_mapping({"joints": [values]}).validate().joints[0]


def line(**record) -> bytes:
    return (json.dumps(record) + "\n").encode()


def message(seq=0, names=ARM, position=(0.1, 0.2, 0.3), velocity=(1.0, 2.0, 3.0), effort=(-1.0, -2.0, -3.0), **extra) -> bytes:
    record = {"t_us": 1000 * seq, "seq": seq, "position": list(position), "velocity": list(velocity), "effort": list(effort), **extra}
    if names is not None:
        record["name"] = list(names)
    return line(**record)


def fresh(decoder):
    # The first line after opening may be cut; start every test from a clean line boundary.
    decoder.feed(b"\n")
    return decoder


# --- the decoder --------------------------------------------------------------------------------


def test_joint_states_are_stored_as_seq_then_joint_fields_field_major():
    d = fresh(JointStateDecoder(ARM, ("position", "velocity", "effort")))
    assert d.channels == (
        "seq",
        "shoulder.position",
        "elbow.position",
        "wrist.position",
        "shoulder.velocity",
        "elbow.velocity",
        "wrist.velocity",
        "shoulder.effort",
        "elbow.effort",
        "wrist.effort",
    )
    r = d.feed(message(7))
    assert not r.errors
    [reading] = r.readings
    assert reading.device_time == 7000
    assert reading.values == (7.0, 0.1, 0.2, 0.3, 1.0, 2.0, 3.0, -1.0, -2.0, -3.0)


def test_values_are_taken_by_name_so_a_robot_may_reorder_or_add_joints():
    d = fresh(JointStateDecoder(ARM, ("position",)))
    r = d.feed(message(names=("gripper", "wrist", "shoulder", "elbow"), position=(9.0, 3.0, 1.0, 2.0), velocity=(0, 0, 0, 0), effort=(0, 0, 0, 0)))
    assert [x.values for x in r.readings] == [(0.0, 1.0, 2.0, 3.0)]


def test_without_names_arrays_hold_exactly_the_configured_joints_in_order():
    d = fresh(JointStateDecoder(ARM, ("position",)))
    r = d.feed(message(names=None) + message(names=None, position=(0.1, 0.2, 0.3, 0.4)) + message(names=None, position=(0.1, 0.2)))
    assert [x.values for x in r.readings] == [(0.0, 0.1, 0.2, 0.3)]
    assert r.errors == {"wrong position length": 2}


def test_a_missing_joint_is_a_counted_error_not_a_wrong_value():
    d = fresh(JointStateDecoder(ARM, ("position", "velocity", "effort")))
    r = d.feed(message(names=("shoulder", "elbow", "hand")) + message(names=("shoulder", "elbow", "elbow")))
    assert r.readings == []
    assert r.errors == {"missing joint wrist": 1, "duplicate joint name": 1}


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"position": [0.1, float("nan"), 0.3]}, "not a number"),
        ({"velocity": [1.0, float("inf"), 3.0]}, "not a number"),
        ({"effort": [1.0, "2", 3.0]}, "not a number"),
        ({"effort": [1.0, True, 3.0]}, "not a number"),
        ({"effort": None}, "missing effort"),
        ({"velocity": 1.5}, "missing velocity"),
        ({"position": [0.1, 0.2]}, "wrong position length"),
        ({"name": "shoulder"}, "name not a list of strings"),
        ({"seq": "seven"}, "seq not a number"),
        ({"t_us": None}, "t_us not a number"),
    ],
)
def test_bad_arrays_and_values_are_counted_with_their_reason(bad, reason):
    d = fresh(JointStateDecoder(ARM, ("position", "velocity", "effort")))
    record = json.loads(message(3))
    record.update(bad)
    r = d.feed(json.dumps(record).encode() + b"\n" + message(4))
    assert [x.values[0] for x in r.readings] == [4.0]
    assert r.errors == {reason: 1}


def test_missing_device_time_or_sequence_is_counted():
    d = fresh(JointStateDecoder(ARM, ("position",)))
    r = d.feed(line(seq=1, position=[1, 2, 3]) + line(t_us=5, position=[1, 2, 3]) + line(t_us=6, seq=2, position=[1, 2, 3]))
    assert [x.values for x in r.readings] == [(2.0, 1.0, 2.0, 3.0)]
    assert r.errors == {"missing t_us": 1, "missing seq": 1}


def test_only_the_configured_fields_are_required():
    d = fresh(JointStateDecoder(ARM, ("position",), device_time_field="", seq_field=""))
    r = d.feed(line(position=[1, 2, 3]))
    assert d.channels == ("shoulder.position", "elbow.position", "wrist.position")
    assert [(x.values, x.device_time) for x in r.readings] == [((1.0, 2.0, 3.0), None)]


def test_garbage_and_a_partial_first_line_store_nothing():
    d = JointStateDecoder(ARM, ("position", "velocity", "effort"))
    whole = message(1) + message(2)
    r = d.feed(whole[9:])  # opened in the middle of the first message
    assert r.errors == {"partial line": 1} and [x.values[0] for x in r.readings] == [2.0]
    r = d.feed(b"\xff\xfe\x00junk\n" + b'{"seq": 3, "position": [\n' + b"[1, 2]\n" + message(4))
    assert [x.values[0] for x in r.readings] == [4.0]
    assert r.errors == {"garbage bytes": 1, "bad json": 1, "json not an object": 1}


def test_messages_split_across_reads_are_joined():
    d = fresh(JointStateDecoder(ARM, ("position", "velocity", "effort")))
    data = b"".join(message(i) for i in range(5))
    readings = []
    for i in range(0, len(data), 11):
        readings += d.feed(data[i : i + 11]).readings
    assert [x.values[0] for x in readings] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_binary_joint_frames_are_field_major_float32_after_time_and_sequence():
    names = joint_names(6)
    config = joints_config(port="/dev/ttyUSB0", protocol="binary", joints=list(names))
    decoder = make_decoder(serial_config(config))
    state = joint_state(0.25, 6, random.Random(1))
    r = decoder.feed(encode_joints("binary", 123456, 9, names, state))
    [reading] = r.readings
    assert decoder.channels[:3] == ("seq", "shoulder_pan.position", "shoulder_lift.position")
    assert reading.device_time == 123456 and reading.values[0] == 9.0
    assert reading.values[1:] == pytest.approx([*state[0], *state[1], *state[2]], rel=1e-6, abs=1e-6)


# --- configuration ------------------------------------------------------------------------------


def test_a_joints_table_loads_with_its_defaults_and_prints_back_as_toml(tmp_path):
    config = from_mapping({"joints": [{"port": "/dev/knack/arm", "joints": list(ARM)}]}).validate()
    arm = config.joints[0]
    assert arm.name == "joints" and arm.protocol is SerialProtocol.JSONL and arm.fields == ("position", "velocity", "effort")
    assert (arm.device_time_field, arm.seq_field, arm.realtime, arm.loop) == ("t_us", "seq", True, False)
    path = tmp_path / "knack.toml"
    path.write_text(to_toml(config))
    from collector.config import load

    assert load(path, env={}).joints == config.joints


@pytest.mark.parametrize(
    "table, message",
    [
        ({"joints": ["a"]}, "joints[0].port/file = ('', '') is not valid: expected exactly one of port"),
        ({"port": "/dev/ttyACM0", "file": "arm.jsonl", "joints": ["a"]}, "joints[0].port/file = ('/dev/ttyACM0', 'arm.jsonl') is not valid"),
        (
            {"port": "/dev/ttyACM0", "protocol": "csv", "joints": ["a"]},
            "joints[0].protocol = 'csv' is not valid: expected 'jsonl' or 'binary' for a joint-state stream",
        ),
        (
            {"port": "/dev/ttyACM0", "protocol": "nmea", "joints": ["a"]},
            "joints[0].protocol = 'nmea' is not valid: expected one of 'csv', 'jsonl', 'kv', 'binary'",
        ),
        ({"file": "arm.bin", "protocol": "binary", "joints": ["a"]}, "joints[0].protocol = 'binary' is not valid: expected 'jsonl' for a recording in a file"),
        ({"port": "/dev/ttyACM0"}, "joints[0].joints = () is not valid: expected a non-empty list of distinct joint names"),
        ({"port": "/dev/ttyACM0", "joints": ["a", "a"]}, "joints[0].joints = ('a', 'a') is not valid"),
        ({"port": "/dev/ttyACM0", "joints": "a"}, "joints[0].joints = 'a' is not valid: expected a list of strings"),
        (
            {"port": "/dev/ttyACM0", "joints": ["a"], "fields": ["torque"]},
            "joints[0].fields = ('torque',) is not valid: expected some of 'position', 'velocity', 'effort', in that order",
        ),
        ({"port": "/dev/ttyACM0", "joints": ["a"], "fields": ["effort", "position"]}, "joints[0].fields = ('effort', 'position') is not valid"),
        ({"port": "/dev/ttyACM0", "joints": ["a"], "fields": []}, "joints[0].fields = () is not valid"),
        (
            {"port": "/dev/ttyACM0", "protocol": "binary", "joints": ["a"], "seq_field": ""},
            "joints[0].seq_field = '' is not valid: expected a name for the frame's sequence counter",
        ),
        (
            {"file": "arm.jsonl", "joints": ["a"], "device_time_field": ""},
            "joints[0].nominal_rate = 0.0 is not valid: expected samples per second to pace a recording",
        ),
        ({"port": "/dev/ttyACM0", "joints": ["a"], "baudrate": 0}, "joints[0].baudrate = 0 is not valid"),
        ({"port": "/dev/ttyACM0", "joints": ["a"], "torque": 1}, "joints[0].torque is not a known setting"),
    ],
)
def test_joint_config_errors_name_the_key_the_value_and_what_is_expected(table, message):
    with pytest.raises(ConfigError) as info:
        from_mapping({"joints": [table]}).validate()
    assert message in str(info.value)


def test_stream_names_are_unique_across_cameras_serial_and_joints():
    with pytest.raises(ConfigError, match=r"joints\[0\].name = 'imu' is not valid: expected a name no other stream uses"):
        from_mapping({"serial": [{"name": "imu"}], "joints": [{"name": "imu", "port": "/dev/ttyACM0", "joints": ["a"]}]}).validate()


# --- a robot on a pty, through the real serial path ---------------------------------------------


@pytest.mark.parametrize("protocol", ["jsonl", "binary"])
def test_a_simulated_robot_delivers_every_joint_state_in_order(simulator, protocol):
    sim = simulator(stream="joints", joints=6, rate=250, protocol=protocol)
    config = from_mapping(
        {"joints": [{"name": "arm", "port": sim.port, "protocol": protocol, "joints": list(sim.joint_names), "nominal_rate": 250.0}]}
    ).validate()
    [source] = make_sources(config)
    assert isinstance(source, JointSerialSource) and source.kind == "joints"
    source.start(Clock())
    try:
        samples = drain(source, 250)
    finally:
        source.stop()
    assert len(samples) == 250 and source.stats.lost == 0
    assert set(source.stats.errors) <= {"partial line", "partial frame"}  # only the cut first message of a port opened mid-stream
    assert source.channels[0] == "seq" and source.channels[1:7] == tuple(f"{j}.position" for j in sim.joint_names)
    assert source.channels[-1] == "wrist_3.effort" and len(source.channels) == 1 + 6 * 3
    seqs = [int(s.values[0]) for s in samples]
    assert seqs == list(range(seqs[0], seqs[0] + 250))
    for s in samples[::50]:
        # Every stored value is the one the robot meant (float32 on the binary wire).
        positions, velocities, _ = joint_state(s.values[0] / 250, 6, random.Random(0))
        assert s.values[1:13] == pytest.approx(positions + velocities, abs=1e-5)
    # The simulator stamps with this host's clock: arrival is never before sampling, and on time it is within
    # milliseconds (a busy host or what the pty buffered before the port opened makes others later).
    latencies = sorted((s.capture_ns - s.device_ns) / 1e6 for s in samples)
    assert latencies[0] >= 0 and latencies[0] < 50
    info = source.describe()
    assert info["kind"] == "joints" and info["source"] == sim.port and info["joints"] == list(sim.joint_names)


# --- a recording in a file ----------------------------------------------------------------------


def play(tmp_path, wait_s=5.0, joints=3, seconds=0.5, rate=100.0, **extra):
    path = write_joint_recording(tmp_path / "arm.jsonl", joints=joints, seconds=seconds, rate=rate, start_us=5_000_000)
    config = from_mapping({"joints": [{"name": "arm", "file": str(path), "joints": list(joint_names(joints)), **extra}]}).validate()
    [source] = make_sources(config)
    assert isinstance(source, JointFileSource)
    source.start(Clock())
    wait_until(source.ended, wait_s)
    source.stop()
    return source, drain(source, 10**6, timeout=0.2)


def test_a_recording_plays_at_its_recorded_pace_then_ends(tmp_path):
    source, samples = play(tmp_path)
    assert source.ended() and source.stats.state == "ended"
    assert len(samples) == 50 and source.stats.lost == 0 and not source.stats.errors
    assert [int(s.values[0]) for s in samples] == list(range(50))
    assert [s.device_ns for s in samples[:2]] == [5_000_000_000, 5_010_000_000]  # recorded device time, kept
    # Never earlier than recorded (a busy host may make samples late, and they then catch up).
    assert all(s.capture_ns - samples[0].capture_ns >= s.device_ns - samples[0].device_ns - 1_000_000 for s in samples)
    span = (samples[-1].capture_ns - samples[0].capture_ns) / 1e9
    assert 0.49 <= span < 1.0, span
    info = source.describe()
    assert (info["kind"], info["source_kind"], info["channels"]) == ("joints", "file", list(source.channels))


def test_an_unpaced_recording_is_read_as_fast_as_it_goes(tmp_path):
    source, samples = play(tmp_path, seconds=2.0, realtime=False)
    assert len(samples) == 200 and source.stats.state == "ended"
    assert (samples[-1].capture_ns - samples[0].capture_ns) / 1e9 < 0.5


def test_a_looping_recording_keeps_its_rhythm_across_the_loop(tmp_path):
    path = write_joint_recording(tmp_path / "arm.jsonl", joints=2, seconds=0.2, rate=100.0)
    config = from_mapping({"joints": [{"name": "arm", "file": str(path), "joints": list(joint_names(2)), "loop": True}]}).validate()
    [source] = make_sources(config)
    source.start(Clock())
    samples = drain(source, 60, timeout=3)
    source.stop()
    assert len(samples) == 60 and source.stats.state == "stopped"  # stopped by us, never ended by the file
    assert [int(s.values[0]) for s in samples] == [i % 20 for i in range(60)]
    # 10 ms after each other, also where the file starts again: never early, and no pause added at the loop.
    assert all(s.capture_ns - samples[0].capture_ns >= i * 10_000_000 - 1_000_000 for i, s in enumerate(samples))
    span = (samples[-1].capture_ns - samples[0].capture_ns) / 1e9
    assert 0.59 <= span < 1.0, span
    assert source.stats.lost == 0


def test_bad_lines_in_a_recording_are_counted_and_skipped(tmp_path):
    path = write_joint_recording(tmp_path / "arm.jsonl", joints=3, seconds=0.1, rate=100.0)
    good = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(good[:3]) + b'{"t_us": 1, "seq": 3, "name": ["shoulder_pan"]}\nnot json\n' + b"".join(good[4:]).rstrip(b"\n"))
    config = from_mapping({"joints": [{"name": "arm", "file": str(path), "joints": list(joint_names(3)), "realtime": False}]}).validate()
    [source] = make_sources(config)
    source.start(Clock())
    assert wait_until(source.ended, 3)
    source.stop()
    samples = drain(source, 100, timeout=0.2)
    assert [int(s.values[0]) for s in samples] == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # the last line has no newline: still read
    assert source.stats.errors == {"missing joint shoulder_lift": 1, "bad json": 1} and source.stats.lost == 1


def test_a_missing_recording_is_waited_for_without_crashing(tmp_path):
    config = from_mapping({"joints": [{"name": "arm", "file": str(tmp_path / "later.jsonl"), "joints": ["a"]}]}).validate()
    [source] = make_sources(config)
    source.start(Clock())
    assert wait_until(lambda: source.stats.state.startswith("waiting"), 2)
    source.stop()
    assert source.ended() and source.stats.received == 0 and source.take_gaps()[0].reason == "No such file or directory"


# --- recorded beside the video ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["file", "pty-binary"])
def test_joint_states_are_recorded_in_sensors_parquet_on_the_video_clock(simulator, tmp_path, device_key, transport):
    video = write_video(tmp_path / "camera.mp4", frames=30)  # 1 s at 30 fps
    names = list(joint_names(6))
    if transport == "file":
        arm = {"file": str(write_joint_recording(tmp_path / "arm.jsonl", joints=6, seconds=3.0, rate=200.0))}
    else:
        arm = {"port": simulator(stream="joints", joints=6, rate=200, protocol="binary").port, "protocol": "binary"}
    config = from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "recorder": {"clip_seconds": 10},
            "camera": [{"name": "cam", "source": str(video)}],
            "joints": [{"name": "arm", "joints": names, "nominal_rate": 200.0, **arm}],
        }
    ).validate()
    written = []
    recorder = Recorder(config, make_sources(config), device_key, on_clip=written.append).start()
    assert wait_until(recorder.sources_ended, 10)
    recorder.close(at_ns=recorder.files_end_ns())
    [clip] = written
    manifest = json.loads((clip.path / "manifest.json").read_text())
    frames = pq.read_table(clip.path / "frames.parquet").column("capture_ns").to_pylist()
    sensors = pq.read_table(clip.path / "sensors.parquet")
    rows = sensors.to_pylist()
    assert rows and {r["stream"] for r in rows} == {"arm"}
    channels = json.loads(sensors.schema.metadata[b"knack.channels"])["arm"]
    assert channels == ["seq", *(f"{j}.{f}" for f in ("position", "velocity", "effort") for j in names)]
    times = [r["capture_ns"] for r in rows]
    start, end = manifest["start"]["mono_ns"], manifest["end"]["mono_ns"]
    assert all(start <= t < end for t in times)
    # One clock: the joint stream starts and ends with the video (within 150 ms on a busy two-core host).
    assert abs(times[0] - frames[0]) < 150e6 and abs(times[-1] - frames[-1]) < 150e6
    assert all(r["device_ns"] is not None for r in rows)
    seqs = [int(r["values"][0]) for r in rows]
    # None lost; about 200 (200 Hz for a 1 s video), fewer only when a crowded host starves the reader.
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) > 40
    position = channels.index("elbow.position")
    assert all(math.isfinite(r["values"][position]) and abs(r["values"][position]) < 1.5 for r in rows)
    camera, joints = manifest["streams"]
    assert camera["kind"] == "camera" and joints["kind"] == "joints" and joints["channels"] == channels
    assert joints["joints"] == names and joints["lost"] == 0 and joints["count"] == len(rows)
    assert joints["source_kind"] == ("file" if transport == "file" else "serial")
    quality = stream_quality(manifest)["arm"]
    assert quality["kind"] == "joints" and quality["sample_loss_fraction"] == 0
    assert quality["parse_error_rate"] < 0.01  # at most the cut first line of a port opened mid-stream


def test_knack_simulate_joints_prints_the_config_to_use(capsys):
    import signal
    import tomllib

    from collector.config import from_mapping
    from knack.cli import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["simulate", "joints", "--joints", "2", "--protocol", "binary", "--duration", "0.2"]) == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out = capsys.readouterr().out
    table = out[out.index("[[joints]]") : out.index("\nsent ")]
    config = from_mapping(tomllib.loads(table))
    [joints] = config.joints
    assert joints.port.startswith("/dev/pts/") and joints.protocol.value == "binary"
    assert joints.joints == ("shoulder_pan", "shoulder_lift") and joints.nominal_rate == 100.0
