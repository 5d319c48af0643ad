"""A run's ``config.json`` as readers see it: read and check it, then apply it to a loaded run.

The run is a :class:`~cskd_viz.runs.RunLog`, typed ``Any`` here: ``log.py`` imports this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cskd_viz.runs import ownership, store
from cskd_viz.runs.records import CONFIG_FILE, DEAD, FORMAT, READABLE_SCHEMAS, STATUSES, RunLogError

__all__ = ["read_meta", "apply_meta"]


def read_meta(path: Path) -> dict:
    """``path``'s ``config.json``, checked: a ``RunLogError`` naming the file and the field otherwise."""
    if not path.exists():
        raise RunLogError(f"no run directory at {path}")
    if not path.is_dir():
        raise RunLogError(f"{path} is not a directory (a run is a directory holding {CONFIG_FILE} and CSV files)")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise RunLogError(f"{path} is not a cskd_viz run directory: {config_file} is missing")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RunLogError(f"{config_file} is corrupt: cannot parse JSON ({store.one_line(err)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RunLogError(f'{config_file} is not a cskd_viz run config (expected "format": "{FORMAT}")')
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise RunLogError(
            f"{config_file} has schema_version {version!r}; this cskd_viz reads schema_version "
            f"{' and '.join(map(str, READABLE_SCHEMAS))}"
        )
    if meta.get("status") not in STATUSES:
        raise RunLogError(f"{config_file} has an unknown status {meta.get('status')!r}; expected one of {STATUSES}")
    if not isinstance(meta.get("config"), dict):
        raise RunLogError(f'{config_file} has no "config" object')
    flushed = meta.get("flushed")
    if flushed is not None and not _is_index(flushed):
        raise RunLogError(f"{config_file} has a malformed flushed: {_short(flushed)} (a non-negative int)")
    _check_fields(meta, config_file)
    return meta


def _is_index(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value < 2**63


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Fields of "config" that readers use (tables, plots), and what they must be when present.
_CONFIG_FIELDS = {
    **dict.fromkeys(("name", "method", "dataset", "student", "teacher"), (str,)),
    "t_low": (int, float),
    "t_high": (int, float),
}


def _check_fields(meta: dict, config_file: Path) -> None:
    """The fields of ``config.json`` readers use besides the format ones: RunLogError naming the field."""
    progress = meta.get("progress", {})
    if not isinstance(progress, dict):
        raise RunLogError(f"{config_file} has a malformed progress: {_short(progress)} (an object)")
    for key in ("step", "epoch"):
        if not _is_index(progress.get(key, 0)):
            raise RunLogError(f"{config_file} has a malformed progress.{key}: {_short(progress.get(key))}")
    for key in ("reason", "run_id", "created", "updated", "heartbeat"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise RunLogError(f"{config_file} has a malformed {key}: {_short(meta[key])} (a string or null)")
    for key, kinds in _CONFIG_FIELDS.items():
        value = meta["config"].get(key)
        if value is None:
            continue
        bad = isinstance(value, bool) or not isinstance(value, kinds)
        if bad or (isinstance(value, float) and not math.isfinite(value)):
            raise RunLogError(f"{config_file} has a malformed config.{key}: {_short(value)}")


def apply_meta(log: Any, meta: dict) -> None:
    """What ``config.json`` says (checked by :func:`read_meta`), onto a loaded log: identity, status (``dead``
    for a ``running`` run without a live writer), reason, progress and its last flush."""
    log.config, log.run_id = meta["config"], meta.get("run_id")
    log.status = meta["status"]
    if log.status == "running" and ownership.is_dead(log.path, meta):
        log.status = DEAD
    log.reason = meta.get("reason")
    log.created = meta.get("created") or log.created
    log.updated = meta.get("updated") or log.updated
    progress = meta.get("progress") or {}
    log.progress = {key: progress.get(key, 0) for key in ("step", "epoch")}
    with log._lock:
        log._committed = meta.get("flushed")  # None: a run of before "flushed" existed, read every part
