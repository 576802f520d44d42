"""`knack tui`: the operator's app, on the configured sources or (--demo) on the demo's looping sample."""

from __future__ import annotations

from pathlib import Path

from collector.config import load


def cmd_tui(args) -> int:
    from knack.demo import demo_keys, join_network, looping_demo
    from knack.wiring import device_key
    from tui.app import run

    base = load(args.config)
    if not args.demo:
        return run(base, device_key(base))
    # The keys are unlocked before the app owns the terminal: in a demo the app validates its own clips.
    target = Path(args.data_dir) if args.data_dir else base.data_path / "demo"
    keys = demo_keys(base, target)
    with looping_demo(base, target, args.clip_seconds) as demo_config:
        config, key = join_network(demo_config, keys)
        return run(config, key, demo=True, validator_key=keys.validator)
