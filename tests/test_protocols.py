"""The serial decoders: every protocol, garbage, partial lines and corrupt frames; never a wrong value."""

from collector.simulator import IMU_BINARY_FORMAT, IMU_FIELDS, encode
from collector.sources.protocols import (
    MAX_LINE,
    BinaryFrameDecoder,
    CsvDecoder,
    JsonLinesDecoder,
    KeyValueDecoder,
    encode_frame,
)

VALUES = (0.1, -0.2, 9.81, 0.01, 0.02, -0.03)


def lines(protocol, start=0, n=3):
    return b"".join(encode(protocol, 1000 * i, i, VALUES) for i in range(start, start + n))


def test_csv_uses_the_header_and_keeps_device_time_beside_values():
    d = CsvDecoder(device_time_field="t_us")
    r = d.feed(b"t_us,seq,ax,ay,az,gx,gy,gz\n" + lines("csv"))
    assert d.channels == ("seq", "ax", "ay", "az", "gx", "gy", "gz")
    assert [x.device_time for x in r.readings] == [0, 1000, 2000]
    assert r.readings[1].values == (1.0, *VALUES)
    assert not r.errors


def test_csv_before_any_header_is_counted_not_guessed():
    d = CsvDecoder(device_time_field="t_us")
    r = d.feed(b"junk-start\n" + lines("csv"))
    assert r.readings == []
    assert r.errors["no header yet"] == 3


def test_csv_configured_columns_stand_in_for_a_header_sent_only_at_boot():
    d = CsvDecoder(device_time_field="t_us", columns=IMU_FIELDS)
    r = d.feed(b"cut-off tail\n" + lines("csv"))
    assert len(r.readings) == 3 and r.errors["partial line"] == 1


def test_first_line_after_opening_is_dropped_because_it_may_be_cut():
    d = KeyValueDecoder(device_time_field="t_us")
    whole = lines("kv", n=2)
    # The port opened in the middle of "seq=0 ...": "q=0 ax=..." must not become a sample.
    r = d.feed(whole[7:])
    assert len(r.readings) == 1 and r.errors["partial line"] == 1
    assert r.readings[0].values[0] == 1.0


def test_lines_split_across_reads_are_joined():
    d = JsonLinesDecoder(device_time_field="t_us")
    data = lines("jsonl", n=4)
    readings = []
    for i in range(0, len(data), 7):
        readings += d.feed(data[i : i + 7]).readings
    assert [r.values[0] for r in readings] == [0.0, 1.0, 2.0, 3.0]


def test_jsonl_skips_non_objects_and_bad_json():
    d = JsonLinesDecoder(channels=("ax",))
    r = d.feed(b'{"ax": 1}\n[1,2]\n{"ax": \n{"ax": "x"}\n{"ax": 2.5}\n')
    assert [x.values for x in r.readings] == [(1.0,), (2.5,)]
    assert r.errors == {"json not an object": 1, "bad json": 1, "missing ax": 1}


def test_key_value_pairs_with_commas_or_spaces():
    d = KeyValueDecoder(channels=("ax", "ay"))
    r = d.feed(b"start\nax=1,ay=2\nax=3 ay=4\nax=5 ay=oops\nax=6\n")
    assert [x.values for x in r.readings] == [(1.0, 2.0), (3.0, 4.0)]
    assert r.errors["not a number"] == 1 and r.errors["missing ay"] == 1


def test_garbage_bytes_from_a_wrong_baud_rate_store_nothing():
    d = CsvDecoder(device_time_field="t_us", columns=IMU_FIELDS)
    noise = bytes(range(128, 256)) * 3
    r = d.feed(b"\n" + noise + b"\n" + b"\xff\xfe1,2\n" + lines("csv", n=1))
    assert len(r.readings) == 1
    assert r.errors["garbage bytes"] == 2


def test_an_endless_line_is_cut_and_counted_not_buffered_forever():
    d = KeyValueDecoder()
    r = d.feed(b"x" * (MAX_LINE + 10))
    assert r.errors["overlong line"] == 1
    r = d.feed(b"\n" + lines("kv", n=2))
    assert len(r.readings) == 2


def test_nan_and_infinity_are_not_values():
    d = CsvDecoder(columns=("a", "b"))
    r = d.feed(b"\n1,nan\n1,inf\n1,2\n")
    assert [x.values for x in r.readings] == [(1.0, 2.0)]
    assert r.errors["not a number"] == 2


def test_binary_frames_decode_exactly():
    d = BinaryFrameDecoder(IMU_BINARY_FORMAT, IMU_FIELDS, "t_us")
    r = d.feed(lines("binary", n=5))
    assert [x.device_time for x in r.readings] == [0, 1000, 2000, 3000, 4000]
    assert r.readings[2].values[0] == 2.0
    assert abs(r.readings[2].values[3] - 9.81) < 1e-5


def test_binary_crc_failure_skips_exactly_the_corrupt_frame():
    d = BinaryFrameDecoder(IMU_BINARY_FORMAT, IMU_FIELDS, "t_us")
    frames = [encode("binary", i, i, VALUES) for i in range(4)]
    bad = bytearray(frames[1])
    bad[10] ^= 0x04  # one flipped bit inside the payload
    r = d.feed(frames[0] + bytes(bad) + frames[2] + frames[3])
    assert [x.values[0] for x in r.readings] == [0.0, 2.0, 3.0]
    assert r.errors["crc mismatch"] == 1


def test_binary_resynchronises_after_garbage_and_split_frames():
    d = BinaryFrameDecoder(IMU_BINARY_FORMAT, IMU_FIELDS, "t_us")
    stream = b"\x00\x13garbage\xa5" + lines("binary", n=3) + b"\xa5\x5a\xff\xff" + lines("binary", 3, 2)
    readings, errors = [], {}
    for i in range(0, len(stream), 5):
        res = d.feed(stream[i : i + 5])
        readings += res.readings
        for k, v in res.errors.items():
            errors[k] = errors.get(k, 0) + v
    assert [x.values[0] for x in readings] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert errors.get("garbage bytes", 0) >= 1 and errors.get("bad frame length", 0) == 1


def test_binary_format_and_field_count_must_agree():
    import pytest

    with pytest.raises(ValueError, match="3 fields"):
        BinaryFrameDecoder("<Qf", ("a", "b", "c"))


def test_encode_frame_is_sync_length_payload_crc():
    import struct
    import zlib

    frame = encode_frame("<f", (1.5,))
    assert frame[:2] == b"\xa5\x5a" and struct.unpack("<H", frame[2:4]) == (4,)
    assert struct.unpack("<I", frame[-4:])[0] == zlib.crc32(frame[4:8])


def test_binary_bytes_before_the_first_sync_are_the_tail_of_an_unheard_frame():
    d = BinaryFrameDecoder(IMU_BINARY_FORMAT, IMU_FIELDS, "t_us")
    whole = lines("binary", n=2)
    r = d.feed(whole[9:])  # opened mid-frame
    assert r.errors == {"partial frame": 1} and [x.values[0] for x in r.readings] == [1.0]
    r = d.feed(b"\x01\x02" + lines("binary", 2, 1))
    assert r.errors == {"garbage bytes": 1} and len(r.readings) == 1
