"""The one precision vocabulary: the NeMo / Lightning spellings a recipe may use and the canonical
name each means, for the run config, the planner and its CLI."""

from __future__ import annotations

PRECISIONS = ("fp32", "bf16", "fp16", "fp8")
"""Canonical names. fp32: FP32 parameters and math (Megatron enables TF32 matmuls); bf16: BF16
parameters, FP32 main grads and optimizer states; fp16: the same in FP16 with loss scaling;
fp8: bf16 plus Transformer Engine FP8 GEMMs."""

SPELLINGS: dict[str, str] = {
    "32": "fp32",
    "32-true": "fp32",
    "fp32": "fp32",
    "bf16": "bf16",
    "bf16-mixed": "bf16",
    "16": "fp16",
    "16-mixed": "fp16",
    "fp16": "fp16",
    "fp8": "fp8",
}
"""Accepted spellings (case-insensitive; YAML's integers 32 and 16 too) -> canonical name.
Lightning's 'bf16-true' / '16-true' (no FP32 master weights) are not what Megatron's mixed
precision does, so they are refused rather than mapped."""

REASON = f"expected one of {', '.join(SPELLINGS)}"


class PrecisionError(ValueError):
    """A precision outside :data:`SPELLINGS`; ``reason`` is the text after ``key=value:``."""

    def __init__(self, key: str, value: object) -> None:
        self.key, self.value, self.reason = key, value, REASON
        super().__init__(f"{key}={value!r}: {REASON}")


def canonical_precision(value: object, *, key: str = "trainer.precision") -> str:
    """'fp32' | 'bf16' | 'fp16' | 'fp8' for an accepted spelling, else :class:`PrecisionError`
    naming ``key``."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        name = SPELLINGS.get(str(value).strip().lower())
        if name is not None:
            return name
    raise PrecisionError(key, value)


def precision_spelling(value: object) -> str:
    """The run config's loader hook for ``trainer.precision``: the spelling as a string (YAML's
    ``32`` is '32'), refused here, with the file, when it is not one of :data:`SPELLINGS`."""
    canonical_precision(value)
    return str(value)
