"""Configuration precedence (file, then environment, then flags) and start-up validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import Config, default_state_dir, load_config
from edge_agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_flags_override_environment_which_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'device_id = "from-file"\ntop_k = 5\n[mqtt]\nurl = "mqtt://file:1883"\nqos = 0\ntopic_prefix = "farm"\n',
    )
    env = {
        "EDGE_AGENT_DEVICE_ID": "from-env",
        "EDGE_AGENT_MQTT_QOS": "2",
        "EDGE_AGENT_MQTT_PASSWORD": "pw",
        "EDGE_AGENT_MQTT_USERNAME": "u",
        "EDGE_AGENT_STATE_DIR": str(tmp_path / "state"),
    }
    config = load_config(path, env, {"device_id": "from-flag", "mqtt": {"qos": None, "url": None}})
    assert config.device_id == "from-flag"
    assert config.mqtt.qos == 2 and config.mqtt.password == "pw"
    assert config.mqtt.url == "mqtt://file:1883" and config.mqtt.topic_prefix == "farm"
    assert config.top_k == 5
    assert config.outbox_path == tmp_path / "state" / "outbox.sqlite"


def test_config_file_can_be_named_in_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[outbox]\nmax_messages = 50\n")
    assert load_config(None, {"EDGE_AGENT_CONFIG": str(path)}).outbox.max_messages == 50


@pytest.mark.parametrize(
    "env, message",
    [
        ({"EDGE_AGENT_MQTT_QOS": "3"}, "mqtt.qos must be 0, 1 or 2"),
        ({"EDGE_AGENT_MQTT_QOS": "one"}, r"mqtt.qos \(environment\): invalid value 'one'"),
        ({"EDGE_AGENT_MQTT_PROTOCOL": "3"}, "mqtt.protocol"),
        ({"EDGE_AGENT_MQTT_ONLY_ON_CHANGE": "maybe"}, "mqtt.only_on_change"),
        ({"EDGE_AGENT_MQTT_URL": "http://x"}, "unsupported scheme"),
        ({"EDGE_AGENT_MQTT_TOPIC_PREFIX": "a/#"}, "mqtt.topic_prefix"),
        ({"EDGE_AGENT_DEVICE_ID": "cam/1"}, "device_id"),
        ({"EDGE_AGENT_OUTBOX_MAX_MESSAGES": "0"}, "outbox.max_messages"),
        ({"EDGE_AGENT_MQTT_PASWORD": "typo"}, "EDGE_AGENT_MQTT_PASWORD .*unknown setting"),
    ],
)
def test_invalid_values_fail_at_startup_naming_the_field(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env)


def test_config_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt.keepalive \(config file .*agent.toml\): invalid value"):
        load_config(write(tmp_path, '[mqtt]\nkeepalive = "soon"\n'))
    with pytest.raises(ConfigError, match=r"mqtt.colour \(config file .*\): unknown setting"):
        load_config(write(tmp_path, '[mqtt]\ncolour = "blue"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[mqtt\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_password_is_never_in_the_config_repr() -> None:
    config = load_config(None, {"EDGE_AGENT_MQTT_USERNAME": "u", "EDGE_AGENT_MQTT_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(config)


def test_state_dir_defaults_by_user(tmp_path: Path) -> None:
    import os

    expected = Path("/var/lib/edge-agent") if os.geteuid() == 0 else tmp_path / "xdg" / "edge-agent"
    assert default_state_dir({"XDG_STATE_HOME": str(tmp_path / "xdg")}) == expected
    assert load_config(None, {}).state_dir == default_state_dir({})


def test_example_config_file_loads() -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "config.example.toml"
    config = load_config(example, {})
    assert isinstance(config, Config) and config.mqtt.url is not None
