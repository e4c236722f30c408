"""Guarded imports of the optional CUDA-only extras (Transformer Engine, apex)."""

from __future__ import annotations

import importlib.util


def have_transformer_engine() -> bool:
    # find_spec is not enough: TE's wheel imports but fails without CUDA libraries.
    if importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def require_transformer_engine(what: str) -> None:
    """Raise a clear error naming the feature that needs Transformer Engine."""
    if not have_transformer_engine():
        raise RuntimeError(
            f"{what} needs NVIDIA Transformer Engine, which is not installed or cannot load "
            "(it needs CUDA). Install the GPU extra on a GPU machine: "
            "`pip install -e .[gpu]`, or use transformer_impl='local' and precision bf16/32."
        )
