"""Config write-back (`cascade calibrate --config`): one route's fields set, everything else kept as the user
wrote it (comments, order, quoting and indentation too), a write that would not validate refused, and an
interrupted write leaving the old file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.config import ConfigError, load_config
from cluster.config.edit import set_route_fields, write_atomically, write_route_fields


def config_data(tmp_path: Path, lora: dict[str, Any] | None) -> dict[str, Any]:
    data = load_config().model_dump(mode="json", exclude_none=True)
    if lora is not None:
        data["tiers"][0]["lora"] = lora
    data["routes"].append({"name": "tools", "tiers": ["slm", "fallback"]})
    return data


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text("# my cluster\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def valid_lora(tmp_path: Path) -> dict[str, Any]:
    return {"max_lora_rank": 8, "adapter_dir": str(tmp_path / "adapters")}


def test_promotion_sets_the_route_adapter_and_keeps_the_rest(tmp_path: Path) -> None:
    data = config_data(tmp_path, valid_lora(tmp_path))
    config_path = write_config(tmp_path, data)
    before = config_path.read_text()
    config = write_route_fields(config_path, "tools", {"adapter": "tools-20261126t093000"})
    assert config.route("tools").adapter == "tools-20261126t093000"
    assert config.route("default").adapter is None
    written = yaml.safe_load(config_path.read_text())
    assert written["routes"][-1] == {"name": "tools", "tiers": ["slm", "fallback"], "adapter": "tools-20261126t093000"}
    del written["routes"][-1]["adapter"]
    assert written == data  # every other setting, in the user's own form (not expanded with defaults)
    assert config_path.with_name("cascade.yaml.bak").read_text() == before
    assert load_config(config_path) == config


OPERATOR_FILE = """\
# my cluster: two tiers, cheapest first
app_name: "slm-cascade"
tiers:
  - name: slm   # the small one
    model: embedded:smollm2-135m-instruct
    lora: {max_lora_rank: 8, adapter_dir: '{adapters}'}
  - name: fallback
    model: embedded:gemma-3-270m
gateway: {auth: {required: false}}   # loopback only
routes:
  # the default route first
  - name: default
    threshold: 0.3
  - name: tools    # agent traffic
    tiers: [slm, fallback]
    # the threshold is calibrated below
# end of routes
"""


@pytest.mark.parametrize("dash_column", ["indented", "at the key"])
def test_comments_order_quoting_and_indentation_survive_an_edit(tmp_path: Path, dash_column: str) -> None:
    before = OPERATOR_FILE.replace("{adapters}", str(tmp_path / "adapters"))
    if dash_column == "at the key":
        before = "".join(line.removeprefix("  ") for line in before.splitlines(keepends=True))  # PyYAML's style
    config_path = tmp_path / "cascade.yaml"
    config_path.write_text(before)
    write_route_fields(config_path, "tools", {"adapter": "tools-20261126t093000", "threshold": 0.25})
    write_route_fields(config_path, "default", {"threshold": 0.5})
    indent = "    " if dash_column == "indented" else "  "
    tools = f"{indent}tiers: [slm, fallback]\n"
    expected = before.replace(tools, f"{tools}{indent}adapter: tools-20261126t093000\n{indent}threshold: 0.25\n")
    assert config_path.read_text() == expected.replace("threshold: 0.3", "threshold: 0.5")
    assert load_config(config_path).route("tools").threshold == 0.25


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path: Path) -> None:
    config_path = tmp_path / "cascade.yaml"
    for text, error in [("tiers: [unclosed\n", "cannot read config"), ("- a list\n", "not a YAML mapping"),
                        ("a: 1\na: 2\n", "cannot read config"), ("tiers: !custom x\n", "would not read back")]:
        config_path.write_text(text)
        with pytest.raises(ConfigError, match=error):
            write_route_fields(config_path, "default", {"threshold": 0.5})
        assert config_path.read_text() == text


def test_a_config_without_routes_gets_its_default_route_written_out() -> None:
    data = {"tiers": [{"name": "slm", "model": "m", "lora": {"adapter_dir": "/a"}}]}
    assert set_route_fields(data, "default", {"adapter": "default-20260101t000000"}) == {
        **data, "routes": [{"name": "default", "adapter": "default-20260101t000000"}]}
    assert "routes" not in data  # the caller's data is not changed


def test_a_write_that_would_not_validate_leaves_the_file_alone(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, config_data(tmp_path, lora=None))  # the SLM cannot serve adapters
    before = config_path.read_bytes()
    with pytest.raises(ConfigError, match=r"routes.2.adapter|routes.tools.adapter"):
        write_route_fields(config_path, "tools", {"adapter": "tools-20261126t093000"})
    assert config_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cascade.yaml"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cascade.yaml"
    path.write_text("old: 1\n")
    path.chmod(0o640)

    def fail(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, "new: 2\n")
    assert path.read_text() == "old: 1\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    write_atomically(path, "new: 2\n")
    assert path.read_text() == "new: 2\n"
    assert (path.stat().st_mode & 0o777) == 0o640
    assert path.with_name("cascade.yaml.bak").read_text() == "old: 1\n"
