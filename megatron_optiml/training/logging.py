"""Rank-0 training telemetry: a tqdm bar (loss, LR, grad norm, tokens/s, TFLOP/s, ETA),
TensorBoard event files and a JSONL of metrics under the run folder."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool,
        tensorboard: bool,
        total_steps: int,
        start_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps
        self.start_step = start_step
        self._tb = None
        self._bar = None
        self._jsonl = None
        self._t0 = time.perf_counter()
        self._tb_enabled = tensorboard

    def __enter__(self):
        if not self.enabled:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a")
        if self._tb_enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an install requirement; keep training if absent
                logger.warning("tensorboard is not installed: no event files")
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=self.total_steps,
            initial=self.start_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()

    def _write(self, record: dict) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def log_step(
        self,
        step: int,
        *,
        loss: float,
        lr: float,
        grad_norm: float,
        tokens: int,
        seq_tokens: int,
        step_time: float,
        tflops: float,
        skipped: float,
    ) -> None:
        if not self.enabled:
            return
        tok_s = seq_tokens / step_time if step_time > 0 else math.nan
        record = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "target_tokens": tokens,
            "tokens_per_s": tok_s,
            "step_time_s": step_time,
            "tflops_per_gpu": tflops,
            "skipped": skipped,
            "time": time.time(),
        }
        self._write(record)
        if self._tb is not None:
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_gpu"):
                self._tb.add_scalar(f"train/{k}", record[k], step)
        self._bar.n = step
        self._bar.set_postfix(
            loss=f"{loss:.4f}",
            lr=f"{lr:.2e}",
            gnorm=f"{grad_norm:.3f}",
            tok_s=f"{tok_s:,.0f}",
            tflops=f"{tflops:.3g}",
        )
        self._bar.refresh()

    def log_validation(self, step: int, losses: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "validation": losses, "time": time.time()})
        if self._tb is not None:
            for k, v in losses.items():
                self._tb.add_scalar(f"validation/{k}", v, step)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in losses.items())
        (self._bar.write if self._bar else logger.info)(f"validation @ step {step}: {shown}")
