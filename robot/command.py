"""`knack robot`: loads the configuration and the keys without printing a thing (its stdout is JSON
lines), then runs the service until a signal ends it."""

from __future__ import annotations

import logging
import os

from collector.config import ConfigError, load
from knack.logs import event, install

log = logging.getLogger("knack.robot")


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(count: int = 2) -> bool:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core), and frees into them
    unevenly: a service with capture, labeling and pinning threads then grows by fragmentation alone
    (bench/robot_soak.py, 10 minutes: median RSS 654 -> 686 -> 690 MB by third of the run; with 2 arenas
    621 -> 622 -> 634 MB). Same as MALLOC_ARENA_MAX=2, which wins when set. False where this is not glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False


def cmd_robot(args) -> int:
    from knack.wiring import device_key, validator_key
    from robot.service import RobotService

    limit_malloc_arenas()  # before the capture, labeling and pinning threads start
    problems = install(logging.DEBUG if args.verbose else logging.INFO)
    config = load(args.config)
    if not (config.camera or config.serial or config.joints):
        raise ConfigError("no sources configured: add [[camera]], [[serial]] or [[joints]] tables to knack.toml (see `knack devices`)")
    # A service has no terminal to ask at: the password comes from the environment (systemd: an
    # EnvironmentFile or a credential), never from the configuration file. Stdout stays JSON lines.
    announce = lambda text: event(log, "key.created", "%s", text)  # noqa: E731
    key = device_key(config, announce)
    validator = validator_key(config, announce) if config.robot.act_as_validator else None
    service = RobotService(config, key, load_config=lambda: load(args.config), validator_key=validator, problems=problems)
    code = service.run()
    if not service.finished:
        # The grace period ran out with the labeler or the pinner still at work: end now rather than let the
        # interpreter tear down around a model mid-inference. Their clips are on disk and in the outbox.
        logging.shutdown()
        os._exit(code)
    return code
