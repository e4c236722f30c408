"""``optiml-train``: train OPT on a data_prep blend from a NeMo-layout YAML recipe.

Launch one process per device, torchrun style (``torchrun --nproc_per_node N -m
megatron_optiml.cli.train --config recipe.yaml key=value ...``) or under Slurm ``srun`` (RANK /
WORLD_SIZE / LOCAL_RANK are taken from SLURM_* when torchrun's are absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_optiml.training.trainer import StepCallback


def _slurm_env() -> None:
    """Map srun's SLURM_* variables onto torchrun's names (torchrun's win when both exist)."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_NTASKS", "1")
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    from megatron_optiml.parallel.init import rendezvous_port

    os.environ.setdefault("MASTER_PORT", str(rendezvous_port()))


def launch_facts(cfg, config_path: str) -> dict:
    """What a launcher needs from a validated recipe (``--validate-only --json``): sizes to
    check against the allocation, the rendezvous port, the preemption exit code to requeue on."""
    from megatron_optiml.parallel import rendezvous_port, resolve_accelerator

    t, m = cfg.trainer, cfg.model
    return {
        "config": config_path,
        "name": cfg.name,
        "run_dir": cfg.exp_manager.run_dir,
        "world_size": t.world_size,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "tensor_model_parallel_size": m.tensor_model_parallel_size,
        "pipeline_model_parallel_size": m.pipeline_model_parallel_size,
        "virtual_pipeline_model_parallel_size": m.virtual_pipeline_model_parallel_size,
        "data_parallel_size": cfg.data_parallel_size,
        "num_microbatches": cfg.num_microbatches,
        "accelerator": t.accelerator,
        "device": resolve_accelerator(t.accelerator),
        "transformer_impl": cfg.resolved_transformer_impl(),
        "preemption_exit_code": t.preemption_exit_code,
        "master_port": rendezvous_port(),
    }


def _warn_about_data(cfg, config_path: str) -> None:
    """The recipe against its data, where the blend is already there: examples longer than
    ``model.data.seq_length`` (the trainer warns about it too when it loads the blend)."""
    from pathlib import Path

    from megatron_optiml.data.blend import seq_length_warning

    d = cfg.model.data
    if Path(d.blend_path).is_file():
        warning = seq_length_warning(d.blend_path, d.seq_length, ["train", d.validation_split])
        if warning is not None:
            print(f"optiml-train: warning: {config_path}: {warning}", file=sys.stderr)


def main(argv: list[str] | None = None, *, on_step_end: Sequence[StepCallback] = ()) -> int:
    """The CLI; ``on_step_end``: callbacks after every training step, for a launcher that wraps
    this one (see ``Trainer.fit``)."""
    parser = argparse.ArgumentParser(prog="optiml-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML recipe (NeMo layout)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=10"
    )
    parser.add_argument("--validate-only", action="store_true", help="check the recipe and exit")
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --validate-only: print the launch facts (world size, DP, rendezvous port, "
        "preemption exit code, ...) as one JSON object",
    )
    args = parser.parse_args(argv)
    if args.json and not args.validate_only:
        parser.error("--json goes with --validate-only")
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # torchrun puts each rank in its own session: killing the launcher's process group
        # would leave the ranks training. Die with the launcher (the rank's parent) instead.
        from megatron_optiml.utils.process import die_with_parent

        die_with_parent()
    _slurm_env()
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Megatron-Core's dataset builders log every index file at INFO.
    logging.getLogger("megatron.core").setLevel(logging.WARNING)
    from megatron_optiml.config import ConfigError, load_run_config

    try:
        cfg = load_run_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"optiml-train: {e}", file=sys.stderr)
        return 2
    if args.validate_only:
        _warn_about_data(cfg, args.config)
        # The command's product on stdout (a launcher parses the JSON), not a log line.
        if args.json:
            print(json.dumps(launch_facts(cfg, args.config)))
        else:
            print(
                f"{args.config}: OK (world size {cfg.trainer.world_size}, "
                f"DP {cfg.data_parallel_size})"
            )
        return 0
    from megatron_optiml.training.trainer import run_training
    from megatron_optiml.utils.disk import no_space_error, no_space_message
    from megatron_optiml.utils.process import RunFolderLocked

    log = logging.getLogger("optiml-train")
    try:
        result = run_training(cfg, on_step_end=on_step_end)
    except (ValueError, FileNotFoundError, RunFolderLocked) as e:
        # Refusals (checkpoint/model mismatch, missing files, a live run in the folder): the
        # message names the field, file or owner; a traceback would bury it.
        log.error("%s", e)
        return 1
    except BaseException as e:  # CheckpointException is a BaseException
        full = None if isinstance(e, KeyboardInterrupt) else no_space_error(e)
        if full is not None:
            log.error("%s", no_space_message(full, cfg.exp_manager.run_dir))
            return 1
        if isinstance(e, OSError) and e.filename:  # e.g. a read-only run folder: names it
            log.error("%s", e)
            return 1
        raise
    if result.preempted:
        return cfg.trainer.preemption_exit_code
    if result.stopped_on_nan:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
