"""udev/99-knack.rules and `knack udev`: valid rules, and the same /dev/knack/ names from both."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

from collector import devices
from collector.devices import CameraDevice, SerialDevice, list_cameras, list_serial_ports, usb_interface_of
from collector.udev_rules import UdevRuleError, link_name, rule_for, rules_file, rules_for, udev_serial
from tests.test_devices import USB_DEVICE, _write, fake_roots  # noqa: F401  (fake_roots is a fixture)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "udev" / "99-knack.rules"

# The keys of udev(7): those that only match, those that only assign, and those that do either.
MATCH_KEYS = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS", "ATTRS", "TAGS", "CONST", "TEST", "RESULT"}
ASSIGN_KEYS = {"OWNER", "GROUP", "MODE", "OPTIONS", "SECLABEL", "RUN", "IMPORT", "PROGRAM", "GOTO", "LABEL"}
EITHER_KEYS = {"NAME", "SYMLINK", "ENV", "ATTR", "SYSCTL", "TAG"}
MATCH_OPS = {"==", "!="}
ASSIGN_OPS = {"=", "+=", "-=", ":="}

_ITEM = re.compile(r'(?P<key>[A-Z]+)(?:\{(?P<attr>[^{}"]*)\})?(?P<op>==|!=|\+=|-=|:=|=)"(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Item:
    key: str
    attr: str | None
    op: str
    value: str

    @property
    def is_match(self) -> bool:
        return self.op in MATCH_OPS


def parse_rule(line: str) -> list[Item]:
    """One rule line as udev reads it: `KEY[{attr}]OP"value"` items joined by ", "."""
    items, pos = [], 0
    while True:
        m = _ITEM.match(line, pos)
        assert m, f'expected KEY op "value" at {line[pos:]!r} in {line!r}'
        items.append(Item(m["key"], m["attr"], m["op"], m["value"]))
        pos = m.end()
        if pos == len(line):
            return items
        assert line.startswith(", ", pos) and not line.startswith(",  ", pos), f"expected ', ' at {line[pos:]!r}"
        pos += 2


def parse_rules(text: str) -> list[list[Item]]:
    lines = [line.strip() for line in text.splitlines()]
    return [parse_rule(line) for line in lines if line and not line.startswith("#")]


def check_rule(rule: list[Item]) -> None:
    for item in rule:
        known = MATCH_KEYS | ASSIGN_KEYS | EITHER_KEYS
        assert item.key in known, f"unknown key {item.key}"
        if item.key in MATCH_KEYS:
            assert item.is_match, f"{item.key} only matches, but has {item.op}"
        if item.key in ASSIGN_KEYS:
            assert not item.is_match, f"{item.key} only assigns, but has {item.op}"
        assert (item.attr is not None) == (item.key in {"ENV", "ATTR", "ATTRS", "IMPORT", "SYSCTL", "CONST", "SECLABEL"}), item
    links = [i for i in rule if i.key == "SYMLINK" and not i.is_match]
    if links:
        assert all(i.value.startswith("knack/") for i in links), links
        assert Item("GROUP", None, "=", "knack") in rule and Item("MODE", None, "=", "0660") in rule, rule


def rules_text() -> str:
    return RULES.read_text()


# --- the rules file --------------------------------------------------------------------------------


def test_rules_file_is_rules_of_known_keys_with_fitting_operators():
    rules = parse_rules(rules_text())
    assert len(rules) > 10
    for rule in rules:
        check_rule(rule)


def test_rules_file_links_only_under_knack_with_group_knack_and_mode_0660():
    linking = [r for r in parse_rules(rules_text()) if any(i.key == "SYMLINK" for i in r)]
    assert {i.value.split("$")[0] for r in linking for i in r if i.key == "SYMLINK"} == {"knack/camera-", "knack/serial-"}
    for rule in linking:
        check_rule(rule)


def test_rules_file_jumps_only_to_its_one_label():
    rules = parse_rules(rules_text())
    labels = [i.value for r in rules for i in r if i.key == "LABEL"]
    gotos = {i.value for r in rules for i in r if i.key == "GOTO"}
    assert labels == ["knack_end"] and gotos == {"knack_end"}
    assert any(i.key == "LABEL" for i in rules[-1]), "the label ends the file, so a jump skips every rule"


# A small interpreter of what the rules do to one device, as udev would after usb_id has run: all
# matches of a rule first, then its assignments, a GOTO last. Enough to check names, not a udev.
@dataclass
class Event:
    subsystem: str
    kernel: str
    attrs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    usb: bool = True
    action: str = "add"
    links: list = field(default_factory=list)
    assigned: dict = field(default_factory=dict)


def _matches(item: Item, ev: Event) -> bool:
    actual = {
        "ACTION": ev.action,
        "SUBSYSTEM": ev.subsystem,
        "KERNEL": ev.kernel,
        "ATTR": ev.attrs.get(item.attr, ""),
        "ENV": ev.env.get(item.attr, ""),
        "SUBSYSTEMS": "usb" if ev.usb else "",
    }[item.key]
    hit = any(fnmatchcase(actual, alternative) for alternative in item.value.split("|"))
    return hit == (item.op == "==")


def _expand(value: str, ev: Event) -> str:
    return re.sub(r"\$env\{([^}]+)\}", lambda m: ev.env.get(m[1], ""), value)


def apply_rules(rules: list[list[Item]], ev: Event) -> Event:
    skip_to = None
    for rule in rules:
        label = next((i.value for i in rule if i.key == "LABEL"), None)
        if skip_to is not None:
            if label != skip_to:
                continue
            skip_to = None
        if not all(_matches(i, ev) for i in rule if i.is_match):
            continue
        for item in rule:
            if item.key == "ENV" and not item.is_match:
                ev.env[item.attr] = _expand(item.value, ev)
            elif item.key == "SYMLINK":
                ev.links.append(_expand(item.value, ev))
            elif item.key in ("GROUP", "MODE"):
                ev.assigned[item.key] = item.value
        skip_to = next((i.value for i in rule if i.key == "GOTO"), None)
    return ev


def usb_env(vendor: str, product: str, serial_short: str | None = None, interface: str = "00") -> dict:
    """The properties udev's usb_id sets, written out by hand (not by the code under test)."""
    env = {"ID_BUS": "usb", "ID_VENDOR_ID": vendor, "ID_MODEL_ID": product, "ID_USB_INTERFACE_NUM": interface, "MAJOR": "81"}
    if serial_short:
        env["ID_SERIAL_SHORT"] = serial_short
    return env


def camera(usb_id="046d:0825", serial="ABC123", is_capture=True) -> CameraDevice:
    return CameraDevice(Path("/dev/video0"), 0, "Cam", usb_id, serial, (), is_capture)


def port(usb_id="0403:6001", serial="A50285BI", path="/dev/ttyUSB0") -> SerialDevice:
    return SerialDevice(Path(path), usb_id, serial, None, None, ())


NAMING_CASES = {
    "camera with serial": (Event("video4linux", "video0", {"index": "0"}, usb_env("046d", "0825", "ABC123")), camera(), None),
    "camera without serial": (Event("video4linux", "video0", {"index": "0"}, usb_env("046d", "0825")), camera(serial=None), None),
    "second camera of a stereo module": (
        Event("video4linux", "video2", {"index": "0"}, usb_env("2bc5", "0403", "AY3A", interface="02")),
        camera("2bc5:0403", "AY3A"),
        "02",
    ),
    "FTDI adapter": (Event("tty", "ttyUSB0", env=usb_env("0403", "6001", "A50285BI")), port(), None),
    "port B of a dual FTDI": (Event("tty", "ttyUSB1", env=usb_env("0403", "6010", "FT4Q1", interface="01")), port("0403:6010", "FT4Q1"), "01"),
    "serial number with spaces and a slash": (Event("tty", "ttyACM0", env=usb_env("2341", "0043", "AB_12_x")), port("2341:0043", " AB  12/x "), None),
    "board on no chip list": (Event("tty", "ttyACM0", env=usb_env("1234", "abcd", "77")), port("1234:abcd", "77", "/dev/ttyACM0"), None),
}


@pytest.mark.parametrize("event, device, interface", NAMING_CASES.values(), ids=NAMING_CASES.keys())
def test_rules_file_names_a_device_as_link_name_does(event, device, interface):
    ev = apply_rules(parse_rules(rules_text()), event)
    assert ev.links == [f"knack/{link_name(device, interface)}"]
    assert ev.assigned == {"GROUP": "knack", "MODE": "0660"}


def test_rules_file_names_the_example_of_the_readme():
    ev = apply_rules(parse_rules(rules_text()), Event("video4linux", "video0", {"index": "0"}, usb_env("046d", "0825", "ABC123")))
    assert ev.links == ["knack/camera-046d-0825-ABC123"]


def test_rules_file_leaves_metadata_nodes_and_non_usb_devices_alone():
    rules = parse_rules(rules_text())
    metadata = Event("video4linux", "video1", {"index": "1"}, usb_env("046d", "0825", "ABC123"))
    uart = Event("tty", "ttyS0", env={"MAJOR": "4"}, usb=False)
    pty_like = Event("tty", "ttyUSB9", env={"MAJOR": "188"}, usb=False)
    removed = Event("tty", "ttyUSB0", env=usb_env("0403", "6001", "A1"), action="remove")
    for ev in (metadata, uart, pty_like, removed):
        assert apply_rules(rules, ev).links == [], ev


def test_rules_file_keeps_modemmanager_off_known_sensor_chips_only():
    rules = parse_rules(rules_text())
    ftdi = apply_rules(rules, Event("tty", "ttyUSB0", env=usb_env("0403", "6001", "A1")))
    unknown = apply_rules(rules, Event("tty", "ttyACM0", env=usb_env("1234", "abcd", "77")))
    assert ftdi.env.get("ID_MM_DEVICE_IGNORE") == "1"
    assert "ID_MM_DEVICE_IGNORE" not in unknown.env  # it may be a modem


UDEVADM = shutil.which("udevadm")


@pytest.mark.skipif(UDEVADM is None, reason="udevadm is not installed here; the parser tests above check the rules")
def test_udevadm_verify_accepts_the_rules_file_and_generated_rules(tmp_path):
    if subprocess.run([UDEVADM, "verify", "--help"], capture_output=True).returncode != 0:
        pytest.skip("this udevadm has no `verify` (it came with systemd 254)")
    generated = tmp_path / "99-knack-local.rules"
    generated.write_text(rules_for([camera(serial='odd "*| serial')], [port(), port("0403:6010", "FT4Q1", "/dev/ttyUSB1")], {Path("/dev/ttyUSB1"): "01"}))
    # The knack group need not exist on the machine that checks: resolve no names.
    out = subprocess.run([UDEVADM, "verify", "--resolve-names=never", str(RULES), str(generated)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- rules for one device ---------------------------------------------------------------------------


def _values(rule: list[Item]) -> dict:
    return {(i.key if i.attr is None else f"{i.key}{{{i.attr}}}"): i.value for i in rule}


def test_rule_for_a_camera_matches_its_usb_ids_and_serial_number(fake_roots):  # noqa: F811 (the fixture imported above)
    cam = list_cameras(*fake_roots)[0]
    [rule] = parse_rules(rule_for(cam))
    check_rule(rule)
    values = _values(rule)
    assert values["SUBSYSTEM"] == "video4linux" and values["ATTR{index}"] == "0"
    assert (values["ATTRS{idVendor}"], values["ATTRS{idProduct}"], values["ATTRS{serial}"]) == ("046d", "0825", "A1B2C3")
    assert values["SYMLINK"] == "knack/camera-046d-0825-A1B2C3"


def test_rule_for_a_serial_adapter_matches_its_usb_ids_and_serial_number(tmp_path, monkeypatch):
    info = ListPortInfo(str(tmp_path / "ttyUSB0"), skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.description = 0x0403, 0x6001, "A50285BI", "FT232R USB UART"
    monkeypatch.setattr(devices.list_ports, "comports", lambda include_links=False: [info])
    [adapter] = list_serial_ports(tmp_path)
    [rule] = parse_rules(rule_for(adapter))
    check_rule(rule)
    values = _values(rule)
    assert values["SUBSYSTEM"] == "tty"
    assert (values["ATTRS{idVendor}"], values["ATTRS{idProduct}"], values["ATTRS{serial}"]) == ("0403", "6001", "A50285BI")
    assert values["SYMLINK"] == "knack/serial-0403-6001-A50285BI"
    assert '"FT232R USB UART"' in rule_for(adapter).splitlines()[0]


def test_rule_for_a_second_interface_matches_and_names_it():
    values = _values(parse_rules(rule_for(port("0403:6010", "FT4Q1"), "01"))[0])
    assert values["ENV{ID_USB_INTERFACE_NUM}"] == "01"
    assert values["SYMLINK"] == "knack/serial-0403-6010-FT4Q1-if01"


def test_rule_for_a_device_without_serial_number_says_how_to_match_its_port():
    text = rule_for(camera(serial=None))
    assert "ATTRS{serial}" not in text and "KERNELS==" in text
    assert _values(parse_rules(text)[0])["SYMLINK"] == "knack/camera-046d-0825"


def test_rule_for_takes_a_role_name_and_refuses_one_that_is_no_plain_name():
    assert _values(parse_rules(rule_for(camera(), name="wrist_cam"))[0])["SYMLINK"] == "knack/wrist_cam"
    for bad in ("../video0", "a b", "", ".hidden", 'x"'):
        with pytest.raises(UdevRuleError, match="link name"):
            rule_for(camera(), name=bad)


@pytest.mark.parametrize(
    "device", [port(None, None, "/dev/ttyS0"), port(None, None, "/dev/pts/3"), camera(None, None, None)], ids=["uart", "pty", "csi camera"]
)
def test_rule_for_refuses_a_device_without_usb_identity(device):
    with pytest.raises(UdevRuleError, match=f"^{re.escape(str(device.path))}: not a USB device"):
        rule_for(device)


def test_rule_for_refuses_a_cameras_metadata_node():
    with pytest.raises(UdevRuleError, match="metadata node"):
        rule_for(camera(is_capture=False))


@pytest.mark.parametrize(
    "raw, short",
    [
        ("A50285BI", "A50285BI"),
        (" AB  12 ", "AB_12"),
        ("a/b", "a_b"),
        ("x\\x41", "x_x41"),
        ("v1.0+rc:2=@#", "v1.0+rc:2=@#"),
        ("a,b", None),
        ("tab\there", None),
        ("ü1", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_serial_numbers_are_cleaned_as_udev_usb_id_does(raw, short):
    assert udev_serial(raw) == short


@pytest.mark.parametrize("serial", ["../../etc", 'q"uote', "*?[]|", "new\nline", "x y/z", "ü", "\\x2f"])
def test_names_and_rules_stay_safe_whatever_the_serial_number(serial):
    device = port(serial=serial)
    assert re.fullmatch(r"serial-0403-6001(-[0-9A-Za-z#+\-.:=@_]+)?", link_name(device))
    [rule] = parse_rules(rule_for(device))
    check_rule(rule)
    assert "/" not in _values(rule)["SYMLINK"].removeprefix("knack/")


def test_rules_for_names_every_usb_device_and_notes_the_rest():
    cams = [camera(), camera(is_capture=False)]
    ports = [port(None, None, "/dev/ttyS0"), port()]
    text = rules_for(cams, ports)
    assert text.startswith("# Device-specific udev rules") and "99-knack-local.rules" in text.splitlines()[1]
    assert [_values(r)["SYMLINK"] for r in parse_rules(text)] == ["knack/camera-046d-0825-ABC123", "knack/serial-0403-6001-A50285BI"]
    assert "# left out /dev/ttyS0: not a USB device" in text


def test_rules_for_refuses_when_nothing_is_usb():
    with pytest.raises(UdevRuleError, match="no USB camera or serial adapter found"):
        rules_for([], [port(None, None, "/dev/ttyS0")])


def test_usb_interface_of_reads_the_interface_a_node_hangs_off(fake_roots):  # noqa: F811 (the fixture imported above)
    dev_root, sys_root = fake_roots
    _write(sys_root / USB_DEVICE / "1-1:1.0" / "bInterfaceNumber", "00")
    # A usb-serial port sits one level below its interface: 1-1:1.1/ttyUSB1.
    port_dir = sys_root / USB_DEVICE / "1-1:1.1" / "ttyUSB1"
    _write(sys_root / USB_DEVICE / "1-1:1.1" / "bInterfaceNumber", "01")
    port_dir.mkdir(parents=True)
    (sys_root / "class" / "tty" / "ttyUSB1").mkdir(parents=True)
    (sys_root / "class" / "tty" / "ttyUSB1" / "device").symlink_to(port_dir)
    (sys_root / "class" / "tty" / "ptmx").mkdir()
    assert usb_interface_of(dev_root / "video0", sys_root) == "00"
    assert usb_interface_of(Path("/dev/ttyUSB1"), sys_root) == "01"
    assert usb_interface_of(Path("/dev/ptmx"), sys_root) is None
    assert usb_interface_of(Path("/dev/ttyUSB7"), sys_root) is None


# --- the documentation and the command ------------------------------------------------------------


def test_readme_example_is_what_knack_udev_prints():
    readme = (ROOT / "udev" / "README.md").read_text()
    example = CameraDevice(Path("/dev/video0"), 0, "UVC Camera (046d:0825)", "046d:0825", "ABC123", (), True)
    assert rules_file([rule_for(example)]) in readme
    assert 'source = "/dev/knack/wrist_cam"' in readme and "camera-046d-0825-ABC123" in readme


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs pseudo-terminals")
def test_knack_udev_refuses_a_pty_in_one_line_with_exit_1(tmp_path):
    master, slave = os.openpty()
    try:
        pty = os.ttyname(slave)
        env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "share"))
        out = subprocess.run([sys.executable, "-m", "knack", "udev", pty], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        os.close(slave)
        os.close(master)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.splitlines() == [f"knack: error: {pty}: not a USB device (no vendor:product), so no udev rule can give it a stable name"]
