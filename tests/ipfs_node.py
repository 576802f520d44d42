"""Independent IPFS references for the storage tests, driven from Python (stdlib only).

Two Node.js tools live under ``tests/js`` (installed by ``make test``; see the Makefile):

* ``tests/js/importer/reference.mjs`` -- ``ipfs-unixfs-importer`` set up with kubo's parameters
  for ``ipfs add -r --cid-version=1 --raw-leaves`` (sha2-256, raw leaves, 256 KiB fixed chunks,
  balanced DAG with at most 174 links per node, sorted dag-pb directories, HAMT sharding above
  256 KiB of links).  :func:`reference_cids` runs it.
* ``tests/js/ipfs`` -- js-ipfs 0.66.1 (reports 0.18.1), a stand-in for kubo's HTTP RPC API, since
  kubo itself cannot be installed here.  :class:`IpfsDaemon` runs one on free loopback ports, in
  a throw-away repository, with no bootstrap peers, MDNS, delegates, preload or gRPC, so it
  never dials out.

Known differences of the js-ipfs daemon from kubo (all checked against reference.mjs):

* pass ``cid-version=1&raw-leaves=true&cid-base=base32`` to ``/api/v0/add``: without
  ``cid-base`` the CIDv1 come back in base58btc, and raw leaves are not implied;
* directories are never HAMT-sharded (kubo shards above 256 KiB of links), so the daemon and
  kubo differ only for directories with thousands of entries;
* symlink parts (``application/symlink``) are accepted but dropped by ``add``;
* its multipart parser needs a ``filename`` of at least two characters (a one-character name
  such as ``"a"`` is read as empty, and the add fails with "Unexpected input: object"): give
  every part its full path, ``top/a`` (:meth:`IpfsDaemon.add_path` does, and renames a
  one-character top entry, whose name is in no CID).

Like kubo's ``ipfs add -r`` without ``--hidden``, :func:`reference_cids` and
:meth:`IpfsDaemon.add_path` skip names starting with '.' unless ``hidden=True``;
ipfshttpclient's ``Client.add(dir, recursive=True)`` includes them.

Use :func:`node_tools_missing` to skip tests when the Node packages are not installed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

JS_DIR = Path(__file__).resolve().parent / "js"
IMPORTER_DIR = JS_DIR / "importer"
IPFS_JS_DIR = JS_DIR / "ipfs"
REFERENCE_SCRIPT = IMPORTER_DIR / "reference.mjs"
JSIPFS = IPFS_JS_DIR / "node_modules" / ".bin" / "jsipfs"

_INSTALL_HINT = "run `make test` (or `npm ci --prefix tests/js/importer` and `npm ci --prefix tests/js/ipfs`)"

# Environment for every Node process: no update checks against the npm registry.
_NODE_ENV = {"NO_UPDATE_NOTIFIER": "1", "NODE_NO_WARNINGS": "1"}


def _node() -> str | None:
    return shutil.which("node")


def node_tools_missing(daemon: bool = True) -> str | None:
    """One sentence saying why the Node references cannot run here, or None when they can.

    ``daemon=False`` checks only what :func:`reference_cids` needs (node and the importer).
    """
    node = _node()
    if node is None:
        return "node is not on PATH, so the IPFS reference tests are skipped."
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "node --version failed, so the IPFS reference tests are skipped."
    if major < 18:
        return f"node {version} is older than 18, so the IPFS reference tests are skipped."
    if not (IMPORTER_DIR / "node_modules" / "ipfs-unixfs-importer" / "package.json").is_file():
        return f"the Node package ipfs-unixfs-importer is not installed in {IMPORTER_DIR}; {_INSTALL_HINT}."
    if daemon and not JSIPFS.exists():
        return f"js-ipfs (the `ipfs` npm package) is not installed in {IPFS_JS_DIR}; {_INSTALL_HINT}."
    return None


def reference_cids(path: str | os.PathLike[str], *, hidden: bool = False, car: str | os.PathLike[str] | None = None, timeout: float = 600) -> dict:
    """Import ``path`` like ``ipfs add -r --cid-version=1 --raw-leaves`` and return
    ``{"root": cid, "blocks": [cid, ...], "count": n}`` (CIDv1 base32 strings).

    ``blocks`` is every block written, in emission order, duplicates included.  A directory is
    itself the root (entries named by their relative paths, empty directories included, names
    starting with '.' skipped unless ``hidden``, as kubo does without ``--hidden``); a file is
    its own root.  ``car``: also write the blocks (each once) as a CARv1 with that root.
    """
    node = _node()
    if node is None:
        raise RuntimeError("node is not on PATH")
    cmd = [node, str(REFERENCE_SCRIPT)]
    if hidden:
        cmd.append("--hidden")
    if car is not None:
        cmd += ["--car", os.fspath(car)]
    cmd.append(os.fspath(path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **_NODE_ENV})
    if proc.returncode != 0:
        raise RuntimeError(f"reference.mjs failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class _PortInUse(Exception):
    pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class IpfsDaemon:
    """A js-ipfs daemon on loopback, in a temporary repository, as a context manager.

    >>> with IpfsDaemon() as d:
    ...     client = ipfshttpclient.Client(d.api)   # not connect(): it refuses the version
    ...     d.rpc("pin/ls", type="recursive")

    ``stop()`` kills it (SIGTERM, then SIGKILL; also how tests make the daemon "go away") and
    ``start()`` brings it back on the same repository and the same ports.  ``close()`` (or
    leaving the ``with`` block) stops it and deletes the repository.
    """

    def __init__(self, repo: str | os.PathLike[str] | None = None, *, startup_timeout: float = 60.0, offline: bool = False):
        self._own_repo = repo is None
        self.repo = Path(repo) if repo is not None else Path(tempfile.mkdtemp(prefix="knack-jsipfs-"))
        self.startup_timeout = startup_timeout
        self.offline = offline
        self.api_port, self.gateway_port, self.swarm_port = _free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.repo.parent / f"{self.repo.name}.daemon.log"
        self._log = None
        self._started_once = False

    # -- addresses ---------------------------------------------------------------------------
    @property
    def api(self) -> str:
        """The RPC API multiaddr, e.g. ``/ip4/127.0.0.1/tcp/PORT/http`` (for ipfshttpclient)."""
        return f"/ip4/127.0.0.1/tcp/{self.api_port}/http"

    @property
    def url(self) -> str:
        """The RPC API base URL, e.g. ``http://127.0.0.1:PORT`` (append ``/api/v0/...``)."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- life cycle --------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {**os.environ, **_NODE_ENV, "IPFS_PATH": str(self.repo)}

    def _init_repo(self) -> None:
        if (self.repo / "config").is_file():
            return
        self.repo.mkdir(parents=True, exist_ok=True)
        # The `test` profile: no bootstrap peers, no delegates, MDNS and webRTCStar off.
        proc = subprocess.run([str(JSIPFS), "init", "--profile", "test", "--empty-repo"], capture_output=True, text=True, env=self._env(), timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"jsipfs init failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")

    def _write_config(self) -> None:
        path = self.repo / "config"
        config = json.loads(path.read_text())
        addresses = config.setdefault("Addresses", {})
        addresses["API"] = f"/ip4/127.0.0.1/tcp/{self.api_port}"
        addresses["Gateway"] = f"/ip4/127.0.0.1/tcp/{self.gateway_port}"
        addresses["Swarm"] = [f"/ip4/127.0.0.1/tcp/{self.swarm_port}"]
        addresses["RPC"] = ""  # no gRPC server (it would take port 5003)
        addresses["Delegates"] = []
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery.setdefault("MDNS", {})["Enabled"] = False
        discovery.setdefault("webRTCStar", {})["Enabled"] = False
        config.setdefault("Swarm", {})["DisableNatPortMap"] = True
        path.write_text(json.dumps(config, indent=2))

    def _clear_stale_state(self) -> None:
        # After a SIGKILL the repo lock (a proper-lockfile directory, stale only after 20 s)
        # and the `api` file stay behind; no daemon of ours is running, so remove them.
        shutil.rmtree(self.repo / "repo.lock", ignore_errors=True)
        (self.repo / "api").unlink(missing_ok=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> IpfsDaemon:
        """Start the daemon (initialising the repository the first time) and wait for its API.

        The ports are chosen once, at construction; if one was taken in the meantime the first
        start picks new ones (a restart keeps them, since clients hold the address)."""
        if self.running:
            return self
        missing = node_tools_missing()
        if missing:
            raise RuntimeError(missing)
        self._init_repo()
        for attempt in range(3):
            try:
                return self._spawn_and_wait()
            except _PortInUse:
                if self._started_once or attempt == 2:
                    raise RuntimeError(f"jsipfs daemon: a port is already in use; log tail:\n{self.log_tail()}") from None
                self.api_port, self.gateway_port, self.swarm_port = _free_ports(3)
        raise AssertionError("unreachable")

    def _spawn_and_wait(self) -> IpfsDaemon:
        self._write_config()
        self._clear_stale_state()
        cmd = [str(JSIPFS), "daemon", "--enable-preload=false"]
        if self.offline:
            cmd.append("--offline")
        self._log = open(self.log_path, "ab")
        log_start = self._log.tell()
        self._log.write(f"\n--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, env=self._env(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._close_log()
                self.proc = None
                if "EADDRINUSE" in self._log_since(log_start):
                    raise _PortInUse()
                raise RuntimeError(f"jsipfs daemon exited with {rc} before its API answered; log tail:\n{self.log_tail()}")
            try:
                self.rpc("id", timeout=2)
                self._started_once = True
                return self
            except (OSError, ValueError, RuntimeError):
                pass
            if "EADDRINUSE" in self._log_since(log_start):
                # js-ipfs logs this and then hangs instead of exiting.
                self.stop(timeout=2)
                raise _PortInUse()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jsipfs daemon API {self.url} did not answer within {self.startup_timeout:.0f} s; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the daemon: SIGTERM to its process group, SIGKILL after ``timeout`` seconds."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            # Children of the group (none expected) must not outlive the daemon either.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._close_log()

    def kill(self) -> None:
        """Stop the daemon abruptly (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.stop(timeout=0.1)

    def restart(self) -> IpfsDaemon:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the daemon and delete the repository if this object created it."""
        self.stop()
        if self._own_repo:
            shutil.rmtree(self.repo, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> IpfsDaemon:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # -- RPC ---------------------------------------------------------------------------------
    def rpc(self, command: str, *, data: bytes | None = None, content_type: str | None = None, timeout: float = 60, **params) -> dict | list | str:
        """POST ``/api/v0/<command>`` with query ``params`` (``_`` in names becomes ``-``; list
        values repeat the parameter) and return the decoded JSON (a list for several lines)."""
        query = []
        for key, value in params.items():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, bool):
                    v = "true" if v else "false"
                query.append((key.replace("_", "-"), str(v)))
        url = f"{self.url}/api/v0/{command}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, data=data if data is not None else b"", method="POST")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"/api/v0/{command} answered {e.code}: {e.read().decode(errors='replace')[:2000]}") from e
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines:
            return ""
        return lines[0] if len(lines) == 1 else lines

    def add_path(self, path: str | os.PathLike[str], *, hidden: bool = False, pin: bool = True, only_hash: bool = False, timeout: float = 600) -> dict:
        """Add a file or directory through ``/api/v0/add`` as kubo's ``ipfs add -r
        --cid-version=1 --raw-leaves`` would name it; return ``{"root": cid, "entries": [...]}``
        with the daemon's answer lines (``Name``/``Hash``/``Size``).  Streams the multipart body."""
        top = _top_name(Path(path))
        body, boundary = _multipart_body(Path(path), top, hidden)
        lines = self._post_stream(
            "add",
            body,
            f"multipart/form-data; boundary={boundary}",
            timeout,
            **{"cid-version": 1, "raw-leaves": "true", "cid-base": "base32", "pin": "true" if pin else "false", "only-hash": "true" if only_hash else "false"},
        )
        root = next((e["Hash"] for e in reversed(lines) if e.get("Name") == top), lines[-1]["Hash"])
        return {"root": root, "entries": lines}

    def dag_import(self, car: str | os.PathLike[str], *, pin_roots: bool = True, timeout: float = 600) -> list:
        """POST a CAR file to ``/api/v0/dag/import``; return the answer lines
        (``{"Root": {"Cid": {"/": cid}, "PinErrorMsg": ""}}`` per root)."""
        boundary = "knack-car-" + os.urandom(8).hex()

        def body():
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="import.car"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            with open(car, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        return self._post_stream("dag/import", body(), f"multipart/form-data; boundary={boundary}", timeout, **{"pin-roots": "true" if pin_roots else "false"})

    def _post_stream(self, command: str, chunks, content_type: str, timeout: float, **params) -> list:
        query = urllib.parse.urlencode(params)
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=timeout)
        try:
            conn.putrequest("POST", f"/api/v0/{command}?{query}")
            conn.putheader("Content-Type", content_type)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for chunk in chunks:
                if chunk:
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            text = resp.read().decode()
            if resp.status != 200:
                raise RuntimeError(f"/api/v0/{command} answered {resp.status}: {text[:2000]}")
            out = [json.loads(line) for line in text.splitlines() if line.strip()]
            errors = [o for o in out if isinstance(o, dict) and o.get("Type") == "error"]
            if errors:
                raise RuntimeError(f"/api/v0/{command} failed: {errors[0].get('Message')}")
            return out
        finally:
            conn.close()


def _top_name(path: Path) -> str:
    # The top entry's own name is in no CID; js-ipfs reads a one-character filename as empty
    # (its parser wants /filename="(.[^"]+)"/), so such a name gets a prefix.
    name = path.resolve().name or "root"
    return name if len(urllib.parse.quote(name, safe="")) >= 2 else f"_{name}"


def _multipart_body(path: Path, top: str, hidden: bool):
    """A streamed multipart/form-data body for ``/api/v0/add`` (kubo's and js-ipfs' format):
    one part per entry, ``filename`` the URL-escaped (%-encoded, '/' too) path from the top
    entry's own name (``top``, ``top/sub``, ``top/sub/file``), directories as ``application/x-directory`` parts
    before their contents, files as ``application/octet-stream``, symlinks (not followed) as
    ``application/symlink`` with the target as body."""
    boundary = "knack-" + os.urandom(12).hex()
    path = path.resolve()

    def part(name: str, ctype: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        return (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\nContent-Type: {ctype}\r\n\r\n').encode()

    def file_chunks(p: Path):
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def walk(p: Path, name: str):
        if p.is_symlink():  # kubo's form; js-ipfs drops these parts
            yield part(name, "application/symlink")
            yield os.fsencode(os.readlink(p))
            yield b"\r\n"
        elif p.is_dir():
            yield part(name, "application/x-directory")
            yield b"\r\n"
            for child in sorted(os.listdir(p), key=os.fsencode):
                if not hidden and child.startswith("."):
                    continue
                yield from walk(p / child, f"{name}/{child}")
        elif p.is_file():
            yield part(name, "application/octet-stream")
            yield from file_chunks(p)
            yield b"\r\n"

    def body():
        yield from walk(path, top)
        yield f"--{boundary}--\r\n".encode()

    return body(), boundary
