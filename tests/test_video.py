"""The pinned video: AV1 where an AV1 encoder opens (H.264 otherwise), read back exactly, labels from its pixels."""

import json

import cv2
import numpy as np
import pytest

from collector.bundle import verify_bundle
from collector.config import from_mapping
from collector.labeling import Labeler
from collector.recorder import Recorder
from collector.sources import make_sources
from collector.video import ENCODERS, Encoder, VideoError, VideoReader, VideoWriter, choose_encoder, probe, read_frames
from tests.conftest import photo_frames, wait_until, write_video


def psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def test_the_pinned_codec_is_av1_and_a_gpu_encoder_comes_first_where_one_opens():
    assert [e.codec for e in ENCODERS] == ["av1", "av1", "h264", "h264"]
    assert ENCODERS[0].hardware and ENCODERS[0].name == "av1_nvenc"
    chosen = choose_encoder()
    assert chosen.codec == "av1"  # PyAV's wheels carry SVT-AV1; NVENC opens only beside a GPU
    assert choose_encoder("h264").codec == "h264"


def test_an_encoder_that_does_not_open_here_is_passed_over_and_none_at_all_is_one_clear_error():
    missing = Encoder("no_such_encoder", "av1")
    assert choose_encoder("auto", (missing, ENCODERS[1], ENCODERS[3])).name == ENCODERS[1].name
    with pytest.raises(VideoError, match="no AV1 or H.264 encoder opens"):
        choose_encoder("auto", (missing,))
    with pytest.raises(VideoError, match="not one of"):
        choose_encoder("mp4v")


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_frames_come_back_as_written_at_a_constant_rate(tmp_path, codec):
    frames = photo_frames("person-two-hands-face-1280x720.jpg", 45)
    path = tmp_path / "v.mp4"
    writer = VideoWriter(path, 29.97, 640, 480, choose_encoder(codec))
    for frame in frames:
        writer.write(frame)
    writer.close()
    info = probe(path)
    assert (info.codec, info.width, info.height, info.frames) == (codec, 640, 480, 45)
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    decoded = read_frames(path)
    assert len(decoded) == 45
    assert min(psnr(a, b) for a, b in zip(frames, decoded)) > 33


def test_colours_survive_the_round_trip_even_in_dark_flat_areas(tmp_path):
    # FFmpeg's default conversion to 4:2:0 and back took a grey of 50 to 46; OpenCV's is exact to a level.
    path = tmp_path / "grey.mp4"
    writer = VideoWriter(path, 30, 64, 48)
    for level in (50, 50, 50, 20, 200):
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.close()
    assert [round(float(f.mean())) for f in read_frames(path)] == [50, 50, 50, 20, 200]


def test_an_odd_picture_size_loses_its_last_row_and_column_not_its_frames(tmp_path):
    path = tmp_path / "odd.mp4"
    writer = VideoWriter(path, 30, 65, 49)
    for i in range(5):
        writer.write(np.full((49, 65, 3), i * 40, np.uint8))
    writer.close()
    assert [f.shape for f in read_frames(path)] == [(48, 64, 3)] * 5


def test_what_is_not_a_video_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    with pytest.raises(VideoError, match="cannot be opened as a video"):
        probe(junk)
    with pytest.raises(VideoError, match="cannot be opened as a video"):
        VideoReader(junk)


def test_a_video_cut_off_mid_way_gives_the_frames_before_the_cut(tmp_path):
    path = tmp_path / "v.mp4"
    writer = VideoWriter(path, 30, 320, 240, choose_encoder("h264"))
    for frame in photo_frames("person-two-hands-face-1280x720.jpg", 60, size=(320, 240)):
        writer.write(frame)
    writer.close()
    # A fragment of the file's middle, as from a disk that filled: no crash, no hang, at most the frames there were.
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    try:
        with VideoReader(cut) as reader:
            assert len(list(reader)) <= 60
    except VideoError:
        pass  # the index (moov) was in the part cut off: the file says it is no video, in one line


def test_the_recorder_writes_the_pinned_codec_and_says_so_in_the_manifest(tmp_path, make_config, device_key):
    config = make_config(cameras=[{"name": "cam", "source": str(write_video(tmp_path / "in.mp4", frames=45)), "loop": False}], clip_seconds=0)
    written = []
    recorder = Recorder(config, make_sources(config), device_key, on_clip=written.append).start()
    assert wait_until(recorder.sources_ended, 30)
    recorder.close(at_ns=recorder.files_end_ns())
    (clip,) = written
    manifest = json.loads((clip.path / "manifest.json").read_text())
    assert manifest["recorder"]["video_codec"] == "av1" and manifest["recorder"]["video_encoder"] == choose_encoder().name
    assert probe(clip.path / "video.mp4").codec == "av1"
    assert len(read_frames(clip.path / "video.mp4")) == 45
    assert verify_bundle(clip.path).ok


def test_a_blurred_clip_is_labeled_from_the_pixels_that_are_pinned(make_clip, device_key, tmp_path):
    # The face is blurred and the video rewritten: the device's labels must be the ones the validator will
    # measure on the pinned file, not those of the video before the blur.
    config = from_mapping({"data_dir": str(tmp_path / "data")}).validate()
    clip = make_clip(photo_frames("person-two-hands-face-1280x720.jpg", 24))
    labeler = Labeler(config, device_key)
    result = labeler.label(clip)
    assert result.faces_blurred_frames == 24
    assert probe(clip / "video.mp4").codec == "av1"
    manifest = json.loads((clip / "manifest.json").read_text())
    validator = Labeler(config, None, labeler.models).assess(clip, manifest)
    # (the validator names a camera by its file: "video" for the only one)
    assert list(manifest["quality"]["cameras"].values()) == list(validator["quality"]["cameras"].values())
    assert manifest["quality"]["score"] == validator["quality"]["score"]
    assert manifest["decision"] == validator["decision"]


def test_an_mp4v_clip_from_an_older_device_is_still_read(tmp_path):
    path = tmp_path / "old.mp4"
    frames = photo_frames("person-hands-group-1280x720.jpg", 10, size=(320, 240))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert probe(path).codec == "mpeg4"
    assert len(read_frames(path)) == 10
