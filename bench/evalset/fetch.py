"""Fetch the real-footage sources of the hand/face evaluation set.

Each source in ``sources.toml`` is pinned to a public GitHub repository, a commit,
a path and a sha256.  ``source_file`` returns a verified local copy, taken from a
local git mirror when one exists (no network), else from raw.githubusercontent.com.
The harness cuts excerpts and degraded variants from these copies.

CLI: python bench/evalset/fetch.py [--cache DIR] [--mirror DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCES = HERE / "sources.toml"
DEFAULT_CACHE = Path.home() / ".cache" / "knack-evalset"


class SourceError(RuntimeError):
    """A source could not be fetched or does not match its recorded sha256."""


def load_sources(path: Path = DEFAULT_SOURCES) -> list[dict]:
    with open(path, "rb") as f:
        sources = tomllib.load(f)["source"]
    ids = [s["id"] for s in sources]
    # ids name the cache files, so a duplicate would silently share one file
    if len(ids) != len(set(ids)):
        raise SourceError(f"duplicate source ids in {path}")
    return sources


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(source: dict, mirror: Path | None) -> bytes:
    owner_name = source["repo"].replace("/", "+")
    git_dir = mirror / owner_name / "repo" if mirror else None
    if git_dir is not None and git_dir.is_dir():
        spec = f"{source['commit']}:{source['path']}"
        run = subprocess.run(["git", "--git-dir", str(git_dir), "show", spec], capture_output=True)
        if run.returncode == 0:
            return run.stdout
        # a shallow or stale mirror may lack the commit; fall through to the network
    url = f"https://raw.githubusercontent.com/{source['repo']}/{source['commit']}/{source['path']}"
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except OSError as e:
        raise SourceError(f"source {source['id']!r}: cannot download {url}: {e}") from e


def source_file(source: dict, cache: Path, mirror: Path | None = None) -> Path:
    """Return a local copy of ``source``'s file at its pinned commit, sha256-checked."""
    out = cache / f"{source['id']}{Path(source['path']).suffix.lower()}"
    if out.is_file() and _sha256(out.read_bytes()) == source["sha256"]:
        return out
    data = _read(source, mirror)
    got = _sha256(data)
    if got != source["sha256"]:
        raise SourceError(f"source {source['id']!r} ({source['repo']}@{source['commit'][:12]}:{source['path']}): sha256 {got} != recorded {source['sha256']}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(out)  # atomic, so an interrupted run never leaves a bad cache file
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--mirror", type=Path, default=None, help="dir of <owner>+<name>/repo git mirrors")
    args = ap.parse_args(argv)
    failed = 0
    for s in load_sources(args.sources):
        try:
            p = source_file(s, args.cache, args.mirror)
            print(f"ok   {s['id']:<28} {s['kind']:<5} {p}")
        except SourceError as e:
            failed += 1
            print(f"FAIL {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
