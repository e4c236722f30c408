"""The instruction-tuning loop on Megatron-Core: DDP, Megatron optimizer, pipeline schedules,
dist_checkpointing, packed label-only data; the same code on GPUs and on CPU/gloo."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from megatron.core import parallel_state as ps
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_optiml.config import RunConfig, config_to_dict
from megatron_optiml.data.blend import seq_length_warning
from megatron_optiml.data.loading import (
    build_train_dataset,
    build_validation_datasets,
    make_loader,
    micro_batch_iterator,
)
from megatron_optiml.models.opt import get_flavor
from megatron_optiml.parallel import compute_device, destroy_distributed, init_distributed
from megatron_optiml.planning.flops import step_flops
from megatron_optiml.training import checkpointing as ckpt
from megatron_optiml.training.build import build_model, build_optimizer
from megatron_optiml.training.preemption import Preemption
from megatron_optiml.training.step import forward_step, global_loss_sum
from megatron_optiml.training.validation import validation_losses
from megatron_optiml.utils.process import RunFolderLocked, RunLock

logger = logging.getLogger(__name__)

StepCallback = Callable[[int], None]
"""Called on every rank with the number of the optimizer step just finished (1, 2, ...), after
that step's logging, validation and periodic checkpoint, before the preemption check (not after
a step that stops the run on a non-finite loss). E.g. telemetry, or the tests' simulated crash
(``megatron_optiml.testing.faults.exit_after_step``)."""


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


def _is_rank0() -> bool:
    return torch.distributed.get_rank() == 0


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
            accelerator=t.accelerator,
        )
        if torch.distributed.get_world_size() != t.world_size:
            raise ValueError(
                f"trainer.devices x trainer.num_nodes = {t.world_size} but the launcher started "
                f"{torch.distributed.get_world_size()} processes"
            )
        self._lock_run_dir()
        self.dp_size = ps.get_data_parallel_world_size()
        self.dp_rank = ps.get_data_parallel_rank()
        self.num_microbatches = self.cfg.num_microbatches
        self._build_model()
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

    def _build_model(self) -> None:
        m = self.cfg.model
        built = build_model(self.cfg, arch=self.arch, load_weights=self._restore_pretrained)
        self.config, self.base_models, self.model = built.config, built.chunks, built.model
        self.optimizer, self.scheduler = build_optimizer(self.cfg, self.model)
        n = sum(p.numel() for c in self.base_models for p in c.parameters())
        logger.info(
            "model %s (%s spec): %.1fM parameters on this rank",
            m.flavor,
            self.transformer_impl,
            n / 1e6,
        )

    def _restore_pretrained(self, chunks: list[torch.nn.Module]) -> None:
        """Initial weights from a Megatron checkpoint root (e.g. converted from HF), any layout."""
        path = self.cfg.model.restore_from_path
        if not path:
            return
        if (
            ckpt.latest_iteration(self.ckpt_root) is not None
            and self.cfg.exp_manager.resume_if_exists
        ):
            return  # the run's own checkpoint wins on resume
        from megatron_optiml.checkpointing import load_model_checkpoint

        if len(chunks) != 1:
            raise ValueError(
                "model.restore_from_path with virtual pipeline stages is not supported"
            )
        load_model_checkpoint(path, chunks[0], arch=self.arch)
        logger.info("initial weights from %s", path)

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
    def _build_data(self) -> None:
        d, seed = self.cfg.model.data, self.cfg.model.seed
        packs = self.cfg.trainer.max_steps * self.cfg.model.global_batch_size
        if _is_rank0():
            splits = ["train"] + [d.validation_split] * bool(self.cfg.trainer.val_check_interval)
            warning = seq_length_warning(d.blend_path, d.seq_length, splits)
            if warning is not None:
                logger.warning("%s", warning)
        self.train_ds = build_train_dataset(d, seed=seed, num_samples=packs)
        # Validation loss per benchmark of the validation split.
        self.val_sets: dict[str, Any] = {}
        if self.cfg.trainer.val_check_interval:
            self.val_sets = build_validation_datasets(d, seed=seed)

    def _batches(self, dataset, consumed: int, total: int):
        """This rank's micro-batch stream(s) of ``dataset`` from sample ``consumed`` on."""
        loader = make_loader(
            dataset,
            consumed=consumed,
            total=total,
            micro_batch_size=self.cfg.model.micro_batch_size,
            data_parallel_rank=self.dp_rank,
            data_parallel_size=self.dp_size,
            attention="thd" if self.transformer_impl == "transformer_engine" else "local",
            num_workers=self.cfg.model.data.num_workers,
            seed=self.cfg.model.seed,
        )
        return micro_batch_iterator(loader, num_chunks=len(self.model), device=compute_device())

    # ---------------------------------------------------------------- loop
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
        loss_sum, tokens = global_loss_sum(reports)
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

    def evaluate(self) -> dict[str, float]:
        """Validation loss (mean over target tokens) per benchmark and overall."""
        m = self.cfg.model
        return validation_losses(
            self.model,
            self.val_sets,
            batches=self._batches,
            num_microbatches=self.num_microbatches,
            micro_batch_size=m.micro_batch_size,
            data_parallel_size=self.dp_size,
            seq_length=m.data.seq_length,
            max_samples=self.cfg.trainer.limit_val_batches * m.global_batch_size,
        )

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

    def fit(self, on_step_end: Sequence[StepCallback] = ()) -> TrainResult:
        """Train to ``trainer.max_steps`` from where setup left off; ``on_step_end`` callbacks
        run after every step (see :data:`StepCallback`), in order."""
        from megatron_optiml.training.logging import MetricsLogger

        t, m = self.cfg.trainer, self.cfg.model
        result = TrainResult(iteration=self.iteration, consumed_samples=self.consumed_samples)
        total = len(self.train_ds)
        data_iterator = self._batches(self.train_ds, self.consumed_samples, total)
        every = self.cfg.exp_manager.checkpoint_callback_params.every_n_train_steps
        metrics = MetricsLogger(
            self.run_dir,
            enabled=_is_rank0(),
            tensorboard=self.cfg.exp_manager.create_tensorboard_logger,
            total_steps=t.max_steps,
            start_step=self.iteration,
        )
        recompute = m.activations_checkpoint_granularity or "none"
        flops_per_step = step_flops(
            self.arch,
            global_batch_size=m.global_batch_size,
            seq_length=m.data.seq_length,
            recompute=recompute,
        ).model
        with Preemption() as preempt, metrics:
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
                for callback in on_step_end:
                    callback(self.iteration)
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


def run_training(cfg: RunConfig, *, on_step_end: Sequence[StepCallback] = ()) -> TrainResult:
    """Set up, train (``on_step_end``: see :meth:`Trainer.fit`), tear down."""
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        result = trainer.fit(on_step_end)
    finally:
        trainer.close()
    return result
