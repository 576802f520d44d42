import json
import os
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

from collector import devices
from collector.devices import (
    CameraDevice,
    SerialDevice,
    devices_as_dict,
    format_devices,
    list_cameras,
    list_serial_ports,
)

USB_DEVICE = Path("devices/pci0000:00/0000:00:14.0/usb1/1-1")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _add_sysfs_video(sys_root: Path, n: int, name: str, stream_index: int) -> None:
    """Mimic the kernel: class/video4linux/videoN -> ../../devices/.../1-1:1.0/video4linux/videoN."""
    node = sys_root / USB_DEVICE / "1-1:1.0" / "video4linux" / f"video{n}"
    _write(node / "name", name)
    _write(node / "index", str(stream_index))
    (node / "device").symlink_to("../../../1-1:1.0")
    cls = sys_root / "class" / "video4linux"
    cls.mkdir(parents=True, exist_ok=True)
    (cls / f"video{n}").symlink_to(f"../../{USB_DEVICE}/1-1:1.0/video4linux/video{n}")


@pytest.fixture
def fake_roots(tmp_path):
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    # The root hub above the camera has ids too; the nearest USB device must win.
    _write(sys_root / USB_DEVICE.parent / "idVendor", "1d6b")
    _write(sys_root / USB_DEVICE.parent / "idProduct", "0002")
    _write(sys_root / USB_DEVICE / "idVendor", "046d")
    _write(sys_root / USB_DEVICE / "idProduct", "0825")
    _write(sys_root / USB_DEVICE / "serial", "A1B2C3")
    _add_sysfs_video(sys_root, 0, "Foo Cam: Foo Cam", 0)
    _add_sysfs_video(sys_root, 1, "Foo Cam: Foo Cam", 1)

    dev_root.mkdir()
    for n in (0, 1):
        (dev_root / f"video{n}").write_text("")  # stand-in for the character device
    by_id = dev_root / "v4l" / "by-id"
    by_id.mkdir(parents=True)
    (by_id / "usb-Foo_Cam-video-index0").symlink_to("../../video0")
    (by_id / "usb-Foo_Cam-video-index1").symlink_to("../../video1")
    by_path = dev_root / "v4l" / "by-path"
    by_path.mkdir()
    (by_path / "pci-0000:00:14.0-usb-0:1:1.0-video-index0").symlink_to("../../video0")
    (dev_root / "knack").mkdir()
    (dev_root / "knack" / "wrist_cam").symlink_to("../video0")
    (dev_root / "knack" / "dangling").symlink_to("../video9")
    return dev_root, sys_root


def test_list_cameras_reads_name_usb_id_and_serial_from_sysfs(fake_roots):
    dev_root, sys_root = fake_roots
    cam = list_cameras(dev_root, sys_root)[0]
    assert cam.path == dev_root / "video0"
    assert cam.index == 0
    assert cam.name == "Foo Cam: Foo Cam"
    assert cam.usb_id == "046d:0825"
    assert cam.serial == "A1B2C3"


def test_list_cameras_finds_every_stable_symlink_to_the_node(fake_roots):
    dev_root, sys_root = fake_roots
    cam0, cam1 = list_cameras(dev_root, sys_root)
    assert cam0.symlinks == (
        dev_root / "knack/wrist_cam",  # the name udev/99-knack.rules (or the integrator) gave it comes first
        dev_root / "v4l/by-id/usb-Foo_Cam-video-index0",
        dev_root / "v4l/by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0",
    )
    assert cam1.symlinks == (dev_root / "v4l/by-id/usb-Foo_Cam-video-index1",)


def test_list_cameras_marks_only_stream_index_zero_as_capture(fake_roots):
    cams = list_cameras(*fake_roots)
    assert [(c.index, c.is_capture) for c in cams] == [(0, True), (1, False)]


def test_list_cameras_reports_unknowns_for_a_node_missing_from_sysfs(fake_roots):
    dev_root, sys_root = fake_roots
    (dev_root / "video2").write_text("")
    cam = list_cameras(dev_root, sys_root)[2]
    assert (cam.index, cam.name, cam.usb_id, cam.serial, cam.is_capture) == (2, None, None, None, None)
    assert cam.symlinks == ()


def test_list_cameras_sorts_by_device_number_not_by_name(fake_roots):
    dev_root, sys_root = fake_roots
    (dev_root / "video10").write_text("")
    (dev_root / "video2").write_text("")
    (dev_root / "video-extra").write_text("")  # not a V4L2 node name
    assert [c.index for c in list_cameras(dev_root, sys_root)] == [0, 1, 2, 10]


def test_empty_or_missing_roots_give_no_cameras(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "sys").mkdir()
    assert list_cameras(tmp_path / "dev", tmp_path / "sys") == []
    assert list_cameras(tmp_path / "nodev", tmp_path / "nosys") == []


def test_format_devices_says_nothing_was_found_and_hints_why():
    text = format_devices([], [])
    assert "Cameras" in text and "Serial ports" in text
    assert "no /dev/video* found: is the camera plugged in and is the user in the 'video' group?" in text
    assert "no serial ports found" in text
    assert "[[camera]]" not in text and "[[serial]]" not in text


def test_format_devices_lists_entries_with_their_symlinks(fake_roots):
    dev_root, sys_root = fake_roots
    text = format_devices(list_cameras(dev_root, sys_root), [])
    line = next(row for row in text.splitlines() if row.strip().startswith(str(dev_root / "video0")))
    assert '"Foo Cam: Foo Cam"' in line and "usb 046d:0825" in line and "serial A1B2C3" in line
    assert f"    also: {dev_root / 'v4l/by-id/usb-Foo_Cam-video-index0'}" in text
    assert f"    also: {dev_root / 'knack/wrist_cam'}" in text
    assert "not a capture node" in next(row for row in text.splitlines() if str(dev_root / "video1") in row)


def test_format_devices_suggests_a_stable_name_of_a_capture_node_and_usb_port_for_knack_toml(fake_roots):
    cams = list_cameras(*fake_roots)
    port = SerialDevice(
        path=Path("/dev/ttyUSB0"),
        usb_id="10c4:ea60",
        serial_number="0001",
        description="CP2102 USB to UART",
        manufacturer="Silicon Labs",
        symlinks=(Path("/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0"),),
    )
    uart = SerialDevice(Path("/dev/ttyS0"), None, None, None, None, ())
    text = format_devices(list(reversed(cams)), [uart, port])
    assert "[[camera]]" in text
    # The metadata node comes first here, but it yields no frames, so it must not be suggested.
    assert f'source = "{fake_roots[0] / "knack/wrist_cam"}"' in text  # its udev/99-knack.rules name, when it has one
    assert "[[serial]]" in text
    # A built-in UART sorts first but the USB adapter is the likely sensor.
    assert 'port = "/dev/serial/by-id/usb-Silicon_Labs_CP2102-if00-port0"' in text
    assert '"CP2102 USB to UART"  usb 10c4:ea60  serial 0001' in text


def test_format_devices_falls_back_to_the_raw_path_without_a_stable_name():
    cam = CameraDevice(Path("/dev/video0"), 0, "Cam", None, None, (), None)
    text = format_devices([cam], [])
    assert 'source = "/dev/video0"' in text


def test_devices_as_dict_is_json_with_paths_as_strings(fake_roots):
    dev_root, sys_root = fake_roots
    port = SerialDevice(Path("/dev/ttyACM0"), None, None, None, None, (Path("/dev/knack/imu"),))
    data = json.loads(json.dumps(devices_as_dict(list_cameras(dev_root, sys_root), [port])))
    assert data["cameras"][0]["path"] == str(dev_root / "video0")
    assert data["cameras"][0]["usb_id"] == "046d:0825"
    assert data["cameras"][0]["is_capture"] is True
    assert str(dev_root / "knack/wrist_cam") in data["cameras"][0]["symlinks"]
    assert data["serial_ports"] == [
        {
            "path": "/dev/ttyACM0",
            "usb_id": None,
            "serial_number": None,
            "description": None,
            "manufacturer": None,
            "symlinks": ["/dev/knack/imu"],
        }
    ]


def test_list_serial_ports_on_this_machine_returns_serial_devices():
    ports = list_serial_ports()
    assert isinstance(ports, list)
    assert all(isinstance(p, SerialDevice) for p in ports)
    for p in ports:
        assert p.usb_id is None or len(p.usb_id) == 9


def test_list_serial_ports_formats_vid_pid_and_finds_stable_links(tmp_path, monkeypatch):
    dev_root = tmp_path / "dev"
    dev_root.mkdir()
    (dev_root / "ttyUSB0").write_text("")
    (dev_root / "serial" / "by-id").mkdir(parents=True)
    (dev_root / "serial" / "by-id" / "usb-FTDI_FT232R-if00-port0").symlink_to("../../ttyUSB0")
    info = ListPortInfo(str(dev_root / "ttyUSB0"), skip_link_detection=True)
    info.vid, info.pid, info.serial_number = 0x0403, 0x6001, "A50285BI"
    info.description, info.manufacturer = "FT232R USB UART", "FTDI"
    monkeypatch.setattr(devices.list_ports, "comports", lambda include_links=False: [info])

    [port] = list_serial_ports(dev_root)
    assert port.usb_id == "0403:6001"
    assert (port.serial_number, port.description, port.manufacturer) == ("A50285BI", "FT232R USB UART", "FTDI")
    assert port.symlinks == (dev_root / "serial/by-id/usb-FTDI_FT232R-if00-port0",)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs pseudo-terminals")
def test_pseudo_terminal_is_not_mistaken_for_a_usb_port(monkeypatch):
    master, slave = os.openpty()
    try:
        pty_path = os.ttyname(slave)
        assert all(str(p.path) != pty_path for p in list_serial_ports())

        # Even when something hands pyserial the pty, it has no USB ids to report.
        from serial.tools import list_ports_linux

        as_port = list_ports_linux.SysFS(pty_path)
        monkeypatch.setattr(devices.list_ports, "comports", lambda include_links=False: [as_port])
        [port] = list_serial_ports()
        assert port.path == Path(pty_path)
        assert port.usb_id is None and port.serial_number is None
    finally:
        os.close(slave)
        os.close(master)
