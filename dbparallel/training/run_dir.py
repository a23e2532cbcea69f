"""Opening a run directory: the resolved config is written once and guards every resume."""

from __future__ import annotations

from dbparallel.config import Config, dump_yaml, identity_diff, to_dict
from dbparallel.errors import RunDirError
from dbparallel.training.storage import Storage

CONFIG_FILE = "config.yaml"


def open_run(cfg: Config) -> Storage:
    """Storage of ``cfg``'s run directory; refuses a directory trained with another network."""
    storage = Storage(cfg.run_dir)
    storage.makedirs()
    if storage.exists(CONFIG_FILE):
        previous = stored_config(storage)
        keys = identity_diff(previous, to_dict(cfg))
        if keys:
            raise RunDirError(
                f"{storage.uri()} holds blocks trained with other values of {', '.join(keys)}; "
                "resume with the same values or choose a new run.dir")
    storage.write_text(CONFIG_FILE, dump_yaml(cfg))
    return storage


def stored_config(storage: Storage) -> dict:
    """The config dict a run directory was trained with."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.create(storage.read_text(CONFIG_FILE)))
    assert isinstance(data, dict)
    return data
