"""OPT-IML evaluation of exported HF models on data_prep's evaluation splits (paper §4.1)."""

from megatron_optiml.eval.aggregate import InstanceResult, aggregate
from megatron_optiml.eval.config import EvalConfig
from megatron_optiml.eval.runner import evaluate_bench, evaluate_model, load_model

__all__ = [
    "EvalConfig",
    "InstanceResult",
    "aggregate",
    "evaluate_bench",
    "evaluate_model",
    "load_model",
]
