"""Pre-flight planning of OPT training layouts: memory per GPU, fit, bubble, throughput."""

from megatron_optiml.planning.flops import StepFlops, megatron_step_flops, step_flops
from megatron_optiml.planning.hardware import KNOWN_GPUS, ClusterSpec, GPUSpec, get_gpu
from megatron_optiml.planning.layout import PlanError, PlanInput
from megatron_optiml.planning.memory import GIB
from megatron_optiml.planning.plan import (
    Plan,
    StageMemory,
    format_plan,
    make_plan,
    suggest_layouts,
    with_changes,
)

__all__ = [
    "GIB",
    "KNOWN_GPUS",
    "ClusterSpec",
    "GPUSpec",
    "Plan",
    "PlanError",
    "PlanInput",
    "StageMemory",
    "StepFlops",
    "format_plan",
    "get_gpu",
    "make_plan",
    "megatron_step_flops",
    "step_flops",
    "suggest_layouts",
    "with_changes",
]
