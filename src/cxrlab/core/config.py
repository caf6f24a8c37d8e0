"""params.yaml access: typed sections with unknown keys rejected.

Each stage reads its section into a dataclass with :func:`from_dict`, so a typo in
``params.yaml`` or in ``dvc exp run -S`` fails at once with the key's full name
instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from cxrlab.core.errors import ConfigError

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read a params file with ``yaml.safe_load``.

    Args:
        path: The YAML file, ``params.yaml`` in the working directory by default.

    Returns:
        The parsed mapping.

    Raises:
        ConfigError: If the file is missing or is not a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run stages from the repository root.")
    with path.open() as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ConfigError(
            f"{path} must hold a YAML mapping of sections, got {type(params).__name__}."
        )
    return params


def section(params: dict[str, Any], name: str, cls: type[T]) -> T:
    """Build the dataclass ``cls`` from the section ``name`` of ``params``.

    Args:
        params: The whole params mapping.
        name: The section's key, e.g. ``"classifier"``.
        cls: The dataclass describing the section.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: If the section is missing or holds an unknown or mistyped key.
    """
    if name not in params:
        raise ConfigError(f"params.yaml has no '{name}' section.")
    return from_dict(cls, params[name], where=name)


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Recursively build dataclass ``cls`` from a mapping, rejecting unknown keys.

    Args:
        cls: A dataclass type; nested dataclass fields are built recursively.
        data: The mapping to read.
        where: The dotted path of ``data`` in params, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: On an unknown key, a missing required key, or a wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"param '{where}' must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown param '{_join(where, unknown[0])}'; "
            f"'{where}' accepts: {', '.join(sorted(fields))}."
        )
    kwargs = {}
    for key, value in data.items():
        default = _default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            value = merge(dataclasses.asdict(default), value)  # a partial block keeps defaults
        kwargs[key] = _coerce(hints[key], value, _join(where, key))
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [n for n, f in fields.items() if n not in data and _required(f)]
        raise ConfigError(
            f"param '{_join(where, missing[0] if missing else '?')}' is required."
        ) from exc


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a type hint, building nested dataclasses."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"param '{where}' = {value!r} is not of type {_name(hint)}.")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"param '{where}' must be a list, got {value!r}.")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"param '{where}' must be a mapping, got {value!r}.")
        value_hint = (typing.get_args(hint) or (Any, Any))[1]
        return {k: _coerce(value_hint, v, _join(where, str(k))) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"param '{where}' = {value!r} must be one of {choices}.")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"param '{where}' must be an integer, got {value!r}.")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"param '{where}' must be of type {_name(hint)}, got {value!r}.")
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class OptimConfig:
    """``<trainer>.optim``: the optimizer and LR schedule, the same block in every trainer.

    ``core.loop.make_optimizer`` builds both from it. Each trainer's config gives its own
    defaults; a partial ``optim`` block in params.yaml keeps them for the keys it omits.

    Attributes:
        optimizer: ``adamw``, or ``sgd`` with Nesterov momentum 0.9.
        lr: Peak learning rate.
        weight_decay: Decay of weight matrices; biases and norms are never decayed.
        schedule: ``onecycle`` (torch's OneCycleLR, warming up over ``warmup_frac``), or a
            linear warm-up over ``warmup_frac`` of the steps followed by ``cosine`` or
            ``linear`` decay to 0, or by a ``constant`` LR.
        warmup_frac: Fraction of the training steps spent warming up.
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["onecycle", "cosine", "linear", "constant"] = "onecycle"
    warmup_frac: float = 0.1


def check_positive(cfg, where: str, *names: str) -> None:
    """Raise a ConfigError naming the first of ``names`` that is not positive.

    A dotted name (``optim.lr``) reads a nested config.
    """
    for name in names:
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        if value <= 0:
            raise ConfigError(f"param '{where}.{name}' must be positive, got {value}.")
