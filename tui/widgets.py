"""Reusable widgets of the app: a source's status card and a half-block camera preview."""

from __future__ import annotations

from collections import deque
from functools import lru_cache

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

HALF_BLOCK = "▀"
LEVELS = 8  # per channel: 512 colours, plenty for a preview and few enough styles to cache


@lru_cache(maxsize=16384)
def _cell_style(top: int, bottom: int) -> Style:
    def colour(index: int) -> Color:
        r, g, b = index >> 6, (index >> 3) & 7, index & 7
        return Color.from_rgb(r * 255 // 7, g * 255 // 7, b * 255 // 7)

    return Style(color=colour(top), bgcolor=colour(bottom))


def half_blocks(image: np.ndarray, width: int, height: int) -> list[Strip]:
    """A BGR image as `height` lines of `width` cells, two pixels per cell (the upper one in the glyph, the
    lower one behind it). Colours are cut to 3 bits a channel and runs of equal cells share one segment,
    so a frame costs about a millisecond of the event loop rather than tens."""
    rows, cols = image.shape[:2]
    ys = (np.arange(height * 2) * rows / (height * 2)).astype(int)
    xs = (np.arange(width) * cols / width).astype(int)
    small = (image[ys][:, xs] >> 5).astype(np.int32)  # nearest neighbour, 0..7 per channel (BGR)
    index = (small[..., 2] << 6) | (small[..., 1] << 3) | small[..., 0]
    pairs = (index[0::2] << 9) | index[1::2]
    strips = []
    for line in pairs.tolist():
        segments, run_start = [], 0
        for x in range(1, width + 1):
            if x == width or line[x] != line[run_start]:
                key = line[run_start]
                segments.append(Segment(HALF_BLOCK * (x - run_start), _cell_style(key >> 9, key & 511)))
                run_start = x
        strips.append(Strip(segments, width))
    return strips


SPARKS = "▁▂▃▄▅▆▇█"


def spark(values, width: int) -> str:
    """The last `width` values as one line of eighth-blocks, scaled between their own min and max."""
    values = list(values)[-width:] if width > 0 else []
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(7, int((v - low) / span * 8))] for v in values).rjust(width, " ")


class Plots(Widget):
    """One line per sensor channel: name, a sparkline of its recent values, and their range. One widget
    drawing plain strings: a fraction of what a Sparkline widget per channel costs the event loop."""

    DEFAULT_CSS = "Plots { height: auto; }"
    LABEL = 14
    RANGE = 22

    def __init__(self, channels: list[str], history: int, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.history = channels, history
        self.values = {c: deque(maxlen=history) for c in channels}

    def push(self, channel: str, value: float) -> None:
        self.values[channel].append(value)

    def learn(self, channels: list[str]) -> None:
        """Channels named only once the device spoke (a CSV header, the first JSON sample, a capture process
        that had not reported yet when the screen was built)."""
        if channels == self.channels:
            return
        self.channels = channels
        self.values = {c: self.values.get(c) or deque(maxlen=self.history) for c in channels}
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.channels)

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if y >= len(self.channels):
            return Strip.blank(width)
        channel = self.channels[y]
        values = self.values[channel]
        label = channel[: self.LABEL - 1].ljust(self.LABEL)
        bounds = f" {min(values):.3g}..{max(values):.3g}" if values else ""
        line = spark(values, max(0, width - self.LABEL - self.RANGE))
        return Strip(
            [
                Segment(label, Style(bold=True)),
                Segment(line, Style(color="cyan")),
                Segment(bounds[: self.RANGE].ljust(self.RANGE), Style(dim=True)),
            ]
        ).crop_extend(0, width, None)


def graphics_preview() -> bool:
    """True where the terminal shows real images (Kitty graphics or Sixel). textual-image asks the terminal
    when it is imported, which must happen before the app takes the terminal over."""
    try:
        from textual_image.renderable import Image, SixelImage, TGPImage
    except Exception:  # noqa: BLE001 - an odd terminal must not keep the app from starting
        return False
    return Image in (SixelImage, TGPImage)


class Preview(Widget):
    """The latest frame of one camera, redrawn when the app's refresh timer hands it a new one: as half-block
    cells (two pixels per cell, any colour terminal) or, where the terminal can, as a real image."""

    DEFAULT_CSS = "Preview { width: 1fr; height: 1fr; min-height: 6; }"
    GRAPHICS_EVERY_NS = 500_000_000  # a real image is megabytes of escape codes: at most 2 per second

    def __init__(self, camera: str, graphics: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.camera = camera
        self.graphics = graphics
        self.border_title = f"preview {camera}"
        self._image: np.ndarray | None = None
        self.shown_ns = 0
        self._strips: list[Strip] = []
        self._strips_key: tuple = ()

    def compose(self):
        if self.graphics:
            from textual_image.widget import Image

            yield Image(id="picture")

    def show(self, image: np.ndarray, capture_ns: int) -> None:
        if capture_ns == self.shown_ns:
            return
        if self.graphics:
            if capture_ns - self.shown_ns < self.GRAPHICS_EVERY_NS:
                return
            from PIL import Image as PILImage

            self.query_one("#picture").image = PILImage.fromarray(np.ascontiguousarray(image[..., ::-1]))
        self._image, self.shown_ns = image, capture_ns
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size.width, self.content_size.height
        if self.graphics or self._image is None or width < 2 or height < 1:
            return Strip([Segment(f"waiting for {self.camera}…" if y == 0 and self._image is None else "", Style(dim=True))]).extend_cell_length(width)
        key = (self.shown_ns, width, height)
        if self._strips_key != key:  # one conversion per new frame and size, whatever asks for lines
            self._strips, self._strips_key = half_blocks(self._image, width, height), key
        return self._strips[y] if y < len(self._strips) else Strip.blank(width)


def describe_stats(kind: str, stats, info: dict) -> str:
    """A card's lines: what the source says about itself and its live counters."""
    errors = sum(stats.errors.values())
    lines = [f"state     {stats.state}"]
    if kind == "camera":
        size = f"{info.get('width', '?')}x{info.get('height', '?')}" if info.get("width") else "?"
        lines += [
            f"source    {info.get('source', '')}",
            f"size      {size}",
            f"rate      {stats.rate:.1f} fps (nominal {info.get('nominal_rate') or '?'})",
            f"frames    {stats.received}   dropped {stats.dropped}   late {stats.late}",
        ]
    else:
        lines += [
            f"port      {info.get('source', info.get('port', ''))}",
            f"rate      {stats.rate:.0f} /s (nominal {info.get('nominal_rate') or '?'})",
            f"samples   {stats.received}   lost {stats.lost}   dropped {stats.dropped}",
            f"errors    {errors}" + ("  (" + ", ".join(f"{n} {why}" for why, n in stats.errors.most_common(3)) + ")" if errors else ""),
        ]
    if stats.last_error:
        lines.append(f"[b red]error[/]     {stats.last_error}")
    return "\n".join(lines)


class SourceCard(Static):
    """One source: its kind, counters and last error; the card turns red while the source is failing."""

    def __init__(self, name: str, kind: str, **kwargs):
        super().__init__("", markup=True, **kwargs)
        self.source_name, self.kind = name, kind
        self.border_title = f"{kind} {name}"
        self.add_class("card")

    def update_from(self, stats, info: dict, last_values: str = "") -> None:
        text = describe_stats(self.kind, stats, info)
        if last_values:
            text += f"\nlast      {last_values}"
        self.update(text)
        self.set_class(bool(stats.last_error) or stats.state not in ("recording", "starting", "ended"), "failing")
