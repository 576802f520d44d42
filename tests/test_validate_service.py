"""`knack validate --watch`, the validator as a service: its health judgement, its rounds in process (against a
scripted validator where a real one would need a chain that misbehaves on cue), and the command as systemd runs
it: a subprocess on the embedded chain, /healthz and /metrics over HTTP, JSON-line logs, SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from knack.cli import build_parser
from knack.validate import Round, ValidatorService, assess, classify, registry_for
from storage.content.ipfs import StoreUnavailable
from storage.ledger.base import ChainError, ChainUnavailable
from storage.ledger.reasons import Reason
from storage.validator import Verdict
from tests.service_probe import free_port, http_get, metrics, samples

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR_HEX = "0x" + "5a" * 32


class NetworkMismatch(ChainError):
    """As storage.validator raises it: the registry names another model and policy digest."""


# --- a validator playing a script ------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    batch_id: int
    digests: tuple = (b"",)


class ScriptedValidator:
    """storage.validator's round interface (`pending_batches`, `run_once`, `provider`). Each step is one round:
    (the batch ids pending, then what run_once returns or raises); after the last step nothing is pending."""

    def __init__(self, *steps, provider: str | None = "CPUExecutionProvider"):
        self.steps, self.provider, self.rounds = list(steps), provider, 0

    def pending_batches(self):
        return [Batch(b) for b in (self.steps[0][0] if self.steps else [])]

    def run_once(self):
        self.rounds += 1
        if not self.steps:
            return {}
        _, outcome = self.steps.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome() if callable(outcome) else outcome


def accepted(cid: str) -> Verdict:
    return Verdict(cid, True, 8000)


def rejected(cid: str, reason: Reason) -> Verdict:
    return Verdict(cid, False, reason=reason, detail="seen before")


def service_for(validator, **kwargs) -> ValidatorService:
    return ValidatorService(lambda: validator, interval=kwargs.pop("interval", 10.0), address="0xValidator", where="the embedded chain", **kwargs)


def scrape(service) -> dict[tuple, float]:
    text = generate_latest(registry_for(service.snapshot)).decode()
    return samples(text)


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def wait_for(predicate, timeout: float = 20.0, what="the condition"):
    """`what` names what is awaited, or is a function that says it (with the state at the time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


# --- health, a pure judgement -----------------------------------------------------------------------------
def test_health_is_ok_when_the_last_round_succeeded_and_the_backlog_is_steady():
    assert assess(Round(0.0, 1.0, 2, {}), [2, 1, 3, 2], interval=10).as_dict() == {"status": "ok", "reasons": []}


def test_health_is_degraded_until_the_first_round_has_finished():
    assert assess(None, [], interval=10).reasons == ("starting: no round has finished yet",)


def test_a_failed_round_degrades_health_with_its_reason_and_when_it_is_tried_again():
    failed = Round(0.0, 0.1, 1, problem="chain unreachable: the chain at http://10.0.0.5:8545 is not reachable", kind="chain")
    health = assess(failed, [1], interval=15)
    assert health.status == "degraded"
    assert health.reasons == ("chain unreachable: the chain at http://10.0.0.5:8545 is not reachable (tried again every 15 s)",)


def test_a_backlog_that_rises_three_rounds_running_degrades_health():
    ok = Round(0.0, 1.0, 9, {})
    assert assess(ok, [1, 2, 3, 3], interval=10).ok
    assert assess(ok, [2, 4, 3, 9], interval=10).ok
    assert assess(ok, [1, 4, 6, 9], interval=10).reasons == (
        "backlog growing: 1 -> 4 -> 6 -> 9 batches pending at the start of the last 4 rounds (settling is slower than submissions)",
    )


def test_what_stops_a_round_is_named_chain_store_open_or_batch():
    assert classify(ChainUnavailable("the chain at http://x:8545 is not reachable"), [], opened=False) == (
        "chain",
        "chain unreachable: the chain at http://x:8545 is not reachable",
    )
    assert classify(NetworkMismatch("the registry's model and policy digest is 0a1b…"), [4], opened=True) == (
        "chain",
        "chain: the registry's model and policy digest is 0a1b…",
    )
    assert classify(StoreUnavailable("the IPFS daemon at /ip4/127.0.0.1/tcp/5001 is down"), [4], opened=True)[0] == "store"
    assert classify(PermissionError("validator.sqlite is read-only"), [], opened=False) == (
        "open",
        "validator not opened: PermissionError: validator.sqlite is read-only",
    )
    assert classify(KeyError("fps"), [7], opened=True) == ("batch", "settling batch 7 failed: KeyError: 'fps'")
    assert classify(ValueError("bad"), [7, 9], opened=True)[1] == "settling batches 7, 9 failed: ValueError: bad"


# --- rounds, in process -----------------------------------------------------------------------------------
def test_a_network_mismatch_is_said_once_degrades_health_and_the_service_settles_once_it_clears(caplog):
    mismatch = NetworkMismatch("the registry's model and policy digest is 0a1b…, this validator's is 9f8e…")
    verdicts = {3: [accepted("bafy-a"), rejected("bafy-b", Reason.DUPLICATE_VIDEO)]}
    service = service_for(ScriptedValidator(([3], mismatch), ([3], mismatch), ([3], verdicts)))
    caplog.set_level(logging.INFO)
    service.round()
    service.round()
    health = service.health()
    assert health.status == "degraded"
    assert health.reasons == (f"chain: {mismatch} (tried again every 10 s)",)
    [problem] = events(caplog, "validator.problem")  # one line, not one per round
    assert problem.levelno == logging.WARNING and "this validator's is 9f8e" in problem.getMessage()
    service.round()
    assert service.health().ok
    assert events(caplog, "validator.ok") and [r.fields for r in events(caplog, "batch.settled")] == [{"batch": 3, "accepted": 1, "rejected": 1}]
    [clip] = events(caplog, "clip.rejected")
    assert clip.fields["reason"] == "duplicate_video" and clip.fields["cid"] == "bafy-b"


def test_metrics_count_rounds_errors_and_clips_by_verdict_and_reason():
    verdicts = {3: [accepted("a"), rejected("b", Reason.NEAR_DUPLICATE_VIDEO)], 4: [rejected("c", Reason.CLAIM_MISMATCH), accepted("d")]}
    service = service_for(ScriptedValidator(([3, 4], ChainUnavailable("down")), ([3, 4], verdicts)))
    service.round()
    service.round()
    m = scrape(service)
    assert m[("knack_validator_rounds_total", (("result", "ok"),))] == 1 and m[("knack_validator_rounds_total", (("result", "error"),))] == 1
    assert m[("knack_validator_settle_errors_total", (("kind", "chain"),))] == 1
    assert m[("knack_validator_batches_settled_total", ())] == 2 and m[("knack_validator_clips_accepted_total", ())] == 2
    assert m[("knack_validator_clips_rejected_total", (("reason", "near_duplicate_video"),))] == 1
    assert m[("knack_validator_clips_rejected_total", (("reason", "claim_mismatch"),))] == 1
    assert m[("knack_validator_pending_batches", ())] == 0 and m[("knack_validator_healthy", ())] == 1
    assert 0 < m[("knack_validator_last_success_timestamp_seconds", ())] <= time.time()
    assert m[("knack_validator_seconds_per_clip", ())] == pytest.approx(m[("knack_validator_round_seconds", ())] / 4)
    assert m[("knack_validator_info", (("address", "0xValidator"), ("provider", "CPUExecutionProvider")))] == 1
    assert ("process_resident_memory_bytes", ()) in m


def test_the_provider_the_labeler_picked_at_its_first_clip_is_reported(caplog):
    def label_on_the_gpu():
        validator.provider = "CUDAExecutionProvider"  # storage.validator's labeler is made at its first clip
        return {1: [accepted("a")]}

    validator = ScriptedValidator(([1], label_on_the_gpu), provider=None)
    service = service_for(validator)
    caplog.set_level(logging.INFO)
    service.round()
    assert events(caplog, "validator.provider")[0].fields == {"provider": "CUDAExecutionProvider"}
    assert ("knack_validator_info", (("address", "0xValidator"), ("provider", "CUDAExecutionProvider"))) in scrape(service)


def test_a_batch_that_raises_is_logged_with_its_id_and_the_rounds_go_on(caplog):
    validator = ScriptedValidator(([7], KeyError("fps")), ([7], KeyError("fps")), ([7], {7: [accepted("a")]}))
    service = service_for(validator, interval=0.05)
    caplog.set_level(logging.INFO)
    thread = threading.Thread(target=lambda: setattr(service, "exit_code", service.run(install_signals=False)), daemon=True)
    thread.start()
    wait_for(lambda: events(caplog, "batch.settled"), what="batch 7 settled")
    service.signals.stop.set()
    thread.join(5)
    assert not thread.is_alive() and service.exit_code == 0 and service.finished
    [problem] = events(caplog, "validator.problem")
    assert problem.levelno == logging.ERROR and problem.getMessage() == "settling batch 7 failed: KeyError: 'fps'"
    assert problem.exc_info is not None  # the traceback is in the log, once
    assert validator.rounds >= 3 and service.tally.errors["batch"] == 2


def test_a_round_that_outlasts_the_grace_period_is_left_behind_and_said_so(caplog):
    release = threading.Event()
    validator = ScriptedValidator(([1], lambda: release.wait(10) and {}))
    service = service_for(validator, grace_s=0.2)
    caplog.set_level(logging.INFO)
    thread = threading.Thread(target=lambda: setattr(service, "exit_code", service.run(install_signals=False)), daemon=True)
    thread.start()
    wait_for(lambda: validator.rounds, what="the round to start")
    service.signals.stop.set()
    thread.join(5)
    release.set()
    assert service.exit_code == 0 and not service.finished
    [stopped] = events(caplog, "validator.stopped")
    assert stopped.fields["finished"] is False and "the next start settles" in stopped.getMessage()


def test_the_interval_and_the_port_are_checked_when_the_command_is_read(capsys):
    args = build_parser().parse_args(["validate", "--watch", "--interval", "2.5", "--health-port", "0"])
    assert (args.watch, args.interval, args.health_port, args.log_format) == (True, 2.5, 0, "json")
    for bad in (["--interval", "0"], ["--health-port", "70000"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["validate", "--watch", *bad])
    assert "is not a positive number of seconds" in capsys.readouterr().err


# --- the command, as systemd runs it -----------------------------------------------------------------------
class Watch:
    """One `knack validate --watch` process; its stdout (JSON lines) goes to a file the test reads."""

    def __init__(self, tmp_path: Path, *extra: str, env: dict | None = None):
        self.port, self.log_path = free_port(), tmp_path / "validate.log"
        self._log = open(self.log_path, "wb")
        command = [sys.executable, "-m", "knack", "validate", "--watch", "--interval", "0.5", "--health-port", str(self.port), *extra]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def wait_event(self, name: str, timeout: float = 30.0) -> dict:
        def found():
            assert self.proc.poll() is None, f"knack validate exited {self.proc.returncode}: {self.proc.stderr.read().decode()}"
            return next((e for e in self.events() if e["event"] == name), None)

        return wait_for(found, timeout, f"a {name} event")

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def metrics(self) -> dict[tuple, float]:
        return metrics(self.port)

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


@pytest.fixture
def env(tmp_path):
    env = dict(
        os.environ,
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "share"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        KNACK_DATA_DIR=str(tmp_path / "data"),
        KNACK_VALIDATOR_KEY=VALIDATOR_HEX,
    )
    for name in ("KNACK_CONFIG", "KNACK_VALIDATOR_PASSWORD", "KNACK_DEVICE_PASSWORD"):
        env.pop(name, None)
    return env


def test_watch_on_the_embedded_chain_serves_health_and_metrics_logs_json_lines_and_stops_on_sigterm(tmp_path, env):
    watch = Watch(tmp_path, env=env)
    started = watch.wait_event("validator.started")
    assert started["health"] == f"http://127.0.0.1:{watch.port}/healthz" and started["chain"] == "the embedded chain"
    wait_for(lambda: watch.get("/healthz")[0] == 200, 30, lambda: f"/healthz to say ok; it says {watch.get('/healthz')[1].strip()}")
    assert json.loads(watch.get("/healthz")[1]) == {"status": "ok", "reasons": []}
    m = watch.metrics()
    assert m[("knack_validator_rounds_total", (("result", "ok"),))] >= 1 and m[("knack_validator_pending_batches", ())] == 0
    assert m[("knack_validator_healthy", ())] == 1 and m[("process_open_fds", ())] > 0
    assert watch.get("/nope")[0] == 404
    assert watch.terminate() == 0
    log = watch.events()  # every line parsed as JSON
    assert log[-1]["event"] == "validator.stopped" and log[-1]["finished"] is True
    assert {"validator.started", "validator.ready", "validator.stopping"} <= {e["event"] for e in log}
    assert VALIDATOR_HEX[2:] not in watch.log_path.read_text()


def test_watch_with_its_chain_down_is_degraded_and_keeps_running_until_sigterm(tmp_path, env):
    config = tmp_path / "knack.toml"
    config.write_text(f'[storage]\nchain_rpc = "http://127.0.0.1:{free_port()}"\n')  # nothing listens there
    watch = Watch(tmp_path, env=dict(env, KNACK_CONFIG=str(config)))
    problem = watch.wait_event("validator.problem")
    assert problem["kind"] == "chain" and "is not reachable" in problem["msg"]
    wait_for(lambda: watch.metrics()[("knack_validator_settle_errors_total", (("kind", "chain"),))] >= 3, what="two more rounds to fail")
    status, body = watch.get("/healthz")
    assert status == 503 and json.loads(body)["reasons"][0].startswith("chain unreachable: ")
    assert watch.proc.poll() is None and [e["event"] for e in watch.events()].count("validator.problem") == 1
    assert watch.terminate() == 0


def test_watch_settles_a_batch_submitted_before_it_started(tmp_path, env):
    """A device registered and submitting on the embedded chain; the clips' content is not in the store, so each is
    rejected as unreadable, and the batch settles all the same."""
    from eth_account import Account

    from collector.config import load
    from collector.identity import DeviceKey
    from knack import wiring

    config = load(None, env)
    validator, device, contributor = (DeviceKey(a.address, bytes(a.key)) for a in (Account.from_key(VALIDATOR_HEX), Account.create(), Account.create()))
    ledger = wiring.open_ledger(config, deployer=validator)
    try:
        wiring.register_device(ledger, device, device, contributor)
        ledger.fund(device.address)
        batch_id = ledger.send_submission(*ledger.sign_submission(device, [os.urandom(32), os.urandom(32)]))
    finally:
        ledger.close()
    watch = Watch(tmp_path, env=env)
    settled = watch.wait_event("batch.settled", timeout=60)
    assert settled["batch"] == batch_id and (settled["accepted"], settled["rejected"]) == (0, 2)
    m = watch.metrics()
    assert m[("knack_validator_batches_settled_total", ())] == 1 and m[("knack_validator_clips_rejected_total", (("reason", "unreadable"),))] == 2
    assert watch.terminate() == 0
