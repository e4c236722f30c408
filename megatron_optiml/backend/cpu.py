"""Runtime shim that lets stock Megatron-Core train on CPU with gloo when no GPU is present.

Megatron-Core assumes CUDA in a small number of places: it creates tensors with
``device="cuda"`` or ``device=torch.cuda.current_device()``, calls ``Tensor.cuda()``,
``torch.cuda.synchronize()`` and ``torch.cuda.current_device()``, asserts on
``Tensor.type()`` strings, and keeps its tensor-parallel RNG tracker on the CUDA generator.
Instead of re-implementing the ~14 Megatron functions that hard-code CUDA, this module patches
those few entry points at runtime, in-process, and only when CUDA is absent. With a GPU,
:func:`install` does nothing. No Megatron source file is edited.

Patch points: the names are :data:`PATCH_POINTS`; which ones a Megatron-Core line needs, and
the call sites (file:line) behind each, are in :mod:`megatron_optiml.backend.compat`
(``CPU_PATCH_POINTS``), the one place that knows about versions.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

logger = logging.getLogger(__name__)

# Every patch point this shim knows; compat.cpu_patch_points() says which the installed
# Megatron-Core needs (tests exercise each of those, so an upgrade shows what moved).
PATCH_POINTS = {
    "device": "TorchFunctionMode maps device='cuda'/int devices to cpu",
    "tensor_cuda": "Tensor.cuda() returns self",
    "tensor_type": "Tensor.type() reports torch.cuda.* type strings",
    "current_device": "torch.cuda.current_device() -> 0",
    "synchronize": "torch.cuda.synchronize() -> no-op",
    "rng": "CUDA RNG state calls use the CPU generator",
    "backward": "the mode is re-entered inside custom autograd Function.backward",
    "current_stream": "torch.cuda.current_stream() returns the CPU stream (no-op waits)",
    "multi_tensor_scale": "the no-TE/apex multi_tensor_scale fallback scales in one pass",
}

_INSTALLED = False
_MODE: _CudaToCpuMode | None = None
_LOCK = threading.Lock()
# Counts of patch-point hits, for tests and for tracing on upgrade.
HITS: Counter[str] = Counter()


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # Megatron passes torch.cuda.current_device() (an int) as a device.
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA devices to CPU in every torch call and answers ``Tensor.type()`` as CUDA."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Megatron asserts on the type *string* (e.g. 'torch.cuda.FloatTensor').
            HITS["tensor_type"] += 1
            name = func(*args)
            return name if ".cuda." in name else name.replace("torch.", "torch.cuda.", 1)
        if func is torch.Tensor.cuda:
            HITS["tensor_cuda"] += 1
            return args[0]
        device = kwargs.get("device")
        if device is not None and _is_cuda_device(device):
            HITS["device"] += 1
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            HITS["device"] += 1
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _current_device() -> int:
    HITS["current_device"] += 1
    return 0


def _synchronize(device=None) -> None:
    HITS["synchronize"] += 1


def _get_rng_state(device="cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
    HITS["rng"] += 1
    return torch.get_rng_state()


def _set_rng_state(new_state: torch.Tensor, device=-1, graph_safe: bool = False) -> None:
    HITS["rng"] += 1
    torch.set_rng_state(new_state)


def _manual_seed(seed: int) -> None:
    HITS["rng"] += 1
    # Not torch.manual_seed: it calls torch.cuda.manual_seed_all, which must stay untouched.
    torch.default_generator.manual_seed(int(seed))


def _current_stream(device=None) -> torch.cpu.Stream:
    HITS["current_stream"] += 1
    return torch.cpu.current_stream()


def _multi_tensor_scale(chunk_size, noop_flag, tensor_lists, scale) -> None:
    """``amp_C.multi_tensor_scale``'s fallback in one pass per tensor.

    Megatron-Core's ``local_multi_tensor_scale`` runs ``dst.copy_(src * scale)``: a temporary
    the size of ``src``, then a copy. Gradient clipping calls it with ``dst is src`` on every
    gradient (at opt-125m: 125M floats, ~0.18 s of a 9 s CPU step, one thread) and the BF16
    optimizer with scale 1.0 to copy main params to model params. ``torch.mul(..., out=dst)``
    writes the same values (a cast into ``dst``'s dtype included) without the temporary."""
    HITS["multi_tensor_scale"] += 1
    for src, dst in zip(tensor_lists[0], tensor_lists[1]):
        torch.mul(src, scale, out=dst)


def _patch_multi_tensor_scale() -> None:
    """Swap the fallback for :func:`_multi_tensor_scale` where Megatron-Core bound it (never
    a TE/apex kernel: modules that found one keep it)."""
    from megatron.core import utils as mcore_utils
    from megatron.core.optimizer import clip_grads, optimizer

    for module in (clip_grads, optimizer):
        if getattr(module, "multi_tensor_scale_impl", None) is mcore_utils.local_multi_tensor_scale:
            module.multi_tensor_scale_impl = _multi_tensor_scale


def _wrap_backward_apply(orig_apply):
    def apply(self, *args):
        if torch.overrides._get_current_function_mode_stack():
            return orig_apply(self, *args)
        HITS["backward"] += 1
        with _CudaToCpuMode():
            return orig_apply(self, *args)

    return apply


def cuda_available() -> bool:
    return torch.cuda.is_available()


def is_installed() -> bool:
    return _INSTALLED


def install(force: bool = False) -> bool:
    """Install the shim when CUDA is absent (or ``force``). Returns True when it is active.

    Idempotent and process-wide: call it once, before building Megatron models, in every rank.
    """
    global _INSTALLED, _MODE
    with _LOCK:
        if _INSTALLED:
            return True
        if cuda_available() and not force:
            return False
        from megatron.core.tensor_parallel import random as mcore_random

        from megatron_optiml.backend import compat

        compat.check_supported()
        points = compat.cpu_patch_points()

        torch.cuda.current_device = _current_device
        torch.cuda.synchronize = _synchronize
        torch.cuda.get_rng_state = _get_rng_state
        torch.cuda.set_rng_state = _set_rng_state
        torch.cuda.manual_seed = _manual_seed
        torch.cuda.random.get_rng_state = _get_rng_state
        torch.cuda.random.set_rng_state = _set_rng_state
        mcore_random._get_cuda_rng_state = _get_rng_state
        mcore_random._set_cuda_rng_state = _set_rng_state
        if "current_stream" in points:
            torch.cuda.current_stream = _current_stream
        if "multi_tensor_scale" in points:
            _patch_multi_tensor_scale()
        backward_cls = torch.autograd.function.BackwardCFunction
        backward_cls.apply = _wrap_backward_apply(backward_cls.apply)
        _MODE = _CudaToCpuMode()
        # Entered for the life of the process: every torch call in this thread goes through it
        # (~6 us per op, negligible next to real-size layers).
        _MODE.__enter__()
        _INSTALLED = True
        logger.info(
            "megatron_optiml CPU backend installed (no CUDA, megatron-core %s): %s",
            compat.MCORE_VERSION_STR,
            ", ".join(points),
        )
        return True
