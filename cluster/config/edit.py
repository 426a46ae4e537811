"""Write settings of one route back into the operator's config file, safely.

`cascade calibrate --config` (a fitted confidence model, a certified threshold) changes a route in place. The
file is read with ruamel.yaml's round-trip loader, the route's fields are set, the result is validated as
`load_config` will read it, and only then is the file replaced in one rename, the previous version kept as
`<file>.bak`. Comments, key order, quoting and flow style stay as the operator wrote them; block indentation
follows what ruamel.yaml guesses from the file's sequences (`- ` at the key's column or indented under it), and
long flow lists are written on one line.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from cluster.config import DEFAULT_ROUTE, CascadeConfig, ConfigError, parse_config

__all__ = ["set_route_fields", "write_atomically", "write_route_fields"]


def set_route_fields(data: Any, route: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config's YAML data with ``fields`` set on ``routes[route]``; everything else as it was.

    ``data`` is plain or round-trip YAML data (ruamel.yaml's commented maps keep their comments through the copy).
    A file without `routes` has the implicit default route only, which is then written out.
    """
    if not isinstance(data, dict):
        raise ConfigError("the config file is not a YAML mapping")
    data = copy.deepcopy(data)
    if "routes" not in data and route == DEFAULT_ROUTE:
        data["routes"] = [{"name": DEFAULT_ROUTE}]
    entry = next((item for item in data.get("routes") or [] if isinstance(item, dict) and item.get("name") == route),
                 None)
    if entry is None:
        raise ConfigError(f"the config file has no route {route!r} to set {', '.join(fields)} of")
    entry.update(copy.deepcopy(dict(fields)))
    return data


def write_atomically(path: Path, text: str, backup: bool = True) -> None:
    """Replace the file's content in one rename, keeping the previous version as `<file>.bak` (with ``backup``).

    Readers see either the old file or the new one, never a partial write; on any failure the file is untouched.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        shutil.copymode(path, temporary)
        if backup:
            shutil.copy2(path, path.with_name(f"{path.name}.bak"))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_route_fields(config_path: Path, route: str, fields: Mapping[str, Any]) -> CascadeConfig:
    """Set ``fields`` on `routes[route]` in the config file and return the new config (validated before writing:
    a change that would not validate raises ``ConfigError`` and leaves the file as it was)."""
    round_trip = YAML(typ="rt")
    round_trip.preserve_quotes = True
    try:
        text = Path(config_path).read_text(encoding="utf-8")
        data, indent, dash_offset = load_yaml_guess_indent(text, yaml=round_trip)
    except (OSError, YAMLError) as error:
        raise ConfigError(f"cannot read config {config_path} to write into it: {error}") from None
    updated = set_route_fields(data, route, fields)
    indent, dash_offset = indent or 2, dash_offset or 0  # None where the file has no nested block to guess from
    round_trip.indent(mapping=indent - dash_offset, sequence=indent, offset=dash_offset)
    round_trip.width = 4096  # re-wrapping the operator's long flow lists would leave trailing blanks
    written = io.StringIO()
    round_trip.dump(updated, written)
    try:  # as `load_config` (PyYAML) will read it, so no round-trip quirk writes a file the cluster refuses
        config = parse_config(yaml.safe_load(written.getvalue()), str(config_path))
    except yaml.YAMLError as error:
        raise ConfigError(f"config {config_path} would not read back after the edit: {error}") from None
    write_atomically(Path(config_path), written.getvalue())
    return config
