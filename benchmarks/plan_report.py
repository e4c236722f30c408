"""Planning tables for OPT-IML 30B / 175B on H100 and A100 nodes, plus the CPU check of the
planner's memory model against a live Megatron-Core model.

    .venv/bin/python benchmarks/plan_report.py            # tables + single-rank measurement
    .venv/bin/python benchmarks/plan_report.py --dp2      # also the 2-rank distributed-optimizer run
    .venv/bin/python benchmarks/plan_report.py --no-measure
"""

from __future__ import annotations

import argparse
import os
import time

from megatron_optiml.models.opt.flavors import OPTArch, get_flavor
from megatron_optiml.planning import (
    GIB,
    ClusterSpec,
    PlanError,
    PlanInput,
    format_plan,
    make_plan,
    suggest_layouts,
)
from megatron_optiml.planning.memory import stage_activation_terms, stage_stored_terms

# (flavor, global batch, optimizer steps, nodes, paper wall-clock h on 64/128 A100 40GB)
RUNS = [("opt-30b", 256, 4000, 8, 19.0), ("opt-175b", 128, 8000, 16, 72.0)]
CLUSTERS = [
    ("h100-80gb", "bf16"),
    ("h100-80gb", "fp8"),
    ("a100-80gb", "bf16"),
    ("a100-40gb", "bf16"),
]
# The paper's own layouts expressed in Megatron terms (metaseq ran FSDP, which also shards the
# 16-bit weights and gradients; Megatron's distributed optimizer shards only Adam's states).
PAPER_LAYOUTS = {
    "opt-30b": dict(tp=2, micro_batch_size=8),
    "opt-175b": dict(tp=8, micro_batch_size=8),
}
TINY = OPTArch(
    num_layers=4,
    hidden_size=128,
    num_attention_heads=4,
    ffn_hidden_size=512,
    vocab_size=1024,
    max_position_embeddings=256,
)


def row(flavor: str, gpu: str, precision: str, plan, steps: int) -> str:
    i, m = plan.inp, plan.peak
    hours = steps * plan.step_s / 3600
    return (
        f"| {flavor} | {gpu} {precision} | {plan.cluster.world_size} | {i.tp} | {i.pp}"
        f"{f' ({i.vp})' if i.vp else ''} | "
        f"{plan.dp} | {i.micro_batch_size} | {plan.num_microbatches} | {i.recompute} | "
        f"{m.weights / GIB:.1f} | {m.grads / GIB:.1f} | {m.optimizer / GIB:.1f} | "
        f"{m.activations / GIB:.1f} | {m.total / GIB:.1f} | {plan.bubble:.1%} | "
        f"{plan.step_s:.2f} | {plan.tokens_per_s:,.0f} | {hours:.1f} |"
    )


HEADER = (
    "| model | GPU | GPUs | TP | PP (VP) | DP | mbs | m | recompute | weights | grads | optim | "
    "activ. | total GiB | bubble | step s | tokens/s | h for paper steps |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def planning_tables(mfu: float, verbose: bool) -> None:
    print(f"## Best fitting layout per cluster (distributed optimizer, SP with TP, mfu={mfu})\n")
    print(HEADER)
    best_plans = []
    for flavor, gbs, steps, nodes, _ in RUNS:
        arch = get_flavor(flavor)
        for gpu, precision in CLUSTERS:
            cluster = ClusterSpec.from_gpu(gpu, num_nodes=nodes, gpus_per_node=8)
            plans = suggest_layouts(
                arch,
                cluster,
                global_batch_size=gbs,
                precision=precision,
                mfu=mfu,
                vps=(None, 2, 3),
                extra={"flavor": flavor},
            )
            if not plans:
                print(f"| {flavor} | {gpu} {precision} | {cluster.world_size} | no layout fits |")
                continue
            print(row(flavor, gpu, precision, plans[0], steps))
            best_plans.append(plans[0])

    print("\n## The paper's layouts (TP=2 / TP=8, 8 sequences per GPU) under Megatron-Core\n")
    print(HEADER)
    for flavor, gbs, steps, nodes, paper_h in RUNS:
        arch = get_flavor(flavor)
        for gpu in ("a100-40gb", "h100-80gb"):
            cluster = ClusterSpec.from_gpu(gpu, num_nodes=nodes, gpus_per_node=8)
            for recompute in ("selective", "full"):
                inp = PlanInput(
                    arch=arch,
                    global_batch_size=gbs,
                    sequence_parallel=True,
                    recompute=recompute,
                    mfu=mfu,
                    extra={"flavor": flavor},
                    **PAPER_LAYOUTS[flavor],
                )
                plan = make_plan(inp, cluster)
                print(
                    row(flavor, gpu, "bf16", plan, steps) + ("" if plan.fits else " does not fit")
                )
        print(f"\n(paper: {flavor} fine-tuning took {paper_h:.0f} h on {nodes * 8} A100 40GB)\n")

    if verbose:
        for plan in best_plans:
            print("\n```\n" + format_plan(plan) + "\n```")


def measured_vs_predicted(dp2: bool) -> None:
    from megatron_optiml.planning.measure import (
        measure_tiny_run,
        tiny_run_plan_input,
        tiny_run_worker,
    )
    from megatron_optiml.testing.distributed import free_port, run_distributed

    os.environ.update(WORLD_SIZE="1", RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    one_gpu = ClusterSpec.from_gpu("h100-80gb", num_nodes=1, gpus_per_node=1)
    print("\n## Measured vs predicted on CPU (bf16 params, local spec, one rank)\n")
    print(
        "| model | s x b | recompute | dropout | states pred/meas MB | ratio | "
        "saved activations pred/meas MB | ratio | fwd+bwd peak pred/meas MB | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = [("opt-debug", get_flavor("opt-debug"), 64, 2), ("tiny-4L-h128-V1024", TINY, 128, 2)]
    for name, arch, s, b in cases:
        for dropout in (0.1, 0.0):
            for recompute in ("none", "selective", "full"):
                m = measure_tiny_run(
                    arch,
                    seq_length=s,
                    micro_batch_size=b,
                    recompute=recompute,
                    hidden_dropout=dropout,
                    measure_peak=True,
                )
                inp = tiny_run_plan_input(
                    arch,
                    seq_length=s,
                    micro_batch_size=b,
                    recompute=recompute,
                    hidden_dropout=dropout,
                )
                st = make_plan(inp, one_gpu).stages[0]
                # What the forward saves, and the peak with the backward's working set.
                pred_act = sum(stage_stored_terms(inp, 1, "first").values())
                pred_peak = sum(stage_activation_terms(inp, 1, "first").values())
                meas_states = m.states.weights + m.states.grads + m.states.optimizer
                print(
                    f"| {name} | {s} x {b} | {recompute} | {dropout} | "
                    f"{st.model_states / 1e6:.2f} / {meas_states / 1e6:.2f} | "
                    f"{st.model_states / meas_states:.3f} | {pred_act / 1e6:.3f} / "
                    f"{m.saved_activation_bytes / 1e6:.3f} | "
                    f"{pred_act / m.saved_activation_bytes:.3f} | {pred_peak / 1e6:.3f} / "
                    f"{m.peak_bytes / 1e6:.3f} | {pred_peak / m.peak_bytes:.3f} |"
                )
    if dp2:
        t = time.time()
        results = run_distributed(
            tiny_run_worker,
            2,
            get_flavor("opt-debug"),
            dict(seq_length=32, micro_batch_size=1, use_distributed_optimizer=True),
        )
        two = ClusterSpec.from_gpu("h100-80gb", num_nodes=1, gpus_per_node=2)
        inp = PlanInput(
            arch=get_flavor("opt-debug"),
            global_batch_size=2,
            seq_length=32,
            transformer_impl="local",
        )
        st = make_plan(inp, two).stages[0]
        meas = results[0].states
        print(
            f"\nDP=2 distributed optimizer (opt-debug, {time.time() - t:.0f} s): optimizer states "
            f"predicted {st.optimizer / 1e6:.3f} MB, measured {meas.optimizer / 1e6:.3f} MB per rank; "
            f"grads {st.grads / 1e6:.3f} / {meas.grads / 1e6:.3f} MB; weights "
            f"{st.weights / 1e6:.3f} / {meas.weights / 1e6:.3f} MB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--no-measure", action="store_true")
    ap.add_argument("--dp2", action="store_true", help="also spawn a 2-rank gloo measurement")
    ap.add_argument("--verbose", action="store_true", help="full tables of the best layouts")
    args = ap.parse_args()
    try:
        planning_tables(args.mfu, args.verbose)
    except PlanError as e:  # a table entry that should always be valid
        raise SystemExit(f"refused: {e}") from e
    if not args.no_measure:
        measured_vs_predicted(args.dp2)


if __name__ == "__main__":
    main()
