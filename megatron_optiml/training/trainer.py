"""The instruction-tuning loop on Megatron-Core: DDP, Megatron optimizer, pipeline schedules,
dist_checkpointing, packed label-only data; the same code on GPUs and on CPU/gloo."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from megatron.core import parallel_state as ps
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module

from megatron_optiml.config import RunConfig, config_to_dict
from megatron_optiml.models.opt import build_opt_model, build_transformer_config, get_flavor
from megatron_optiml.parallel import destroy_distributed, init_distributed
from megatron_optiml.training import checkpointing as ckpt
from megatron_optiml.training.step import forward_step, reduce_loss_reports
from megatron_optiml.utils.process import RunFolderLocked, RunLock

logger = logging.getLogger(__name__)

# Test hook: exit hard (as a kill would) right after this optimizer step.
_FAULT_ENV = "OPTIML_FAULT_AFTER_STEP"


@dataclass
class TrainResult:
    """What a run did, for callers and tests."""

    iteration: int = 0
    consumed_samples: int = 0
    losses: dict[int, float] = field(default_factory=dict)
    val_losses: dict[int, dict[str, float]] = field(default_factory=dict)
    preempted: bool = False
    stopped_on_nan: bool = False
    last_checkpoint: str | None = None


def _comm_device() -> torch.device:
    """Where small collective tensors live: NCCL needs them on the GPU, gloo on the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _is_rank0() -> bool:
    return torch.distributed.get_rank() == 0


class _Preemption:
    """SIGTERM (Slurm preemption / scancel) and SIGUSR1 (``--signal=B:USR1@N``) set a flag; the
    loop checks it after each step on every rank, saves and exits."""

    def __init__(self) -> None:
        self.flag = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        logger.warning("received signal %d: will checkpoint and exit after this step", signum)
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def any_rank(self) -> bool:
        t = torch.tensor([1 if self.flag else 0], dtype=torch.int32, device=_comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())


class Trainer:
    """Build everything from a validated :class:`RunConfig`, then :meth:`fit`."""

    def __init__(self, cfg: RunConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.arch = get_flavor(cfg.model.flavor)
        self.run_dir = Path(cfg.exp_manager.run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.transformer_impl = cfg.resolved_transformer_impl()
        self._run_lock: RunLock | None = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        m, t = self.cfg.model, self.cfg.trainer
        init_distributed(
            tensor_model_parallel_size=m.tensor_model_parallel_size,
            pipeline_model_parallel_size=m.pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=m.virtual_pipeline_model_parallel_size,
            seed=m.seed,
        )
        if torch.distributed.get_world_size() != t.world_size:
            raise ValueError(
                f"trainer.devices x trainer.num_nodes = {t.world_size} but the launcher started "
                f"{torch.distributed.get_world_size()} processes"
            )
        self._lock_run_dir()
        self.dp_size = ps.get_data_parallel_world_size()
        self.dp_rank = ps.get_data_parallel_rank()
        self.num_microbatches = m.global_batch_size // (m.micro_batch_size * self.dp_size)
        self._build_model()
        self._build_optimizer()
        self.iteration, self.consumed_samples = 0, 0
        self._maybe_resume()
        self._build_data()
        ckpt.prepare_checkpoint_writer()
        if _is_rank0():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(
                json.dumps(config_to_dict(self.cfg), indent=2, default=str)
            )

    def _lock_run_dir(self) -> None:
        """One live run per folder: rank 0 takes the folder's lock (a relaunch into a folder
        whose run is still alive is refused; a killed run's lock is taken over) and every rank
        learns the outcome, so all of them stop with the same message."""
        error: Exception | None = None
        if _is_rank0():
            lock = RunLock(self.run_dir)
            try:
                lock.acquire()
                self._run_lock = lock
            except (RunFolderLocked, OSError) as e:  # OSError: e.g. a full or read-only disk
                error = e
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise box[0]

    def _transformer_config(self):
        m, t = self.cfg.model, self.cfg.trainer
        dtype = torch.bfloat16 if t.bf16 else torch.float32
        extra: dict[str, Any] = {}
        if m.activations_checkpoint_granularity:
            extra["recompute_granularity"] = m.activations_checkpoint_granularity
            if m.activations_checkpoint_granularity == "full":
                extra["recompute_method"] = m.activations_checkpoint_method
                extra["recompute_num_layers"] = m.activations_checkpoint_num_layers
        if t.fp8:
            extra.update(
                fp8="hybrid",  # E4M3 forward, E5M2 gradients
                fp8_recipe=m.fp8_recipe,
                fp8_amax_history_len=m.fp8_amax_history_len,
                fp8_amax_compute_algo=m.fp8_amax_compute_algo,
            )
        if torch.cuda.is_available():
            # Fused kernels where the device has them: bias-dropout-add is a TorchScript fusion;
            # the masked softmax kernel is a compiled extension (Megatron-LM/apex build).
            import importlib.util

            extra["bias_dropout_fusion"] = True
            extra["masked_softmax_fusion"] = (
                importlib.util.find_spec("scaled_upper_triang_masked_softmax_cuda") is not None
            )
        return build_transformer_config(
            self.arch,
            tensor_model_parallel_size=m.tensor_model_parallel_size,
            pipeline_model_parallel_size=m.pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=m.virtual_pipeline_model_parallel_size,
            sequence_parallel=m.sequence_parallel,
            hidden_dropout=m.hidden_dropout,
            attention_dropout=m.attention_dropout,
            bf16=t.bf16,
            params_dtype=dtype,
            pipeline_dtype=dtype,
            calculate_per_token_loss=True,
            **extra,
        )

    def _build_model(self) -> None:
        m = self.cfg.model
        self.config = self._transformer_config()
        vpp = m.virtual_pipeline_model_parallel_size
        chunks = []
        for vp in range(vpp or 1):
            stage = vp if vpp else None
            chunk = build_opt_model(
                self.arch,
                self.config,
                transformer_impl=self.transformer_impl,
                pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
                post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
                vp_stage=stage,
            )
            if torch.cuda.is_available():
                chunk.cuda(torch.cuda.current_device())
            chunks.append(chunk)
        self.base_models = chunks
        if m.restore_from_path:
            self._restore_pretrained(m.restore_from_path)
        if self.cfg.trainer.bf16:
            chunks = [Float16Module(self.config, c) for c in chunks]
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=m.optim.use_distributed_optimizer,
        )
        self.model = [
            DistributedDataParallel(self.config, ddp_config, c, disable_bucketing=(i > 0))
            for i, c in enumerate(chunks)
        ]
        self.config.finalize_model_grads_func = finalize_model_grads
        self.config.no_sync_func = [c.no_sync for c in self.model]
        if len(self.model) == 1:
            self.config.no_sync_func = self.config.no_sync_func[0]
        n = sum(p.numel() for c in self.base_models for p in c.parameters())
        logger.info(
            "model %s (%s spec): %.1fM parameters on this rank",
            m.flavor,
            self.transformer_impl,
            n / 1e6,
        )

    def _restore_pretrained(self, path: str) -> None:
        """Initial weights from a Megatron checkpoint root (e.g. converted from HF), any layout."""
        if (
            ckpt.latest_iteration(self.ckpt_root) is not None
            and self.cfg.exp_manager.resume_if_exists
        ):
            return  # the run's own checkpoint wins on resume
        from megatron_optiml.checkpointing import load_model_checkpoint

        if len(self.base_models) != 1:
            raise ValueError(
                "model.restore_from_path with virtual pipeline stages is not supported"
            )
        load_model_checkpoint(path, self.base_models[0], arch=self.arch)
        logger.info("initial weights from %s", path)

    def _build_optimizer(self) -> None:
        m, t = self.cfg.model, self.cfg.trainer
        o = m.optim
        opt_config = OptimizerConfig(
            optimizer="adam",
            lr=o.lr,
            min_lr=o.sched.min_lr,
            weight_decay=o.weight_decay,
            adam_beta1=o.betas[0],
            adam_beta2=o.betas[1],
            adam_eps=o.eps,
            bf16=t.bf16,
            params_dtype=torch.bfloat16 if t.bf16 else torch.float32,
            use_distributed_optimizer=o.use_distributed_optimizer,
            clip_grad=t.gradient_clip_val,
        )
        self.optimizer = get_megatron_optimizer(opt_config, self.model)
        decay_style = {
            "WarmupAnnealing": "linear",
            "linear": "linear",
            "cosine": "cosine",
            "constant": "constant",
        }[o.sched.name]
        # Megatron-LM counts scheduler steps in samples; we count optimizer steps.
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=0.0,
            max_lr=o.lr,
            min_lr=o.sched.min_lr,
            lr_warmup_steps=o.sched.warmup_steps,
            lr_decay_steps=t.max_steps,
            lr_decay_style=decay_style,
            start_wd=o.weight_decay,
            end_wd=o.weight_decay,
            wd_incr_steps=t.max_steps,
            wd_incr_style="constant",
        )

    def _maybe_resume(self) -> None:
        if not self.cfg.exp_manager.resume_if_exists:
            return
        it = ckpt.latest_iteration(self.ckpt_root)
        if it is None:
            return
        state = ckpt.load_checkpoint(
            self.ckpt_root,
            it,
            model_chunks=self.base_models,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            use_distributed_optimizer=self.cfg.model.optim.use_distributed_optimizer,
        )
        self.iteration, self.consumed_samples = state["iteration"], state["consumed_samples"]

    # ---------------------------------------------------------------- data
    def _dataset_config(self, blend_per_split):
        from megatron_optiml.data import PackedInstructionDatasetConfig

        d = self.cfg.model.data
        cache = d.path_to_cache or str(Path(d.blend_path).resolve().parent / "cache")
        return PackedInstructionDatasetConfig(
            random_seed=self.cfg.model.seed,
            sequence_length=d.seq_length,
            blend_per_split=blend_per_split,
            path_to_cache=cache,
            tokenizer=None,
            mid_level_dataset_surplus=0.005,
        )

    def _build_data(self) -> None:
        from megatron_optiml.data import blend_per_split, build_packed_datasets, load_blend

        blends = load_blend(self.cfg.model.data.blend_path)
        if "train" not in blends:
            raise ValueError(f"{self.cfg.model.data.blend_path}: no 'train' split")
        train_packs = self.cfg.trainer.max_steps * self.cfg.model.global_batch_size
        per_split = blend_per_split({"train": blends["train"]})
        self.train_ds = build_packed_datasets(
            self._dataset_config(per_split), [train_packs, None, None]
        )[0]
        # Validation loss per benchmark: one packed dataset per benchmark of the split
        # (prefix basenames are "<benchmark>__<task>", see docs/architecture.md).
        self.val_sets: dict[str, Any] = {}
        vsplit = self.cfg.model.data.validation_split
        if vsplit in blends and self.cfg.trainer.val_check_interval:
            groups: dict[str, list[str]] = defaultdict(list)
            for prefix in blends[vsplit][0]:
                groups[Path(prefix).name.split("__", 1)[0]].append(prefix)
            for bench, prefixes in sorted(groups.items()):
                per = blend_per_split({"validation": (prefixes, [1.0] * len(prefixes))})
                self.val_sets[bench] = build_packed_datasets(
                    self._dataset_config(per), [None, None, None]
                )[1]

    def _loader(self, dataset, consumed: int, total: int):
        from megatron_optiml.data import PackedBatchSampler, collate_packed

        attention = "thd" if self.transformer_impl == "transformer_engine" else "local"
        sampler = PackedBatchSampler(
            total_samples=total,
            consumed_samples=consumed,
            micro_batch_size=self.cfg.model.micro_batch_size,
            data_parallel_rank=self.dp_rank,
            data_parallel_size=self.dp_size,
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=partial(collate_packed, attention=attention),
            num_workers=self.cfg.model.data.num_workers,
            # Its own generator: DataLoader draws a base seed per iterator, which would otherwise
            # consume the global RNG (dropout's stream) and break exact resume.
            generator=torch.Generator().manual_seed(self.cfg.model.seed),
        )

    def _data_iterator(self, loader):
        it = map(_to_device, loader) if torch.cuda.is_available() else iter(loader)
        if len(self.model) == 1:
            return it
        # Interleaved schedules pull micro-batches per model chunk; each chunk needs the same
        # micro-batch sequence, so every chunk reads its own copy of the stream.
        from itertools import tee

        return list(tee(it, len(self.model)))

    # ---------------------------------------------------------------- loop
    def _global_loss(self, reports) -> tuple[float, int]:
        """Sum of target-token losses and their count over the global batch (all ranks agree)."""
        v = reduce_loss_reports(reports).double().to(_comm_device())
        if not (
            ps.is_pipeline_last_stage(ignore_virtual=True)
            and ps.get_tensor_model_parallel_rank() == 0
        ):
            v = torch.zeros(2, dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(v)
        return float(v[0]), int(v[1])

    def _train_step(self, data_iterator) -> dict[str, float]:
        for c in self.model:
            c.zero_grad_buffer()
        self.optimizer.zero_grad()
        reports = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=data_iterator,
            model=self.model,
            num_microbatches=self.num_microbatches,
            seq_length=self.cfg.model.data.seq_length,
            micro_batch_size=self.cfg.model.micro_batch_size,
            forward_only=False,
        )
        loss_sum, tokens = self._global_loss(reports)
        loss = loss_sum / max(tokens, 1)
        if not math.isfinite(loss):
            return {"loss": loss, "tokens": tokens, "skipped": 1.0, "grad_norm": float("nan")}
        ok, grad_norm, _ = self.optimizer.step()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        if ok and math.isfinite(grad_norm):
            self.scheduler.step(increment=1)
        return {
            "loss": loss,
            "tokens": tokens,
            "skipped": 0.0 if ok else 1.0,
            "grad_norm": grad_norm,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (mean over target tokens) per benchmark and overall."""
        for c in self.model:
            c.eval()
        out, total = {}, [0.0, 0]
        gbs = self.cfg.model.global_batch_size
        try:
            chunk = self.cfg.model.micro_batch_size * self.dp_size
            for bench, ds in self.val_sets.items():
                # Every pack up to limit_val_batches global batches; the last DP chunk is
                # padded with zero-loss copies so small benchmarks are still evaluated.
                n = min(
                    math.ceil(len(ds) / chunk) * chunk, self.cfg.trainer.limit_val_batches * gbs
                )
                if n == 0:
                    continue
                it = self._data_iterator(self._loader(_ZeroLossPadded(ds, n), 0, n))
                steps = n // chunk  # micro-batches per rank
                s, k = 0.0, 0
                while steps > 0:
                    micro = min(self.num_microbatches, steps)
                    reports = get_forward_backward_func()(
                        forward_step_func=forward_step,
                        data_iterator=it,
                        model=self.model,
                        num_microbatches=micro,
                        seq_length=self.cfg.model.data.seq_length,
                        micro_batch_size=self.cfg.model.micro_batch_size,
                        forward_only=True,
                    )
                    ls, lt = self._global_loss(reports)
                    s, k = s + ls, k + lt
                    steps -= micro
                if k:
                    out[bench] = s / k
                    total = [total[0] + s, total[1] + k]
        finally:
            for c in self.model:
                c.train()
        if total[1]:
            out["all"] = total[0] / total[1]
        return out

    def save(self) -> str:
        path = ckpt.save_checkpoint(
            self.ckpt_root,
            self.iteration,
            model_chunks=self.base_models,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            arch=self.arch,
            consumed_samples=self.consumed_samples,
            use_distributed_optimizer=self.cfg.model.optim.use_distributed_optimizer,
            extra_meta={"flavor": self.cfg.model.flavor, "run": self.cfg.name},
        )
        return str(path)

    def fit(self) -> TrainResult:
        from megatron_optiml.training.logging import MetricsLogger

        t, m = self.cfg.trainer, self.cfg.model
        result = TrainResult(iteration=self.iteration, consumed_samples=self.consumed_samples)
        total = len(self.train_ds)
        loader = self._loader(self.train_ds, self.consumed_samples, total)
        data_iterator = self._data_iterator(loader)
        fault_after = int(os.environ.get(_FAULT_ENV, "0") or 0)
        every = self.cfg.exp_manager.checkpoint_callback_params.every_n_train_steps
        metrics = MetricsLogger(
            self.run_dir,
            enabled=_is_rank0(),
            tensorboard=self.cfg.exp_manager.create_tensorboard_logger,
            total_steps=t.max_steps,
            start_step=self.iteration,
        )
        flops_per_step = _step_flops(self.arch, m, self.cfg)
        with _Preemption() as preempt, metrics:
            if t.val_check_interval and self.val_sets and self.iteration == 0:
                val = self.evaluate()
                result.val_losses[0] = val
                metrics.log_validation(0, val)
            while self.iteration < t.max_steps:
                start = time.perf_counter()
                out = self._train_step(data_iterator)
                elapsed = time.perf_counter() - start
                self.iteration += 1
                self.consumed_samples += m.global_batch_size
                result.losses[self.iteration] = out["loss"]
                bad = not math.isfinite(out["loss"]) or not math.isfinite(out["grad_norm"])
                if bad:
                    logger.error(
                        "step %d: non-finite loss %.4g / grad norm %.4g (%s)",
                        self.iteration,
                        out["loss"],
                        out["grad_norm"],
                        "stopping" if t.nan_policy == "stop" else "update skipped",
                    )
                    if t.nan_policy == "stop":
                        result.stopped_on_nan = True
                        break
                if self.iteration % t.log_every_n_steps == 0 or self.iteration == t.max_steps:
                    metrics.log_step(
                        self.iteration,
                        loss=out["loss"],
                        lr=self.optimizer.param_groups[0]["lr"],
                        grad_norm=out["grad_norm"],
                        tokens=out["tokens"],
                        seq_tokens=m.global_batch_size * m.data.seq_length,
                        step_time=elapsed,
                        tflops=flops_per_step / elapsed / 1e12 / torch.distributed.get_world_size(),
                        skipped=out["skipped"],
                    )
                if (
                    t.val_check_interval
                    and self.val_sets
                    and self.iteration % t.val_check_interval == 0
                ):
                    val = self.evaluate()
                    result.val_losses[self.iteration] = val
                    metrics.log_validation(self.iteration, val)
                if self.iteration % every == 0 and self.iteration < t.max_steps:
                    result.last_checkpoint = self.save()
                if fault_after and self.iteration == fault_after:
                    logger.error("%s=%d: simulating a crash", _FAULT_ENV, fault_after)
                    # Stop multiprocessing helpers (dist_checkpointing's Manager) so the test
                    # leaves no orphans; nothing of the trainer's own state is flushed.
                    import multiprocessing.util

                    multiprocessing.util._exit_function()
                    os._exit(17)
                if preempt.any_rank():
                    result.last_checkpoint = self.save()
                    result.preempted = True
                    break
            if not result.preempted and not result.stopped_on_nan:
                if self.cfg.exp_manager.checkpoint_callback_params.save_last:
                    result.last_checkpoint = self.save()
        result.iteration, result.consumed_samples = self.iteration, self.consumed_samples
        return result

    def close(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None
        destroy_distributed()


class _ZeroLossPadded(torch.utils.data.Dataset):
    """``dataset`` extended to ``length`` samples with copies whose loss mask is all zero."""

    def __init__(self, dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if i < len(self.dataset):
            return self.dataset[i]
        sample = dict(self.dataset[i % len(self.dataset)])
        sample["loss_mask"] = sample["loss_mask"] * 0
        return sample


def _to_device(batch: dict) -> dict:
    """Move a collated micro-batch (tensors and THD ``PackedSeqParams``) to the current GPU."""
    import dataclasses as dc

    dev = torch.cuda.current_device()
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(dev, non_blocking=True)
        elif v is not None and dc.is_dataclass(v):
            out[k] = dc.replace(
                v,
                **{
                    f.name: getattr(v, f.name).to(dev, non_blocking=True)
                    for f in dc.fields(v)
                    if isinstance(getattr(v, f.name), torch.Tensor)
                },
            )
        else:
            out[k] = v
    return out


def _step_flops(arch, m, cfg) -> float:
    from megatron_optiml.planning.flops import step_flops

    return step_flops(
        arch,
        global_batch_size=m.global_batch_size,
        seq_length=m.data.seq_length,
        recompute=m.activations_checkpoint_granularity or "none",
    ).model


def run_training(cfg: RunConfig) -> TrainResult:
    """Set up, train, tear down. Exits the process with the preemption code when preempted."""
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        result = trainer.fit()
    finally:
        trainer.close()
    return result
