"""`knack dataset build` and `knack dataset verify`: what a person reads of a build, and its exit code."""

from __future__ import annotations

from pathlib import Path

from collector.config import ConfigError, load


def cmd_dataset_build(args) -> int:
    from knack.dataset.build import Filters, Options, build, parse_since

    config = load(args.config)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give at least 1")
    options = Options(
        out=Path(args.out),
        clips=tuple(args.clip_dir),
        filters=Filters(contributor=args.contributor or "", task=args.task or "", since=since, limit=args.limit),
        fps=args.fps,
        workers=args.workers,
        ray=args.ray or "",
        license=args.license,
        name=args.name or "",
        progress=not args.quiet,
    )
    result = build(config, options)
    print(f"{result.episodes} episode(s), {result.frames} frames written to {result.out} in {result.seconds:.1f} s")
    for o in result.included:
        print(f"  episode {o.episode_index:<4} {o.clip_id}  {o.provenance.get('cid')}  batch {o.provenance.get('batch')}  {o.length} frames  task {o.task!r}")
    if result.left_out:
        print(f"{len(result.left_out)} clip(s) left out:")
        for o in result.left_out:
            print(f"  {o.clip_id or o.name}: {o.reason}")
    print(f"Report: {result.out / 'knack-build-report.json'}; card: {result.out / 'README.md'}")
    return 0 if result.episodes else 1


def cmd_dataset_verify(args) -> int:
    from knack.dataset.verify import verify_dataset

    config = load(args.config)
    failed = 0
    for line in verify_dataset(config, Path(args.dataset)):
        print(line.text)
        failed += not line.ok
    return 1 if failed else 0
