"""The one typed configuration of dbparallel.

``load_config(yaml files, key=value overrides)`` merges with omegaconf onto the dataclass
defaults and returns the dataclass tree; every mistake raises ``ConfigError`` naming the dotted
key and the allowed values, before anything starts. Imported by every layer; imports none of
them. The schema is in schema.py (its train section in training.py, its runtime, metrics and
debug sections in runtime_keys.py; the model presets and their width checks in presets.py; the
noise section's numeric checks in noise_checks.py), what identifies a run's network in
identity.py, loading in loading.py, the key listing of --help-config in keys.py.
"""

from dbparallel.config.amounts import bytes_text, parse_bytes
from dbparallel.config.identity import (
    IDENTITY_KEYS,
    IDENTITY_SECTIONS,
    LEGACY_VALUES,
    NOT_IDENTITY,
    changed_settings,
    config_hash,
    identity,
    identity_diff,
    same_local_path,
    to_dict,
    upgrade,
)
from dbparallel.config.keys import describe, notes
from dbparallel.config.loading import (
    AUTO,
    CONFIG_FILE,
    dump_yaml,
    from_dict,
    given_value,
    load_config,
    stored_dict,
    unchecked,
)
from dbparallel.config.run_name import data_name
from dbparallel.config.runtime_keys import DebugConfig, MetricsConfig, RuntimeConfig
from dbparallel.config.sample_keys import LABEL_STARTS, SampleConfig
from dbparallel.config.schema import (
    AR_READOUTS,
    DATA_SOURCES,
    FILE_SOURCES,
    LABEL_EMBEDDINGS,
    PARTITIONS,
    PATH_SOURCES,
    PIXEL_ORDERS,
    PRESETS,
    TASKS,
    TEXT_TASKS,
    TOKENIZERS,
    Config,
    DataConfig,
    ModelConfig,
    NoiseConfig,
    RunConfig,
)
from dbparallel.config.training import OBJECTIVES, PRECISIONS, TrainConfig
from dbparallel.errors import ConfigError

__all__ = [
    "AR_READOUTS", "AUTO", "CONFIG_FILE", "DATA_SOURCES", "FILE_SOURCES", "IDENTITY_KEYS",
    "IDENTITY_SECTIONS",
    "LABEL_EMBEDDINGS", "LABEL_STARTS", "LEGACY_VALUES", "NOT_IDENTITY", "OBJECTIVES",
    "PARTITIONS", "PATH_SOURCES", "PIXEL_ORDERS", "PRECISIONS", "PRESETS", "TASKS",
    "TEXT_TASKS", "TOKENIZERS",
    "Config",
    "ConfigError", "DataConfig", "DebugConfig", "MetricsConfig", "ModelConfig", "NoiseConfig",
    "RunConfig", "RuntimeConfig", "SampleConfig", "TrainConfig", "bytes_text",
    "changed_settings", "config_hash", "data_name",
    "describe", "dump_yaml", "from_dict", "given_value", "identity", "identity_diff",
    "load_config", "notes", "same_local_path", "stored_dict", "unchecked",
    "parse_bytes", "to_dict", "upgrade",
]
