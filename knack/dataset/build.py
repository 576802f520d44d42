"""`knack dataset build OUT`: settled, accepted clips (or local clip directories) as a LeRobot v3.0 dataset.

The driver reads the chain once (every paid clip with its Merkle proof against the batch root the registry
stores), applies the filters, and hands the clips to Daft. Each clip's heavy work runs in a worker process
(on this machine, or on a Ray cluster): fetch the bundle by CID, check it end to end (proof, CID recomputed
from the bytes, device signature, file hashes), put its frames on the k/fps grid and encode each camera as
AV1. The driver then takes the staged episodes in settlement order, gives them their indices and writes the
dataset's metadata, statistics, card and a build report. A clip that fails anything is left out with its
reason; it never stops the others."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from collector.bundle import manifest_task, video_name
from collector.config import Config
from knack.dataset.episode import EpisodeRejected, Layout, episode_of, nominal_fps
from knack.dataset.lerobot import STAGED_FRAMES, DatasetWriter, array_stats, encode_camera, video_key, write_staged_frames

log = logging.getLogger("knack.dataset")
REPORT = "knack-build-report.json"
NO_TASK = "unspecified task"  # clips recorded before the operator could name one


class BuildError(Exception):
    """A build that cannot start (an output directory in use, no chain, no Ray), in one sentence."""


@dataclass(frozen=True)
class Filters:
    contributor: str = ""
    task: str = ""
    since: datetime | None = None  # clips whose recording began at or after (UTC)
    limit: int | None = None

    def refuses(self, manifest: dict) -> str:
        """'' when the clip is wanted, else why not."""
        if self.task and manifest_task(manifest).casefold() != self.task.strip().casefold():
            return f"its task is {manifest_task(manifest)!r}, not {self.task!r}"
        if self.contributor and str(manifest.get("contributor", "")).lower() != self.contributor.lower():
            return f"its contributor is {manifest.get('contributor')}, not {self.contributor}"
        if self.since is not None:
            started = started_at(manifest)
            if started is None or started < self.since:
                return f"it was recorded before {self.since.isoformat()}"
        return ""


def started_at(manifest: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(manifest["start"]["utc"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None


def parse_since(text: str) -> datetime:
    """An ISO date or date-time, UTC unless it says otherwise."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is not a date such as 2026-12-01 or 2026-12-01T08:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Job:
    """One clip for a worker: from the chain (`paid`, a PaidClip as JSON) or a local directory."""

    position: int
    paid: str = ""
    local: str = ""

    @property
    def name(self) -> str:
        return json.loads(self.paid)["cid"] if self.paid else self.local


@dataclass
class Outcome:
    position: int
    name: str
    ok: bool
    reason: str = ""
    staged: str = ""
    clip_id: str = ""
    task: str = ""
    length: int = 0
    max_error_s: float = 0.0
    layout: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    contributor: str = ""
    cameras: list = field(default_factory=list)  # what each camera recorded from, for the card
    notes: list = field(default_factory=list)
    episode_index: int | None = None


# --- one clip, in a worker ------------------------------------------------------------------------------
class ClipWorker:
    """Opens the content store once per worker process; `__call__` turns one Job into one Outcome (as JSON)."""

    def __init__(self, config: Config, network: tuple[int, str] | None, staging: str, fps: int, filters: Filters, default_task: str = NO_TASK):
        from knack import wiring

        self.config, self.staging, self.fps, self.filters, self.default_task = config, Path(staging), fps, filters, default_task
        self.network = network
        self.store = wiring.reading_store(config) if network is not None else None

    def __call__(self, job_json: str) -> str:
        job = Job(**json.loads(job_json))
        work = Path(tempfile.mkdtemp(prefix=f"ep-{job.position:06d}-", dir=self.staging))
        outcome = Outcome(job.position, job.name, False, staged=str(work))
        try:
            self._build(job, work, outcome)
            outcome.ok = True
        except Exception as exc:  # a clip that fails anything is left out with the reason; the build goes on
            outcome.reason = _reason(exc)
            shutil.rmtree(work, ignore_errors=True)
            outcome.staged = ""
        finally:
            shutil.rmtree(work / "bundle", ignore_errors=True)
        return json.dumps(outcome.__dict__)

    def _build(self, job: Job, work: Path, outcome: Outcome) -> None:
        from collector.identity import SigningDomain
        from storage.validator.fetch import Limits
        from storage.validator.provenance import PaidClip, check_bundle, verify_paid_clip

        if job.paid:
            paid = PaidClip.from_json(job.paid)
            bundle = work / "bundle"
            bundle.mkdir()
            domain = SigningDomain(*self.network)
            limits = Limits(max_bytes=int(self.config.validator.max_clip_mb * (1 << 20)))
            manifest = verify_paid_clip(self.store.get, paid, domain, bundle, limits)
            provenance = {
                "source": "chain",
                "cid": paid.cid,
                "batch": paid.batch_id,
                "batch_index": paid.index,
                "batch_root": "0x" + paid.root,
                "merkle_proof": ["0x" + p for p in paid.proof],
                "contributor": paid.contributor,
                "device": paid.device,
                "quality": paid.quality_bps / 10000,
                "settle_tx": paid.settle_tx,
            }
        else:
            from storage.content.unixfs import add_path

            bundle = Path(job.local)
            manifest = check_bundle(bundle, None)
            provenance = {
                "source": "local",
                "cid": str(add_path(bundle).cid),
                "batch": -1,
                "batch_index": -1,
                "batch_root": "",
                "merkle_proof": [],
                "contributor": str(manifest.get("contributor", "")),
                "device": str(manifest.get("device_id", "")),
                "quality": float((manifest.get("quality") or {}).get("score") or 0.0),
                "settle_tx": "",
            }
        outcome.clip_id = str(manifest.get("clip_id", ""))
        provenance = {"clip_id": outcome.clip_id} | provenance
        if why := self.filters.refuses(manifest if not job.paid else manifest | {"contributor": provenance["contributor"]}):
            raise EpisodeRejected(f"the verified manifest does not match the filter: {why}")
        episode = episode_of(bundle, manifest, self.fps)
        write_staged_frames(work / STAGED_FRAMES, episode)
        cameras, stats = [], {"observation.state": array_stats(episode.state)} if episode.state_names else {}
        if episode.action is not None:
            stats["action"] = array_stats(episode.action)
        for camera in sorted(episode.picks):
            height, width, image = encode_camera(bundle / video_name(camera, len(episode.picks)), episode.picks[camera], work / f"{camera}.mp4", self.fps)
            cameras.append((camera, height, width))
            stats[video_key(camera)] = image
        layout = Layout(self.fps, tuple(cameras), episode.state_names, episode.action_names if episode.action is not None else ())
        outcome.task = manifest_task(manifest) or self.default_task
        outcome.length, outcome.max_error_s, outcome.layout, outcome.stats = episode.length, episode.max_error_s, layout.to_dict(), stats
        outcome.provenance, outcome.contributor, outcome.notes = provenance, provenance["contributor"], episode.notes
        outcome.cameras = [
            {"name": s.get("name"), "source": str(s.get("source", ""))[:300], "source_kind": s.get("source_kind")}
            for s in manifest.get("streams", [])
            if isinstance(s, dict) and s.get("kind") == "camera"
        ]


def _reason(exc: BaseException) -> str:
    from knack.dataset.episode import EpisodeRejected as Rejected
    from storage.validator.provenance import ProvenanceError

    text = (str(exc).strip().splitlines() or [""])[0][:400]
    if isinstance(exc, (Rejected, ProvenanceError)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- the build ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    out: Path
    clips: tuple[str, ...] = ()  # local clip directories; none: the chain's paid clips
    filters: Filters = Filters()
    fps: int | None = None
    workers: int = 0  # 0: one per CPU
    ray: str = ""  # a Ray cluster's address
    license: str = "other"
    name: str = ""
    progress: bool = True


@dataclass
class Result:
    out: Path
    episodes: int
    frames: int
    left_out: list[Outcome]
    included: list[Outcome]
    seconds: float
    info: dict = field(default_factory=dict)


def build(config: Config, options: Options, say: Callable[[str], None] = print) -> Result:
    started = time.monotonic()
    out = options.out
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} is not empty: give a new directory (a dataset is written whole, never merged into another)")
    jobs, network = _jobs(config, options, say)
    with _reading(config, network) as store:
        jobs, listing_left_out = _prefilter(jobs, store, options.filters)
        if options.filters.limit is not None:
            jobs = jobs[: options.filters.limit]
        fps = options.fps or _default_fps(jobs, store) or 30
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        outcomes = _run(config, options, jobs, network, staging, fps, say)
        result = _assemble(config, options, out, outcomes, network, fps, say)
    except BaseException as exc:
        # OUT was empty: what a build that did not finish wrote there is no dataset, and is not left to look like one.
        for child in out.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a directory taken away: one line, not a traceback
            raise BuildError(f"the dataset could not be written in {out} ({exc.strerror or exc}); what was written of it is removed") from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.left_out = listing_left_out + result.left_out
    result.seconds = time.monotonic() - started
    _write_report(result, options, network, fps)
    return result


def _jobs(config: Config, options: Options, say) -> tuple[list[Job], tuple[int, str] | None]:
    """One job per local clip directory, else per clip paid on chain; and the chain's network (None: local)."""
    if options.clips:
        return [Job(i, local=str(Path(c).resolve())) for i, c in enumerate(options.clips)], None
    from knack import wiring
    from storage.validator.provenance import paid_clips

    ledger = wiring.open_ledger(config)
    if ledger.deployment is None:
        raise BuildError(f"{wiring.ledger_name(config)} has no registry deployed here: nothing was paid yet (run `knack demo`, or set storage.chain_rpc)")
    try:
        domain = ledger.domain()
        paid = paid_clips(ledger, options.filters.contributor or None)
    finally:
        ledger.close()
    say(f"{len(paid)} paid clip(s) on {wiring.ledger_name(config)} (chain {domain.chain_id}, registry {domain.registry})")
    return [Job(i, paid=p.to_json()) for i, p in enumerate(paid)], (domain.chain_id, domain.registry)


@contextmanager
def _reading(config: Config, network):
    """The content store the chain's clips are read from (None for local clips), closed after the listing."""
    if network is None:
        yield None
        return
    from knack import wiring

    store = wiring.reading_store(config)
    try:
        yield store
    finally:
        getattr(store, "close", lambda: None)()


def _peek(job: Job, store) -> dict | None:
    """A job's manifest alone, read bounded and not trusted (for --task, --since and the default fps; a worker
    verifies the clip and checks the filters again). None when it cannot be read here: the worker says why."""
    from collector.bundle import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest
    from storage.content.cid import Cid
    from storage.validator.fetch import fetch_manifest

    try:
        if job.local:
            with open(Path(job.local) / MANIFEST, "rb") as f:
                return parse_manifest(f.read(MAX_MANIFEST_BYTES + 1))
        return parse_manifest(fetch_manifest(store.get, Cid.parse(json.loads(job.paid)["cid"])))
    except Exception as exc:  # a store that is down, a hostile DAG, a missing file: all the worker's to report
        log.debug("%s: manifest not read before the build: %s", job.name, exc)
        return None


def _prefilter(jobs: list[Job], store, filters: Filters) -> tuple[list[Job], list[Outcome]]:
    """--task and --since applied on each manifest before the heavy work."""
    if not (filters.task or filters.since):
        return jobs, []
    kept, left_out = [], []
    for job in jobs:
        manifest = _peek(job, store)
        paid = json.loads(job.paid) if job.paid else {}
        why = filters.refuses(manifest | {"contributor": paid["contributor"]} if paid else manifest) if manifest is not None else ""
        if why:
            left_out.append(Outcome(-1, job.name, False, reason=f"filtered out: {why}", clip_id=str(manifest.get("clip_id", ""))))
        else:
            kept.append(job)
    return kept, left_out


def _default_fps(jobs: list[Job], store) -> int | None:
    """The first readable clip's camera rate (among the first few)."""
    for job in jobs[:5]:
        if (manifest := _peek(job, store)) is not None and (fps := nominal_fps(manifest)):
            return fps
    return None


def _run(config: Config, options: Options, jobs: list[Job], network, staging: Path, fps: int, say) -> list[Outcome]:
    """Every job through Daft, one clip per morsel so that the workers share the clips evenly."""
    if not jobs:
        return []
    import daft

    for name in ("daft", "tracing"):  # Daft logs each operator it runs at INFO, under both names
        logging.getLogger(name).setLevel(logging.WARNING)
    workers = options.workers or os.cpu_count() or 1
    if options.ray:
        try:
            daft.set_runner_ray(address=options.ray, noop_if_initialized=True)
        except ImportError:
            raise BuildError("--ray needs Ray: install it with pip install 'knack[ray]'") from None
        except Exception as exc:
            raise BuildError(f"the Ray cluster at {options.ray} cannot be reached: {_reason(exc)}") from None
    else:
        try:
            daft.set_runner_native()
        except Exception as exc:  # a runner was set earlier in this process (a test, a notebook): it is used
            log.debug("Daft runner kept: %s", exc)
    daft.set_execution_config(default_morsel_size=1)
    worker = daft.cls(ClipWorker, use_process=not options.ray, max_concurrency=workers)(config, network, str(staging), fps, options.filters)
    frame = daft.from_pydict({"job": [json.dumps(j.__dict__) for j in jobs]})
    frame = frame.select(worker(daft.col("job")).alias("outcome"))
    outcomes, progress = [], Progress(len(jobs), options.progress, say)
    for row in frame.iter_rows():
        outcome = Outcome(**json.loads(row["outcome"]))
        outcomes.append(outcome)
        progress.step(outcome.ok)
    progress.done()
    return sorted(outcomes, key=lambda o: o.position)


class Progress:
    """One line on stderr, redrawn as clips finish (a line every tenth of the way when it is not a terminal)."""

    def __init__(self, total: int, enabled: bool, say):
        self.total, self.enabled, self.done_, self.ok, self.started = total, enabled, 0, 0, time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last_tenth = -1

    def step(self, ok: bool) -> None:
        self.done_ += 1
        self.ok += ok
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        width = 30
        filled = width * self.done_ // self.total
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done_}/{self.total} clips"
            f"  {self.ok} episode(s), {self.done_ - self.ok} left out  {self.done_ / elapsed * 60:.1f} clips/min"
        )
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif (tenth := 10 * self.done_ // self.total) != self._last_tenth:
            self._last_tenth = tenth
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


def _assemble(config: Config, options: Options, out: Path, outcomes: list[Outcome], network, fps: int, say) -> Result:
    from knack.dataset.card import write_card

    included, left_out = [], []
    writer: DatasetWriter | None = None
    for outcome in outcomes:
        if not outcome.ok:
            left_out.append(outcome)
            continue
        layout = Layout.from_dict(outcome.layout)
        if writer is None:
            writer = DatasetWriter(out, layout)
        elif why := writer.layout.difference(layout):
            left_out.append(replace(outcome, ok=False, reason=f"its features differ from the dataset's (first episode's): {why}"))
            continue
        outcome.episode_index = writer.add(Path(outcome.staged), outcome.task, outcome.length, outcome.stats, outcome.provenance)
        included.append(outcome)
    info = writer.finish() if writer is not None else {}
    result = Result(out, len(included), writer.frames if writer else 0, left_out, included, 0.0, info)
    write_card(out, result, options, network, fps)
    return result


def _write_report(result: Result, options: Options, network, fps: int) -> None:
    report = {
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "network": {"chain_id": network[0], "registry": network[1]} if network else None,
        "fps": fps,
        "seconds": round(result.seconds, 3),
        "episodes": [
            {"episode_index": o.episode_index, "clip_id": o.clip_id, "cid": o.provenance.get("cid"), "length": o.length, "max_time_error_s": o.max_error_s}
            | ({"notes": o.notes} if o.notes else {})
            for o in result.included
        ],
        "left_out": [{"clip": o.name, "clip_id": o.clip_id, "reason": o.reason} for o in result.left_out],
    }
    (result.out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
