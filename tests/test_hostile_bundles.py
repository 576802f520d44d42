"""Bundles laid out on disk to attack the device's own tools: links out of the bundle, pipes and devices in
it, a manifest that is a link, a directory stuffed with entries, names that break a line. `knack verify`,
`knack export-car` and pinning refuse each one with a sentence, read nothing outside, and never hang."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.bundle import MANIFEST, MAX_ENTRIES, manifest_problems, verify_bundle
from storage.content.ipfs import EmbeddedStore
from storage.outbox.db import Outbox
from storage.outbox.pinner import enqueue_all, pin_due
from tests.conftest import knack_cli

ACCEPTED = {"status": "accepted", "accepted": True, "reasons": [], "summary": "accepted: every check passed"}


def frames(seed, count=8):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def clip(make_clip):
    return make_clip(frames(0), decision=ACCEPTED)


def listed(clip, name):
    return next(e for e in json.loads((clip / MANIFEST).read_text())["files"] if e["name"] == name)


def verify_soon(path, seconds=20):
    """verify_bundle in a thread: a read of a pipe would block forever, and the test must say so, not hang."""
    out = []
    thread = threading.Thread(target=lambda: out.append(verify_bundle(path)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"verify_bundle({path}) did not return within {seconds} s"
    return out[0]


def test_a_link_to_a_file_outside_with_the_right_hash_listed_is_refused(clip, tmp_path):
    # The attack: the manifest lists video.mp4 with the size and sha256 of a file outside the bundle (here a
    # stand-in for /etc/passwd), and video.mp4 is a symbolic link to it. Followed, every check would pass.
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    video = clip / "video.mp4"
    entry = listed(clip, "video.mp4")
    entry_bytes = video.read_bytes()
    assert hashlib.sha256(entry_bytes).hexdigest() == entry["sha256"]
    video.unlink()
    # The secret is given the listed bytes' identity by making it hold them: the hash check alone would pass.
    secret.write_bytes(entry_bytes)
    video.symlink_to(secret)
    result = verify_soon(clip)
    assert not result.ok
    assert any("video.mp4 is a symbolic link" in p for p in result.problems), result.problems


def test_a_manifest_that_is_a_link_is_not_read(clip, tmp_path):
    elsewhere = tmp_path / "manifest-elsewhere.json"
    (clip / MANIFEST).rename(elsewhere)
    (clip / MANIFEST).symlink_to(elsewhere)
    result = verify_soon(clip)
    assert not result.ok and result.problems == ["manifest.json is a symbolic link; a bundle holds only its own regular files"]


def test_a_pipe_in_place_of_a_listed_file_is_refused_without_reading_it(clip):
    (clip / "video.mp4").unlink()
    os.mkfifo(clip / "video.mp4")  # nobody writes to it: a plain open() or read() would wait for ever
    result = verify_soon(clip)
    assert any("video.mp4 is a device, pipe or socket" in p for p in result.problems), result.problems


def test_a_device_listed_as_a_file_is_refused(clip):
    (clip / "video.mp4").unlink()
    (clip / "video.mp4").symlink_to("/dev/zero")  # an endless file through a link
    result = verify_soon(clip)
    assert any("symbolic link" in p for p in result.problems), result.problems


def test_unlisted_links_directories_and_pipes_are_each_named(clip):
    (clip / "extra").symlink_to("/etc")
    (clip / "sub").mkdir()
    os.mkfifo(clip / "pipe")
    problems = verify_soon(clip).problems
    assert "extra: a symbolic link has no place in a bundle" in problems
    assert "sub: a directory has no place in a bundle" in problems
    assert "pipe: a device, pipe or socket has no place in a bundle" in problems


def test_a_directory_stuffed_with_entries_is_not_listed_to_the_end(clip):
    for k in range(20 * MAX_ENTRIES):
        (clip / f"x{k:05d}").write_bytes(b"")
    problems = verify_soon(clip).problems
    assert sum("present but not listed" in p for p in problems) <= MAX_ENTRIES
    assert any(f"more than {MAX_ENTRIES} entries" in p for p in problems)


def test_a_name_that_would_break_the_report_line_is_quoted(clip):
    (clip / "evil\nOK      forged").write_bytes(b"x")
    out = subprocess.run([sys.executable, "-m", "knack", "verify", str(clip)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert not any(line.startswith("OK") for line in out.stdout.splitlines()), out.stdout
    assert "'evil\\nOK      forged': present but not listed in the manifest" in out.stdout


def test_export_car_refuses_a_bundle_with_a_link_and_stores_nothing(clip, tmp_path):
    data = clip.parent.parent
    (clip / "sensors-extra").symlink_to("/etc/passwd")
    out = knack_cli(data, tmp_path)("export-car", str(clip), "-o", str(tmp_path / "clip.car"))
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "does not verify" in out.stderr and "symbolic link" in out.stderr
    assert not (tmp_path / "clip.car").exists()
    blocks = data / "ipfs" / "blocks.sqlite"
    assert not blocks.exists() or EmbeddedStore(blocks).blocks.count() == 0


@pytest.mark.parametrize(
    "task, problem",
    [
        ("x" * 10_240, "task is 10,240 characters long (at most 200)"),  # megabytes would fit under the manifest's bound
        ("solder\x1b]0;pwned\x07\x1b[2J", "task holds the control character '\\x1b'"),  # retitles and clears a terminal
        ("solder\nACCEPTED 0x0 quality 1.00", "task holds the control character '\\n'"),  # a forged line in a log
        ("solder \u202eredlos", "task holds the control character '\\u202e'"),  # shows reversed
        (["solder"], "task is not a string"),
    ],
)
def test_a_signed_manifest_with_a_hostile_task_is_refused(make_clip, task, problem):
    # The attack: a device that signs its own manifests (its key is the attacker's) puts into the task what
    # every tool that shows clips would print or store.
    clip = make_clip(frames(3), task=task)
    manifest = json.loads((clip / MANIFEST).read_text())
    assert manifest_problems(manifest) == [problem]
    result = verify_soon(clip)
    assert result.problems == [f"{MANIFEST}: {problem}"]
    assert all(p.isprintable() for p in result.problems)


def test_a_task_of_plain_text_in_any_script_is_a_task(make_clip):
    clip = make_clip(frames(4), task="désosser une cuisse de poulet — 鶏もも肉の骨を取る")
    assert verify_soon(clip).ok


def test_a_clip_changed_on_disk_after_labeling_is_not_pinned_and_the_others_are(make_clip, tmp_path):
    good = make_clip(frames(1), decision=ACCEPTED)
    bad = make_clip(frames(2), decision=ACCEPTED)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    enqueue_all(outbox, [good, bad])
    video = bad / "video.mp4"
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(video.read_bytes())
    video.unlink()
    video.symlink_to(outside)
    store = EmbeddedStore(tmp_path / "blocks.sqlite")
    results = {r.clip_id: r for r in pin_due(outbox, store)}
    assert not results[good.name].error and results[good.name].cid
    assert "does not verify, so it is not pinned" in results[bad.name].error and "symbolic link" in results[bad.name].error
    states = {e.clip_id: e.state for e in outbox.entries()}
    assert states[good.name] == "pinned" and states[bad.name] == "accepted"
    assert outbox.get(bad.name).last_error.startswith(f"clip {bad.name} does not verify")


MUTATIONS = ["link_out", "link_in", "fifo", "directory", "truncate", "unlisted_link", "unlisted_dir", "unlisted_fifo", "odd_name", "manifest_link"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(MUTATIONS), st.sampled_from(["video.mp4", "frames.parquet", "manifest.json"])), min_size=1, max_size=4))
def test_generated_bundle_trees_are_refused_with_one_line_each_and_nothing_outside_is_read(clip, tmp_path_factory, mutations):
    work = tmp_path_factory.mktemp("fuzz")
    bundle = work / "clip"
    shutil.copytree(clip, bundle)
    outside = work / "outside"
    os.mkfifo(outside)  # anything that followed a link out of the bundle and read it would wait here for ever
    for kind, name in mutations:
        target = bundle / name
        if kind in ("link_out", "link_in", "fifo", "directory", "truncate") and target.exists() and not target.is_symlink() and target.is_file():
            target.unlink()
            if kind == "link_out":
                target.symlink_to(outside)
            elif kind == "link_in":
                target.symlink_to(bundle / "frames.parquet")
            elif kind == "fifo":
                os.mkfifo(target)
            elif kind == "directory":
                target.mkdir()
            else:
                target.write_bytes(b"")
        elif kind == "unlisted_link" and not os.path.lexists(bundle / f"extra-{name}"):
            (bundle / f"extra-{name}").symlink_to(outside)
        elif kind == "unlisted_dir":
            (bundle / f"dir-{name}").mkdir(exist_ok=True)
        elif kind == "unlisted_fifo" and not (bundle / f"fifo-{name}").exists():
            os.mkfifo(bundle / f"fifo-{name}")
        elif kind == "odd_name":
            (bundle / f"{name}\n\x1b[2J").write_bytes(b"x")
        elif kind == "manifest_link" and (bundle / MANIFEST).is_file() and not (bundle / MANIFEST).is_symlink():
            (bundle / MANIFEST).rename(work / "m.json")
            (bundle / MANIFEST).symlink_to(work / "m.json")
    result = verify_soon(bundle)  # returns: nothing was read through a link to the pipe outside
    assert not result.ok and result.problems
    assert all("\n" not in p and "\x1b" not in p for p in result.problems), result.problems
