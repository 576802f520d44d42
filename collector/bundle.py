"""The clip bundle on disk (DESIGN.md): canonical signed manifest, atomic placement, verification and crash recovery."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from collector.identity import DeviceKey, IdentityError, SigningDomain, recover_signer, signature_domain

log = logging.getLogger("knack.bundle")

# Every name of the bundle format (DESIGN.md, "The clip bundle") lives here.
SCHEMA = 1
MANIFEST = "manifest.json"
FRAMES = "frames.parquet"
SENSORS = "sensors.parquet"
SENSOR_CHANNELS = "knack.channels"  # sensors.parquet schema metadata: each stream's channel names, as JSON
VIDEO_STEM = "video"
VIDEO_SUFFIX = ".mp4"
VIDEO_FOURCC = "mp4v"  # what OpenCV's bundled FFmpeg writes everywhere without extra codecs
# Hidden names beside the clips: a clip being written (PARTIAL), rewritten before a swap (STAGING, e.g. its
# video blurred; see replace_clip), swapped out (RETIRED) or being deleted by an operator (DISCARD).
PARTIAL_PREFIX = ".partial-"
STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"
DISCARD_PREFIX = ".discard-"


def video_name(camera: str, cameras: int) -> str:
    """`video.mp4` for a clip's only camera, `video-<camera>.mp4` for each of several."""
    return f"{VIDEO_STEM}{VIDEO_SUFFIX}" if cameras == 1 else f"{VIDEO_STEM}-{camera}{VIDEO_SUFFIX}"


def is_video(name: str) -> bool:
    return name.startswith(VIDEO_STEM) and name.endswith(VIDEO_SUFFIX)


# Bounds on what a bundle from elsewhere may hold, checked before anything in it is parsed or decoded.
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_FILES = 16  # a manifest, frames, sensors and a video per camera
MAX_ENTRIES = 4 * MAX_FILES  # directory entries looked at before a bundle is called stuffed
_CAMERA_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# `task`: what the operator named the hands' work in a clip ("solder a header onto a PCB"), one line of text. No
# control characters (a terminal escape, a newline, NUL), line separators, lone surrogates or bidi overrides:
# a task is printed in terminals, logs and datasets, and one from elsewhere must not reorder or rewrite them.
MAX_TASK_CHARS = 200
_NOT_TASK_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class BundleFormatError(ValueError):
    """Bytes that are not a clip bundle's manifest, in one sentence."""


def is_bundle_name(name: str) -> bool:
    """Only the format's own names: a path separator, a hidden file or any other name is not part of a clip."""
    if name in (MANIFEST, FRAMES, SENSORS, VIDEO_STEM + VIDEO_SUFFIX):
        return True
    prefix = VIDEO_STEM + "-"
    return name.startswith(prefix) and name.endswith(VIDEO_SUFFIX) and bool(_CAMERA_NAME.fullmatch(name[len(prefix) : -len(VIDEO_SUFFIX)]))


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in JSON text, counted without parsing it (brackets inside strings
    do not count), so a 200,000-deep document is refused before the parser recurses into it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_manifest(data: bytes) -> dict:
    """A manifest from untrusted bytes: size and depth bounded before parsing, then its shape checked.
    Raises BundleFormatError with one sentence."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleFormatError(f"{MANIFEST} is {len(data):,} bytes (at most {MAX_MANIFEST_BYTES:,})")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise BundleFormatError(f"{MANIFEST} nests {depth:,} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleFormatError(f"{MANIFEST} is not valid JSON: {str(exc)[:200]}") from None
    problems = manifest_problems(manifest)
    if problems:
        raise BundleFormatError(f"{MANIFEST}: " + "; ".join(problems[:5]))
    return manifest


def task_problem(task) -> str | None:
    """Why `task` cannot be a clip's task, in words; None when it can."""
    if not isinstance(task, str):
        return "task is not a string"
    if len(task) > MAX_TASK_CHARS:
        return f"task is {len(task):,} characters long (at most {MAX_TASK_CHARS})"
    if found := _NOT_TASK_TEXT.search(task):
        return f"task holds the control character {found.group()!r}"
    return None


def clean_task(task: str) -> str:
    """A task as the operator gave it (config, `--task`, the app), ready for a manifest: surrounding spaces
    dropped; raises ValueError with the reason when it cannot be a task."""
    problem = task_problem(task)
    if problem:
        raise ValueError(problem)
    return task.strip()


def manifest_task(manifest: dict) -> str:
    """The clip's task; "" when none was named (and in clips recorded before tasks were, or a manifest not read
    through parse_manifest whose task is no text)."""
    task = manifest.get("task")
    return task if isinstance(task, str) else ""


def frames_by_camera(table: dict) -> dict[str, tuple[list[int], list[int]]]:
    """frames.parquet's rows (as `to_pydict` gives them) grouped per camera in frame-index order: (frame indices,
    capture times in ns)."""
    per_camera: dict[str, list[tuple[int, int]]] = {}
    for camera, index, at in zip(table.get("camera", []), table.get("frame_index", []), table.get("capture_ns", [])):
        per_camera.setdefault(str(camera), []).append((int(index), int(at)))
    return {camera: ([i for i, _ in rows], [at for _, at in rows]) for camera, rows in ((c, sorted(r)) for c, r in per_camera.items())}


def _number(value) -> bool:
    """A JSON number a float holds: 10**400 parses as a Python int but is no quality score."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= 2**53


def manifest_problems(manifest) -> list[str]:
    """What makes a parsed manifest not the bundle format's (DESIGN.md), one short sentence each: the fields
    that anything downstream reads must have their types, so no check later meets a string for a number."""
    if not isinstance(manifest, dict):
        return [f"the manifest is a JSON {type(manifest).__name__}, not an object"]
    problems = []
    if not isinstance(manifest.get("schema"), int) or isinstance(manifest.get("schema"), bool):
        problems.append("schema is not an integer")
    clip_id = manifest.get("clip_id")
    if not isinstance(clip_id, str) or not 0 < len(clip_id) <= 64:
        problems.append("clip_id is not a string of 1 to 64 characters")
    if not isinstance(manifest.get("device_id"), str) or not _ADDRESS.fullmatch(manifest["device_id"]):
        problems.append("device_id is not an EVM address")
    if "task" in manifest and (problem := task_problem(manifest["task"])):
        problems.append(problem)
    if "duration_s" in manifest and not _number(manifest["duration_s"]):
        problems.append("duration_s is not a number")
    streams = manifest.get("streams", [])
    if not isinstance(streams, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("kind"), str) for s in streams):
        problems.append("streams is not a list of objects with a name and a kind")
    files = manifest.get("files")
    if not isinstance(files, list) or len(files) > MAX_FILES:
        problems.append(f"files is not a list of at most {MAX_FILES} entries")
    else:
        names = set()
        for entry in files:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                problems.append("a file entry has no name")
                continue
            name = entry["name"]
            if not is_bundle_name(name) or name == MANIFEST:
                problems.append(f"file {name[:80]!r} is not a name the bundle format has")
            if name in names:
                problems.append(f"file {name[:80]!r} is listed twice")
            names.add(name)
            if not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool) or entry["size"] < 0:
                problems.append(f"file {name[:80]!r} has no size")
            if not isinstance(entry.get("sha256"), str) or not _HEX64.fullmatch(entry["sha256"]):
                problems.append(f"file {name[:80]!r} has no sha256 (64 lowercase hex digits)")
    if not isinstance(manifest.get("signature"), dict):
        problems.append("signature is not an object")
    decision = manifest.get("decision")
    if decision is not None and not (isinstance(decision, dict) and isinstance(decision.get("accepted"), bool)):
        problems.append("decision is not an object with accepted true or false")
    quality = manifest.get("quality")
    if quality is not None and not (isinstance(quality, dict) and _number(quality.get("score")) and 0 <= quality["score"] <= 1):
        problems.append("quality.score is not a number from 0 to 1")
    return problems


_CHUNK = 1 << 20


def new_clip_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): sorts by creation time, unique without coordination between devices."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def canonical(manifest: dict) -> bytes:
    """The bytes that are signed: the manifest without its signature, keys sorted, no whitespace, UTF-8."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def shown(name: str) -> str:
    """A name from elsewhere as it may be printed on one line: as is when plain, quoted and cut when not."""
    return name if name.isprintable() and len(name) <= 80 else repr(name[:80])


class NotRegular(OSError):
    """A name in a bundle that is not a regular file of its own: a symbolic link, a directory, a device, a pipe."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a device, pipe or socket"


def open_regular(path: Path):
    """Opens a file of a bundle from elsewhere for reading, only if it is a regular file itself: never through a
    symbolic link (it could point at /etc/passwd, with the right hash listed), never a pipe or device (a read
    would block or never end). Checked on the open descriptor, so swapping the file in between changes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise NotRegular(f"{shown(path.name)} is a symbolic link; a bundle holds only its own regular files") from None
        raise exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegular(f"{shown(path.name)} is {_kind(mode)}; a bundle holds only its own regular files")
    return os.fdopen(fd, "rb")


def _read_bounded(path: Path, limit: int) -> bytes:
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleFormatError(f"{path.name} is over {limit:,} bytes")
    return data


def _size_and_sha256(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open_regular(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def write_sensor_log(path: Path, streams, capture_ns, device_ns, values, channels: dict[str, list[str]]) -> None:
    """sensors.parquet: one row per sample (stream, capture time, device time or None, values), the channel
    names of each stream in the schema metadata `knack.channels`."""
    import pyarrow as pa  # only where a sensor log is written: `knack verify` and `--help` never load it
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "stream": pa.array(list(streams), pa.string()),
            "capture_ns": pa.array(list(capture_ns), pa.int64()),
            "device_ns": pa.array(list(device_ns), pa.int64()),
            "values": pa.array([list(v) for v in values], pa.list_(pa.float64())),
        }
    )
    pq.write_table(table.replace_schema_metadata({SENSOR_CHANNELS: json.dumps(channels)}), path)


def file_entries(directory: Path) -> list[dict]:
    return [{"name": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: dict, key: DeviceKey) -> dict:
    """Hashes the files, signs, and writes manifest.json atomically (temp name, fsync, rename); returns it signed."""
    manifest = dict(manifest, schema=SCHEMA, files=file_entries(directory))
    manifest["signature"] = key.sign(canonical(manifest))
    tmp = directory / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)
    _fsync_path(directory)
    return manifest


def seal(partial: Path, final: Path) -> Path:
    """Makes a finished partial directory a clip: every file fsynced, then one rename, then the parent fsynced."""
    for p in partial.iterdir():
        if p.is_file():
            _fsync_path(p)
    _fsync_path(partial)
    os.rename(partial, final)
    _fsync_path(final.parent)
    return final


def copy_as_new(clip: Path, key: DeviceKey) -> Path:
    """A copy of a verified clip under a new clip id, beside it, its manifest naming the original as `parent`
    and signed by `key`: a clip already pinned or on chain is never rewritten (its CID would change while the
    outbox and the chain keep the old one), so a new label goes on a new clip."""
    check = verify_bundle(clip)
    if not check.ok:
        raise BundleFormatError(f"clip {clip.name} does not verify, so it is not copied: {'; '.join(check.problems[:3])}")
    manifest = parse_manifest((clip / MANIFEST).read_bytes())
    clip_id = new_clip_id()
    partial = clip.parent / f"{PARTIAL_PREFIX}{clip_id}"
    partial.mkdir()
    try:
        for entry in manifest["files"]:
            shutil.copyfile(clip / entry["name"], partial / entry["name"])
        # Without the old verdict: the copy is a clip recorded, not labeled, until its own label is written (a
        # copy left by a labeling that failed must not go on as accepted under the original's decision).
        body = {k: v for k, v in manifest.items() if k not in ("signature", "files")}
        unlabeled = {"labels": None, "quality": None, "privacy": None, "decision": None}  # as the recorder writes it
        write_manifest(partial, dict(body, **unlabeled, clip_id=clip_id, parent=manifest["clip_id"], device_id=key.address), key)
        return seal(partial, clip.parent / clip_id)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


@dataclass
class Verification:
    clip: Path
    problems: list[str] = field(default_factory=list)
    signer: str | None = None
    network: SigningDomain | None = None  # the chain and registry the signature is bound to (None: unbound)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_bundle(directory: Path) -> Verification:
    """Checks every file's size and sha256 and the device signature; each problem is one precise sentence.
    The bundle may come from anywhere: its manifest is read bounded, no file is followed out of the directory
    (symbolic links, devices and pipes are refused, unread), and a directory stuffed with entries is not listed."""
    result = Verification(directory)
    if not directory.is_dir():
        result.problems.append(f"{directory} is not a clip directory")
        return result
    path = directory / MANIFEST
    try:
        manifest = parse_manifest(_read_bounded(path, MAX_MANIFEST_BYTES))
    except FileNotFoundError:
        result.problems.append(f"{MANIFEST} is missing")
        return result
    except (BundleFormatError, NotRegular) as exc:
        result.problems.append(str(exc))
        return result
    except OSError as exc:
        result.problems.append(f"{MANIFEST} cannot be read: {exc.strerror or exc}")
        return result
    listed = {entry["name"]: entry for entry in manifest["files"]}
    for name, entry in sorted(listed.items()):
        try:
            size, digest = _size_and_sha256(directory / name)
        except FileNotFoundError:
            result.problems.append(f"{name}: listed in the manifest but missing")
            continue
        except NotRegular as exc:
            result.problems.append(str(exc))
            continue
        except OSError as exc:
            result.problems.append(f"{name}: cannot be read: {exc.strerror or exc}")
            continue
        if size != entry.get("size"):
            result.problems.append(f"{name}: size is {size} bytes, manifest says {entry.get('size')}")
        if digest != entry.get("sha256"):
            result.problems.append(f"{name}: sha256 is {digest}, manifest says {entry.get('sha256')}")
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENTRIES:
                result.problems.append(
                    f"the directory holds more than {MAX_ENTRIES} entries (a clip has at most {MAX_FILES} files); the rest were not looked at"
                )
                break
            if entry.name == MANIFEST or entry.name in listed:
                continue
            if entry.is_file(follow_symlinks=False):
                result.problems.append(f"{shown(entry.name)}: present but not listed in the manifest")
            else:
                result.problems.append(f"{shown(entry.name)}: {_kind(entry.stat(follow_symlinks=False).st_mode)} has no place in a bundle")
    try:
        signer = recover_signer(canonical(manifest), manifest["signature"])
        result.network = signature_domain(manifest["signature"])
    except (IdentityError, ValueError, TypeError) as exc:
        result.problems.append(f"signature is unreadable: {exc}")
        return result
    result.signer = signer
    expected = manifest.get("device_id")
    if signer.lower() != str(expected).lower():
        result.problems.append(
            f"signature is not valid: it recovers to {signer}, but the manifest's device_id is {expected} (the manifest was changed after signing, or signed by another key)"
        )
    return result


def bind_to_network(directory: Path, key: DeviceKey) -> bool:
    """Re-signs a clip's manifest for the network `key` is bound to, when it was signed for none or another
    (labeled before the device knew its network); True when it rewrote it. Only a clip that verifies is
    re-signed: the device never signs over files it did not record."""
    if key.domain is None:
        return False
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    try:
        domain = signature_domain(manifest.get("signature"))
    except IdentityError:
        domain = None
    if domain is not None and domain.matches(key.domain):
        return False
    check = verify_bundle(directory)
    if not check.ok:
        raise BundleFormatError(f"clip {directory.name} does not verify, so it is not re-signed for the network: {'; '.join(check.problems)}")
    write_manifest(directory, manifest, key)
    return True


def recover_partials(clips_dir: Path) -> list[str]:
    """Deals with what a crash left: a partial whose signed manifest verifies is sealed, anything else removed.

    Returns one sentence per partial directory for the operator.
    """
    messages = []
    if not clips_dir.is_dir():
        return messages
    for partial in sorted(clips_dir.glob(PARTIAL_PREFIX + "*")):
        clip_id = partial.name[len(PARTIAL_PREFIX) :]
        if (partial / MANIFEST).exists() and verify_bundle(partial).ok:
            seal(partial, clips_dir / clip_id)
            messages.append(f"salvaged clip {clip_id}: it was complete when the recorder stopped, only the final rename was missing")
        else:
            files = sum(1 for p in partial.rglob("*") if p.is_file())
            shutil.rmtree(partial)
            messages.append(f"removed interrupted clip {clip_id}: the recorder stopped mid-clip, its {files} unfinished file(s) cannot be trusted")
    for message in messages:
        log.warning(message)
    return messages


def stage(clip: Path) -> Path:
    """A fresh directory beside `clip` in which a new version of it is built."""
    staging = clip.parent / (STAGING_PREFIX + clip.name)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def link_unchanged(clip: Path, staging: Path) -> None:
    """Hard-links the files the new version keeps as they are (no copy, and the sizes and hashes stay)."""
    for p in clip.iterdir():
        if p.is_file() and p.name != MANIFEST and not (staging / p.name).exists():
            try:
                os.link(p, staging / p.name)
            except OSError:
                shutil.copy2(p, staging / p.name)


def replace_clip(staging: Path, clip: Path) -> Path:
    """Swaps a complete, signed staging directory in for the clip: the old version is renamed aside first and
    removed last, so a crash at any point leaves one whole version that recover_staged puts back in place."""
    for p in staging.iterdir():
        if p.is_file():
            _fsync_path(p)
    _fsync_path(staging)
    retired = clip.parent / (RETIRED_PREFIX + clip.name)
    if retired.exists():
        shutil.rmtree(retired)
    os.rename(clip, retired)
    os.rename(staging, clip)
    _fsync_path(clip.parent)
    shutil.rmtree(retired)
    return clip


def recover_staged(clips_dir: Path) -> list[str]:
    """Finishes or undoes a replace_clip that a crash interrupted; one sentence per clip it touched."""
    messages = []
    if not clips_dir.is_dir():
        return messages
    for staging in sorted(clips_dir.glob(STAGING_PREFIX + "*")):
        clip_id = staging.name[len(STAGING_PREFIX) :]
        clip, retired = clips_dir / clip_id, clips_dir / (RETIRED_PREFIX + clip_id)
        if not clip.exists() and retired.exists() and verify_bundle(staging).ok:
            os.rename(staging, clip)
            messages.append(f"clip {clip_id}: finished replacing it with its relabeled version, which a crash had left beside it")
        else:
            shutil.rmtree(staging)
            messages.append(f"clip {clip_id}: dropped an unfinished relabeled version; the clip keeps its previous labels")
    for retired in sorted(clips_dir.glob(RETIRED_PREFIX + "*")):
        clip_id = retired.name[len(RETIRED_PREFIX) :]
        if (clips_dir / clip_id).exists():
            shutil.rmtree(retired)
        else:
            os.rename(retired, clips_dir / clip_id)
            messages.append(f"clip {clip_id}: put its previous version back after an interrupted relabel")
    for message in messages:
        log.warning(message)
    return messages


def list_clips(clips_dir: Path) -> list[Path]:
    if not clips_dir.is_dir():
        return []
    return sorted(p for p in clips_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())
