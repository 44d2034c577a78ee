"""Checkpoints as safetensors + a JSON config, written atomically; never pickle.

A checkpoint ``model.safetensors`` has a sibling ``model.json`` holding the
model class name, its config and free metadata (training command, NLL, split).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .._atomic import atomic_write

FORMAT_VERSION = 1


def _paths(path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    return path, path.with_suffix(".json")


def save_tensors(path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` to ``path.safetensors`` and ``meta`` to ``path.json``, atomically.

    The JSON is written last, so a checkpoint whose JSON exists is complete.
    """
    st_path, json_path = _paths(path)
    # Clone: safetensors refuses tensors that share storage (e.g. model and best weights).
    cpu = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    atomic_write(st_path, lambda fh: fh.write(save(cpu)))
    meta = {"format_version": FORMAT_VERSION, **meta}
    text = json.dumps(meta, indent=2, sort_keys=True)
    atomic_write(json_path, lambda fh: fh.write(text.encode()))
    return st_path


def load_tensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_tensors`; ``ValueError`` if corrupt/missing."""
    st_path, json_path = _paths(path)
    for p in (st_path, json_path):
        if not p.is_file():
            raise ValueError(f"checkpoint file {p} is missing")
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint config {json_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint config {json_path} has format_version "
            f"{meta.get('format_version') if isinstance(meta, dict) else None!r}, "
            f"expected {FORMAT_VERSION}"
        )
    try:
        tensors = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint weights {st_path} are corrupt: {err}") from None
    return tensors, meta


def config_from_dict(cls, d: dict):
    """``cls(**d)`` for a config dataclass; ``ValueError`` naming keys ``cls`` does not have."""
    unknown = sorted(set(d) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}")
    return cls(**d)


def save_model(model: torch.nn.Module, path, metadata: dict | None = None) -> Path:
    """Save ``model`` (which has a ``config`` with ``to_dict``) as safetensors + JSON."""
    meta = {
        "class": type(model).__name__,
        "config": model.config.to_dict(),
        "metadata": metadata or {},
    }
    return save_tensors(path, model.state_dict(), meta)


def load_model(cls, config_cls, path, map_location=None):
    """Build ``cls(config)`` from a checkpoint and load its weights (strict)."""
    tensors, meta = load_tensors(path)
    if meta.get("class") != cls.__name__:
        raise ValueError(
            f"checkpoint {path} holds a {meta.get('class')!r}, expected {cls.__name__!r}"
        )
    config = config_cls.from_dict(meta.get("config", {}))
    model = cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(
            f"checkpoint {path} does not match its config: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"checkpoint {path} does not match its config: {key} has shape "
                f"{tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(tensors)
    if map_location is not None:
        model.to(map_location)
    model.metadata = meta.get("metadata", {})
    return model
