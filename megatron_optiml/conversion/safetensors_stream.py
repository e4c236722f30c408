"""Safetensors files written tensor by tensor from a plan, byte-identical to ``save_file``.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON header
(``__metadata__`` first, then each tensor's dtype, shape and ``data_offsets`` in file order,
padded with spaces to a multiple of 8) and the tensors' raw bytes. ``safetensors`` orders the
tensors by dtype (its ``Dtype`` enum, widest first) then by name. Given every tensor's name,
shape and dtype up front (the plan), :class:`SafetensorsFileWriter` writes the header first and
each tensor at its offset when it arrives, in any order; the caller frees it right after, so
memory is the caller's current tensors, never a whole file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

# safetensors' ``Dtype`` enum in declaration order (the Rust writer sorts by it, descending);
# ``test_streamed_file_matches_save_file`` checks the order against the library.
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int16: "I16",
    torch.uint16: "U16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.uint32: "U32",
    torch.float32: "F32",
    torch.complex64: "C64",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.uint64: "U64",
}
_DTYPE_RANK: dict[torch.dtype, int] = {d: r for r, d in enumerate(_DTYPE_NAMES)}
_HEADER_ALIGN = 8


@dataclass(frozen=True)
class TensorSpec:
    """What the plan knows of a tensor before it exists."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorSpec:
        return cls(tuple(tensor.shape), tensor.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _dtype_name(name: str, dtype: torch.dtype) -> str:
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"tensor {name!r}: dtype {dtype} has no safetensors name")
    return _DTYPE_NAMES[dtype]


def data_offsets(specs: Mapping[str, TensorSpec]) -> dict[str, tuple[int, int]]:
    """name -> (begin, end) in the data section, in file order (as ``safetensors`` lays out)."""
    for name, spec in specs.items():
        _dtype_name(name, spec.dtype)
    order = sorted(specs, key=lambda n: (-_DTYPE_RANK[specs[n].dtype], n))
    out: dict[str, tuple[int, int]] = {}
    begin = 0
    for name in order:
        end = begin + specs[name].nbytes
        out[name] = (begin, end)
        begin = end
    return out


def header_bytes(
    specs: Mapping[str, TensorSpec], metadata: Mapping[str, str] | None = None
) -> bytes:
    """The 8-byte length and the padded JSON header of a file holding ``specs``."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, (begin, end) in data_offsets(specs).items():
        spec = specs[name]
        header[name] = {
            "dtype": _DTYPE_NAMES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [begin, end],
        }
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % _HEADER_ALIGN)
    return struct.pack("<Q", len(text)) + text


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (for a contiguous CPU tensor)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data.nbytes:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


class SafetensorsFileWriter:
    """One safetensors file of a known set of tensors: the header is written on creation (the
    file is sized at once), :meth:`write` puts each tensor at its offset, :meth:`close` refuses
    an incomplete file."""

    def __init__(
        self,
        path: str | os.PathLike,
        specs: Mapping[str, TensorSpec],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.specs = dict(specs)
        header = header_bytes(self.specs, metadata)
        self._data_start = len(header)
        self._offsets = data_offsets(self.specs)
        self._written: set[str] = set()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _pwrite_all(self._fd, memoryview(header), 0)
        os.ftruncate(self._fd, self._data_start + sum(s.nbytes for s in self.specs.values()))

    @property
    def missing(self) -> list[str]:
        return [n for n in self.specs if n not in self._written]

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one planned tensor; refuses (naming it) a tensor off the plan, of another
        shape or dtype, or written before."""
        if name not in self.specs:
            raise KeyError(f"tensor {name!r} is not planned for {self.path.name}")
        want, got = self.specs[name], TensorSpec.of(tensor)
        if got != want:
            raise ValueError(
                f"tensor {name!r}: shape {got.shape} dtype {got.dtype} does not match the "
                f"planned shape {want.shape} dtype {want.dtype}"
            )
        if name in self._written:
            raise ValueError(f"tensor {name!r} written twice")
        _pwrite_all(self._fd, _raw_bytes(tensor), self._data_start + self._offsets[name][0])
        self._written.add(name)

    def close(self) -> None:
        missing = self.missing
        if missing:
            raise ValueError(
                f"{self.path.name}: tensors never written: {missing[:5]} (of {len(missing)})"
            )
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def plan_shards(
    specs: Mapping[str, TensorSpec], max_shard_bytes: int
) -> list[dict[str, TensorSpec]]:
    """Split tensors, in the given order, into shards of at most ``max_shard_bytes`` (a tensor
    larger than that gets a shard of its own); at least one (possibly empty) shard."""
    shards: list[dict[str, TensorSpec]] = [{}]
    size = 0
    for name, spec in specs.items():
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = spec
        size += spec.nbytes
    return shards


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a file's header, after checking that the file holds every
    byte its header promises (a truncated copy fails here, naming the file, rather than deep
    inside the loader with "incomplete metadata").
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ValueError(
                f"{path}: truncated safetensors file ({size} bytes; its header alone needs "
                f"{8 + n}): copy or export it again"
            )
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if 8 + n + end > size:
        raise ValueError(
            f"{path}: truncated safetensors file ({size} bytes; its header lists "
            f"{8 + n + end}): copy or export it again"
        )
    return {name: tuple(info["shape"]) for name, info in header.items()}
