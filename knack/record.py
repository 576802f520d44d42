"""`knack record` (and the demo's recording): a device session run at a console until Ctrl-C, a duration,
or the end of its file cameras, with one line per event and a progress line."""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass

from knack import events as ev
from knack.session import DeviceSession


def stop_event() -> threading.Event:
    """Set by Ctrl-C or SIGTERM, so the session closes in order rather than dying mid-clip."""
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def progress_line(recorder) -> str:
    parts = []
    for s in recorder.sources:
        st = s.stats
        errors = sum(st.errors.values())
        if s.kind == "camera":
            parts.append(f"{s.name}: {st.received} frames ({st.rate:.1f} fps), {st.dropped} dropped, {st.late} late [{st.state}]")
        else:
            parts.append(f"{s.name}: {st.received} samples ({st.rate:.0f}/s), {st.lost} lost, {errors} bad [{st.state}]")
    return " | ".join(parts) + f" | clips {recorder.totals.clips}"


def labeled_line(result) -> str:
    mark = "ACCEPTED" if result.accepted else "REJECTED"
    blurred = f", faces blurred in {result.faces_blurred_frames} frames" if result.faces_blurred_frames else ""
    line = f"  {mark} {result.clip_id}  quality {result.score:.2f}{blurred}  ({result.seconds:.1f} s)"
    return line if result.accepted else f"{line}\n           {result.summary}"


def console_line(event: ev.Event, tty: bool) -> str | None:
    """What `knack record` prints for an event; None for events it leaves to the summary."""
    match event:
        case ev.ClipWritten(clip):
            # On a terminal the progress line is rewritten in place: start the clip's line below it.
            return f"{chr(10) if tty else ''}clip {clip.clip_id}: {clip.frames} frames, {clip.samples} samples -> {clip.path}"
        case ev.ClipLabeled(result):
            return labeled_line(result)
        case ev.ClipPinned(result):
            return f"  {'pinned' if not result.error else 'not pinned'} {result.clip_id}  {result.cid or ''}{'  ' + result.error if result.error else ''}"
        case ev.BatchSubmitted(s):
            return f"  batch {s.batch_id}: {len(s.clip_ids)} clip(s) submitted in {s.tx_hash}" if not s.error else f"  not submitted: {s.error}"
        case ev.ClipsSettled(count):
            return f"  {count} clip(s) settled on chain (knack rewards)"
        case ev.Problem(part, text):
            return f"  {part}: {text} (clips wait in the outbox and are tried again)"
        case ev.ProblemCleared(part):
            return f"  {part}: reachable again"
    return None


@dataclass
class Recording:
    session: DeviceSession

    @property
    def recorder(self):
        return self.session.recorder

    @property
    def written(self) -> list:
        return list(self.session.written)

    @property
    def labeled(self) -> list:
        return self.session.labeled

    @property
    def pinned(self) -> list:
        return list(self.session.pinned)


def run_recording(session: DeviceSession, duration: float | None, until_sources_end: bool = False, quiet: bool = False) -> Recording:
    """Records until Ctrl-C, `duration`, or the end of the cameras when every one is a video file (with
    `until_sources_end` that is the expected end, and said nothing of), then closes the session: the open
    clip is sealed, queued clips are labeled, pinned and (where a chain is usable) submitted."""
    tty = sys.stdout.isatty()
    if not quiet:

        def show(event: ev.Event) -> None:
            if (line := console_line(event, tty)) is not None:
                print(line, flush=True)

        session.listener = show
    stop = stop_event()
    session.start()
    recorder = session.recorder
    recorder.stop_at_cameras_end()  # a recording of video files ends with them, not with the next clip begun
    for message in recorder.recovered:
        print(message)
    if session.backlog and not quiet:
        print(f"{len(session.backlog)} earlier clip(s) not labeled yet: labeling them in the background", flush=True)
    started = time.monotonic()
    last_print = 0.0
    while not stop.wait(0.2):
        now = time.monotonic()
        if duration and now - started >= duration:
            break
        if recorder.sources_ended():
            # Every camera was a video file and each has ended: what would follow are clips without video,
            # which the labeler rejects (`no_video`).
            if not until_sources_end and not quiet:
                print(("\n" if tty else "") + "every camera's video file has ended: recording stops there", flush=True)
            break
        if not quiet and (now - last_print >= (1 if tty else 5)):
            print(("\r" if tty else "") + progress_line(recorder), end="" if tty else "\n", flush=True)
            last_print = now
    recorder.close(at_ns=recorder.files_end_ns() if recorder.sources_ended() else None)
    if not quiet:
        print(("\n" if tty else "") + progress_line(recorder))
    if session.labels is not None and session.labels.pending and not quiet:
        print(f"labeling the last {session.labels.pending} clip(s)...", flush=True)
    session.close()
    for clip, reason in session.label_failures:
        print(f"clip {clip.name} was not labeled: {reason} (run `knack label {clip}` to try again)")
    return Recording(session)
