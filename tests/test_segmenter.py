"""Clip boundaries as plain data: duration cuts, operator start/stop/split, late items."""

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.segmenter import Segmenter

S = 1_000_000_000


def test_duration_clips_are_contiguous_and_opened_on_demand():
    seg = Segmenter(10 * S)
    seg.start(100)
    a = seg.route(100 + 3 * S)
    b = seg.route(100 + 25 * S)
    assert (a.start_ns, a.end_ns) == (100, 100 + 10 * S)
    assert (b.start_ns, b.end_ns) == (100 + 20 * S, 100 + 30 * S)
    assert [s.start_ns for s in seg.spans] == [100, 100 + 10 * S, 100 + 20 * S]


def test_nothing_is_routed_while_stopped():
    seg = Segmenter(0)
    assert seg.route(5) is None
    seg.start(10)
    assert seg.route(50).end_ns is None
    seg.stop(100)
    assert seg.route(150) is None and seg.route(99).end_ns == 100


def test_split_starts_the_next_clip_where_the_last_ends():
    seg = Segmenter(0)
    seg.start(0)
    seg.route(40)
    nxt = seg.split(30)  # asked for a cut before an item the clip already holds: the clip keeps it
    assert seg.spans[0].end_ns == 41 and nxt.start_ns == 41
    assert seg.route(41) is nxt


def test_closable_hands_over_only_finished_spans_once():
    seg = Segmenter(10)
    seg.start(0)
    seg.route(25)
    assert [s.start_ns for s in seg.closable(20)] == [0, 10]
    assert seg.closable(20) == []
    assert seg.route(5) is None  # its clip is sealed: the recorder counts this item as dropped


def test_a_gap_reaches_every_clip_it_overlaps_whenever_it_is_handed_over():
    from collector.segmenter import GapBook, Span
    from collector.sources.base import Gap

    book = GapBook()
    book.update([Gap("cam", 5, None, "unplugged")])
    assert book.overlapping(Span(0, 10))[0].end_ns is None  # sealed while the camera is still away
    book.update([Gap("cam", 5, 25, "unplugged")])  # handed over once, when it closes
    assert book.overlapping(Span(10, 20)) == [Gap("cam", 5, 25, "unplugged")]
    book.forget_before(20)
    assert book.overlapping(Span(20, 30)) == [Gap("cam", 5, 25, "unplugged")]
    book.forget_before(30)
    assert book.overlapping(Span(20, 30)) == []


def test_clips_resume_on_the_grid_after_an_outage_sealed_every_open_clip():
    seg = Segmenter(10)
    seg.start(0)
    seg.route(3)
    assert [s.start_ns for s in seg.closable(25)] == [0]  # every source silent: the open clip was sealed
    assert seg.spans == []
    back = seg.route(57)  # the sources return: clips go on where the grid says, nothing made for 10..50
    assert (back.start_ns, back.end_ns) == (50, 60)
    assert seg.route(61).start_ns == 60


def test_stop_and_split_with_no_open_clip_do_not_fail():
    seg = Segmenter(10)
    seg.start(0)
    seg.route(3)
    seg.closable(25)
    nxt = seg.split(30)
    assert (nxt.start_ns, nxt.end_ns) == (30, 40)
    seg.closable(45)
    seg.stop(47)  # nothing open: nothing to end
    assert not seg.recording and seg.route(48) is None
    seg.start(50)
    assert seg.route(55).start_ns == 50


@settings(max_examples=300, deadline=None)
@given(
    clip=st.integers(min_value=5, max_value=50),
    steps=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=3)), min_size=1, max_size=80),
    lag=st.integers(min_value=1, max_value=60),
)
def test_any_outage_schedule_loses_no_item_that_arrives_in_time(clip, steps, lag):
    """Items arrive in time order with silences of any length between them (an outage of every source);
    the recorder's watermark trails the clock by `lag` and seals what it passes. Every item newer than the
    watermark lands in exactly one clip of the grid, and the clips never overlap."""
    seg = Segmenter(clip)
    seg.start(0)
    now = 0
    sealed = []
    for silence, count in steps:
        now += silence
        sealed += seg.closable(now - lag)  # time passes with nothing arriving: clips are sealed
        for k in range(count):
            t = now + k
            span = seg.route(t)
            assert span is not None and span.start_ns <= t < span.end_ns
            assert span.start_ns % clip == 0 and span.end_ns - span.start_ns == clip
        now += count
    seg.stop(now)
    spans = sorted(sealed + seg.spans, key=lambda s: s.start_ns)
    assert all(a.end_ns <= b.start_ns for a, b in zip(spans, spans[1:]))
