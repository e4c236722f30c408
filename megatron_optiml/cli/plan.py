"""optiml-plan: pre-flight memory/throughput plan of an OPT training layout on a cluster.

Exit status: 0 fits, 2 layout refused (names the field), 3 does not fit in GPU memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from megatron_optiml.config.precision import SPELLINGS
from megatron_optiml.models.opt.flavors import OPT_FLAVORS, get_flavor
from megatron_optiml.planning import (
    KNOWN_GPUS,
    ClusterSpec,
    PlanError,
    PlanInput,
    format_plan,
    make_plan,
    suggest_layouts,
)
from megatron_optiml.planning.layout import RECOMPUTE, TRANSFORMER_IMPLS
from megatron_optiml.planning.recipe import plan_input_from_recipe

EXIT_REFUSED, EXIT_DOES_NOT_FIT = 2, 3


def _emit(text: str, stream=None) -> None:
    # The report is this command's product (stdout, pipeable), not a log line.
    (stream or sys.stdout).write(text + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optiml-plan", description=__doc__)
    p.add_argument("--recipe", type=Path, help="NeMo-layout run YAML; flags below override it")
    p.add_argument("--flavor", choices=sorted(OPT_FLAVORS), help="OPT shape (default opt-30b)")
    p.add_argument("--gpu", default="h100-80gb", choices=sorted(KNOWN_GPUS))
    p.add_argument("--nodes", type=int, help="nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs per node (default 8)")
    p.add_argument("--inter-node-gbps", type=float, help="network GB/s per GPU (optional)")
    p.add_argument("--tp", type=int)
    p.add_argument("--pp", type=int)
    p.add_argument("--vp", type=int, help="virtual pipeline chunks per rank (interleaved)")
    p.add_argument(
        "--sequence-parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on when tp > 1 (or the recipe's model.sequence_parallel)",
    )
    p.add_argument("--mbs", type=int, help="micro batch size")
    p.add_argument("--gbs", type=int, help="global batch size (sequences)")
    p.add_argument("--seq", type=int, help="sequence length")
    p.add_argument(
        "--precision", choices=SPELLINGS, help="fp32, bf16, fp16 or fp8 (or a NeMo spelling)"
    )
    p.add_argument("--distributed-optimizer", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--recompute", choices=RECOMPUTE)
    p.add_argument("--transformer-impl", choices=TRANSFORMER_IMPLS)
    p.add_argument("--mfu", type=float, help="assumed utilisation of dense peak (default 0.4)")
    p.add_argument("--suggest", type=int, metavar="N", help="also list the N best fitting layouts")
    return p


def _inputs(args: argparse.Namespace) -> tuple[PlanInput, ClusterSpec]:
    fields: dict = {"arch": get_flavor("opt-30b"), "global_batch_size": 256, "extra": {}}
    cluster_fields: dict = {"num_nodes": 1, "gpus_per_node": 8}
    if args.recipe is not None:
        recipe = yaml.safe_load(args.recipe.read_text())
        f, c = plan_input_from_recipe(recipe)
        fields.update(f)
        cluster_fields.update(c)
        fields["extra"] = {**f["extra"], "recipe": str(args.recipe)}
    if args.flavor is not None:
        fields["arch"] = get_flavor(args.flavor)
        fields["extra"] = {**fields["extra"], "flavor": args.flavor}
    fields["extra"].setdefault("flavor", "opt-30b")
    overrides = {
        "tp": args.tp,
        "pp": args.pp,
        "vp": args.vp,
        "sequence_parallel": args.sequence_parallel,
        "micro_batch_size": args.mbs,
        "global_batch_size": args.gbs,
        "seq_length": args.seq,
        "precision": args.precision,
        "use_distributed_optimizer": args.distributed_optimizer,
        "recompute": args.recompute,
        "transformer_impl": args.transformer_impl,
        "mfu": args.mfu,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if args.sequence_parallel is None and (args.recipe is None or args.tp is not None):
        # Megatron practice: sequence parallelism goes with tensor parallelism.
        fields["sequence_parallel"] = fields.get("tp", 1) > 1
    if args.nodes is not None:
        cluster_fields["num_nodes"] = args.nodes
    if args.gpus_per_node is not None:
        cluster_fields["gpus_per_node"] = args.gpus_per_node
    cluster = ClusterSpec.from_gpu(
        args.gpu, inter_node_bandwidth_gbps=args.inter_node_gbps, **cluster_fields
    )
    return PlanInput(**fields), cluster


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        inp, cluster = _inputs(args)
        plan = make_plan(inp, cluster)
    except PlanError as e:
        _emit(f"refused: {e}", sys.stderr)
        return EXIT_REFUSED
    except ValueError as e:
        _emit(f"error: {e}", sys.stderr)
        return EXIT_REFUSED
    _emit(format_plan(plan))
    if args.suggest:
        _emit(f"\nbest {args.suggest} fitting layouts on this cluster (tokens/s at same mfu):")
        for alt in suggest_layouts(
            inp.arch,
            cluster,
            global_batch_size=inp.global_batch_size,
            seq_length=inp.seq_length,
            precision=inp.precision,
            use_distributed_optimizer=inp.use_distributed_optimizer,
            mfu=inp.mfu,
        )[: args.suggest]:
            i = alt.inp
            _emit(
                f"  tp={i.tp} pp={i.pp} mbs={i.micro_batch_size} recompute={i.recompute:<9} "
                f"{alt.peak.total / 2**30:6.1f} GiB  bubble {alt.bubble:5.1%}  "
                f"{alt.step_s:6.2f} s/step  {alt.tokens_per_s:10,.0f} tok/s"
            )
    if not plan.fits:
        _emit(f"\n{plan.verdict()}", sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
