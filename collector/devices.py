"""Find the cameras and serial ports on this machine and describe them for writing knack.toml."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from serial.tools import list_ports

_VIDEO_NODE = re.compile(r"video(\d+)")

# Stable names come first: /dev/videoN and /dev/ttyUSBN are numbered in probe order and can swap on reboot.
# The names of udev/99-knack.rules first: the ones an integrator chose, stable across ports and reboots.
_CAMERA_LINK_DIRS = ("knack", "v4l/by-id", "v4l/by-path")
_SERIAL_LINK_DIRS = ("knack", "serial/by-id", "serial/by-path")

_NO_CAMERAS = "no /dev/video* found: is the camera plugged in and is the user in the 'video' group?"
_NO_SERIAL = "no serial ports found: is the device plugged in and is the user in the 'dialout' group?"


@dataclass(frozen=True)
class CameraDevice:
    path: Path
    index: int
    name: str | None
    usb_id: str | None
    serial: str | None
    symlinks: tuple[Path, ...]
    is_capture: bool | None


@dataclass(frozen=True)
class SerialDevice:
    path: Path
    usb_id: str | None
    serial_number: str | None
    description: str | None
    manufacturer: str | None
    symlinks: tuple[Path, ...]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _links_to(target: Path, dev_root: Path, link_dirs: tuple[str, ...]) -> tuple[Path, ...]:
    real = target.resolve()
    found: list[Path] = []
    for sub in link_dirs:
        d = dev_root / sub
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink() and entry.resolve() == real:
                found.append(entry)
    return tuple(found)


def _usb_device_dir(sys_node: Path, sys_root: Path) -> Path | None:
    # The video node hangs off a USB *interface* (1-1:1.0); the ids live on the USB device above it.
    start = sys_node / "device"
    if not start.exists():
        start = sys_node
    top = sys_root.resolve()
    d = start.resolve()
    while top in d.parents:  # never climb out of sys_root
        if (d / "idVendor").is_file():
            return d
        d = d.parent
    return None


def _camera(dev_node: Path, index: int, sys_root: Path, dev_root: Path) -> CameraDevice:
    sys_node = sys_root / "class" / "video4linux" / dev_node.name
    usb_dir = _usb_device_dir(sys_node, sys_root) if sys_node.exists() else None
    usb_id = serial = None
    if usb_dir is not None:
        vendor, product = _read(usb_dir / "idVendor"), _read(usb_dir / "idProduct")
        if vendor and product:
            usb_id = f"{vendor.lower()}:{product.lower()}"
        serial = _read(usb_dir / "serial")
    # UVC cameras register two nodes per stream; the one with sysfs index 0 captures, the other carries metadata.
    stream_index = _read(sys_node / "index")
    is_capture = None if stream_index is None or not stream_index.isdigit() else int(stream_index) == 0
    return CameraDevice(
        path=dev_node,
        index=index,
        name=_read(sys_node / "name"),
        usb_id=usb_id,
        serial=serial,
        symlinks=_links_to(dev_node, dev_root, _CAMERA_LINK_DIRS),
        is_capture=is_capture,
    )


def list_cameras(dev_root: Path = Path("/dev"), sys_root: Path = Path("/sys")) -> list[CameraDevice]:
    # Start from /dev, not sysfs: a container can see the host's sysfs without having the device nodes.
    nodes = []
    try:
        entries = list(dev_root.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = _VIDEO_NODE.fullmatch(entry.name)
        if m:
            nodes.append((int(m.group(1)), entry))
    return [_camera(node, index, sys_root, dev_root) for index, node in sorted(nodes)]


def _clean(value: str | None) -> str | None:
    # pyserial fills unknown fields with "n/a"; None reads better in the report and in JSON.
    return None if value in (None, "", "n/a") else value


def list_serial_ports(dev_root: Path = Path("/dev")) -> list[SerialDevice]:
    ports = []
    for info in list_ports.comports(include_links=False):
        path = Path(info.device)
        usb_id = None if info.vid is None or info.pid is None else f"{info.vid:04x}:{info.pid:04x}"
        ports.append(
            SerialDevice(
                path=path,
                usb_id=usb_id,
                serial_number=_clean(info.serial_number),
                description=_clean(info.description),
                manufacturer=_clean(info.manufacturer),
                symlinks=_links_to(path, dev_root, _SERIAL_LINK_DIRS),
            )
        )
    return sorted(ports, key=lambda p: str(p.path))


def _entry_line(path: Path, label: str | None, usb_id: str | None, serial: str | None, note: str = "") -> str:
    parts = [str(path)]
    if label:
        parts.append(f'"{label}"')
    if usb_id:
        parts.append(f"usb {usb_id}")
    if serial:
        parts.append(f"serial {serial}")
    if note:
        parts.append(note)
    return "  " + "  ".join(parts)


def _config_value(device: CameraDevice | SerialDevice) -> str:
    if device.symlinks:
        return f'"{device.symlinks[0]}"'
    return f'"{device.path}"  # no stable symlink found; USB device numbers can change on replug'


def format_devices(cameras: list[CameraDevice], ports: list[SerialDevice]) -> str:
    lines = ["Cameras"]
    if not cameras:
        lines.append(f"  none: {_NO_CAMERAS}")
    for cam in cameras:
        note = "(not a capture node)" if cam.is_capture is False else ""
        lines.append(_entry_line(cam.path, cam.name, cam.usb_id, cam.serial, note))
        lines.extend(f"    also: {link}" for link in cam.symlinks)

    lines += ["", "Serial ports"]
    if not ports:
        lines.append(f"  none: {_NO_SERIAL}")
    for port in ports:
        label = port.description or port.manufacturer
        lines.append(_entry_line(port.path, label, port.usb_id, port.serial_number))
        lines.extend(f"    also: {link}" for link in port.symlinks)

    # The metadata twin of a UVC camera opens but yields no frames, so suggest a capture node.
    capture = [c for c in cameras if c.is_capture is not False]
    hint: list[str] = []
    if capture:
        hint += ["[[camera]]", f"source = {_config_value(capture[0])}"]
    # Sensors are nearly always USB adapters; a built-in UART like ttyS0 is rarely what the operator wants.
    usb_ports = [p for p in ports if p.usb_id] or ports
    if usb_ports:
        hint += ["[[serial]]", f"port = {_config_value(usb_ports[0])}"]
    if hint:
        lines += ["", "In knack.toml:"]
        lines += [f"  {h}" for h in hint]
    return "\n".join(lines) + "\n"


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def devices_as_dict(cameras: list[CameraDevice], ports: list[SerialDevice]) -> dict:
    return {
        "cameras": [_jsonable(dataclasses.asdict(c)) for c in cameras],
        "serial_ports": [_jsonable(dataclasses.asdict(p)) for p in ports],
    }


def usb_id_of(path: str) -> str | None:
    """USB vendor:product of a camera or serial device path (symlinks followed), None for files, ptys and the unknown."""
    if not path.startswith("/dev/") and not path.isdigit():
        return None
    real = Path(f"/dev/video{path}" if path.isdigit() else os.path.realpath(path))
    for device in (*list_cameras(), *list_serial_ports()):
        if Path(os.path.realpath(device.path)) == real:
            return device.usb_id
    return None


def usb_interface_of(dev_node: Path, sys_root: Path = Path("/sys")) -> str | None:
    """bInterfaceNumber ("00", "01", ...) of the USB interface a video or tty node hangs off, None when not USB."""
    # A dual-port adapter or a stereo camera is one USB device (one serial number) with a node per interface.
    top = sys_root.resolve()
    for cls in ("video4linux", "tty"):
        start = sys_root / "class" / cls / dev_node.name / "device"
        if not start.exists():
            continue
        d = start.resolve()
        while top in d.parents:
            if (d / "idVendor").is_file():
                return None  # reached the USB device without passing an interface
            number = _read(d / "bInterfaceNumber")
            if number:
                return number.lower()
            d = d.parent
    return None
