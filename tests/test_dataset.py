"""LeRobot v3.0 datasets from clips: the k/fps grid, state and action, the written layout against the format's
facts (checked without lerobot: `make test-lerobot` loads a dataset through LeRobotDataset), provenance, and
the attacks a dataset build must refuse (a forged proof, bytes that are not the paid CID, another device's
signature, a lying gateway)."""

from __future__ import annotations

import http.server
import json
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.bundle import new_clip_id, seal, write_manifest, write_sensor_log
from collector.config import Config
from collector.identity import DeviceKey, SigningDomain
from collector.video import write_video
from knack.dataset.build import Filters, Options, build
from knack.dataset.episode import NS, EpisodeRejected, episode_of, grid
from storage.content.cid import DAG_PB, Cid
from storage.content.gateway import BlockNotFound, GatewayStore
from storage.content.ipfs import CidMismatch, EmbeddedStore, StoreUnavailable
from storage.ledger.contracts import merkle
from storage.validator.provenance import PaidClip, ProvenanceError, verify_paid_clip

FPS = 30
NETWORK = SigningDomain(1337, "0x" + "ab" * 20)


def frames(n: int, size=(160, 120), shift: int = 0) -> list[np.ndarray]:
    """A moving gradient: each frame differs, so a wrong pick shows."""
    w, h = size
    x = np.arange(w, dtype=np.int32)[None, :, None]
    y = np.arange(h, dtype=np.int32)[:, None, None]
    return [np.ascontiguousarray(np.broadcast_to(((x * 2 + y + 7 * (i + shift)) % 256).astype(np.uint8), (h, w, 3))) for i in range(n)]


def make_bundle(
    clips: Path,
    key: DeviceKey,
    n: int = 45,
    times: list[int] | None = None,
    size=(160, 120),
    joints: bool = False,
    task: str = "tighten a bolt",
    t0: int = 5 * NS,
) -> Path:
    """A real signed clip bundle with a camera, an IMU (device-stamped, delivered in bursts) and optionally a
    robot arm's joint states."""
    clips.mkdir(parents=True, exist_ok=True)
    clip_id = new_clip_id()
    partial = clips / f".partial-{clip_id}"
    partial.mkdir()
    write_video(partial / "video.mp4", frames(n, size), FPS)
    times = times or [t0 + i * NS // FPS for i in range(n)]
    pq.write_table(pa.table({"camera": ["cam"] * n, "frame_index": list(range(n)), "capture_ns": times}), partial / "frames.parquet")
    streams, capture, device, values = [], [], [], []
    span = times[-1] - times[0]
    for i in range(0, span // 5_000_000 + 40):  # 200 Hz IMU from 100 ms before the first frame
        t = times[0] - 100_000_000 + i * 5_000_000
        streams.append("imu")
        device.append(t - 3_000_000_000)  # the device's own clock, offset from the recorder's
        capture.append(t + (4 - i % 5) * 5_000_000 + 1_000_000)  # read in bursts of 5
        values.append([i * 0.5, np.sin(i / 10)])
    channels = {"imu": ["ax", "gz"]}
    manifest_streams = [
        {"name": "cam", "kind": "camera", "source": "test", "nominal_rate": FPS, "count": n},
        {"name": "imu", "kind": "serial", "channels": ["ax", "gz"]},
    ]
    if joints:
        for i in range(0, span // 10_000_000 + 1):  # 100 Hz joint states
            t = times[0] + i * 10_000_000
            streams.append("arm")
            capture.append(t)
            device.append(None)
            values.append([float(i), -float(i)])
        channels["arm"] = ["j1.position", "j2.position"]
        manifest_streams.append({"name": "arm", "kind": "joints", "channels": ["j1.position", "j2.position"]})
    write_sensor_log(partial / "sensors.parquet", streams, capture, device, values, channels)
    manifest = {
        "clip_id": clip_id,
        "device_id": key.address,
        "contributor": key.address,
        "task": task,
        "start": {"utc": "2026-11-30T10:00:00Z", "mono_ns": times[0]},
        "end": {"utc": "2026-11-30T10:00:02Z", "mono_ns": times[-1]},
        "duration_s": span / NS,
        "streams": manifest_streams,
        "marks": [],
        "labels": None,
        "quality": {"score": 0.9},
        "privacy": None,
        "decision": {"accepted": True, "status": "accepted", "reasons": [], "summary": "accepted"},
    }
    write_manifest(partial, manifest, key)
    return seal(partial, clips / clip_id)


@pytest.fixture
def bound_key(device_key):
    return device_key.bind(NETWORK)


# --- the grid ---------------------------------------------------------------------------------------------
def test_jittered_capture_times_land_on_an_exact_grid_of_the_nearest_frames():
    rng = np.random.default_rng(1)
    n = 300
    times = np.array([10 * NS + i * NS // FPS + int(rng.integers(-2_000_000, 2_000_001)) for i in range(n)], dtype=np.int64)
    t0, length, picks, worst = grid({"cam": times}, FPS)
    assert t0 == times[0] and length == n
    assert np.array_equal(picks["cam"], np.arange(n))  # ±2 ms never moves a frame to a neighbour's slot
    assert 0 < worst <= 0.004
    points = t0 + np.arange(length, dtype=np.int64) * NS // FPS
    assert np.all(np.abs(times[picks["cam"]] - points) <= worst * NS + 1)


def test_a_dropped_frame_leaves_the_clip_out_with_the_time_error(tmp_path, bound_key):
    times = [5 * NS + i * NS // FPS for i in range(45)]
    del times[20]  # a dropped frame: the grid point there is a whole frame from any captured one...
    times.append(times[-1] + NS // FPS)  # ...and the clip still has 45 frames
    clip = make_bundle(tmp_path / "clips", bound_key, times=times)
    with pytest.raises(EpisodeRejected, match=r"ms from its place on the 1/30 s grid"):
        episode_of(clip, json.loads((clip / "manifest.json").read_text()), FPS)


def test_state_interpolates_the_imu_on_its_own_clock_and_holds_joint_states_and_the_arm_acts_as_its_next_state(tmp_path, bound_key):
    clip = make_bundle(tmp_path / "clips", bound_key, joints=True)
    episode = episode_of(clip, json.loads((clip / "manifest.json").read_text()), FPS)
    assert episode.state_names == ("arm.j1.position", "arm.j2.position", "imu.ax", "imu.gz")
    assert episode.action_names == ("arm.j1.position", "arm.j2.position")
    k = np.arange(episode.length)
    # Joint sample i is at t0 + 10 ms * i: the last at or before frame k is floor(k * 33.33 / 10).
    assert np.array_equal(episode.state[:, 0], (k * 1000 // 300).astype(np.float32))
    # The IMU's ax is i / 2 at t0 - 100 ms + 5 ms * i on the device's clock, linear in time. On the recorder's
    # clock each sample lands 1 ms late: the least any sample waited, which the recorder cannot see. By the
    # burst arrival times instead, samples would be up to 21 ms late and ax off by up to 2.
    expected_ax = ((k * NS // FPS + 100_000_000 - 1_000_000) / 5_000_000) * 0.5
    assert np.allclose(episode.state[:, 2], expected_ax, atol=1e-3), "the IMU was placed by its burst arrival times, not its own"
    assert np.array_equal(episode.action[:-1], episode.state[1:, :2]) and np.array_equal(episode.action[-1], episode.state[-1, :2])


# --- a build of local clips: the written layout against the v3.0 facts --------------------------------------
def test_a_build_of_local_clips_writes_lerobot_v3(tmp_path, bound_key):
    clips = [make_bundle(tmp_path / "clips", bound_key, n=45), make_bundle(tmp_path / "clips", bound_key, n=31, task="sort screws")]
    out = tmp_path / "ds"
    result = build(Config(), Options(out=out, clips=tuple(map(str, clips)), workers=2, progress=False), say=lambda _: None)
    assert result.episodes == 2 and not result.left_out, [o.reason for o in result.left_out]

    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and isinstance(info["fps"], int)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["splits"]) == (2, 76, 2, {"train": "0:2"})
    features = info["features"]
    assert features["observation.state"] == {"dtype": "float32", "shape": [2], "names": ["imu.ax", "imu.gz"]}
    assert "action" not in features  # human hands: no commanded action
    video = features["observation.images.cam"]
    assert video["dtype"] == "video" and video["shape"] == [120, 160, 3] and video["info"]["video.codec"] == "av1" and video["info"]["video.fps"] == FPS
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert name in features

    [data_file] = sorted((out / "data").rglob("*.parquet"))
    assert data_file.relative_to(out).as_posix() == "data/chunk-000/file-000.parquet"
    table = pq.read_table(data_file)
    assert table.schema.field("observation.state").type == pa.list_(pa.float32(), 2)  # a fixed-size list
    assert table.schema.field("timestamp").type == pa.float32()
    for name in ("frame_index", "episode_index", "index", "task_index"):
        assert table.schema.field(name).type == pa.int64()
    rows = table.to_pydict()
    assert rows["index"] == list(range(76))
    assert rows["episode_index"] == [0] * 45 + [1] * 31
    assert rows["frame_index"] == list(range(45)) + list(range(31))
    assert np.array_equal(np.array(rows["timestamp"], dtype=np.float32), (np.array(rows["frame_index"]) / FPS).astype(np.float32))

    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert list(tasks.index) == ["tighten a bolt", "sort screws"] and list(tasks["task_index"]) == [0, 1]  # the task is the index
    assert rows["task_index"] == [0] * 45 + [1] * 31

    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in episodes] == [0, 1] and [e["length"] for e in episodes] == [45, 31]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 45), (45, 76)]
    assert episodes[1]["tasks"] == ["sort screws"] and episodes[1]["data/chunk_index"] == 0 and episodes[1]["data/file_index"] == 0
    assert episodes[1]["videos/observation.images.cam/file_index"] == 1 and episodes[1]["videos/observation.images.cam/from_timestamp"] == 0.0
    assert episodes[1]["videos/observation.images.cam/to_timestamp"] == pytest.approx(31 / FPS)
    assert [e["knack/clip_id"] for e in episodes] == [c.name for c in clips]
    assert episodes[0]["knack/source"] == "local" and episodes[0]["knack/cid"].startswith("bafy") and episodes[0]["knack/batch"] == -1

    # Each video: AV1, yuv420p, one frame per row at exactly k/fps, a keyframe every 2 frames, the clip's pixels.
    for e in episodes:
        path = out / info["video_path"].format(video_key="observation.images.cam", chunk_index=0, file_index=e["episode_index"])
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name in ("libdav1d", "av1", "libaom-av1") or stream.codec_context.codec.name.startswith("av1")
            packets = [p for p in container.demux(stream) if p.size]
            assert len(packets) == e["length"]
            pts = sorted(Fraction(p.pts) * stream.time_base for p in packets)
            assert pts == [Fraction(k, FPS) for k in range(e["length"])]
            keys = [Fraction(p.pts) * stream.time_base * FPS for p in packets if p.is_keyframe]
            assert max(np.diff(sorted(float(k) for k in keys)), default=0) <= 2
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            assert decoded[0].shape == (120, 160, 3) and container.streams.video[0].format.name == "yuv420p"
        original = frames(e["length"])
        assert np.abs(decoded[-1].astype(int)[..., 0] - original[-1].astype(int)[..., 2]).mean() < 6  # the last frame is the clip's last

    stats = json.loads((out / "meta/stats.json").read_text())
    for key in ("min", "max", "mean", "std", "count", "q01", "q50", "q99"):
        assert len(stats["observation.state"][key]) == (1 if key == "count" else 2)
    assert stats["observation.state"]["count"] == [76]
    assert np.array(stats["observation.images.cam"]["mean"]).shape == (3, 1, 1)
    card = (out / "README.md").read_text()
    assert "LeRobot" in card and clips[0].name in card and "Re-verify" in card
    report = json.loads((out / "knack-build-report.json").read_text())
    assert [e["clip_id"] for e in report["episodes"]] == [c.name for c in clips] and report["left_out"] == []


def test_a_build_leaves_out_tampered_clips_other_features_and_filtered_tasks_with_their_reasons(tmp_path, bound_key):
    good = make_bundle(tmp_path / "clips", bound_key)
    tampered = make_bundle(tmp_path / "clips", bound_key)
    data = bytearray((tampered / "sensors.parquet").read_bytes())
    data[60] ^= 0xFF
    (tampered / "sensors.parquet").write_bytes(bytes(data))
    bigger = make_bundle(tmp_path / "clips", bound_key, size=(192, 144))
    other_task = make_bundle(tmp_path / "clips", bound_key, task="sort screws")
    result = build(
        Config(),
        Options(
            out=tmp_path / "ds", clips=tuple(map(str, (good, tampered, bigger, other_task))), filters=Filters(task="Tighten a bolt"), workers=1, progress=False
        ),
        say=lambda _: None,
    )
    assert [o.clip_id for o in result.included] == [good.name]
    reasons = {o.clip_id or Path(o.name).name: o.reason for o in result.left_out}
    assert "sensors.parquet: sha256 is" in reasons[tampered.name]
    assert "features differ" in reasons[bigger.name] and "192x144" in reasons[bigger.name]
    assert "task is 'sort screws'" in reasons[other_task.name]


def test_a_build_never_writes_into_a_directory_that_holds_something(tmp_path, bound_key):
    from knack.dataset.build import BuildError

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "thesis.tex").write_text("keep me")
    with pytest.raises(BuildError, match="not empty"):
        build(Config(), Options(out=tmp_path / "ds", clips=(str(make_bundle(tmp_path / "clips", bound_key)),), progress=False), say=lambda _: None)
    assert (tmp_path / "ds" / "thesis.tex").read_text() == "keep me"


# --- provenance: a paid clip, fetched and checked end to end ------------------------------------------------
def paid(store: EmbeddedStore, clip: Path, device: str, others: int = 4, index: int = 2) -> PaidClip:
    cid = store.add(clip)
    digests = [bytes([i]) * 32 for i in range(others)]
    digests.insert(index, cid.digest)
    proof = merkle.proof(digests, index)
    return PaidClip(str(cid), cid.digest.hex(), 7, index, device, device, 9000, merkle.root(digests).hex(), tuple(p.hex() for p in proof), 1, "0x")


def test_a_paid_clip_verifies_and_each_attack_on_it_is_refused_with_a_reason(tmp_path, bound_key):
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    clip = make_bundle(tmp_path / "clips", bound_key)
    good = paid(store, clip, bound_key.address)
    manifest = verify_paid_clip(store.get, good, NETWORK, _empty(tmp_path / "ok"))
    assert manifest["clip_id"] == clip.name

    # A proof for another position (the leaf hashes its index): not the batch's root.
    with pytest.raises(ProvenanceError, match="Merkle proof"):
        verify_paid_clip(store.get, PaidClip(**(good.__dict__ | {"index": 3})), NETWORK, _empty(tmp_path / "a"))
    # A CID that is not the digest the registry holds.
    other = store.add(make_bundle(tmp_path / "clips2", bound_key))
    with pytest.raises(ProvenanceError, match="does not carry the digest"):
        verify_paid_clip(store.get, PaidClip(**(good.__dict__ | {"cid": str(other)})), NETWORK, _empty(tmp_path / "b"))
    # A store that serves other bytes for a block: the bytes no longer hash to the paid CID.
    leaf = next(c for c, _ in store.blocks.walk(Cid.parse(good.cid)) if c.codec != DAG_PB)

    def lying_get(cid):
        block = store.get(cid)
        return block[:-1] + bytes([block[-1] ^ 1]) if cid == leaf else block

    with pytest.raises(ProvenanceError, match="hash to"):
        verify_paid_clip(lying_get, good, NETWORK, _empty(tmp_path / "c"))
    # Signed by the right network but another device than the one that submitted the batch.
    with pytest.raises(ProvenanceError, match="submitted by device"):
        verify_paid_clip(store.get, PaidClip(**(good.__dict__ | {"device": "0x" + "12" * 20})), NETWORK, _empty(tmp_path / "d"))
    # Signed for another network.
    with pytest.raises(ProvenanceError, match="not for this network"):
        verify_paid_clip(store.get, good, SigningDomain(1, NETWORK.registry), _empty(tmp_path / "e"))


def test_a_manifest_alone_is_read_within_the_bundle_bounds(tmp_path, bound_key):
    from storage.content.unixfs import Link, dag_pb_node, unixfs_data
    from storage.validator.fetch import ClipFormatError, fetch_manifest

    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    clip = make_bundle(tmp_path / "clips", bound_key)
    assert fetch_manifest(store.get, store.add(clip)) == (clip / "manifest.json").read_bytes()
    # A directory whose manifest is 3 MiB of leaves: refused once past the manifest's bound, not read to its end.
    leaves = []
    for i in range(12):
        block = bytes([i]) * (256 << 10)
        cid = Cid.of(0x55, block)
        store.blocks.put(cid, block)
        leaves.append(Link(cid, "", len(block)))
    big = dag_pb_node(leaves, unixfs_data(2, 12 * (256 << 10), tuple(256 << 10 for _ in range(12))))
    big_cid = Cid.of(DAG_PB, big)
    store.blocks.put(big_cid, big)
    root = dag_pb_node([Link(big_cid, "manifest.json", len(big))], unixfs_data(1))
    root_cid = Cid.of(DAG_PB, root)
    store.blocks.put(root_cid, root)
    with pytest.raises(ClipFormatError, match="manifest.json is larger than"):
        fetch_manifest(store.get, root_cid)


def _empty(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# --- an HTTP gateway is somebody else's server ----------------------------------------------------------------
class _Gateway(http.server.BaseHTTPRequestHandler):
    store: EmbeddedStore
    lie = False

    def do_GET(self):  # noqa: N802 (http.server's name)
        text = self.path.split("?")[0].removeprefix("/ipfs/")
        try:
            block = self.store.get(Cid.parse(text))
        except Exception:
            self.send_response(404)
            self.end_headers()
            return
        if self.lie and Cid.parse(text).codec != DAG_PB:
            block = b"not what you asked for" + block
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.ipld.raw")
        self.end_headers()
        self.wfile.write(block)

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway(tmp_path):
    store = EmbeddedStore(tmp_path / "gateway.sqlite")
    handler = type("Handler", (_Gateway,), {"store": store})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield store, handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_clips_are_read_and_verified_through_an_http_gateway_that_cannot_lie(tmp_path, bound_key, gateway):
    store, handler, url = gateway
    clip = make_bundle(tmp_path / "clips", bound_key)
    good = paid(store, clip, bound_key.address)
    remote = GatewayStore(url, timeout=10)
    assert verify_paid_clip(remote.get, good, NETWORK, _empty(tmp_path / "ok"))["clip_id"] == clip.name
    handler.lie = True
    with pytest.raises(CidMismatch, match="do not hash to it"):
        verify_paid_clip(remote.get, good, NETWORK, _empty(tmp_path / "lie"))
    with pytest.raises(BlockNotFound):
        remote.get(Cid(DAG_PB, b"\x01" * 32))
    with pytest.raises(StoreUnavailable, match="not reachable"):
        GatewayStore("http://127.0.0.1:9", timeout=2).get(Cid.parse(good.cid))


def test_a_build_on_ray_without_ray_installed_says_how_to_get_it(tmp_path, bound_key):
    import importlib.util

    from knack.dataset.build import BuildError

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("Ray is installed here: this checks the message for a machine without it")
    with pytest.raises(BuildError, match=r"pip install 'knack\[ray\]'"):
        build(Config(), Options(out=tmp_path / "ds", clips=(str(make_bundle(tmp_path / "clips", bound_key)),), ray="127.0.0.1:6379", progress=False), say=print)


def test_a_gateway_in_the_configuration_is_an_http_url_and_is_where_clips_are_read_from(tmp_path):
    from collector.config import ConfigError, from_mapping
    from knack.wiring import reading_store

    with pytest.raises(ConfigError, match=r"storage\.ipfs_gateway.*ftp://example.org"):
        from_mapping({"storage": {"ipfs_gateway": "ftp://example.org"}}).validate()
    config = from_mapping({"data_dir": str(tmp_path), "storage": {"ipfs_gateway": "https://gateway.example"}}).validate()
    store = reading_store(config)
    assert isinstance(store, GatewayStore) and store.url == "https://gateway.example"


def test_the_command_line_takes_clip_directories_on_both_sides_of_its_options():
    from knack.cli import build_parser

    args = build_parser().parse_args(["dataset", "build", "/tmp/out", "--workers", "2", "a", "b", "--limit", "3", "c"])
    assert (args.out, args.clip_dir, args.workers, args.limit) == ("/tmp/out", ["a", "b", "c"], 2, 3)


def _rewrite_frames(clip: Path, key: DeviceKey, **columns) -> None:
    """Replaces frames.parquet and re-signs: an attacker's own, correctly signed bundle."""
    table = pq.read_table(clip / "frames.parquet").to_pydict() | columns
    pq.write_table(pa.table(table), clip / "frames.parquet")
    manifest = json.loads((clip / "manifest.json").read_text())
    manifest.pop("signature")
    write_manifest(clip, manifest, key)


def test_a_signed_bundle_whose_camera_name_climbs_out_or_whose_times_span_years_is_left_out_before_any_harm(tmp_path, bound_key):
    climbing = make_bundle(tmp_path / "clips", bound_key)
    n = len(pq.read_table(climbing / "frames.parquet"))
    _rewrite_frames(climbing, bound_key, camera=["../../../../tmp/owned"] * n)
    years = make_bundle(tmp_path / "clips", bound_key)
    _rewrite_frames(years, bound_key, capture_ns=[i * 10**17 for i in range(n)])  # 45 frames over 140 years: 10^11 grid points
    result = build(Config(), Options(out=tmp_path / "ds", clips=(str(climbing), str(years)), workers=1, progress=False), say=lambda _: None)
    reasons = {o.clip_id: o.reason for o in result.left_out}
    assert result.episodes == 0
    assert "not a camera name of the bundle format" in reasons[climbing.name]
    assert "holds only 45 frames" in reasons[years.name]
    assert not Path("/tmp/owned.mp4").exists()


def test_since_compares_the_recording_start_in_utc_with_nanosecond_stamps():
    from knack.dataset.build import parse_since

    manifest = {"start": {"utc": "2026-12-07T03:42:11.726595925Z"}, "task": "x"}
    assert Filters(since=parse_since("2026-12-07")).refuses(manifest) == ""
    assert Filters(since=parse_since("2026-12-07T04:42+01:00")).refuses(manifest) == ""  # 03:42 UTC
    assert "recorded before" in Filters(since=parse_since("2026-12-07T03:43")).refuses(manifest)
    assert "recorded before" in Filters(since=parse_since("2026-01-01")).refuses({"start": {"utc": "not a time"}})
    with pytest.raises(ValueError, match="not a date"):
        parse_since("last tuesday")


def test_a_build_that_fails_part_way_leaves_its_directory_empty_for_the_next_try(tmp_path, bound_key, monkeypatch):
    import knack.dataset.build as building

    clip = make_bundle(tmp_path / "clips", bound_key)
    out = tmp_path / "ds"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(building, "_assemble", disk_full)
    from knack.dataset.build import BuildError

    with pytest.raises(BuildError, match=r"could not be written in .*ds \(No space left on device\); what was written of it is removed"):
        build(Config(), Options(out=out, clips=(str(clip),), workers=1, progress=False), say=lambda _: None)
    assert out.is_dir() and not any(out.iterdir())  # no half dataset, no staging left behind
    monkeypatch.undo()
    assert build(Config(), Options(out=out, clips=(str(clip),), workers=1, progress=False), say=lambda _: None).episodes == 1
    assert clip.is_dir() and (clip / "manifest.json").is_file()  # the clip itself is never touched
