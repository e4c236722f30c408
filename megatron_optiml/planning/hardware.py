"""GPUs and cluster shapes the planner sizes a run for: memory, peak throughput, links."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GPUSpec:
    """One accelerator model's datasheet numbers (dense, no sparsity)."""

    name: str
    """Table key, e.g. 'h100-80gb'."""
    memory_gib: float
    """Device memory the driver reports, GiB (H100 80GB shows 81,559 MiB = 79.6 GiB)."""
    peak_bf16_tflops: float
    """Dense BF16/FP16 tensor-core peak, TFLOP/s."""
    peak_fp8_tflops: float | None = None
    """Dense FP8 tensor-core peak, TFLOP/s; None where the GPU has no FP8 (A100)."""
    peak_tf32_tflops: float | None = None
    """Dense TF32 peak, TFLOP/s, used for precision='fp32' (Megatron enables TF32 matmuls)."""
    intra_node_bandwidth_gbps: float | None = None
    """NVLink bandwidth per GPU and direction, GB/s (informational)."""


# Datasheet numbers, dense (NVIDIA H100 / H200 / A100 SXM datasheets).
KNOWN_GPUS: dict[str, GPUSpec] = {
    "h100-80gb": GPUSpec(
        name="h100-80gb",
        memory_gib=79.6,
        peak_bf16_tflops=989.0,
        peak_fp8_tflops=1979.0,
        peak_tf32_tflops=494.5,
        intra_node_bandwidth_gbps=450.0,
    ),
    "h200-141gb": GPUSpec(
        name="h200-141gb",
        memory_gib=139.8,
        peak_bf16_tflops=989.0,
        peak_fp8_tflops=1979.0,
        peak_tf32_tflops=494.5,
        intra_node_bandwidth_gbps=450.0,
    ),
    "a100-80gb": GPUSpec(
        name="a100-80gb",
        memory_gib=80.0,
        peak_bf16_tflops=312.0,
        peak_tf32_tflops=156.0,
        intra_node_bandwidth_gbps=300.0,
    ),
    "a100-40gb": GPUSpec(
        name="a100-40gb",
        memory_gib=40.0,
        peak_bf16_tflops=312.0,
        peak_tf32_tflops=156.0,
        intra_node_bandwidth_gbps=300.0,
    ),
}


def get_gpu(name: str) -> GPUSpec:
    try:
        return KNOWN_GPUS[name.lower()]
    except KeyError:
        raise ValueError(f"gpu={name!r} is not known; known: {', '.join(KNOWN_GPUS)}") from None


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """A homogeneous Slurm allocation: num_nodes nodes of gpus_per_node identical GPUs."""

    gpu: GPUSpec
    """The accelerator; see :data:`KNOWN_GPUS` and :meth:`from_gpu`."""
    num_nodes: int = 1
    """Nodes in the allocation."""
    gpus_per_node: int = 8
    """GPUs per node (8 on DGX/HGX H100 and A100)."""
    inter_node_bandwidth_gbps: float | None = None
    """Network bandwidth per GPU between nodes, GB/s (e.g. 50 for 400 Gb/s InfiniBand per
    GPU); when given, the plan reports the data-parallel gradient reduction time."""

    def __post_init__(self) -> None:
        for field in ("num_nodes", "gpus_per_node"):
            value = getattr(self, field)
            if value < 1:
                raise ValueError(f"{field}={value} must be >= 1")
        if self.inter_node_bandwidth_gbps is not None and self.inter_node_bandwidth_gbps <= 0:
            raise ValueError(
                f"inter_node_bandwidth_gbps={self.inter_node_bandwidth_gbps} must be > 0"
            )

    @classmethod
    def from_gpu(cls, name: str, **fields: object) -> ClusterSpec:
        """A cluster of a known GPU, e.g. ``ClusterSpec.from_gpu('h100-80gb', num_nodes=8)``."""
        return cls(gpu=get_gpu(name), **fields)  # type: ignore[arg-type]

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def memory_gib(self) -> float:
        return self.gpu.memory_gib

    def peak_tflops(self, precision: str) -> float:
        """Dense peak for the matmuls of ``precision`` ('bf16'|'fp16'|'fp8'|'fp32')."""
        if precision == "fp8":
            if self.gpu.peak_fp8_tflops is None:
                raise ValueError(f"precision='fp8' but gpu={self.gpu.name!r} has no FP8 units")
            return self.gpu.peak_fp8_tflops
        if precision == "fp32":
            return self.gpu.peak_tf32_tflops or self.gpu.peak_bf16_tflops / 2
        return self.gpu.peak_bf16_tflops
