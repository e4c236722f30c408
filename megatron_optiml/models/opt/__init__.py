"""OPT (Zhang et al. 2022) as Megatron-Core GPTModel specs."""

from megatron_optiml.models.opt.builder import (
    build_opt_model,
    build_transformer_config,
    check_supported,
)
from megatron_optiml.models.opt.flavors import OPT_FLAVORS, OPTArch, get_flavor

__all__ = [
    "OPT_FLAVORS",
    "OPTArch",
    "build_opt_model",
    "build_transformer_config",
    "check_supported",
    "get_flavor",
]
