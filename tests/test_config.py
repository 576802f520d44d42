"""knack.toml into frozen dataclasses; every error names the key, the bad value and what is expected."""

import dataclasses

import pytest

from collector.config import Config, ConfigError, Parity, SerialProtocol, TimeUnit, load, to_toml

GOOD = """
data_dir = "/srv/knack"
[recorder]
clip_seconds = 5
task = "solder a header onto a PCB"
[identity]
contributor = "0x00000000000000000000000000000000000000aA"
[[camera]]
name = "bench"
source = "/dev/v4l/by-id/usb-cam-video-index0"
fourcc = "MJPG"
[[serial]]
name = "glove"
port = "/dev/knack/glove"
baudrate = 921600
protocol = "binary"
binary_format = "<QI6f"
binary_fields = ["t_us", "seq", "ax", "ay", "az", "gx", "gy", "gz"]
device_time_field = "t_us"
device_time_unit = "us"
parity = "E"
[labeler]
device = "cuda"
sample_fps = 2.5
extra_cards = ["/srv/knack/models/butchery.toml"]
[policy]
min_hand_fraction = 0.6
min_luma = 35
"""


def write(tmp_path, text):
    path = tmp_path / "knack.toml"
    path.write_text(text)
    return path


def test_a_full_config_loads_into_frozen_dataclasses(tmp_path):
    config = load(write(tmp_path, GOOD), env={})
    assert config.recorder.clip_seconds == 5.0 and config.data_path.as_posix() == "/srv/knack"
    assert config.recorder.task == "solder a header onto a PCB"
    assert config.camera[0].fourcc == "MJPG"
    glove = config.serial[0]
    assert glove.protocol is SerialProtocol.BINARY and glove.parity is Parity.EVEN and glove.device_time_unit is TimeUnit.US
    assert glove.binary_fields[0] == "t_us"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.recorder.clip_seconds = 1


def test_no_file_means_defaults_under_the_user_data_directory(tmp_path):
    config = load(env={"HOME": str(tmp_path)})
    assert config.data_path == tmp_path / ".local/share/knack" and config.camera == () and "defaults" in config.source
    assert load(env={"XDG_DATA_HOME": str(tmp_path / "x"), "HOME": "/nowhere"}).data_path == tmp_path / "x/knack"


def test_config_is_found_by_flag_then_env_then_user_directory(tmp_path):
    (tmp_path / ".config/knack").mkdir(parents=True)
    (tmp_path / ".config/knack/knack.toml").write_text('data_dir = "/from/user"')
    flag = write(tmp_path, 'data_dir = "/from/flag"')
    envfile = tmp_path / "env.toml"
    envfile.write_text('data_dir = "/from/env"')
    env = {"HOME": str(tmp_path), "KNACK_CONFIG": str(envfile)}
    assert load(flag, env=env).data_dir == "/from/flag"
    assert load(env=env).data_dir == "/from/env"
    assert load(env={"HOME": str(tmp_path)}).data_dir == "/from/user"


def test_environment_overrides_single_values(tmp_path):
    env = {"KNACK_RECORDER_CLIP_SECONDS": "2.5", "KNACK_DATA_DIR": "/tmp/elsewhere", "KNACK_STORAGE_CHAIN_RPC": "http://127.0.0.1:8545"}
    config = load(write(tmp_path, GOOD), env=env)
    assert config.recorder.clip_seconds == 2.5 and config.data_dir == "/tmp/elsewhere"
    assert config.storage.chain_rpc == "http://127.0.0.1:8545"
    with pytest.raises(ConfigError, match=r"KNACK_RECORDER_CLIP_SECONDS = 'soon' is not valid: expected a number"):
        load(write(tmp_path, GOOD), env={"KNACK_RECORDER_CLIP_SECONDS": "soon"})


def test_the_task_is_overridden_by_the_environment_like_any_single_value(tmp_path):
    config = load(write(tmp_path, GOOD), env={"KNACK_RECORDER_TASK": "debone a chicken thigh"})
    assert config.recorder.task == "debone a chicken thigh"
    with pytest.raises(ConfigError, match=r"^recorder.task = 'debone\\tthigh' is not valid: expected one line of at most 200 characters"):
        load(write(tmp_path, GOOD), env={"KNACK_RECORDER_TASK": "debone\tthigh"})


def test_environment_overrides_every_kind_of_setting(tmp_path):
    from collector.config import Device

    env = {"KNACK_LABELER_DEVICE": "cpu", "KNACK_LABELER_BATCH_SIZE": "4", "KNACK_LABELER_BLUR_FACES": "false", "KNACK_LABELER_EXTRA_CARDS": "a.toml, b.toml"}
    config = load(write(tmp_path, GOOD), env=env)
    assert config.labeler.device is Device.CPU and config.labeler.batch_size == 4
    assert config.labeler.blur_faces is False and config.labeler.extra_cards == ("a.toml", "b.toml")
    assert config.labeler.sample_fps == 2.5 and config.policy.min_hand_fraction == 0.6
    with pytest.raises(ConfigError, match=r"KNACK_LABELER_BATCH_SIZE = 'many' is not valid: expected an integer"):
        load(write(tmp_path, GOOD), env={"KNACK_LABELER_BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match=r"KNACK_LABELER_BLUR_FACES = 'maybe' is not valid: expected true or false"):
        load(write(tmp_path, GOOD), env={"KNACK_LABELER_BLUR_FACES": "maybe"})


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[serial]]\nport = "/dev/ttyUSB0"\nprotocol = "nmea"', "serial[0].protocol = 'nmea' is not valid: expected one of 'csv', 'jsonl', 'kv', 'binary'"),
        ('[[serial]]\nbaudrate = "fast"', "serial[0].baudrate = 'fast' is not valid: expected an integer"),
        ("[[serial]]\nbaudrate = -9600", "serial[0].baudrate = -9600 is not valid: expected a positive baud rate"),
        ("[recorder]\nclip_second = 3", "recorder.clip_second is not a known setting: expected one of clip_seconds, max_source_lag_s"),
        ('[[camera]]\nfourcc = "MJPEG"', "camera[0].fourcc = 'MJPEG' is not valid: expected four characters"),
        ('[identity]\ncontributor = "alice"', "identity.contributor = 'alice' is not valid: expected an EVM address"),
        ('[[serial]]\nprotocol = "binary"\nbinary_format = "<Qf"\nbinary_fields = ["t"]', "serial[0].binary_fields = ('t',) is not valid: expected 2 names"),
        ('[[serial]]\nname = "a"\n[[camera]]\nname = "a"', "serial[0].name = 'a' is not valid: expected a name no other stream uses"),
        ("cameras = 1", "cameras is not a known setting"),
        ('[labeler]\ndevice = "gpu"', "labeler.device = 'gpu' is not valid: expected one of 'auto', 'cuda', 'tensorrt', 'cpu'"),
        ("[labeler]\nsample_fps = 0", "labeler.sample_fps = 0.0 is not valid: expected frames per second between 0 and 240"),
        ("[policy]\nmin_hand_fraction = 1.5", "policy.min_hand_fraction = 1.5 is not valid: expected a fraction between 0 and 1"),
        ("[policy]\nmin_luma = 200\nmax_luma = 100", "policy.min_luma/max_luma = (200.0, 100.0) is not valid"),
        ("[recorder\n", "is not valid TOML"),
        ('[recorder]\ntask = "solder\\nthe header"', "recorder.task = 'solder\\nthe header' is not valid: expected one line of at most 200 characters"),
        ('[recorder]\ntask = "\\u001b[2Jsolder"', "recorder.task = '\\x1b[2Jsolder' is not valid: expected one line"),
        (f'[recorder]\ntask = "{"x" * 201}"', f"recorder.task = '{'x' * 80}…' is not valid: expected one line of at most 200 characters"),
        ("[recorder]\ntask = 7", "recorder.task = 7 is not valid: expected a string"),
    ],
)
def test_errors_name_the_key_the_value_and_what_is_expected(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), env={})
    assert message in str(info.value)


def test_an_explicit_config_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", env={})


def test_effective_config_prints_as_toml_that_loads_back(tmp_path):
    config = load(write(tmp_path, GOOD), env={})
    text = to_toml(config)
    again = load(write(tmp_path, text), env={})
    assert dataclasses.replace(again, source="") == dataclasses.replace(config, source="")
    assert isinstance(again, Config)
    assert 'task = "solder a header onto a PCB"' in text  # what `knack doctor` shows
