"""Which clip a capture time belongs to: the pure core of cutting synchronized streams into clips."""

from __future__ import annotations

from dataclasses import dataclass

from collector.sources.base import Gap


@dataclass
class Span:
    start_ns: int
    end_ns: int | None  # None: open until the operator stops or splits
    latest_ns: int = -1  # the latest capture time routed here: an end never cuts off what a clip already holds


class Segmenter:
    """Clip boundaries on the shared clock, by duration and by the operator's start/stop/split.

    Clips are contiguous while recording: a clip ends exactly where the next begins, so no sample
    falls between two clips.
    """

    def __init__(self, clip_ns: int):
        self.clip_ns = clip_ns  # 0: manual only
        self.spans: list[Span] = []  # open spans, oldest first
        self.recording = False
        # Where the next duration clip starts: kept apart from `spans`, which empties when every source is
        # silent for longer than a clip (all open spans sealed). Without it nothing would be cut after the outage.
        self._next_ns: int | None = None

    def _open(self, start_ns: int) -> Span:
        span = Span(start_ns, start_ns + self.clip_ns if self.clip_ns else None)
        self.spans.append(span)
        self._next_ns = span.end_ns
        return span

    def start(self, t_ns: int) -> Span:
        if self.recording and self.spans:
            return self.spans[-1]
        self.recording = True
        return self._open(t_ns)

    def stop(self, t_ns: int) -> None:
        if self.recording:
            self._end_last(t_ns)
            self.recording = False

    def split(self, t_ns: int) -> Span | None:
        if not self.recording:
            return None
        if not self.spans:  # every clip was sealed during an outage: the next one starts here
            return self._open(t_ns)
        self._end_last(t_ns)
        return self._open(self.spans[-1].end_ns)

    def _end_last(self, t_ns: int) -> None:
        if not self.spans:
            return  # nothing open (sealed during an outage): nothing to end
        last = self.spans[-1]
        if last.end_ns is None or t_ns < last.end_ns:
            last.end_ns = max(t_ns, last.start_ns, last.latest_ns + 1)
            self._next_ns = last.end_ns

    def route(self, t_ns: int) -> Span | None:
        """The span holding t, opening the next duration clips while recording (also after an outage that
        sealed every open clip: clips resume on the same grid); None if t is in no clip."""
        if self.recording and not self.spans and self._next_ns is not None and t_ns >= self._next_ns:
            # Skip whole clip lengths in which nothing arrived: no empty span is made for them.
            skipped = (t_ns - self._next_ns) // self.clip_ns
            self._open(self._next_ns + skipped * self.clip_ns)
        while self.recording and self.spans and self.spans[-1].end_ns is not None and t_ns >= self.spans[-1].end_ns:
            self._open(self.spans[-1].end_ns)
        for span in self.spans:
            if span.start_ns <= t_ns and (span.end_ns is None or t_ns < span.end_ns):
                span.latest_ns = max(span.latest_ns, t_ns)
                return span
        return None

    def closable(self, watermark_ns: int) -> list[Span]:
        """Spans that no item earlier than `watermark_ns` can still fall into; removed from the open set."""
        done = [s for s in self.spans if s.end_ns is not None and s.end_ns <= watermark_ns]
        self.spans = [s for s in self.spans if s not in done]
        return done


class GapBook:
    """Keeps each stream's gaps until every clip they overlap has taken them.

    Sources hand a closed gap over once; one gap may span several clips, and a clip may close
    before or after the gap does, so the recorder cannot just pass on what it is handed.
    """

    def __init__(self):
        self._gaps: dict[tuple[str, int], Gap] = {}

    def update(self, gaps: list[Gap]) -> None:
        for gap in gaps:
            self._gaps[(gap.stream, gap.start_ns)] = gap  # a gap that has closed replaces its open version

    def overlapping(self, span: Span) -> list[Gap]:
        end = span.end_ns if span.end_ns is not None else float("inf")
        return [g for g in self._gaps.values() if g.start_ns < end and (g.end_ns is None or g.end_ns > span.start_ns)]

    def forget_before(self, t_ns: int) -> None:
        """Drops closed gaps that end before t: no clip still to be sealed can overlap them."""
        self._gaps = {k: g for k, g in self._gaps.items() if g.end_ns is None or g.end_ns > t_ns}
