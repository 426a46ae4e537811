"""Write settings of one route back into the operator's config file, safely.

`cascade adapt` (a promoted adapter) and `cascade calibrate` (a fitted confidence model, a certified threshold)
change a route in place. The file is read again as YAML data, the route's fields are set, the whole config is
validated, and only then is the file replaced in one rename, the previous version kept as `<file>.bak`. The
user's other settings stay in their own form, but YAML comments and formatting are lost.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.config import DEFAULT_ROUTE, CascadeConfig, ConfigError, parse_config

__all__ = ["set_route_fields", "write_atomically", "write_route_fields"]


def set_route_fields(data: Any, route: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config's YAML data with ``fields`` set on ``routes[route]``; everything else as it was.

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
    try:
        data = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {config_path} to write into it: {error}") from None
    updated = set_route_fields(data, route, fields)
    config = parse_config(updated, str(config_path))
    write_atomically(Path(config_path), yaml.safe_dump(updated, sort_keys=False, allow_unicode=True))
    return config
