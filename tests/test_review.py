"""`knack review`: a real clip (recorded from a video file, a pty IMU and a pty robot arm, then labeled) written as a
Rerun recording and read back from the .rrd: the video, one frame reference per frame at its capture time, every
sensor channel, the labeler's boxes, the verdict and the marks; by clip id, directory and CID, and refused when
its bundle does not verify."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from rerun.chunk import RrdReader

from collector.bundle import MANIFEST, SENSOR_CHANNELS, write_manifest
from collector.config import LabelerConfig, from_mapping
from collector.labeling import Labeler
from collector.labeling.models import Models
from collector.recorder import Recorder
from collector.simulator import SerialSimulator, SimulatorConfig, joint_names
from collector.sources import make_sources
from collector.video import probe
from knack.review import (
    ReviewError,
    channel_entities,
    face_changes,
    md,
    no_display,
    open_viewer,
    pair_frames,
    review,
    sensor_streams,
    viewer_binary,
)
from storage.content.ipfs import EmbeddedStore
from tests.conftest import imu_serial, knack_cli, photo_frames, wait_until

PERSON = "person-two-hands-face-1280x720.jpg"
JOINTS = joint_names(3)


@pytest.fixture(scope="module")
def models():
    return Models(LabelerConfig(threads=2))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, device_key, models):
    """One clip as a device makes it: 30 frames of hands and a face played as a camera, an IMU and a 3-joint arm
    on real ptys, a mark, then labeled (the face blurred, the video re-encoded) and re-signed."""
    root = tmp_path_factory.mktemp("review")
    source = root / "camera.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for frame in photo_frames(PERSON, 30):
        writer.write(frame)
    writer.release()
    imu = SerialSimulator(SimulatorConfig(rate=200, protocol="csv")).start()
    arm = SerialSimulator(SimulatorConfig(rate=100, protocol="jsonl", stream="joints", joints=len(JOINTS))).start()
    try:
        config = from_mapping(
            {
                "data_dir": str(root / "data"),
                "camera": [{"name": "cam", "source": str(source)}],
                "serial": [imu_serial(imu.port, "csv", nominal_rate=200.0)],
                "joints": [{"name": "arm", "port": arm.port, "joints": list(JOINTS), "nominal_rate": 100.0}],
                "recorder": {"clip_seconds": 30},
            }
        ).validate()
        written = []
        recorder = Recorder(config, make_sources(config), device_key, on_clip=written.append).start()
        time.sleep(0.4)
        recorder.mark("tool change")
        assert wait_until(recorder.sources_ended, 20)
        recorder.close(at_ns=recorder.files_end_ns())
    finally:
        imu.stop()
        arm.stop()
    [clip] = written
    Labeler(config, device_key, models).label(clip.path)
    return config, clip.path


@pytest.fixture(scope="module")
def reviewed(recorded, tmp_path_factory, models):
    config, clip = recorded
    out = tmp_path_factory.mktemp("out") / "clip.rrd"
    result = review(clip.name, config, out, labeler=Labeler(config, None, models))
    return result, read_rrd(out)


def read_rrd(path):
    """The recording's chunks as {entity path: [(static, record batch as a dict of columns)]}."""
    chunks = {}
    for chunk in RrdReader(path).stream():
        chunks.setdefault(chunk.entity_path, []).append((chunk.is_static, chunk.to_record_batch().to_pydict()))
    return chunks


def column(chunks, entity, name, static=False):
    """One column over every chunk of an entity, in capture-time order."""
    rows = [
        row
        for is_static, batch in chunks[entity]
        if is_static == static and name in batch
        for row in zip(batch.get("capture_time", [None] * len(batch[name])), batch[name])
    ]
    return [value for _, value in sorted(rows, key=lambda r: r[0] or 0)] if not static else [value for _, value in rows]


def ns(values):
    return [int(v.value) if hasattr(v, "value") else int(v) for v in values]


def manifest_of(clip):
    return json.loads((clip / MANIFEST).read_text())


def test_the_rerun_viewers_own_loader_accepts_the_file(reviewed, tmp_path):
    binary = viewer_binary()
    if binary is None:
        pytest.skip("rerun-sdk ships no viewer binary for this platform")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    checked = subprocess.run([binary, "rrd", "verify", str(reviewed[0].path)], env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_the_video_is_the_clips_own_file_as_a_static_asset(recorded, reviewed):
    _, clip = recorded
    _, chunks = reviewed
    [blob] = column(chunks, "/cameras/cam/video", "AssetVideo:blob", static=True)
    assert bytes(blob[0]) == (clip / "video.mp4").read_bytes()
    assert column(chunks, "/cameras/cam/video", "AssetVideo:media_type", static=True) == [["video/mp4"]]
    info = probe(clip / "video.mp4")
    assert (info.codec, info.width, info.height) == (manifest_of(clip)["recorder"]["video_codec"], 640, 480)


def test_one_frame_reference_per_frame_at_its_capture_time(recorded, reviewed):
    _, clip = recorded
    _, chunks = reviewed
    capture = pq.read_table(clip / "frames.parquet").sort_by("frame_index").column("capture_ns").to_pylist()
    batches = [b for static, b in chunks["/cameras/cam/video"] if not static]
    times = ns(sum((b["capture_time"] for b in batches), []))
    clip_times = ns(sum((b["clip_time"] for b in batches), []))
    timestamps = [t[0] for b in batches for t in b["VideoFrameReference:timestamp"]]
    assert len(capture) == 30 and times == capture
    assert clip_times == [t - manifest_of(clip)["start"]["mono_ns"] for t in capture]
    assert timestamps == [round(i * 1e9 / 30) for i in range(30)]  # the video's own frame timestamps, in order


def stream_rows(clip, stream: str) -> tuple[list[str], list[dict]]:
    """A stream's channel names and its rows, as the recorder wrote them in sensors.parquet."""
    table = pq.read_table(clip / "sensors.parquet")
    return json.loads(table.schema.metadata[SENSOR_CHANNELS.encode()])[stream], [r for r in table.to_pylist() if r["stream"] == stream]


def test_every_imu_channel_is_a_series_of_its_samples(recorded, reviewed):
    _, chunks = reviewed
    channels, rows = stream_rows(recorded[1], "imu")
    assert len(channels) == 7 and len(rows) > 100
    for i, channel in enumerate(channels):
        entity = f"/sensors/imu/{channel}"
        batches = [b for _, b in chunks[entity]]
        assert ns(sum((b["capture_time"] for b in batches), [])) == [r["capture_ns"] for r in rows]
        assert [v[0] for b in batches for v in b["Scalars:scalars"]] == [r["values"][i] for r in rows]


def test_a_robot_arms_joint_states_are_one_series_per_joint_and_field(recorded, reviewed):
    _, chunks = reviewed
    channels, rows = stream_rows(recorded[1], "arm")
    assert len(rows) > 50
    for joint in JOINTS:
        for field in ("position", "velocity", "effort"):
            values = [v[0] for _, b in chunks[f"/sensors/arm/{field}/{joint}"] for v in b["Scalars:scalars"]]
            assert values == [r["values"][channels.index(f"{joint}.{field}")] for r in rows]
    assert len(column(chunks, "/sensors/arm/seq", "Scalars:scalars")) == len(rows)


def test_the_viewer_opens_on_clip_time_with_a_view_per_camera_and_a_plot_per_stream_and_field(reviewed):
    result, _ = reviewed
    reader = RrdReader(result.path)
    [blueprint] = reader.blueprints()
    parts = {c.entity_path: c.to_record_batch().to_pydict() for c in reader.stream(store=blueprint)}
    assert parts["/time_panel"]["TimePanelBlueprint:timeline"] == [["clip_time"]]
    views = {(v["ViewBlueprint:class_identifier"][0][0], v["ViewBlueprint:space_origin"][0][0]) for v in parts.values() if "ViewBlueprint:space_origin" in v}
    assert {("2D", "cameras/cam"), ("TextDocument", "review/summary"), ("TextLog", "/")} <= views
    # The arm's sequence counter alone is no plot: its plots are one per field.
    assert {o for kind, o in views if kind == "TimeSeries"} == {"sensors/imu", "sensors/arm/position", "sensors/arm/velocity", "sensors/arm/effort"}


def test_the_decision_quality_and_reasons_are_a_document_and_a_log_entry(recorded, reviewed):
    _, clip = recorded
    result, chunks = reviewed
    manifest = manifest_of(clip)
    [[text]] = column(chunks, "/review/summary", "TextDocument:text", static=True)
    verdict = "ACCEPTED" if manifest["decision"]["accepted"] else "REJECTED"
    assert f"**{verdict}**" in text
    assert md(manifest["decision"]["summary"]) in text
    assert f"Quality {md(manifest['quality']['score'])}" in text
    assert all(md(r["message"]) in text for r in manifest["decision"]["reasons"])
    assert column(chunks, "/review/decision", "TextLog:text") == [[manifest["decision"]["summary"]]]


def test_the_mark_is_a_log_entry_at_its_time(recorded, reviewed):
    _, clip = recorded
    result, chunks = reviewed
    [mark] = manifest_of(clip)["marks"]
    [(_, batch)] = chunks["/marks"]
    assert batch["TextLog:text"] == [["tool change"]] and ns(batch["capture_time"]) == [mark["t_ns"]]
    assert result.marks == 1


def test_hand_boxes_are_drawn_over_the_camera_at_each_sampled_frame(recorded, reviewed):
    _, clip = recorded
    result, chunks = reviewed
    capture = pq.read_table(clip / "frames.parquet").sort_by("frame_index").column("capture_ns").to_pylist()
    batches = [b for _, b in chunks["/cameras/cam/hands"]]
    times = ns(sum((b["capture_time"] for b in batches), []))
    boxes = [c for b in batches for c in b["Boxes2D:centers"]]
    assert times == [capture[i] for i in (0, 8, 15, 23)]  # 30 frames at 30 fps, sampled at 4 fps
    assert result.hand_frames == 4
    assert all(0 < x < 640 and 0 < y < 480 for frame in boxes for x, y in frame)
    assert chunks["/cameras/cam/hands/landmarks"]


def test_the_blurred_face_regions_are_boxes_on_every_frame_of_an_unlabeled_clip(make_clip, tmp_path, models):
    clip = make_clip(photo_frames(PERSON, 12))
    config = from_mapping({"data_dir": str(tmp_path / "data")}).validate()
    labeler = Labeler(config, None, models)
    result = review(str(clip), config, tmp_path / "faces.rrd", labeler=labeler)
    chunks = read_rrd(tmp_path / "faces.rrd")
    boxes = [c for _, b in chunks["/cameras/cam/faces"] for c in b.get("Boxes2D:centers", [])]
    expected = labeler.detections(clip / "video.mp4").faces
    assert result.face_frames == sum(bool(f) for f in expected) == 12  # the labeler blurs this face on every frame
    assert boxes and all(len(b) == 1 for b in boxes)


def test_every_camera_of_a_clip_is_a_video_of_its_own(tmp_path, device_key):
    import pyarrow as pa

    from collector.bundle import new_clip_id, seal
    from collector.video import write_video

    clip_id = new_clip_id()
    partial = tmp_path / "clips" / f".partial-{clip_id}"
    partial.mkdir(parents=True)
    frames = photo_frames(PERSON, 8)
    write_video(partial / "video-left.mp4", frames, 30.0)
    write_video(partial / "video-right.mp4", [cv2.flip(f, 1) for f in frames[:6]], 30.0)
    rows = [("left", i, 1_000 + i * 33_000_000) for i in range(8)] + [("right", i, 2_000 + i * 33_000_000) for i in range(6)]
    pq.write_table(pa.table(dict(zip(("camera", "frame_index", "capture_ns"), map(list, zip(*rows))))), partial / "frames.parquet")
    streams = [{"name": name, "kind": "camera", "source": "test", "count": n, "gaps": []} for name, n in (("left", 8), ("right", 6))]
    manifest = {"clip_id": clip_id, "device_id": device_key.address, "start": {"utc": "2026-01-01T00:00:00Z", "mono_ns": 0}, "streams": streams, "marks": []}
    write_manifest(partial, manifest, device_key)
    clip = seal(partial, tmp_path / "clips" / clip_id)
    result = review(str(clip), from_mapping({"data_dir": str(tmp_path / "data")}).validate(), tmp_path / "two.rrd", boxes=False)
    chunks = read_rrd(tmp_path / "two.rrd")
    assert result.frames == {"left": 8, "right": 6}
    for name, video, first in (("left", "video-left.mp4", 1_000), ("right", "video-right.mp4", 2_000)):
        [blob] = column(chunks, f"/cameras/{name}/video", "AssetVideo:blob", static=True)
        assert bytes(blob[0]) == (clip / video).read_bytes()
        assert ns(column(chunks, f"/cameras/{name}/video", "capture_time"))[0] == first
    [[text]] = column(chunks, "/review/summary", "TextDocument:text", static=True)
    assert "NOT LABELED YET" in text


def test_a_clip_is_reviewed_by_its_cid_from_the_embedded_store(recorded, reviewed, tmp_path, models):
    config, clip = recorded
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    cid = store.add(clip)
    out = tmp_path / "by-cid.rrd"
    result = review(str(cid), config, out, store=store, labeler=Labeler(config, None, models))
    chunks = read_rrd(out)
    direct = reviewed[1]
    assert result.frames == {"cam": 30} and result.channels == reviewed[0].channels
    assert sorted(chunks) == sorted(direct)
    [[text]] = column(chunks, "/review/summary", "TextDocument:text", static=True)
    assert f"CID {cid}" in text


def test_a_cid_whose_bundle_does_not_verify_is_refused_and_nothing_is_written(recorded, tmp_path):
    config, clip = recorded
    tampered = tmp_path / "tampered"
    shutil.copytree(clip, tampered)
    data = bytearray((tampered / "sensors.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "sensors.parquet").write_bytes(bytes(data))
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    cid = store.add(tampered)
    out = tmp_path / "out" / "refused.rrd"
    with pytest.raises(ReviewError, match=r"does not verify \(sensors.parquet: sha256 is") as refused:
        review(str(cid), config, out, store=store, boxes=False)
    assert "\n" not in str(refused.value)
    assert not out.exists() and not (tmp_path / "out").exists()


def test_a_clip_id_from_elsewhere_that_is_not_a_plain_name_never_names_the_file(make_clip, tmp_path, monkeypatch):
    clip = make_clip(photo_frames(PERSON, 3), clip_id="../../escaped")
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    cid = store.add(clip)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = review(str(cid), from_mapping({"data_dir": str(tmp_path / "other")}).validate(), store=store, boxes=False)
    assert result.path.resolve() == work / f"{cid}.rrd" and result.path.exists()
    assert not (tmp_path.parent / "escaped.rrd").exists()


def test_a_clip_whose_video_rerun_cannot_play_is_shown_re_encoded(make_clip, tmp_path, device_key):
    clip = make_clip(photo_frames(PERSON, 10))
    writer = cv2.VideoWriter(str(clip / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for frame in photo_frames(PERSON, 10):
        writer.write(frame)
    writer.release()
    manifest = {k: v for k, v in manifest_of(clip).items() if k not in ("signature", "files")}
    write_manifest(clip, manifest, device_key)
    assert probe(clip / "video.mp4").codec == "mpeg4"
    config = from_mapping({"data_dir": str(tmp_path / "data")}).validate()
    result = review(str(clip), config, tmp_path / "old.rrd", boxes=False)
    assert result.frames == {"cam": 10}
    assert any("mpeg4, which Rerun cannot play: shown re-encoded" in note for note in result.notes)
    [blob] = column(read_rrd(tmp_path / "old.rrd"), "/cameras/cam/video", "AssetVideo:blob", static=True)
    (tmp_path / "shown.mp4").write_bytes(bytes(blob[0]))
    assert probe(tmp_path / "shown.mp4").codec in ("av1", "h264") and probe(tmp_path / "shown.mp4").frames == 10
    assert probe(clip / "video.mp4").codec == "mpeg4", "the clip itself is untouched"


def test_knack_review_writes_clip_id_rrd_and_says_what_it_holds(recorded, tmp_path):
    config, clip = recorded
    knack = knack_cli(config.data_path, tmp_path, DISPLAY="", WAYLAND_DISPLAY="")
    work = tmp_path / "work"
    work.mkdir()
    out = knack("review", clip.name, "--no-boxes", "--spawn", "-o", str(work / f"{clip.name}.rrd"))
    assert out.returncode == 0, out.stderr
    assert (work / f"{clip.name}.rrd").stat().st_size > (clip / "video.mp4").stat().st_size
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"wrote {work / clip.name}.rrd (")
    assert "cam 30 frames; 17 sensor channels" in lines[0] and "; no boxes; 1 mark(s)" in lines[0]  # IMU: seq + 6; arm: seq + 3 x 3
    assert lines[-1].startswith("no display here")


def test_the_review_is_named_for_its_clip_in_the_current_directory(recorded, tmp_path, monkeypatch):
    config, clip = recorded
    monkeypatch.chdir(tmp_path)
    result = review(str(clip), config, boxes=False)
    assert result.path.resolve() == tmp_path / f"{clip.name}.rrd" and result.path.stat().st_size == result.bytes
    assert [p.name for p in tmp_path.iterdir()] == [f"{clip.name}.rrd"]  # no partial file left beside it


@pytest.mark.parametrize(
    "target, says",
    [
        ("01a24e98-0000-7000-8000-000000000000", "no clip 01a24e98-0000-7000-8000-000000000000: it is not a clip directory, a clip id under"),
        ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "cannot be had from the embedded content store: block"),
    ],
)
def test_a_clip_that_is_not_there_is_one_line_and_exit_2(recorded, tmp_path, target, says):
    config, _ = recorded
    out = knack_cli(config.data_path, tmp_path)("review", target, "-o", str(tmp_path / "x.rrd"))
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "x.rrd").exists()


def test_a_content_store_that_is_down_is_one_line_and_exit_2(recorded, tmp_path):
    config, _ = recorded
    knack = knack_cli(config.data_path, tmp_path, KNACK_STORAGE_IPFS_API="/ip4/127.0.0.1/tcp/9/http")  # discard port: refused
    out = knack("review", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "-o", str(tmp_path / "x.rrd"))
    assert out.returncode == 2, out.stderr
    [line] = [line for line in out.stderr.splitlines() if line.startswith("knack: ")]
    assert line.startswith("knack: error: IPFS daemon at /ip4/127.0.0.1/tcp/9/http is not reachable (block get)")
    assert not (tmp_path / "x.rrd").exists()


# --- the app's Clips screen ---------------------------------------------------------------------------------
def test_v_on_the_clips_screen_writes_the_selected_clips_review_beside_the_data(make_clip, tmp_path, device_key):
    from knack.session import DeviceSession
    from tui.app import KnackApp

    clip = make_clip(photo_frames(PERSON, 6))
    config = from_mapping({"data_dir": str(tmp_path / "data")}).validate()
    session = DeviceSession(config, device_key, label=False)
    session.outbox.record(clip.name, clip)
    app = KnackApp(session)
    review_file = config.data_path / "reviews" / f"{clip.name}.rrd"

    async def scenario(pilot):
        await pilot.press("2")
        table = app.screen.query_one("#clips")
        await settle(pilot, lambda: table.row_count == 1, "the clip in the table")
        await pilot.press("v")
        await settle(pilot, lambda: any("written" in n.message for n in app._notifications), "the review's notice")
        [notice] = [n for n in app._notifications if "written" in n.message]
        assert notice.message.startswith(f"review of {clip.name} written: {review_file} (")

    async def run():
        async with app.run_test(size=(160, 48)) as pilot:
            await scenario(pilot)

    try:
        asyncio.run(run())
    finally:
        session.close()
    assert column(read_rrd(review_file), "/cameras/cam/video", "AssetVideo:media_type", static=True) == [["video/mp4"]]


async def settle(pilot, predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.2)


# --- the pure parts ------------------------------------------------------------------------------------------
def test_an_arms_channels_are_grouped_by_field_and_others_kept_as_named():
    arm = {"joints": ["shoulder", "elbow"], "fields": ["position", "effort"]}
    assert channel_entities("arm", ["seq", "shoulder.position", "elbow.effort"], arm) == [
        ("sensors/arm/seq", "sensors/arm"),
        ("sensors/arm/position/shoulder", "sensors/arm/position"),
        ("sensors/arm/effort/elbow", "sensors/arm/effort"),
    ]
    assert channel_entities("glove/left", ["a.x", "b c"]) == [
        ("sensors/glove\\/left/a.x", "sensors/glove\\/left"),
        ("sensors/glove\\/left/b\\ c", "sensors/glove\\/left"),
    ]


def test_sensor_rows_of_differing_length_are_shown_with_what_they_hold(tmp_path):
    from collector.bundle import write_sensor_log

    write_sensor_log(tmp_path / "sensors.parquet", ["s", "s", "s"], [10, 20, 30], [None] * 3, [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]], {"s": ["a", "b"]})
    [stream] = sensor_streams(tmp_path, {"streams": []})
    assert stream.capture_ns.tolist() == [10, 20, 30]
    assert [c.entity for c in stream.channels] == ["sensors/s/a", "sensors/s/b", "sensors/s/value_2"]
    assert np.array_equal([c.values for c in stream.channels], [[1, 3, 4], [2, np.nan, 5], [np.nan, np.nan, 6]], equal_nan=True)


def test_a_video_shorter_than_its_table_pairs_the_frames_both_have_and_says_so():
    times, stamps, note = pair_frames(np.array([10, 20, 30]), np.array([33, 0]))
    assert times.tolist() == [10, 20] and stamps.tolist() == [0, 33]
    assert note == "frames.parquet lists 3 frames, the video holds 2: the first 2 are shown"
    assert pair_frames(np.array([1]), np.array([0]))[2] is None


def test_face_regions_are_logged_where_they_change_and_cleared_when_gone():
    faces = [[], [(1, 2, 3, 4)], [(1, 2, 3, 4)], [], []]
    assert face_changes(faces, np.array([10, 20, 30, 40, 50])) == [(20, [(1, 2, 3, 4)]), (40, [])]


def test_text_from_a_manifest_cannot_make_a_link_or_an_image():
    assert md("![x](http://tracker/p.png) <img src=x> [a](b)\nnext") == "\\!\\[x\\]\\(http://tracker/p.png\\) \\<img src=x\\> \\[a\\]\\(b\\) next"


def test_without_a_display_the_viewer_is_not_started_and_that_is_said(tmp_path):
    assert no_display({}, "linux") and not no_display({"DISPLAY": ":0"}, "linux") and not no_display({}, "darwin")
    said = open_viewer(tmp_path / "clip.rrd", {})
    assert said.startswith(("no display here", "no Rerun viewer is installed here")) and "\n" not in said
