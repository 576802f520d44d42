"""udev rules that give one USB camera or serial adapter a stable name under /dev/knack/.

The names are the ones udev/99-knack.rules builds for the same device (tests/test_udev.py holds
them together), so a rule printed here and the generic rules never disagree about a device.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from collector.devices import CameraDevice, SerialDevice

Device = CameraDevice | SerialDevice

HEADER = """\
# Device-specific udev rules for Knack, printed by `knack udev`.
# Append to /etc/udev/rules.d/99-knack-local.rules, then:
#   sudo udevadm control --reload && sudo udevadm trigger
# The group must exist first: sudo groupadd --system knack (see udev/README.md).
"""

_USB_ID = re.compile(r"([0-9a-f]{4}):([0-9a-f]{4})")
_INTERFACE = re.compile(r"[0-9a-f]{2}")
# What udev's usb_id keeps in ID_SERIAL_SHORT; it turns any other character into "_". It also keeps
# "\x" escapes, which would put a backslash in a /dev name, so a backslash becomes "_" here.
_NOT_NAME_SAFE = re.compile(r"[^0-9A-Za-z#+\-.:=@_]")
# In a match udev reads * ? [ ] as a glob and | as alternatives, and " ends the value: any character
# but these is matched by a wildcard rather than quoted.
_MATCH_SAFE = re.compile(r"[0-9A-Za-z#+\-.:=@_/]")
_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class UdevRuleError(ValueError):
    """A device that no udev rule can name stably, or a name that cannot be a link under /dev/knack/."""


def no_usb_identity(path: str | Path) -> UdevRuleError:
    return UdevRuleError(f"{path}: not a USB device (no vendor:product), so no udev rule can give it a stable name")


def udev_serial(serial: str | None) -> str | None:
    """A USB serial number as usb_id puts it in ID_SERIAL_SHORT, or None where usb_id leaves that unset."""
    if not serial:
        return None
    # usb_id ignores a serial number with control characters, non-ASCII or commas altogether.
    if any(not 0x20 <= ord(c) <= 0x7F or c == "," for c in serial):
        return None
    return _NOT_NAME_SAFE.sub("_", "_".join(serial.split())) or None


def _usb_ids(device: Device) -> tuple[str, str]:
    m = _USB_ID.fullmatch(device.usb_id or "")
    if m is None:
        raise no_usb_identity(device.path)
    return m.group(1), m.group(2)


def _raw_serial(device: Device) -> str | None:
    return device.serial if isinstance(device, CameraDevice) else device.serial_number


def _interface(interface: str | None) -> str | None:
    """None for the first (or unknown) interface: only a second function of one device needs telling apart."""
    if interface is None or interface == "00":
        return None
    if not _INTERFACE.fullmatch(interface):
        raise UdevRuleError(f"USB interface number {interface!r}: expected two hex digits such as 01")
    return interface


def link_name(device: Device, interface: str | None = None) -> str:
    """The name 99-knack.rules gives the device under /dev/knack/, e.g. camera-046d-0825-A1B2C3."""
    vendor, product = _usb_ids(device)
    parts = ["camera" if isinstance(device, CameraDevice) else "serial", vendor, product]
    serial = udev_serial(_raw_serial(device))
    if serial:
        parts.append(serial)
    if _interface(interface):
        parts.append(f"if{interface}")
    return "-".join(parts)


def _glob_literal(value: str) -> str:
    # A non-ASCII character can be several bytes to udev's fnmatch, so "*" rather than "?".
    return "".join(c if _MATCH_SAFE.fullmatch(c) else "?" if c.isascii() else "*" for c in value)


def _printable(value: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in value)


def rule_for(device: Device, interface: str | None = None, name: str | None = None) -> str:
    """A rule for 99-knack-local.rules matching this very device by the ids and serial number of its USB parent.

    `interface` is the bInterfaceNumber the node hangs off; `name` replaces the generated link name
    (e.g. wrist_cam, a role rather than an identity).
    """
    if isinstance(device, CameraDevice) and device.is_capture is False:
        raise UdevRuleError(f"{device.path}: a camera's metadata node, not its capture node (see `knack devices`)")
    vendor, product = _usb_ids(device)
    if name is not None and not _ROLE_NAME.fullmatch(name):
        raise UdevRuleError(f"link name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit")
    link = name or link_name(device, interface)
    serial = _raw_serial(device)

    if isinstance(device, CameraDevice):
        keys = ['SUBSYSTEM=="video4linux"', 'ATTR{index}=="0"']
        label = device.name
    else:
        keys = ['SUBSYSTEM=="tty"']
        label = device.description or device.manufacturer
    # ATTRS keys must all match one parent device: here the USB device, which carries ids and serial.
    keys += [f'ATTRS{{idVendor}}=="{vendor}"', f'ATTRS{{idProduct}}=="{product}"']
    if serial:
        keys.append(f'ATTRS{{serial}}=="{_glob_literal(serial)}"')
    if _interface(interface):
        keys.append(f'ENV{{ID_USB_INTERFACE_NUM}}=="{interface}"')
    keys += [f'SYMLINK+="knack/{link}"', 'GROUP="knack"', 'MODE="0660"']

    about = [str(device.path), f"usb {vendor}:{product}"]
    if label:
        about.insert(0, f'"{label}"')
    if serial:
        about.append(f"serial {serial}")
    lines = ["# " + _printable(", ".join(about))]
    if not serial:
        lines.append(
            "# no serial number: an identical device would get the same name; to tell them apart by USB port,"
            ' add KERNELS=="<port, e.g. 1-1.2>" (from `udevadm info -a -n <device>`)'
        )
    lines.append(", ".join(keys))
    return "\n".join(lines)


def rules_file(rules: Iterable[str]) -> str:
    return HEADER + "".join(f"\n{rule}\n" for rule in rules)


def rules_for(cameras: Iterable[CameraDevice], ports: Iterable[SerialDevice], interfaces: Mapping[Path, str | None] | None = None) -> str:
    """Rules for every USB camera and serial port found, with a note for each device left out."""
    interfaces = interfaces or {}
    rules, skipped = [], []
    for device in (*cameras, *ports):
        if isinstance(device, CameraDevice) and device.is_capture is False:
            continue  # the metadata twin of a capture node that gets its own rule
        if not device.usb_id:
            skipped.append(f"# left out {device.path}: not a USB device, nothing stable to match")
            continue
        rules.append(rule_for(device, interfaces.get(device.path)))
    if not rules:
        raise UdevRuleError("no USB camera or serial adapter found (see `knack devices`)")
    return rules_file(rules) + "".join(f"\n{line}" for line in skipped) + ("\n" if skipped else "")
