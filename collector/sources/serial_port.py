"""Serial sensor capture through pyserial: bytes from the port, decoded by the configured protocol, timestamped on arrival."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import serial

from collector.config import SerialConfig, SerialProtocol
from collector.sources.base import ErrorReporter, Sample, SequenceCounter, ThreadedSource
from collector.sources.protocols import (
    BinaryFrameDecoder,
    CsvDecoder,
    Decoder,
    JsonLinesDecoder,
    KeyValueDecoder,
)

log = logging.getLogger("knack.capture")


class ByteStream(Protocol):
    """The serial seam: open, read what has arrived, close."""

    def open(self) -> str | None: ...
    def read(self) -> bytes: ...
    def close(self) -> None: ...


class PySerialStream:
    def __init__(self, config: SerialConfig):
        self.config = config
        self._port: serial.Serial | None = None

    def open(self) -> str | None:
        try:
            self._port = serial.Serial(
                self.config.port,
                baudrate=self.config.baudrate,
                bytesize=self.config.bytesize,
                parity=self.config.parity.value,
                stopbits=self.config.stopbits,
                timeout=0.05,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            return _reason(exc)
        return None

    def read(self) -> bytes:
        assert self._port is not None
        # Whatever has arrived, or wait up to the timeout for one byte: small reads keep arrival times sharp.
        return self._port.read(self._port.in_waiting or 1)

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
            self._port = None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, serial.SerialException) and exc.__context__ is not None and not text:
        text = str(exc.__context__)
    return text.splitlines()[0] if text else type(exc).__name__


def make_decoder(config: SerialConfig) -> Decoder:
    time_field = config.device_time_field or None
    if config.protocol is SerialProtocol.BINARY:
        return BinaryFrameDecoder(config.binary_format, config.binary_fields, time_field)
    if config.protocol is SerialProtocol.CSV:
        return CsvDecoder(config.channels, time_field, config.csv_columns)
    cls = {SerialProtocol.JSONL: JsonLinesDecoder, SerialProtocol.KV: KeyValueDecoder}[config.protocol]
    return cls(config.channels, time_field)


class SerialSource(ThreadedSource):
    kind = "serial"

    def __init__(self, config: SerialConfig, stream: ByteStream | None = None):
        super().__init__(config.name, config.queue_size)
        self.config = config
        self.stream = stream or PySerialStream(config)
        self.decoder = self._make_decoder()
        self.channels: tuple[str, ...] = tuple(self.decoder.channels)
        self.reporter = ErrorReporter(f"{self.kind} {self.name}")
        self._sequence = SequenceCounter()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.config.port,
            "protocol": self.config.protocol.value,
            "baudrate": self.config.baudrate,
            "nominal_rate": self.config.nominal_rate or None,
            "channels": list(self.decoder.channels),
            "device_time_field": self.config.device_time_field or None,
        }

    def _run(self) -> None:
        unit_ns = self.config.device_time_unit.ns
        says = lambda why: f"serial {self.name}: cannot open {self.config.port} ({why}); re-opening when it returns"  # noqa: E731
        while self._open_with_backoff(self.stream.open, 0.2, 2.0, says):
            self._resume(f"serial {self.name}: {self.config.port}")
            # A re-opened port starts mid-stream: a fresh decoder resynchronises instead of gluing old and new bytes.
            self.decoder = self._fresh_decoder()
            self._sequence = SequenceCounter()
            while not self._stop.is_set():
                try:
                    data = self.stream.read()
                except (serial.SerialException, OSError) as exc:
                    why = _reason(exc)
                    log.warning("serial %s: %s disappeared (%s); re-opening when it returns", self.name, self.config.port, why)
                    self.stats.last_error = why
                    self._open_gap_at(self.clock.now_ns(), f"port disappeared: {why}")
                    break
                if not data:
                    self.reporter.flush(self.clock.now_ns())
                    continue
                capture_ns = self.clock.now_ns()
                result = self.decoder.feed(data)
                if result.errors:
                    self.stats.errors.update(result.errors)
                    self.reporter.add(result.errors, capture_ns)
                if not self.channels and self.decoder.channels:
                    self.channels = tuple(self.decoder.channels)
                for reading in result.readings:
                    self._count_sequence(reading.values)
                    device_ns = None if reading.device_time is None else int(reading.device_time * unit_ns)
                    self._emit(Sample(self.name, capture_ns, device_ns, reading.values))
            self.stream.close()
        self.reporter.flush(self.clock.now_ns(), force=True)
        self.stats.state = "stopped"

    def _make_decoder(self) -> Decoder:
        return make_decoder(self.config)

    def _fresh_decoder(self) -> Decoder:
        decoder = self._make_decoder()
        # Keep the channel order learned before the port vanished, so one stream has one layout.
        if self.channels and not self.config.channels and self.config.protocol is not SerialProtocol.BINARY:
            decoder.channels = self.channels
        return decoder

    def _count_sequence(self, values: tuple[float, ...]) -> None:
        if not self.config.seq_field or self.config.seq_field not in self.channels:
            return
        self.stats.lost += self._sequence.missing(int(values[self.channels.index(self.config.seq_field)]))
