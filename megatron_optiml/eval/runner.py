"""Evaluation run: HF model folders + a data_prep build -> scores, reports, plot.

`evaluate_bench` is the one call the CLI and the CPU demo make. Per model, per split, per shot
count, every instance is rendered with the training renderer; instances with `options` are
rank-classified (`scoring.score_options`), the others generate greedily (batched over the
whole split) and are scored with ROUGE-L and exact match.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data_prep.records import record_links
from data_prep.render import render_target
from data_prep.schema import Instance, Task, read_tasks_jsonl
from megatron_optiml.eval.aggregate import InstanceResult, aggregate, subtask_of
from megatron_optiml.eval.config import EvalConfig
from megatron_optiml.eval.contamination import (
    contamination_report,
    report_to_json,
    train_texts_from_bench,
)
from megatron_optiml.eval.generation import greedy_generate
from megatron_optiml.eval.metrics import exact_match, option_correct, rouge_l
from megatron_optiml.eval.prompts import demonstration_pool, render_eval_example
from megatron_optiml.eval.scoring import normalized, pick, score_options_batch
from megatron_optiml.eval.tokens import EOS_ID, decode, encode, fit_prompt

log = logging.getLogger(__name__)

RESULTS_FORMAT = "megatron_optiml.eval/v1"


@dataclass
class ModelRun:
    """What evaluating one model produced."""

    name: str
    path: str
    results: list[InstanceResult] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(cfg: EvalConfig) -> torch.device:
    """``cfg.device`` (``--device``) when given, else what ``parallel/device.py`` decides for
    ``accelerator='auto'`` (CUDA when present)."""
    from megatron_optiml.parallel.device import resolve_accelerator

    return torch.device(cfg.device or resolve_accelerator("auto"))


_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_dir(path: str | os.PathLike) -> None:
    """Refuse a model folder that cannot load, in one line naming the file: no config.json,
    no weights, a truncated .safetensors file, or a tensor whose shape contradicts
    config.json (read from the file headers and a meta-device model: no weights loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from megatron_optiml.conversion.safetensors_stream import read_safetensors_header

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder")
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path / 'config.json'}: missing (not a Hugging Face model folder?)"
        )
    if not any((path / w).exists() for w in _WEIGHTS):
        raise FileNotFoundError(f"{path}: no weights ({' / '.join(_WEIGHTS)})")
    files = sorted(path.glob("*.safetensors"))
    headers = {f: read_safetensors_header(f) for f in files}  # raises naming a truncated file
    if not headers:
        return
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for f, shapes in headers.items():
        for name, shape in shapes.items():
            if name in want and shape != want[name]:
                raise ValueError(
                    f"{f}: tensor {name!r} has shape {shape} but config.json implies {want[name]}"
                )


def load_model(path: str | os.PathLike, cfg: EvalConfig):
    """An HF causal LM from `path` (exported by conversion, or any OPT checkpoint), eval mode."""
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    device = resolve_device(cfg)
    if cfg.dtype == "auto":
        dtype = torch.float32 if device.type == "cpu" else "auto"
    else:
        dtype = getattr(torch, cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(device).eval()


def read_eval_splits(bench_dir: str | os.PathLike, splits: Sequence[str]) -> dict[str, list[Task]]:
    """`{split: tasks}` from `<bench>/bench/<split>.jsonl` (data_prep's evaluation files)."""
    out = {}
    for split in splits:
        path = Path(bench_dir) / "bench" / f"{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such split file (is {bench_dir} a data_prep build?)"
            )
        out[split] = read_tasks_jsonl(path)
    return out


def read_train_pools(bench_dir: str | os.PathLike) -> dict[str, list[Instance]]:
    """Training instances per task, if data_prep wrote `bench/train.jsonl` (else empty)."""
    path = Path(bench_dir) / "bench" / "train.jsonl"
    if not path.exists():
        return {}
    return {t.name: t.instances for t in read_tasks_jsonl(path)}


def _limited(task: Task, limit: int | None) -> int:
    return len(task.instances) if limit is None else min(limit, len(task.instances))


def evaluate_model(
    model,
    splits: Mapping[str, list[Task]],
    cfg: EvalConfig,
    *,
    train_pools: Mapping[str, Sequence[Instance]] | None = None,
    name: str = "model",
) -> tuple[list[InstanceResult], list[dict]]:
    """Score `model` on every instance of `splits` at every shot count of `cfg`.

    Returns the per-instance results and (if `cfg.predictions`) per-instance records.
    """
    cfg.validate()
    train_pools = train_pools or {}
    max_pos = cfg.max_positions or int(model.config.max_position_embeddings)
    total = len(cfg.shots) * sum(_limited(t, cfg.limit) for tasks in splits.values() for t in tasks)
    bar = _progress_bar(total, cfg.progress, name)
    mc: list[tuple[dict, list[int], list[list[int]], list[str]]] = []  # rank classification
    pending: list[tuple[dict, list[int]]] = []  # generation requests: (context, prompt ids)
    try:
        for split, tasks in splits.items():
            for k in cfg.shots:
                for task in tasks:
                    demo_src, pool = demonstration_pool(task, k, cfg.demo_source, train_pools)
                    same_record = record_links(task.instances, pool) if k else None
                    for index in range(_limited(task, cfg.limit)):
                        inst = task.instances[index]
                        ex, demos = render_eval_example(
                            task,
                            index,
                            split=split,
                            k=k,
                            pool=pool,
                            delimiter=cfg.delimiter,
                            seed=cfg.seed,
                            same_record=same_record,
                        )
                        ctx = {
                            "split": split,
                            "task": task,
                            "inst": inst,
                            "k": k,
                            "prompt": ex.prompt,
                            "demos": [d.id for d in demos],
                            "demo_source": demo_src if k else "",
                        }
                        ctx["seq"] = len(mc) + len(pending)
                        if inst.options:
                            mc.append(_option_request(ctx, cfg, max_pos))
                        else:
                            prompt = fit_prompt(
                                encode(ex.prompt), cfg.max_new_tokens, max_pos, bos=cfg.prepend_bos
                            )
                            pending.append((ctx, prompt))
        scored: list[tuple[int, InstanceResult, dict]] = []
        # Rank classification in batches of similar prompt length (less padding).
        mc.sort(key=lambda req: len(req[1]))
        for start in range(0, len(mc), cfg.batch_size):
            batch = mc[start : start + cfg.batch_size]
            all_scores = score_options_batch(model, [(p, opts) for _, p, opts, _ in batch])
            for (ctx, _, _, targets), scores in zip(batch, all_scores):
                scored.append((ctx["seq"], *_rank_result(ctx, targets, scores, cfg)))
            if bar is not None:
                bar.update(len(batch))
        if pending:
            outputs = greedy_generate(
                model,
                [p for _, p in pending],
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
                on_batch=bar.update if bar is not None else None,
            )
            for (ctx, _), out in zip(pending, outputs):
                scored.append((ctx["seq"], *_score_generation(ctx, decode(out), len(out), cfg)))
        scored.sort(key=lambda x: x[0])
        results = [res for _, res, _ in scored]
        records = [rec for _, _, rec in scored] if cfg.predictions else []
    finally:
        if bar is not None:
            bar.close()
    return results, records


def _result(ctx: dict, metric: str, metrics: dict[str, float]) -> InstanceResult:
    task, inst = ctx["task"], ctx["inst"]
    return InstanceResult(
        split=ctx["split"],
        task=task.name,
        category=task.category,
        benchmark=task.benchmark,
        shots=ctx["k"],
        instance_id=inst.id,
        metric=metric,
        score=metrics[metric],
        metrics=metrics,
        subtask=subtask_of(inst.id, task.name),
    )


def _record(ctx: dict, res: InstanceResult, **extra) -> dict:
    return {
        "split": ctx["split"],
        "shots": ctx["k"],
        "task": res.task,
        "id": res.instance_id,
        "demonstrations": ctx["demos"],
        "demo_source": ctx["demo_source"],
        "prompt": ctx["prompt"],
        "references": list(ctx["inst"].outputs),
        **extra,
        "metric": res.metric,
        "score": res.score,
        "metrics": res.metrics,
    }


def _option_request(ctx: dict, cfg: EvalConfig, max_pos: int):
    """(context, prompt ids, option ids, option texts): options tokenized as training targets."""
    targets = [render_target(ctx["prompt"], o) for o in ctx["inst"].options]
    option_ids = [encode(t) + ([EOS_ID] if cfg.score_eos else []) for t in targets]
    room = max(len(o) for o in option_ids)
    prompt = fit_prompt(encode(ctx["prompt"]), room, max_pos, bos=cfg.prepend_bos)
    return ctx, prompt, option_ids, targets


def _rank_result(ctx: dict, targets: list[str], scores: list, cfg: EvalConfig):
    inst = ctx["inst"]
    metrics = {}
    chosen = {}
    for norm in ("sum", "token", "char"):
        values = [normalized(s, norm, t) for s, t in zip(scores, targets)]
        chosen[norm] = pick(values)
        metrics[f"accuracy_{norm}"] = option_correct(inst.options[chosen[norm]], inst.outputs)
    metrics["accuracy"] = metrics[f"accuracy_{cfg.length_norm}"]
    res = _result(ctx, "accuracy", metrics)
    rec = _record(
        ctx,
        res,
        options=list(inst.options),
        option_logprobs=[s.logprob for s in scores],
        option_tokens=[s.num_tokens for s in scores],
        prediction=inst.options[chosen[cfg.length_norm]],
    )
    return res, rec


def _score_generation(ctx: dict, text: str, num_tokens: int, cfg: EvalConfig):
    refs = ctx["inst"].outputs
    prediction = text.strip()
    metrics = {"rougeL": rouge_l(prediction, refs), "exact_match": exact_match(prediction, refs)}
    res = _result(ctx, cfg.generation_metric, metrics)
    return res, _record(ctx, res, prediction=prediction, generated_tokens=num_tokens)


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ex", desc=f"eval {desc}", mininterval=0.5, dynamic_ncols=True)


def model_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for model folders (folder name; parent/name where those clash)."""
    names = [Path(p).resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return ["/".join(Path(p).resolve().parts[-2:]) for p in paths]


def evaluate_bench(
    models: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    bench_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: EvalConfig | None = None,
) -> dict:
    """Evaluate HF model folders on a data_prep build and write the reports into `out_dir`.

    Args:
        models: `{name: folder}` or a list of folders (named by `model_names`); two or more
            (e.g. base and tuned) are compared in the tables and the plot.
        bench_dir: the output folder of `optiml-prepare` (holds `bench/<split>.jsonl`).
        out_dir: gets `results.json`, `report.md`, `categories.png`, `contamination.json`
            and, with `cfg.predictions`, `predictions/<model>.jsonl`.
        cfg: evaluation settings (default `EvalConfig()`).

    Returns the results dict written to `results.json`.
    """
    from megatron_optiml.eval.report import plot_categories, render_markdown

    cfg = cfg or EvalConfig()
    cfg.validate()
    if not isinstance(models, Mapping):
        models = dict(zip(model_names(models), models))
    if not models:
        raise ValueError("models: at least one model folder is needed")
    for path in models.values():
        check_model_dir(path)  # every model before the first is evaluated
    out = Path(out_dir)  # created by the first report written: a failed run leaves none
    splits = read_eval_splits(bench_dir, cfg.splits)
    train_pools = read_train_pools(bench_dir)

    contamination = contamination_report(
        splits,
        train_texts_from_bench(bench_dir),
        n=cfg.contamination_ngram,
        threshold=cfg.contamination_threshold,
    )
    runs = []
    for name, path in models.items():
        t0 = time.perf_counter()
        model = load_model(path, cfg)
        results, records = evaluate_model(model, splits, cfg, train_pools=train_pools, name=name)
        del model
        run = ModelRun(name, str(path), results, records, time.perf_counter() - t0)
        log.info("evaluated %s: %d instance scores in %.1f s", name, len(results), run.seconds)
        runs.append(run)

    payload = {
        "format": RESULTS_FORMAT,
        "bench": str(Path(bench_dir).resolve()),
        "config": dataclasses.asdict(cfg),
        "models": {
            r.name: {"path": r.path, "seconds": r.seconds, "scores": aggregate(r.results)}
            for r in runs
        },
        "contamination": report_to_json(contamination),
    }
    _write_text(out / "results.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    _write_text(
        out / "contamination.json",
        json.dumps(payload["contamination"], indent=2, ensure_ascii=False) + "\n",
    )
    _write_text(out / "report.md", render_markdown(payload))
    plot_categories(payload, out / "categories.png")
    if cfg.predictions:
        for r in runs:
            lines = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in r.predictions)
            _write_text(out / "predictions" / f"{_safe(r.name)}.jsonl", lines)
    return payload


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
