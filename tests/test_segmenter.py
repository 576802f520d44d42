"""Clip boundaries as plain data: duration cuts, operator start/stop/split, late items."""

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
