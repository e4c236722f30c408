"""Typed run configuration in NeMo's YAML layout (trainer / exp_manager / model.{data,optim}).

Each section is a ``kw_only`` dataclass that validates its own fields with ``ValueError``
naming the dotted key and value; ``RunConfig.validate()`` adds the cross-field checks (heads %
TP, layers % PP, batch divisibility, sequence length, FP8 needs TE and a GPU) so a bad layout
fails before any process group starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from megatron_optiml.config.precision import canonical_precision, precision_spelling
from megatron_optiml.config.yaml_loader import PARSE

if TYPE_CHECKING:
    from megatron_optiml.parallel.layout import ParallelLayout


def _require(cond: bool, key: str, value, why: str) -> None:
    if not cond:
        raise ValueError(f"{key}={value!r}: {why}")


@dataclass(kw_only=True)
class TrainerConfig:
    """``trainer:`` -- devices, length of training and schedule of validation/logging."""

    devices: int = 1
    """Processes (GPUs, or CPU gloo ranks) per node."""
    num_nodes: int = 1
    """Nodes in the job."""
    accelerator: Literal["auto", "gpu", "cpu"] = "auto"
    """'auto' uses CUDA when present, else the CPU backend; 'cpu' stays on the CPU backend (gloo)
    also on a node with GPUs; 'gpu' fails up front without CUDA."""
    precision: str = field(default="bf16", metadata={PARSE: precision_spelling})
    """'32' (fp32), 'bf16' (BF16 params, FP32 main grads/optimizer), 'fp8' (BF16 + TE FP8 GEMMs);
    NeMo/Lightning spellings ('bf16-mixed', '32-true', ...) per ``config/precision.py``."""
    max_steps: int = 4000
    """Optimizer steps (one step = one global batch)."""
    val_check_interval: int = 200
    """Steps between validation runs (0 = never)."""
    limit_val_batches: int = 8
    """Global batches per validation split and benchmark."""
    log_every_n_steps: int = 1
    """Steps between metric log lines (JSONL / TensorBoard / progress bar)."""
    gradient_clip_val: float = 1.0
    """Global gradient-norm clip (0 = off)."""
    nan_policy: Literal["stop", "skip"] = "stop"
    """On a NaN/inf loss or grad norm: stop the run, or skip that update."""
    preemption_exit_code: int = 3
    """Exit code after a SIGTERM/SIGUSR1 checkpoint; the sbatch requeues on it."""

    def validate(self) -> None:
        _require(self.devices >= 1, "trainer.devices", self.devices, "must be >= 1")
        _require(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "must be >= 1")
        _require(
            self.accelerator in ("auto", "gpu", "cpu"),
            "trainer.accelerator",
            self.accelerator,
            "expected auto, gpu or cpu",
        )
        canonical_precision(self.precision)
        _require(self.max_steps >= 1, "trainer.max_steps", self.max_steps, "must be >= 1")
        _require(
            self.val_check_interval >= 0,
            "trainer.val_check_interval",
            self.val_check_interval,
            "must be >= 0",
        )
        _require(
            self.limit_val_batches >= 1,
            "trainer.limit_val_batches",
            self.limit_val_batches,
            "must be >= 1",
        )
        _require(
            self.log_every_n_steps >= 1,
            "trainer.log_every_n_steps",
            self.log_every_n_steps,
            "must be >= 1",
        )
        _require(
            self.gradient_clip_val >= 0,
            "trainer.gradient_clip_val",
            self.gradient_clip_val,
            "must be >= 0",
        )
        _require(
            self.nan_policy in ("stop", "skip"),
            "trainer.nan_policy",
            self.nan_policy,
            "expected stop or skip",
        )

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def canonical_precision(self) -> str:
        """``precision`` as 'fp32' | 'bf16' | 'fp16' | 'fp8' (config/precision.py)."""
        return canonical_precision(self.precision)

    @property
    def bf16(self) -> bool:
        """BF16 parameters (bf16, and fp8 whose non-FP8 math is BF16)."""
        return self.canonical_precision in ("bf16", "fp8")

    @property
    def fp16(self) -> bool:
        return self.canonical_precision == "fp16"

    @property
    def fp8(self) -> bool:
        return self.canonical_precision == "fp8"


@dataclass(kw_only=True)
class CheckpointCallbackParams:
    """``exp_manager.checkpoint_callback_params:``"""

    every_n_train_steps: int = 500
    """Save a checkpoint every N steps (and always at the end)."""
    save_last: bool = True
    """Save after the last step."""


@dataclass(kw_only=True)
class ExpManagerConfig:
    """``exp_manager:`` -- where logs and checkpoints go, and resume behaviour."""

    explicit_log_dir: str | None = None
    """Run folder; default ``<exp_dir>/<name>``."""
    exp_dir: str = "runs"
    """Parent folder of run folders."""
    name: str = "optiml"
    """Run name."""
    create_tensorboard_logger: bool = True
    """Write TensorBoard event files under ``<run>/tensorboard``."""
    resume_if_exists: bool = True
    """Resume from ``<run>/checkpoints`` when it holds a complete checkpoint."""
    checkpoint_callback_params: CheckpointCallbackParams = field(
        default_factory=CheckpointCallbackParams
    )
    """Checkpoint schedule."""

    def validate(self) -> None:
        _require(
            self.checkpoint_callback_params.every_n_train_steps >= 1,
            "exp_manager.checkpoint_callback_params.every_n_train_steps",
            self.checkpoint_callback_params.every_n_train_steps,
            "must be >= 1",
        )

    @property
    def run_dir(self) -> str:
        import os

        return self.explicit_log_dir or os.path.join(self.exp_dir, self.name)


@dataclass(kw_only=True)
class DataConfig:
    """``model.data:`` -- the packed, blended instruction data written by data_prep."""

    blend_path: str = ""
    """data_prep's blend.json (per-task indexed datasets and their weights per split)."""
    seq_length: int = 2048
    """Packed sequence length in tokens (2 to the model's 2048 positions)."""
    validation_split: str = "validation"
    """Split of blend.json used for validation loss (per benchmark)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    path_to_cache: str | None = None
    """Folder for Megatron's blended-dataset index cache (default: beside blend.json)."""

    def validate(self) -> None:
        _require(
            bool(self.blend_path),
            "model.data.blend_path",
            self.blend_path,
            "must name data_prep's blend.json",
        )
        _require(self.num_workers >= 0, "model.data.num_workers", self.num_workers, "must be >= 0")


@dataclass(kw_only=True)
class SchedConfig:
    """``model.optim.sched:`` -- LR schedule (OPT-IML: linear warmup, linear decay to 0)."""

    name: Literal["WarmupAnnealing", "linear", "cosine", "constant"] = "WarmupAnnealing"
    """'WarmupAnnealing'/'linear': linear warmup then linear decay; 'cosine'; 'constant'."""
    warmup_steps: int = 60
    """Linear warmup steps."""
    min_lr: float = 0.0
    """LR at the end of decay."""

    def validate(self) -> None:
        _require(
            self.name in ("WarmupAnnealing", "linear", "cosine", "constant"),
            "model.optim.sched.name",
            self.name,
            "expected WarmupAnnealing, linear, cosine or constant",
        )
        _require(
            self.warmup_steps >= 0,
            "model.optim.sched.warmup_steps",
            self.warmup_steps,
            "must be >= 0",
        )
        _require(self.min_lr >= 0, "model.optim.sched.min_lr", self.min_lr, "must be >= 0")


@dataclass(kw_only=True)
class OptimConfig:
    """``model.optim:`` -- Adam with fp32 states (paper: betas 0.9/0.95, LR 5e-5)."""

    name: Literal["fused_adam", "distributed_fused_adam", "adam"] = "distributed_fused_adam"
    """'distributed_fused_adam' shards optimizer states over DP (Megatron's distributed optimizer)."""
    lr: float = 5e-5
    """Peak learning rate."""
    weight_decay: float = 0.1
    """Decoupled weight decay (OPT's 0.1; not stated in the OPT-IML paper)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    sched: SchedConfig = field(default_factory=SchedConfig)
    """LR schedule."""

    def validate(self) -> None:
        _require(
            self.name in ("fused_adam", "distributed_fused_adam", "adam"),
            "model.optim.name",
            self.name,
            "expected fused_adam, distributed_fused_adam or adam",
        )
        _require(self.lr > 0, "model.optim.lr", self.lr, "must be > 0")
        _require(
            self.weight_decay >= 0, "model.optim.weight_decay", self.weight_decay, "must be >= 0"
        )
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "model.optim.betas",
            self.betas,
            "expected two values in [0, 1)",
        )
        self.sched.validate()

    @property
    def use_distributed_optimizer(self) -> bool:
        return self.name == "distributed_fused_adam"


@dataclass(kw_only=True)
class ModelConfig:
    """``model:`` -- OPT flavor, parallel layout, batch sizes, regularisation, data and optim."""

    flavor: str = "opt-debug"
    """OPT shape from the flavors table (opt-debug, opt-125m ... opt-175b)."""
    restore_from_path: str | None = None
    """Start from these weights: a Megatron checkpoint root (e.g. converted from HF)."""
    transformer_impl: Literal["local", "transformer_engine", "auto"] = "auto"
    """Layer spec: 'transformer_engine' on GPUs with TE, 'local' elsewhere; 'auto' picks."""
    tensor_model_parallel_size: int = 1
    """TP degree (within a node)."""
    pipeline_model_parallel_size: int = 1
    """PP degree."""
    virtual_pipeline_model_parallel_size: int | None = None
    """Interleaved 1F1B model chunks per pipeline rank (None = plain 1F1B)."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (needs TP > 1)."""
    micro_batch_size: int = 1
    """Sequences per micro-batch per DP rank."""
    global_batch_size: int = 8
    """Sequences per optimizer step (micro x DP x accumulation)."""
    seed: int = 1234
    """Seed for weights (when not restored), dropout and data order."""
    hidden_dropout: float = 0.1
    """Dropout on hidden states and embeddings (OPT-IML: 0.1 incl. embeddings)."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities (not stated by the paper; OPT used 0.1)."""
    activations_checkpoint_granularity: Literal["selective", "full"] | None = None
    """Activation recompute: 'selective' (attention core) or 'full' (whole layers)."""
    activations_checkpoint_method: Literal["uniform", "block"] = "uniform"
    """How full recompute groups layers."""
    activations_checkpoint_num_layers: int = 1
    """Layers per recompute group (full)."""
    answer_only_loss: bool = True
    """Loss on target tokens only (OPT-IML's label loss); always on here."""
    fp8_recipe: Literal["delayed", "tensorwise", "blockwise", "mxfp8"] = "delayed"
    """With ``trainer.precision=fp8``: TE's scaling recipe (Megatron-Core ``fp8_recipe``):
    delayed (amax history), tensorwise (current scaling), blockwise (Hopper), mxfp8 (Blackwell)."""
    fp8_amax_history_len: int = 1
    """Delayed scaling: amax history length (Megatron-LM's default 1; NeMo 1 used 1024)."""
    fp8_amax_compute_algo: Literal["most_recent", "max"] = "most_recent"
    """Delayed scaling: scale from the most recent amax or the max over the history."""
    data: DataConfig = field(default_factory=DataConfig)
    """``model.data``."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """``model.optim``."""

    def validate(self) -> None:
        from megatron_optiml.models.opt import get_flavor

        get_flavor(self.flavor)
        # Parallel sizes, batch and sequence shape: the layout rules in RunConfig.validate().
        _require(
            self.fp8_amax_history_len >= 1,
            "model.fp8_amax_history_len",
            self.fp8_amax_history_len,
            "must be >= 1",
        )
        for key in ("hidden_dropout", "attention_dropout"):
            _require(
                0 <= getattr(self, key) < 1, f"model.{key}", getattr(self, key), "must be in [0, 1)"
            )
        _require(
            self.answer_only_loss,
            "model.answer_only_loss",
            self.answer_only_loss,
            "OPT-IML trains with label-only loss; plain LM text is a blend source with an empty prompt",
        )
        self.data.validate()
        self.optim.validate()


@dataclass(kw_only=True)
class RunConfig:
    """The whole run: ``name``, ``trainer``, ``exp_manager``, ``model``."""

    name: str = "optiml"
    """Run name (shown in logs)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """``trainer:``"""
    exp_manager: ExpManagerConfig = field(default_factory=ExpManagerConfig)
    """``exp_manager:``"""
    model: ModelConfig = field(default_factory=ModelConfig)
    """``model:``"""

    def validate(
        self, *, cuda_available: bool | None = None, have_te: bool | None = None
    ) -> RunConfig:
        """Every check that can fail before a process group starts. Returns self."""
        from megatron_optiml.models.opt import check_supported, get_flavor
        from megatron_optiml.parallel.device import resolve_accelerator
        from megatron_optiml.utils.optional import have_transformer_engine

        self.trainer.validate()
        self.exp_manager.validate()
        self.model.validate()
        m, t = self.model, self.trainer
        arch = get_flavor(m.flavor)
        try:
            check_supported(arch)
        except NotImplementedError as e:
            raise ValueError(f"model.flavor={m.flavor!r}: {e}") from None
        self._check_layout(arch)
        # The device the run will use ('gpu' without CUDA fails here); accelerator=cpu on a GPU
        # node runs on the CPU backend, so the GPU-only features below are refused there too.
        cuda = resolve_accelerator(t.accelerator, cuda_available=cuda_available) == "cuda"
        te = have_transformer_engine() if have_te is None else have_te
        if t.fp8:
            _require(
                cuda,
                "trainer.precision",
                "fp8",
                "FP8 needs a GPU (Hopper or newer); none is available",
            )
            _require(
                te,
                "trainer.precision",
                "fp8",
                "FP8 needs NVIDIA Transformer Engine: pip install -e .[gpu]",
            )
            _require(
                m.transformer_impl != "local",
                "model.transformer_impl",
                m.transformer_impl,
                "FP8 needs the Transformer Engine layer spec",
            )
        if m.transformer_impl == "transformer_engine":
            _require(
                te and cuda,
                "model.transformer_impl",
                "transformer_engine",
                "needs Transformer Engine and a GPU",
            )
        _require(
            m.optim.sched.warmup_steps < t.max_steps,
            "model.optim.sched.warmup_steps",
            m.optim.sched.warmup_steps,
            f"must be below trainer.max_steps={t.max_steps}",
        )
        if t.fp16:
            raise ValueError(
                f"trainer.precision={t.precision!r}: fp16 with dynamic loss scaling is not wired in "
                "this trainer; use bf16 (the paper's fp16 run is the one departure here)"
            )
        return self

    def layout(self) -> ParallelLayout:
        """The run's parallel layout (sizes, batch and sequence shape, devices)."""
        from megatron_optiml.parallel.layout import ParallelLayout

        m, t = self.model, self.trainer
        return ParallelLayout(
            tp=m.tensor_model_parallel_size,
            pp=m.pipeline_model_parallel_size,
            vp=m.virtual_pipeline_model_parallel_size,
            sequence_parallel=m.sequence_parallel,
            micro_batch_size=m.micro_batch_size,
            global_batch_size=m.global_batch_size,
            seq_length=m.data.seq_length,
            num_nodes=t.num_nodes,
            devices_per_node=t.devices,
        )

    def _check_layout(self, arch) -> None:
        """The shared layout rules (megatron_optiml/parallel/layout.py), errors in our keys."""
        from megatron_optiml.parallel.layout import LayoutError, check_layout

        m, t = self.model, self.trainer
        keys = {
            "tp": ("model.tensor_model_parallel_size", m.tensor_model_parallel_size),
            "pp": ("model.pipeline_model_parallel_size", m.pipeline_model_parallel_size),
            "vp": (
                "model.virtual_pipeline_model_parallel_size",
                m.virtual_pipeline_model_parallel_size,
            ),
            "sequence_parallel": ("model.sequence_parallel", m.sequence_parallel),
            "micro_batch_size": ("model.micro_batch_size", m.micro_batch_size),
            "global_batch_size": ("model.global_batch_size", m.global_batch_size),
            "seq_length": ("model.data.seq_length", m.data.seq_length),
            "world": ("trainer.devices", t.devices),
        }
        try:
            check_layout(self.layout(), arch, model=m.flavor)
        except LayoutError as e:
            key, value = keys[e.role]
            raise ValueError(f"{key}={value!r}: {e.reason}") from None

    @property
    def data_parallel_size(self) -> int:
        return self.layout().data_parallel_size

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per rank per optimizer step."""
        return self.layout().num_microbatches

    def resolved_transformer_impl(self) -> str:
        """``model.transformer_impl``, with 'auto' = TE when the run is on a GPU and TE loads."""
        if self.model.transformer_impl != "auto":
            return self.model.transformer_impl
        from megatron_optiml.parallel.device import resolve_accelerator
        from megatron_optiml.utils.optional import have_transformer_engine

        on_gpu = resolve_accelerator(self.trainer.accelerator) == "cuda"
        return "transformer_engine" if on_gpu and have_transformer_engine() else "local"
