"""/metrics in the Prometheus text format, read from a snapshot of the service at each scrape.

A custom collector rather than counters bumped across the code: the recorder, the label worker and the
outbox already count, so the metrics are those counts, never a second set that could drift from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from knack.endpoint import metrics_registry


@dataclass(frozen=True)
class StreamSnapshot:
    name: str
    kind: str  # camera | serial | joints
    state: str
    received: int
    dropped: int
    late: int
    lost: int
    errors: dict  # reason -> count
    rate: float


@dataclass(frozen=True)
class Snapshot:
    """What the service knows at one instant; every field is a plain value."""

    streams: list[StreamSnapshot]
    clips_by_state: dict  # outbox state -> clips
    counts: dict  # written, pinned, pin_failed, accepted, rejected, label_failed, pruned
    recording: bool
    paused_because: str | None
    upload_lag_s: float  # age of the oldest clip accepted but not settled; 0 when none waits
    last_error_at: float  # unix time of the last warning or error; 0 when none
    label_queue: int
    data_bytes: int
    free_bytes: int
    chain_rounds: dict = field(default_factory=dict)  # ok / error -> rounds
    health_ok: bool = True


def _stream_counter(name: str, doc: str, streams, value: Callable) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["stream", "kind"])
    for s in streams:
        family.add_metric([s.name, s.kind], value(s))
    return family


class ServiceCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.snapshot = snapshot

    def collect(self):
        snap = self.snapshot()
        cameras = [s for s in snap.streams if s.kind == "camera"]
        sensors = [s for s in snap.streams if s.kind != "camera"]
        yield _stream_counter("knack_frames", "Video frames captured, per camera.", cameras, lambda s: s.received)
        yield _stream_counter("knack_samples", "Sensor samples captured, per serial or joint-state stream.", sensors, lambda s: s.received)
        yield _stream_counter(
            "knack_dropped",
            "Items dropped because the recorder fell behind (bounded queue full) or they came too late for their clip.",
            snap.streams,
            lambda s: s.dropped,
        )
        yield _stream_counter("knack_late_frames", "Frames a camera should have delivered at its nominal rate and did not.", cameras, lambda s: s.late)
        yield _stream_counter("knack_lost_samples", "Samples missing by the device's sequence counter.", sensors, lambda s: s.lost)
        errors = CounterMetricFamily("knack_parse_errors", "Input skipped because it did not parse, per stream and reason.", labels=["stream", "reason"])
        for s in snap.streams:
            for reason, count in sorted(s.errors.items()):
                errors.add_metric([s.name, reason], count)
        yield errors
        up = GaugeMetricFamily("knack_stream_up", "1 while the stream is recording, else 0.", labels=["stream", "kind", "state"])
        rate = GaugeMetricFamily("knack_stream_rate", "Measured items per second over the last second.", labels=["stream", "kind"])
        for s in snap.streams:
            up.add_metric([s.name, s.kind, s.state.split(":")[0]], 1.0 if s.state == "recording" else 0.0)
            rate.add_metric([s.name, s.kind], s.rate)
        yield up
        yield rate
        clips = GaugeMetricFamily("knack_clips", "Clips in the outbox, by state.", labels=["state"])
        for state, count in snap.clips_by_state.items():
            clips.add_metric([state], count)
        yield clips
        done = CounterMetricFamily("knack_clip_events", "What happened to clips since the service started.", labels=["event"])
        for event, count in sorted(snap.counts.items()):
            done.add_metric([event], count)
        yield done
        yield GaugeMetricFamily(
            "knack_upload_lag_seconds", "Age of the oldest clip accepted but not yet settled on chain (0 when none waits).", value=snap.upload_lag_s
        )
        yield GaugeMetricFamily("knack_last_error_timestamp_seconds", "Unix time of the last warning or error logged (0 when none).", value=snap.last_error_at)
        yield GaugeMetricFamily("knack_recording", "1 while clips are being recorded, 0 when paused or stopping.", value=1.0 if snap.recording else 0.0)
        yield GaugeMetricFamily(
            "knack_recording_paused", "1 while recording is paused by the disk quota or the free-space floor.", value=1.0 if snap.paused_because else 0.0
        )
        yield GaugeMetricFamily("knack_label_queue", "Clips waiting to be labeled.", value=snap.label_queue)
        yield GaugeMetricFamily("knack_data_dir_bytes", "Bytes on disk under the data directory.", value=snap.data_bytes)
        yield GaugeMetricFamily("knack_disk_free_bytes", "Free bytes on the data directory's file system.", value=snap.free_bytes)
        rounds = CounterMetricFamily("knack_chain_rounds", "Chain rounds (submit, settle, read back), by result.", labels=["result"])
        for result in ("ok", "error"):
            rounds.add_metric([result], snap.chain_rounds.get(result, 0))
        yield rounds
        yield GaugeMetricFamily("knack_healthy", "1 when /healthz says ok, 0 when degraded.", value=1.0 if snap.health_ok else 0.0)


def registry_for(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """The service's metrics plus the process's own (resident memory, open file descriptors, CPU)."""
    return metrics_registry(ServiceCollector(snapshot))
