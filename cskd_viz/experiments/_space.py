"""Grids and search spaces over :class:`~cskd_viz.training.RunConfig` fields: checks, coercion, CLI parsing.

A *grid* maps field names to the values to try (``{"batch_size": [16, 64], "method": ["kd", "cskd"]}``);
a *space* maps field names to ``(low, high)`` ranges, ``(low, high, "log")`` log ranges or lists of
choices. Values are coerced to the field's type (``"16"`` or ``16.0`` for ``batch_size`` become ``16``);
anything that cannot be is a ``ValueError``/``TypeError`` naming the field. Nothing here imports optuna.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "sweepable_fields",
    "check_grid",
    "check_space",
    "check_field",
    "parse_grid_item",
    "parse_space_item",
]

# ``name`` is set per trial; every other RunConfig field may vary.
_EXCLUDED = ("name",)
_NONE_WORDS = ("none", "null")
_MAX_CORNERS = 4096


def _field_types() -> dict[str, str]:
    from cskd_viz.training.config import RunConfig

    return {f.name: str(f.type) for f in dataclasses.fields(RunConfig) if f.name not in _EXCLUDED}


def sweepable_fields() -> tuple[str, ...]:
    """The :class:`RunConfig` fields a grid or space may name (all but ``name``)."""
    return tuple(_field_types())


def check_field(name: Any, what: str = "grid") -> str:
    """``name`` if it is a :class:`RunConfig` field that may vary, else a ``ValueError`` listing the valid ones."""
    fields = _field_types()
    if not isinstance(name, str) or name not in fields:  # noqa: SIM102 - one message for both cases
        hint = " (each trial's run is named by the sweep)" if name == "name" else ""
        raise ValueError(f"{what} names an unknown RunConfig field {name!r}{hint}; valid fields: {', '.join(fields)}")
    return name


def _kind(annotation: str) -> tuple[str, bool]:
    """``("int" | "float" | "bool" | "str", optional)`` of a field's annotation string such as ``"int | None"``."""
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    base = next((p for p in parts if p != "None"), "str")
    return base, optional


def coerce(name: str, value: Any) -> Any:
    """``value`` as the type of field ``name`` (``"none"`` is ``None`` for optional fields)."""
    kind, optional = _kind(_field_types()[name])
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NONE_WORDS and optional:
            return None
        if kind == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(f"{name} takes true or false, got {value!r}")
        if kind in ("int", "float"):
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name} takes numbers, got {value!r}") from None
        else:
            return text
    if value is None:
        if not optional:
            raise ValueError(f"{name} cannot be None")
        return None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise TypeError(f"{name} takes integers, got {value!r}")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"{name} takes finite numbers, got {value!r}")
        return float(value)
    if kind == "bool" and not isinstance(value, bool):
        raise TypeError(f"{name} takes True or False, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise TypeError(f"{name} takes strings, got {value!r}")
    return value


def _check_base(base: Any) -> None:
    from cskd_viz.training.config import RunConfig

    if not isinstance(base, RunConfig):
        raise TypeError(f"base must be a RunConfig, got {type(base).__name__}")
    if base.name is not None:
        raise ValueError(f"base.name must be None (the sweep names each trial's run), got {base.name!r}")


def _validate_points(base: Any, names: Sequence[str], points: Sequence[tuple], what: str) -> None:
    """Build the RunConfig of every point (a ``ValueError`` naming the first invalid one)."""
    for point in points:
        changes = dict(zip(names, point, strict=True))
        try:
            dataclasses.replace(base, **changes)
        except (ValueError, TypeError) as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in changes.items())
            raise ValueError(f"{what} point ({shown}) is not a valid RunConfig: {err}") from None


def check_grid(base: Any, grid: Any, seeds: Any) -> dict[str, list]:
    """The grid with coerced, de-duplicated values (insertion order kept); every point is checked.

    Args:
        base: the :class:`RunConfig` every point changes (``name`` must be ``None``).
        grid: ``{field: values}``, at least one field, each with at least one value; not ``seed``
            (seeds come from ``seeds``: ``base.seed, base.seed + 1, ...``).
        seeds: number of seeds per point, an int ``>= 1``.
    """
    _check_base(base)
    check_seeds(seeds)
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a mapping of RunConfig field -> values, got {type(grid).__name__}")
    if not grid:
        raise ValueError("grid is empty: give at least one RunConfig field and its values, e.g. {'batch_size': [32]}")
    out: dict[str, list] = {}
    for name, values in grid.items():
        check_field(name)
        if name == "seed":
            raise ValueError("grid cannot name 'seed': use seeds=N (runs seeds base.seed .. base.seed + N - 1)")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"grid[{name!r}] must be a sequence of values (a list or tuple), got {values!r}")
        coerced = list(dict.fromkeys(coerce(name, v) for v in values))
        if not coerced:
            raise ValueError(f"grid[{name!r}] is empty: give at least one value")
        out[name] = coerced
    _validate_points(base, list(out), list(itertools.product(*out.values())), "grid")
    return out


def check_seeds(seeds: Any) -> int:
    """``seeds`` if it is an int ``>= 1``."""
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise TypeError(f"seeds must be an int >= 1, got {seeds!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return seeds


def _check_range(name: str, spec: Sequence) -> tuple:
    kind = _kind(_field_types()[name])[0]
    if kind not in ("int", "float"):
        raise ValueError(f"space[{name!r}]: a range needs a numeric field; {name} is {kind}: give a list of choices")
    log = len(spec) == 3
    if len(spec) not in (2, 3) or (log and spec[2] != "log"):
        raise ValueError(f"space[{name!r}] must be (low, high), (low, high, 'log') or a list of choices, got {spec!r}")
    low, high = coerce(name, spec[0]), coerce(name, spec[1])
    if low is None or high is None or not low < high:
        raise ValueError(f"space[{name!r}] needs low < high, got {spec!r}")
    if log and low <= 0:
        raise ValueError(f"space[{name!r}]: a log range needs low > 0, got {low}")
    return (low, high, "log") if log else (low, high)


def check_space(base: Any, space: Any) -> dict[str, Any]:
    """The space with coerced bounds: ``{field: (low, high[, "log"]) | [choices]}``.

    Ranges are tuples, choices are lists. Cross-field constraints (``t_low <= t_high``, a teacher
    for the distillation methods, ...) must hold on every corner of the space: a space that could
    sample an invalid config is refused with the corner that breaks, never clipped.
    """
    _check_base(base)
    if not isinstance(space, Mapping):
        raise TypeError(f"space must be a mapping of RunConfig field -> (low, high) or [choices], got {space!r}")
    if not space:
        raise ValueError("space is empty: give at least one RunConfig field, e.g. {'temperature': (1, 8)}")
    out: dict[str, Any] = {}
    for name, spec in space.items():
        check_field(name, "space")
        if isinstance(spec, tuple):
            out[name] = _check_range(name, spec)
        elif isinstance(spec, list):
            choices = list(dict.fromkeys(coerce(name, v) for v in spec))
            if not choices:
                raise ValueError(f"space[{name!r}] is an empty list of choices")
            out[name] = choices
        else:
            raise TypeError(f"space[{name!r}] must be a (low, high) tuple or a list of choices, got {spec!r}")
    corners = [list(spec[:2]) if isinstance(spec, tuple) else spec for spec in out.values()]
    if math.prod(len(c) for c in corners) <= _MAX_CORNERS:
        _validate_points(base, list(out), list(itertools.product(*corners)), "space corner")
    return out


def _split_item(item: str, flag: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"{flag} takes FIELD=VALUES, got {item!r}")
    name, _, values = item.partition("=")
    name = name.strip().replace("-", "_")
    check_field(name, flag)
    if not values.strip():
        raise ValueError(f"{flag} {name}= has no values")
    return name, values


def parse_grid_item(item: str) -> tuple[str, list]:
    """``"batch_size=16,32"`` -> ``("batch_size", [16, 32])`` (values coerced to the field's type).

    Example:
        >>> parse_grid_item("method=kd,cskd")
        ('method', ['kd', 'cskd'])
    """
    name, values = _split_item(item, "--grid")
    return name, [coerce(name, v) for v in values.split(",")]


def parse_space_item(item: str) -> tuple[str, Any]:
    """``"temperature=1:8"`` -> ``("temperature", (1.0, 8.0))``; ``"lr=0.01:0.5:log"`` a log range;
    ``"method=kd,cskd"`` a list of choices.

    Example:
        >>> parse_space_item("t_low=1:4")
        ('t_low', (1.0, 4.0))
    """
    name, values = _split_item(item, "--space")
    if ":" in values:
        parts = values.split(":")
        if len(parts) == 3 and parts[2].strip() == "log":
            return name, _check_range(name, (parts[0], parts[1], "log"))
        if len(parts) != 2:
            raise ValueError(f"--space {name}= takes LOW:HIGH, LOW:HIGH:log or choices A,B,...; got {values!r}")
        return name, _check_range(name, tuple(parts))
    return name, [coerce(name, v) for v in values.split(",")]
