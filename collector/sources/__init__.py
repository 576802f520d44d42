"""Capture sources: each runs in its own thread and hands timestamped items to the recorder through a bounded queue."""

from collector.sources.base import Frame, Gap, Sample, Source, StreamStats
from collector.sources.factory import make_sources

__all__ = ["Frame", "Gap", "Sample", "Source", "StreamStats", "make_sources"]
