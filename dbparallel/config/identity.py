"""What identifies a run's network: the keys that fix what a block is, their hash, and the
upgrade of configs stored before a key existed."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import Any

from dbparallel.config.schema import Config

# Keys that fix what a block *is*: a run directory whose blocks were trained with other values
# cannot be resumed or assembled with this config.
IDENTITY_SECTIONS = ("task", "model", "noise", "data")
IDENTITY_KEYS = ("run.seed", "train.label_dropout", "train.objective")
# how a run checks and decodes its data, not which network it trains; and where the data are:
# the rows themselves are pinned in the run directory (training/data_pin.py), so a
# corpus moved or copied elsewhere resumes, and other data at the same path are refused
NOT_IDENTITY = ("data.validate", "data.decode_threads", "data.read_threads", "data.path")


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts."""
    return asdict(cfg)


# Identity keys added after run directories existed, with the value that reproduces how those
# runs trained: a stored config without the key is read with it.
LEGACY_VALUES = {"model.ar_readout": "direct", "model.label_embedding": "frozen",
                 "noise.partition": "equiprobable", "data.pack": False,
                 "data.text_field": "text", "data.pixel_order": "chw",
                 "data.resize": False, "data.latents": False, "data.latent_scale": 1.0,
                 "data.latent_shift": 0.0}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict (config.yaml, a checkpoint's meta) with every key of
    LEGACY_VALUES it lacks set to the value it trained with."""
    flat = _flatten(data)
    out = json.loads(json.dumps(data))  # a deep copy of plain data
    for key, value in LEGACY_VALUES.items():
        if key in flat:
            continue
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def identity(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """Flat dotted keys that must agree between blocks of one network (a stored dict is
    read with the keys added since: ``upgrade``)."""
    flat = _flatten(upgrade(cfg) if isinstance(cfg, dict) else to_dict(cfg))
    return {k: v for k, v in flat.items()
            if (k.split(".")[0] in IDENTITY_SECTIONS or k in IDENTITY_KEYS)
            and k not in NOT_IDENTITY}


def config_hash(cfg: Config | dict[str, Any]) -> str:
    """Short hash of ``identity(cfg)``, stored with every checkpoint."""
    blob = json.dumps(identity(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def identity_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted identity keys whose values differ between two config dicts."""
    ia, ib = identity(a), identity(b)
    return sorted(k for k in set(ia) | set(ib) if ia.get(k) != ib.get(k))


def changed_settings(stored: dict[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """(key, stored value, value now) of the keys other than identity keys (and run.dir)
    that ``cfg`` sets otherwise than a run directory's stored config: a resume may change
    them (they do not change the network). Where the driver runs (on Ray or in this process,
    and which cluster) is not a setting of the run: it is left out, as is data.path, whose
    data the run directory's pinned index checks (and says when they moved)."""
    then, now = _flatten(stored), _flatten(to_dict(cfg))
    fixed = set(identity(cfg)) | {"run.dir", "runtime.local", "runtime.address", "data.path"}
    return [(k, then[k], now[k]) for k in sorted(now)
            if k in then and k not in fixed and then[k] != now[k]]


def same_local_path(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` spell one local path (relative ones read from here)."""
    if not (isinstance(a, str) and isinstance(b, str)) or "://" in a or "://" in b:
        return False
    local = [os.path.abspath(os.path.expanduser(p)) if p else "" for p in (a, b)]
    return local[0] == local[1]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
