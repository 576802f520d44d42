"""What an operator sees of each clip (`knack clips`) and throwing away clips not shared yet (`knack discard`):
real signed clip bundles, a real outbox file, the real CLI in a separate process."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from collector.bundle import list_clips
from knack.clips import REWARD_UNIT, ClipView, clip_view, clip_views, describe
from storage.outbox.db import DISCARDABLE, STATES, Outbox
from storage.outbox.discard import DiscardError, discard, sweep_discarded
from storage.outbox.pinner import enqueue, enqueue_all

KNACK = [sys.executable, "-m", "knack"]
ACCEPTED = {"status": "accepted", "accepted": True, "reasons": [], "summary": "accepted: every check passed"}
REJECTED = {"status": "rejected", "accepted": False, "reasons": [{"code": "no_hands"}], "summary": "rejected: no hands in 90% of frames"}
LABELS = {"hands": {"hand_fraction": 0.9}}
QUALITY = {"score": 0.42}
TX = "0x" + "ab" * 32
SHARED = ("pinned", "submitted", "settled")


def noise_frames(count=6, seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def clips_dir(tmp_path):
    return tmp_path / "data" / "clips"  # where the make_clip fixture writes


@pytest.fixture
def outbox(tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    box = Outbox(tmp_path / "data" / "outbox.sqlite")
    yield box
    box.close()


@pytest.fixture
def clip(make_clip):
    """A real signed clip bundle; unlabeled unless a decision (and labels) are given."""
    seeds = iter(range(1000))

    def make(decision=None, **manifest):
        return make_clip(noise_frames(seed=next(seeds)), decision=decision, **manifest)

    return make


def drive(outbox, clip_id, path, state, cid=None, batch=7, reward=0, chain_ok=True, chain_reason="", reason=""):
    """Takes a new clip through the outbox's real transitions up to `state`."""
    if state in ("recorded", "labeled"):
        assert outbox.record(clip_id, path, state)
        return
    assert outbox.record(clip_id, path, "labeled")
    assert outbox.decide(clip_id, state != "rejected", reason)
    if state in ("accepted", "rejected"):
        return
    cid = cid or f"bafy{clip_id[:8]}"
    outbox.set_cid(clip_id, cid)
    assert outbox.advance(clip_id, cid, "accepted", "pinned")
    if state == "pinned":
        return
    outbox.stage_tx(TX, b"signed", "submit", [clip_id])  # as storage/outbox/submitter.py does before sending
    outbox.submitted(TX, batch, [clip_id])
    if state == "submitted":
        return
    assert outbox.settled(batch, {0: (chain_ok, reward, chain_reason)}) == 1


# -- the outbox --------------------------------------------------------------------------------------


def test_discardable_states_are_those_before_pinning():
    """DISCARDABLE is exactly recorded/labeled/rejected/accepted; pinned and later are kept."""
    assert set(DISCARDABLE) == {"recorded", "labeled", "rejected", "accepted"}
    assert set(DISCARDABLE) | set(SHARED) == set(STATES)


@pytest.mark.parametrize("state", STATES)
def test_mark_discarded_only_moves_unshared_clips(outbox, tmp_path, state):
    """mark_discarded succeeds (once) for a discardable state and changes nothing for a shared one."""
    drive(outbox, "c1", tmp_path / "c1", state)
    if state in DISCARDABLE:
        assert outbox.mark_discarded("c1") is True
        assert outbox.get("c1").state == "discarded"
        assert outbox.mark_discarded("c1") is False  # again: nothing to do
    else:
        assert outbox.mark_discarded("c1") is False
        assert outbox.get("c1").state == state
    assert outbox.mark_discarded("unknown") is False


def test_discarded_rows_leave_entries_and_forget_drops_only_discarded(outbox, tmp_path):
    """entries() hides discarded rows, discarded() lists them, forget() deletes only a discarded row."""
    for name, state in (("a", "accepted"), ("b", "rejected"), ("c", "pinned")):
        drive(outbox, name, tmp_path / name, state)
    assert outbox.mark_discarded("b")
    assert [e.clip_id for e in outbox.entries()] == ["a", "c"]
    assert [e.clip_id for e in outbox.discarded()] == ["b"]
    outbox.forget("a")  # not discarded: kept
    outbox.forget("c")
    assert outbox.get("a").state == "accepted" and outbox.get("c").state == "pinned"
    outbox.forget("b")
    assert outbox.get("b") is None and outbox.discarded() == []
    assert [e.clip_id for e in outbox.entries()] == ["a", "c"]


def test_chain_record_follows_submission_and_settlement(outbox, tmp_path):
    """chain_record: None for an unknown clip, empty before submission, then tx/batch/index, reward as wei text."""
    assert outbox.chain_record("nope") is None
    drive(outbox, "a", tmp_path / "a", "pinned", cid="bafyA")
    drive(outbox, "b", tmp_path / "b", "pinned", cid="bafyB")
    assert outbox.chain_record("a") == {"tx_hash": None, "batch_id": None, "batch_index": None, "reward": None, "chain_reason": None}
    outbox.stage_tx(TX, b"signed", "submit", ["a", "b"])
    assert outbox.chain_record("a")["tx_hash"] == TX and outbox.chain_record("a")["batch_id"] is None
    outbox.submitted(TX, 3, ["a", "b"])
    assert outbox.staged_txs("submit") == []
    assert outbox.chain_record("b")["batch_id"] == 3 and outbox.chain_record("b")["batch_index"] == 1
    wei = 25 * 10**17
    assert outbox.settled(3, {0: (True, wei, "ignored"), 1: (False, 0, "cid_unreachable")}) == 2
    assert outbox.chain_record("a") == {"tx_hash": TX, "batch_id": 3, "batch_index": 0, "reward": str(wei), "chain_reason": ""}
    assert outbox.chain_record("b")["chain_reason"] == "cid_unreachable" and outbox.chain_record("b")["reward"] == "0"


# -- discard -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", DISCARDABLE)
def test_discard_removes_files_and_row_of_an_unshared_clip(outbox, clips_dir, clip, state):
    """A recorded/labeled/accepted/rejected clip: its directory and its outbox row are gone."""
    keep, gone = clip(ACCEPTED), clip(REJECTED if state == "rejected" else ACCEPTED)
    drive(outbox, keep.name, keep, "accepted")
    drive(outbox, gone.name, gone, state)
    discard(outbox, clips_dir, gone.name)
    assert not gone.exists() and not (clips_dir / f".discard-{gone.name}").exists()
    assert outbox.get(gone.name) is None
    assert list_clips(clips_dir) == [keep] and outbox.get(keep.name).state == "accepted"


@pytest.mark.parametrize("state", SHARED)
def test_discard_refuses_a_shared_clip_naming_its_state(outbox, clips_dir, clip, state):
    """Pinned/submitted/settled clips are kept: DiscardError names the state, files and row untouched."""
    path = clip(ACCEPTED)
    drive(outbox, path.name, path, state, reward=10**18)
    with pytest.raises(DiscardError, match=rf"\b{state}\b") as refused:
        discard(outbox, clips_dir, path.name)
    assert path.name in str(refused.value) and "\n" not in str(refused.value)
    assert (path / "manifest.json").is_file() and outbox.get(path.name).state == state
    assert outbox.discarded() == []


def test_discard_refuses_unknown_ids_and_paths(outbox, clips_dir, clip):
    """Unknown ids, ids with a slash and hidden names are refused, and nothing on disk is touched."""
    path = clip(ACCEPTED)
    enqueue(outbox, path)
    partial = clips_dir / ".partial-x"
    partial.mkdir()
    for bad in ("0190aaaa-0000-7000-8000-000000000000", f"../clips/{path.name}", ".partial-x", f"./{path.name}", ".."):
        with pytest.raises(DiscardError):
            discard(outbox, clips_dir, bad)
    assert path.is_dir() and partial.is_dir() and outbox.get(path.name).state == "accepted"
    assert outbox.discarded() == []


def test_discard_a_clip_on_disk_the_outbox_never_saw(outbox, clips_dir, clip):
    """A clip directory with no outbox row (e.g. never labeled) can still be discarded."""
    path = clip()
    assert outbox.get(path.name) is None
    discard(outbox, clips_dir, path.name)
    assert not path.exists() and outbox.get(path.name) is None and outbox.discarded() == []


def test_sweep_finishes_discards_a_crash_cut_short(outbox, clips_dir, clip):
    """A row marked discarded with its directory still there, or already renamed to .discard-<id>, is finished."""
    before_rename, after_rename, kept = clip(ACCEPTED), clip(REJECTED), clip(ACCEPTED)
    for path in (before_rename, after_rename, kept):
        enqueue(outbox, path)
    assert outbox.mark_discarded(before_rename.name) and outbox.mark_discarded(after_rename.name)
    trash = clips_dir / f".discard-{after_rename.name}"
    os.replace(after_rename, trash)
    (trash / "video.mp4").unlink()  # rmtree was cut short too
    assert list_clips(clips_dir) == sorted([before_rename, kept])
    assert sweep_discarded(outbox, clips_dir) == 2
    assert not before_rename.exists() and not trash.exists()
    assert outbox.get(before_rename.name) is None and outbox.get(after_rename.name) is None
    assert list_clips(clips_dir) == [kept] and outbox.get(kept.name).state == "accepted"
    assert sweep_discarded(outbox, clips_dir) == 0


def test_sweep_finishes_a_discard_whose_files_are_already_gone(outbox, clips_dir, clip):
    """A crash after the directory was removed but before the row went: the sweep drops the row."""
    path = clip(ACCEPTED)
    enqueue(outbox, path)
    assert outbox.mark_discarded(path.name)
    shutil.rmtree(path)
    assert sweep_discarded(outbox, clips_dir) == 1
    assert outbox.get(path.name) is None


def test_enqueue_all_does_not_bring_a_discarded_clip_back(outbox, clips_dir, clip):
    """A clip marked discarded whose files are still on disk stays discarded through enqueue_all, and once gone is not re-added."""
    path, other = clip(ACCEPTED), clip(REJECTED)
    enqueue_all(outbox, list_clips(clips_dir))
    assert outbox.mark_discarded(path.name)
    enqueue_all(outbox, list_clips(clips_dir))  # open_outbox does this on every command
    assert outbox.get(path.name).state == "discarded"
    assert path.name not in [e.clip_id for e in outbox.entries()]
    assert sweep_discarded(outbox, clips_dir) == 1
    enqueue_all(outbox, list_clips(clips_dir))
    assert outbox.get(path.name) is None and outbox.get(other.name).state == "rejected"
    # A fully discarded clip of each kind is not found again either.
    discard(outbox, clips_dir, other.name)
    assert enqueue_all(outbox, list_clips(clips_dir)) == 0 and outbox.entries() == []


def test_enqueue_all_counts_no_move_for_a_discarded_clip(outbox, clips_dir, clip):
    """enqueue_all returns how many clips moved: a discarded clip that stays discarded is not one."""
    path = clip(ACCEPTED)
    enqueue(outbox, path)
    assert outbox.mark_discarded(path.name)
    assert enqueue_all(outbox, [path]) == 0


def test_discard_again_finishes_a_discard_cut_short(outbox, clips_dir, clip):
    """Running discard again on a clip whose discard crashed half-way finishes it."""
    path = clip(ACCEPTED)
    enqueue(outbox, path)
    assert outbox.mark_discarded(path.name)
    discard(outbox, clips_dir, path.name)
    assert not path.exists() and outbox.get(path.name) is None


def test_discard_refuses_an_empty_id_without_a_stuck_row(outbox, clips_dir, clip):
    """An empty clip id is refused with DiscardError and leaves nothing for the sweep to trip over."""
    path = clip(ACCEPTED)
    try:
        with pytest.raises(DiscardError):
            discard(outbox, clips_dir, "")
    finally:
        assert path.is_dir()
    assert outbox.discarded() == []
    assert sweep_discarded(outbox, clips_dir) == 0


# -- the operator's view -----------------------------------------------------------------------------


def test_rejected_clip_view_gives_the_reason_quality_and_hands(outbox, clip):
    """A rejected clip's reason is the decision summary (from the outbox row, else the manifest)."""
    via_enqueue = clip(REJECTED, labels=LABELS, quality=QUALITY)
    no_reason = clip(dict(REJECTED, summary="rejected: too short"), labels=LABELS, quality=QUALITY)
    enqueue(outbox, via_enqueue)
    drive(outbox, no_reason.name, no_reason, "rejected", reason="")
    view = clip_view(outbox, outbox.get(via_enqueue.name))
    assert view.state == "rejected" and view.reason == "rejected: no hands in 90% of frames"
    assert view.quality == 0.42 and view.hands == "hands in 90%"
    assert view.cid is None and view.tx_hash is None and view.batch is None and view.reward_tokens is None
    assert clip_view(outbox, outbox.get(no_reason.name)).reason == "rejected: too short"
    lines = describe(view)
    assert lines[0] == f"{via_enqueue.name}  rejected"
    assert f"path      {via_enqueue}" in lines
    assert "quality   0.42  hands in 90%" in lines
    assert "reason    rejected: no hands in 90% of frames" in lines
    assert "cid       (not pinned yet)" in lines and "tx        (not submitted yet)" in lines
    assert "reward    (not settled yet)" in lines and "tries     0" in lines


def test_settled_clip_view_shows_reward_in_tokens_and_the_transaction(outbox, clip):
    """Settled: reward (stored in wei as text) in KNACK, tx hash and batch; a validator rejection gives its reason."""
    paid, refused = clip(ACCEPTED, labels=LABELS, quality=QUALITY), clip(ACCEPTED)
    drive(outbox, paid.name, paid, "settled", cid="bafyPAID", batch=11, reward=3 * REWARD_UNIT // 2)
    drive(outbox, refused.name, refused, "settled", cid="bafyREF", batch=12, reward=0, chain_ok=False, chain_reason="cid_unreachable")
    view = clip_view(outbox, outbox.get(paid.name))
    assert (view.state, view.cid, view.tx_hash, view.batch, view.reward_tokens, view.reason) == ("settled", "bafyPAID", TX, 11, "1.5000", "")
    lines = describe(view)
    assert "reward    1.5000 KNACK" in lines and f"tx        {TX}  batch 11" in lines and "cid       bafyPAID" in lines
    assert "reason    -" in lines
    bad = clip_view(outbox, outbox.get(refused.name))
    assert bad.reward_tokens == "0.0000" and bad.reason == "rejected by the validator: cid_unreachable"


def test_reward_is_shown_only_once_settled(outbox, clip):
    """A submitted clip shows its transaction and batch but no reward yet."""
    path = clip(ACCEPTED)
    drive(outbox, path.name, path, "submitted", batch=4)
    view = clip_view(outbox, outbox.get(path.name))
    assert view.tx_hash == TX and view.batch == 4 and view.reward_tokens is None
    assert "reward    (not settled yet)" in describe(view)


def test_unlabeled_clip_says_not_labeled(outbox, clip):
    """A recorded clip with no labels: quality line says not labeled, duration from the manifest, no hands."""
    path = clip()
    drive(outbox, path.name, path, "recorded")
    view = clip_view(outbox, outbox.get(path.name))
    assert view.quality is None and view.hands == "" and view.reason == ""
    assert view.duration_s == pytest.approx(6 / 30)
    lines = describe(view)
    assert "quality   (not labeled yet)" in lines and "duration  0.2 s" in lines


def test_describe_shows_the_manifest_without_signature_and_file_list(outbox, clip):
    """The detail ends with the manifest as JSON, minus its signature and file hashes."""
    path = clip(ACCEPTED, labels=LABELS, quality=QUALITY)
    enqueue(outbox, path)
    view = clip_view(outbox, outbox.get(path.name))
    assert "signature" in view.manifest and "files" in view.manifest
    lines = describe(view)
    shown = json.loads(lines[lines.index("") + 1])
    assert shown["clip_id"] == path.name and shown["decision"] == ACCEPTED and shown["quality"] == QUALITY
    assert "signature" not in shown and "files" not in shown


def test_clip_whose_files_are_gone_still_has_a_view(outbox, clip, tmp_path):
    """An outbox row whose directory is gone (no manifest) gives a view with dashes, not an error."""
    drive(outbox, "gone", tmp_path / "nowhere", "accepted")
    outbox.failed("gone", "clip directory is gone: nothing to pin", retry=False)
    view = clip_view(outbox, outbox.get("gone"))
    assert view.manifest == {} and view.duration_s is None and view.reason == "clip directory is gone: nothing to pin"
    lines = describe(view)
    assert "duration  -" in lines and "quality   (not labeled yet)" in lines and "tries     1" in lines


def test_clip_views_filters_by_state_oldest_first_and_skips_discarded(outbox, clip):
    """clip_views lists every clip the outbox knows in order, by state on request, never a discarded one."""
    paths = [clip(ACCEPTED), clip(REJECTED), clip(ACCEPTED), clip(REJECTED)]
    for path in paths:
        enqueue(outbox, path)
    assert [v.clip_id for v in clip_views(outbox)] == [p.name for p in paths]
    assert [v.clip_id for v in clip_views(outbox, "rejected")] == [paths[1].name, paths[3].name]
    assert clip_views(outbox, "settled") == []
    assert outbox.mark_discarded(paths[1].name)
    assert [v.clip_id for v in clip_views(outbox, "rejected")] == [paths[3].name]
    assert paths[1].name not in [v.clip_id for v in clip_views(outbox)]


# -- the command line --------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path):
    """As tests/test_cli.py runs `knack`, with the data directory where make_clip writes."""
    return dict(
        os.environ,
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "share"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        KNACK_DEVICE_PASSWORD="correct horse",
        KNACK_DATA_DIR=str(tmp_path / "data"),
    )


def knack(*args, env):
    return subprocess.run([*KNACK, *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_clips_lists_one_clip_in_full_and_json_by_state(tmp_path, env, clip):
    """`knack clips`, `knack clips ID` and `knack clips --state rejected --json` on labeled clips on disk."""
    good, bad = clip(ACCEPTED, labels=LABELS, quality=QUALITY), clip(REJECTED, labels={"hands": {"hand_fraction": 0.05}}, quality={"score": 0.1})
    out = knack("clips", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = out.stdout.splitlines()
    assert len(rows) == 2
    assert rows[0].startswith(f"{good.name}  accepted") and "0.42" in rows[0] and "hands in 90%" in rows[0]
    assert rows[1].startswith(f"{bad.name}  rejected") and rows[1].endswith("rejected: no hands in 90% of frames")

    out = knack("clips", bad.name, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{bad.name}  rejected\n")
    assert "reason    rejected: no hands in 90% of frames" in out.stdout and "cid       (not pinned yet)" in out.stdout

    out = knack("clips", "--state", "rejected", "--json", env=env)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [c["clip_id"] for c in listed] == [bad.name]
    assert listed[0]["state"] == "rejected" and listed[0]["reason"] == "rejected: no hands in 90% of frames"
    assert listed[0]["quality"] == 0.1 and "manifest" not in listed[0]
    assert set(listed[0]) == {f.name for f in dataclasses.fields(ClipView)} - {"manifest"}

    out = knack("clips", "0190aaaa-0000-7000-8000-000000000000", env=env)
    assert out.returncode == 1 and "no clip 0190aaaa-0000-7000-8000-000000000000" in out.stderr


def test_cli_discard_removes_an_unshared_clip_and_refuses_a_pinned_one(tmp_path, env, clip):
    """`knack discard ID` exits 0 and prints "discarded ID"; a pinned clip: exit 1, one line on stderr naming the state."""
    unshared, pinned = clip(ACCEPTED), clip(ACCEPTED)
    box = Outbox(tmp_path / "data" / "outbox.sqlite")
    drive(box, pinned.name, pinned, "pinned")
    box.close()

    out = knack("discard", unshared.name, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == f"discarded {unshared.name}"
    assert not unshared.exists()

    out = knack("discard", pinned.name, env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "pinned" in out.stderr and pinned.name in out.stderr
    assert (pinned / "manifest.json").is_file()

    box = Outbox(tmp_path / "data" / "outbox.sqlite")
    try:
        assert box.get(unshared.name) is None and box.get(pinned.name).state == "pinned"
    finally:
        box.close()
    out = knack("clips", "--json", env=env)
    assert [c["clip_id"] for c in json.loads(out.stdout)] == [pinned.name]
