"""Loading a config: YAML files and ``key=value`` overrides merged with omegaconf onto the
schema's defaults, ``model.blocks=auto``, and the config as YAML (the key listing of
``--help-config``: keys.py)."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from dbparallel.config.checks import STORED
from dbparallel.config.identity import upgrade
from dbparallel.config.schema import TEXT_GAMMA, TEXT_TASKS, Config
from dbparallel.config.wording import from_file, omegaconf_reason
from dbparallel.errors import ConfigError
from dbparallel.shell import shell_path

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"  # the config a run directory was trained with (its own file)

AUTO = "auto"
FitBlocks = Callable[[Callable[[int], "Config"]], int]


def load_config(files: list[str | Path] = (), overrides: list[str] = (),  # type: ignore[assignment]
                fit_blocks: FitBlocks | None = None) -> Config:
    """Merge YAML files, then ``key=value`` overrides, onto the defaults and validate.
    ``model.blocks=auto`` asks ``fit_blocks`` for B, given a builder of the config with B
    blocks (training/plan.py's ``fit_blocks``: the smallest B that fits a device)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    merged = OmegaConf.structured(Config)
    try:
        layers = []
        for path in files:
            if not os.path.isfile(path):  # (False, not OSError, for a name too long)
                hint = ""
                section = str(path).split(".")[0]
                if re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+", str(path)) \
                        and section in {f.name for f in fields(Config)}:
                    hint = f" (an override needs its value: {path}=...)"
                elif os.path.isfile(Path(path) / CONFIG_FILE):
                    hint = (f" (it is a run directory: give run.dir={shell_path(path)}, with "
                            f"the recipe and overrides it was trained with, to resume it)")
                elif os.path.isfile(f"{path}.yaml"):
                    hint = f" (did you mean {path}.yaml?)"
                elif os.path.isdir(path):
                    hint = " (it is a folder: give a YAML recipe)"
                raise ConfigError(f"config file not found: {path}{hint}")
            layers.append(_recipe(path))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"{item}: overrides are key=value (e.g. model.blocks=3)")
        # a key is its dotted name, without the spaces a quoted `"train.steps = 3"` holds
        layers.append(OmegaConf.from_dotlist([f"{k.strip()}={v}" for k, v in
                                              (o.split("=", 1) for o in overrides)]))
        given = OmegaConf.merge(*layers)  # untyped: a later layer may replace model.blocks=auto
        _sections_are_mappings(given)
        given = _whole_numbers(given)
        if _recipe_name_of_another_run(layers, merged):  # named after its own task and data
            _tell_recipe_run(given)
            given = OmegaConf.merge(given, OmegaConf.create({"run": {"name": ""}}))
        if OmegaConf.select(given, "task") == "looped" \
                and OmegaConf.select(given, "model.blocks") is None:
            # one weight-tied core: the only B it takes, not the schema's default of 4
            given = OmegaConf.merge(given, OmegaConf.from_dotlist(["model.blocks=1"]))
        if OmegaConf.select(given, "task") in TEXT_TASKS \
                and OmegaConf.select(given, "noise.gamma") is None:
            # the overlap the method takes for text (twice the schema's 0.05 for images)
            given = OmegaConf.merge(given, OmegaConf.create({"noise": {"gamma": TEXT_GAMMA}}))
        if OmegaConf.select(given, "model.blocks") == AUTO:
            return _auto_blocks(files, list(overrides), fit_blocks)
        merged = OmegaConf.merge(merged, given)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(from_file(key, files, layers, overrides,
                                     f"{key}: {omegaconf_reason(err)}")) from None
    except ConfigError as err:  # a value the schema's checks refuse, named by its key
        named = re.match(r"([a-z_]+(?:\.[a-z_0-9]+)*(?:\[\d+\])?)(?=[:=])", str(err))
        if named is None or type(err) is not ConfigError:
            raise
        raise ConfigError(from_file(named.group(1), files, layers, overrides,
                                     str(err))) from None
    assert isinstance(cfg, Config)
    d = cfg.data  # (here, not in the schema: a stored config from before this rule loads)
    if d.path and d.source in ("digits", "shakespeare"):
        raise ConfigError(f"data.path: {d.path!r} is not read: data.source={d.source} is built "
                          f"in; set data.source=parquet, image_folder, text or fashion_mnist "
                          f"to train on it")
    return cfg


def _recipe_name_of_another_run(layers: list[Any], defaults: Any) -> bool:
    """Whether a recipe names the run (run.name) and a later recipe or the overrides (the
    last of ``layers``) give another task or other data (data.source, data.path) with no
    run.name of their own: a recipe's name names its task and data (ar-shakespeare), not
    a corpus given in their place (notes-ar) nor another task (shakespeare-mdm), so the run
    takes the default name of its data and task, and that directory. A key none gives is
    the schema's default (``defaults``): giving it changes nothing."""
    from omegaconf import OmegaConf

    named = [i for i, layer in enumerate(layers) if OmegaConf.select(layer, "run.name")
             is not None]
    if not named:
        return False
    at = OmegaConf.merge(*layers[:named[-1] + 1])
    now = OmegaConf.merge(*layers)

    def value(config: Any, key: str) -> Any:
        given = OmegaConf.select(config, key)
        return OmegaConf.select(defaults, key) if given is None else given

    return bool(OmegaConf.select(at, "run.name")) and any(
        value(now, key) != value(at, key) for key in ("task", "data.source", "data.path"))


def _tell_recipe_run(given: Any) -> None:
    """Where the recipe's own run directory (runs/<its run.name>) holds a run, say so: a run
    of another task or other data trained there before they were named apart is resumed
    with run.dir, not by the same command."""
    from omegaconf import OmegaConf

    name = OmegaConf.select(given, "run.name")
    if OmegaConf.select(given, "run.dir") or not (Path("runs") / name / CONFIG_FILE).is_file():
        return
    log.warning("run.name: the recipe names its runs %s, runs of its own task and data; this "
                "run of another task or other data takes the default name of its own, and its "
                "directory; runs/%s holds a run: if it is this one, give run.dir=runs/%s to "
                "resume it", name, name, name)


def given_value(files: list[str | Path], overrides: list[str], key: str) -> Any:
    """The value the recipes ``files``, then the ``key=value`` ``overrides``, give the dotted
    ``key``, unchecked (None when none does): for a guess made before the config is loaded
    (data check's data.source of a bare path, by the task). A recipe that does not load is
    named, as load_config would; one that is missing is left to load_config."""
    from omegaconf import OmegaConf

    layers = [_recipe(path) for path in files if os.path.isfile(path)]
    layers.append(OmegaConf.from_dotlist(
        [o for o in overrides if o.split("=", 1)[0].strip() == key]))
    return OmegaConf.select(OmegaConf.merge(*layers), key)


def _recipe(path: str | Path) -> Any:
    """One YAML recipe, a mapping; ConfigError naming the file (and line) if it is not."""
    import yaml
    from omegaconf import DictConfig, OmegaConf

    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    except (UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"{path}: cannot be read as a recipe ({err})") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: a recipe is a mapping of keys (model:, train:, ...), "
                          f"not a {type(layer).__name__.replace('Config', '').lower()}")
    return layer


def _sections_are_mappings(given: Any) -> None:
    """ConfigError naming the first section (model, train, ...) given a value, not keys, or
    the first list key given keys, or lists or keys as an item."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    defaults = Config()
    for f in fields(Config):
        section = getattr(defaults, f.name)
        if not is_dataclass(section) or f.name not in given:
            continue
        value = given.get(f.name)
        if not isinstance(value, DictConfig):
            shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            raise ConfigError(
                f"{f.name}: is a section, a mapping of keys ({f.name}.{fields(section)[0].name}"
                f"=..., or `{f.name}:` with its keys indented below it in a recipe), not a "
                f"value; got {shown!r}")
        for key in fields(section):  # a list key given keys (train.block_steps.x=1)
            if not isinstance(getattr(section, key.name), list):
                continue
            inner = OmegaConf.select(value, key.name, throw_on_resolution_failure=False)
            if isinstance(inner, DictConfig):
                raise ConfigError(f"{f.name}.{key.name}: expects a list, e.g. [600, 400]; got "
                                  f"{OmegaConf.to_container(inner)!r}")
            for i, item in enumerate(inner if isinstance(inner, ListConfig) else ()):
                if isinstance(item, (DictConfig, ListConfig)):  # [[600], [400]]
                    raise ConfigError(f"{f.name}.{key.name}[{i}]: expects a number, e.g. "
                                      f"[600, 400]; got {OmegaConf.to_container(item)!r}")


def _whole_numbers(given: Any) -> Any:
    """``given`` with a whole number written as a float (``train.steps=1e3``, ``2.0e4`` in a
    recipe) made an integer where the key takes one, in lists of integers too; any other float
    is left for OmegaConf to refuse, naming the key. An integer too large for a float key is
    refused here, naming the key (OmegaConf's float() of it overflows)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def whole(value: Any) -> Any:
        return int(value) if isinstance(value, float) and value.is_integer() else value

    changes: dict[str, Any] = {}
    defaults = Config()
    for f in fields(Config):
        section = getattr(defaults, f.name)
        value = given.get(f.name) if is_dataclass(section) else None
        if not isinstance(value, DictConfig):
            continue
        for key in fields(section):
            kind = str(key.type).replace(" ", "")
            inner = OmegaConf.select(value, key.name, throw_on_resolution_failure=False)
            if kind in ("float", "float|None") and isinstance(inner, int) \
                    and not isinstance(inner, bool) and abs(inner) > sys.float_info.max:
                raise ConfigError(f"{f.name}.{key.name}: must be a finite number, got one of "
                                  f"{len(str(abs(inner)))} digits")  # float() overflows
            if kind not in ("int", "int|None", "list[int]") or key.name not in value:
                continue
            if isinstance(inner, ListConfig):
                items = OmegaConf.to_container(inner)
                if any(whole(x) is not x for x in items):
                    changes[f"{f.name}.{key.name}"] = [whole(x) for x in items]
            elif whole(inner) is not inner:
                changes[f"{f.name}.{key.name}"] = whole(inner)
    if not changes:
        return given
    given = given.copy()
    for dotted, value in changes.items():
        OmegaConf.update(given, dotted, value, merge=False)
    return given


def _auto_blocks(files: list[str | Path], overrides: list[str],
                 fit_blocks: FitBlocks | None) -> Config:
    if fit_blocks is None:
        raise ConfigError("model.blocks=auto: B is chosen from runtime.device_memory by "
                          "`dbparallel train` and `dbparallel plan`; give a number here")
    rest = [o for o in overrides if not o.replace(" ", "").startswith("model.blocks=")]

    def build(blocks: int) -> Config:
        return load_config(files, [*rest, f"model.blocks={blocks}"])

    return build(fit_blocks(build))


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``to_dict`` output (e.g. a run directory's config.yaml, keys
    added since it was written set as it trained: ``upgrade``)."""
    from omegaconf import OmegaConf

    token = STORED.set(True)
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), upgrade(data)))
    finally:
        STORED.reset(token)
    assert isinstance(cfg, Config)
    return cfg


def stored_dict(text: str) -> dict[str, Any]:
    """The config dict of YAML ``text`` a run stored (its config.yaml, an export's metadata);
    ValueError saying what is wrong where it is none."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        data = OmegaConf.to_container(OmegaConf.create(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ValueError(f"not valid YAML ({line}{getattr(err, 'problem', None) or err})") \
            from None
    except OmegaConfBaseException as err:
        raise ValueError(" ".join(str(err).split())) from None
    if not isinstance(data, dict) or not data:
        raise ValueError("not a mapping of keys (a run's config: model:, train:, ...)")
    return data


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def unchecked(files: list[str | Path] = (), overrides: list[str] = ()) -> Any:  # type: ignore[assignment]
    """The recipes and overrides merged onto the defaults, their types checked but not their
    values (--help-config of a config that is not complete yet, e.g. task=ar without its
    data.source); ConfigError where even that fails."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(OmegaConf.structured(Config), *map(_recipe, files),
                               OmegaConf.from_dotlist([o for o in overrides if "=" in o]))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {omegaconf_reason(err)}") from None
