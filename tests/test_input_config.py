"""The [[inputs]] tables and repeated -i: names, defaults, precedence and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.input_config import input_from_spec


def test_inputs_from_the_file_carry_names_settings_and_defaults(tmp_path: Path):
    path = tmp_path / "agent.toml"
    path.write_text(
        'stall_timeout = 3\n[[inputs]]\nname = "front"\nurl = "rtsp://u:p@10.0.0.5/s"\n'
        'max_fps = 5\ncrop = "1,2,30,40"\n'
        '[[inputs]]\nurl = "rtsp://u:p@10.0.0.6/s"\ntransport = "udp"\n'
    )
    config = load_config(path, {}, {"state_dir": tmp_path})
    front, second = config.input_list()
    assert (front.name, front.max_fps, front.crop_box) == ("front", 5.0, (1, 2, 30, 40))
    assert (second.name, second.transport) == ("rtsp://10.0.0.6/s", "udp")  # named without credentials
    assert config.stall_timeout == 3.0


def test_inputs_on_the_command_line_replace_the_file_and_the_environment(tmp_path: Path):
    path = tmp_path / "agent.toml"
    path.write_text('[[inputs]]\nname = "a"\nurl = "cam:0"\n')
    config = load_config(path, {"EDGE_AGENT_INPUT": "cam:1"}, {"inputs": [input_from_spec("b=cam:2")]})
    assert [(i.name, i.url) for i in config.input_list()] == [("b", "cam:2")]
    assert load_config(path, {"EDGE_AGENT_INPUT": "cam:1"}).input_list()[0].url == "cam:1"


def test_a_url_with_an_equals_sign_is_not_taken_for_a_name():
    assert input_from_spec("rtsp://10.0.0.5/s?channel=1") == {"url": "rtsp://10.0.0.5/s?channel=1"}
    assert input_from_spec("gate=http://10.0.0.5/v.mjpg?x=1") == {"name": "gate", "url": "http://10.0.0.5/v.mjpg?x=1"}


@pytest.mark.parametrize(
    "table, message",
    [
        ({"name": "a"}, "inputs[1].url is required"),
        ({"url": "cam:0", "crop": "1,2,3"}, "inputs[1].crop must be 'x,y,width,height'"),
        ({"url": "cam:0", "transport": "sctp"}, "inputs[1].transport must be tcp or udp"),
        ({"url": "cam:0", "stall_timeout": 0}, "inputs[1].stall_timeout must be a positive number"),
        ({"url": "cam:0", "name": "front door"}, "inputs[1].name must be"),
        ({"url": "cam:0", "colour": "red"}, "inputs[1].colour (command line): unknown setting"),
        ({"url": "cam:0", "width": "wide"}, "inputs[1].width (command line): invalid value 'wide'"),
    ],
)
def test_a_bad_input_setting_names_the_table_and_field(table: Dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(overrides={"inputs": [table]})
    assert message in str(info.value)


def test_inputs_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match=r"inputs \(environment\): expected an array of tables"):
        load_config(environ={"EDGE_AGENT_INPUTS": "cam:0"})
