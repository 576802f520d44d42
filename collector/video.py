"""Clip video through one seam, PyAV (FFmpeg's libraries): written compact and playable, read back frame by frame.

The pinned video is AV1 (SVT-AV1, or NVENC on a GPU), H.264 where no AV1 encoder opens: about a quarter of the
bytes of OpenCV's mp4v at equal PSNR (bench/video.py), and what browsers and the Rerun viewer play. OpenCV's
FFmpeg has no AV1 decoder, so every bundle video is read here; cameras (and video files played as cameras)
are still read by OpenCV in collector/sources/camera.py.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# SVT-AV1 prints its whole configuration to stderr at every encoder start unless told otherwise; read when an
# encoder opens, so it must be set before the first one.
os.environ.setdefault("SVT_LOG", "1")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from collector.config import VIDEO_CODECS as CODECS  # noqa: E402

log = logging.getLogger("knack.video")


class VideoError(ValueError):
    """A video that cannot be read or written, in one sentence."""


@dataclass(frozen=True)
class Encoder:
    name: str  # FFmpeg's encoder name
    codec: str  # what a player needs: av1 or h264
    options: tuple[tuple[str, str], ...] = ()  # FFmpeg's private options of the encoder
    hardware: bool = False


# In order of preference. The software settings were chosen on the sample's source (bench/video.py): SVT-AV1
# preset 10 encodes 640x360 at about 20x real time on 2 cores; crf 32 gives fewer than a quarter of mp4v's bytes
# at a higher PSNR. x264 crf 22 is the fallback at about mp4v's PSNR. NVENC opens only where a GPU is present.
ENCODERS = (
    Encoder("av1_nvenc", "av1", (("preset", "p5"), ("rc", "vbr"), ("cq", "32")), hardware=True),
    Encoder("libsvtav1", "av1", (("preset", "10"), ("crf", "32"))),
    Encoder("h264_nvenc", "h264", (("preset", "p5"), ("rc", "vbr"), ("cq", "24")), hardware=True),
    Encoder("libx264", "h264", (("preset", "veryfast"), ("crf", "22"))),
)


def opens(encoder: Encoder) -> bool:
    """Whether this FFmpeg build has the encoder and it starts here (NVENC needs a GPU and its driver)."""
    try:
        context = av.CodecContext.create(encoder.name, "w")
        context.width, context.height, context.pix_fmt = 128, 128, "yuv420p"
        context.time_base = Fraction(1, 30)
        context.options = dict(encoder.options)
        context.open()
        frame = av.VideoFrame(128, 128, "yuv420p")
        frame.pts = 0
        context.encode(frame)
        context.encode(None)
        return True
    except Exception as exc:  # an unknown codec, no device, a driver error: each means "not here"
        log.debug("encoder %s does not open here: %s", encoder.name, exc)
        return False


@functools.cache
def choose_encoder(codec: str = "auto", candidates: tuple[Encoder, ...] = ENCODERS) -> Encoder:
    """The first encoder of `candidates` for `codec` ("auto": AV1, else H.264) that opens on this machine."""
    if codec not in CODECS:
        raise VideoError(f"video codec {codec!r} is not one of {', '.join(CODECS)}")
    for encoder in candidates:
        if codec in ("auto", encoder.codec) and opens(encoder):
            return encoder
    raise VideoError(f"no {codec if codec != 'auto' else 'AV1 or H.264'} encoder opens in this FFmpeg build (tried {', '.join(e.name for e in candidates)})")


class VideoWriter:
    """One camera's frames (BGR, one size) to an MP4 file at a constant frame rate.

    Raises OSError when the file cannot be written (a full disk), so a recorder treats it as any other I/O
    failure; the frame count is known to the caller, and a file is complete only once close() returned."""

    def __init__(self, path: Path, fps: float, width: int, height: int, encoder: Encoder | None = None, keyframe_every: int | None = None):
        self.encoder = encoder or choose_encoder()
        self.path = Path(path)
        # 4:2:0 needs even sizes: an odd row or column is left out rather than the picture scaled.
        self.width, self.height = width - width % 2, height - height % 2
        if self.width < 2 or self.height < 2:
            raise VideoError(f"{path.name}: a {width}x{height} picture is too small to encode")
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self._container = av.open(str(path), "w", format="mp4")
            self._stream = self._container.add_stream(self.encoder.name, rate=rate)
            self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
            self._stream.codec_context.time_base = 1 / rate
            # OpenCV's BT.601 limited-range conversion, said in the stream so that players convert back the same way.
            self._stream.codec_context.color_range = av.video.reformatter.ColorRange.MPEG
            self._stream.codec_context.colorspace = av.video.reformatter.Colorspace.ITU601
            # A keyframe every few frames (a training set's videos: any frame decodes after at most that many).
            self._stream.options = dict(self.encoder.options) | ({"g": str(keyframe_every)} if keyframe_every else {})
        except av.FFmpegError as exc:
            raise OSError(f"cannot write {path}: {exc}") from exc
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if image.shape[:2] != (self.height, self.width):
            image = np.ascontiguousarray(image[: self.height, : self.width])
        # OpenCV's colour conversion, not swscale's: it rounds exactly (a round trip is off by half a grey level on
        # average; swscale's default path by two, and by four in dark flat areas).
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts = self.frames
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as exc:
            raise OSError(f"cannot write {self.path}: {exc}") from exc
        self.frames += 1

    def close(self) -> None:
        """Flushes the encoder (it holds back frames to look ahead) and finishes the file."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except av.FFmpegError as exc:
            raise OSError(f"cannot finish {self.path}: {exc}") from exc

    def abandon(self) -> None:
        """Closes without caring whether the file is complete (it is about to be deleted)."""
        try:
            self._container.close()
        except Exception as exc:  # the file is being thrown away: nothing more to say than this
            log.debug("closing abandoned %s: %s", self.path, exc)


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    frames: int  # as the container says; 0 when it does not say


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoError(f"{path.name} holds no video stream")
    return container.streams.video[0]


def _info(stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    context = stream.codec_context
    return VideoInfo(context.codec.canonical_name, int(context.width or 0), int(context.height or 0), float(rate) if rate else 0.0, int(stream.frames or 0))


def to_bgr(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as OpenCV's BGR: by OpenCV's conversion for what knack writes (8-bit 4:2:0 of even size),
    by swscale for anything else a video from elsewhere may hold."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


class VideoReader:
    """A video's frames as BGR arrays, decoded in order; use as a context manager.

    `info` is read before anything is decoded, so a caller can refuse an absurd file (its size or length) first.
    A file that breaks off mid-way ends the frames there (as a truncated recording would); one that cannot be
    opened raises VideoError."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._container = av.open(str(path))
            self._stream = _video_stream(self._container, self.path)
        except av.FFmpegError as exc:
            raise VideoError(f"{self.path.name} cannot be opened as a video: {exc}") from exc
        except VideoError:
            self._container.close()
            raise
        self._stream.thread_type = "AUTO"
        self.info = _info(self._stream)

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            for frame in self._container.decode(self._stream):
                yield to_bgr(frame)
        except (av.FFmpegError, ValueError) as exc:
            log.debug("%s: decoding stopped: %s", self.path, exc)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(path: Path) -> VideoInfo:
    """The container's word on the video (nothing decoded). Raises VideoError for a file FFmpeg cannot open."""
    with VideoReader(path) as reader:
        return reader.info


def write_video(path: Path, frames: list[np.ndarray], fps: float, encoder: Encoder | None = None) -> Path:
    """Frames of one size to a file, as the recorder writes a camera's clip (default: the pinned codec)."""
    height, width = frames[0].shape[:2]
    writer = VideoWriter(path, fps, width, height, encoder)
    for frame in frames:
        writer.write(frame)
    writer.close()
    return Path(path)


def read_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame (or the first `limit`): for tests, tools and short clips; the labeler streams instead."""
    out: list[np.ndarray] = []
    with VideoReader(path) as reader:
        for frame in reader:
            if limit is not None and len(out) >= limit:
                break
            out.append(frame)
    return out
