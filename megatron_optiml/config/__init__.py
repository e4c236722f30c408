"""Typed run configuration (NeMo YAML layout) with strict loading and up-front validation."""

from megatron_optiml.config.load import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_run_config,
)
from megatron_optiml.config.schema import (
    DataConfig,
    ExpManagerConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedConfig,
    TrainerConfig,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExpManagerConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_run_config",
]
