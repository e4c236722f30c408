"""Reports of an evaluation run: markdown tables (split, category, benchmark, task) and a
matplotlib bar plot comparing models by category. Both read the `results.json` payload only.
"""

from __future__ import annotations

import os
from pathlib import Path

FLAG = "⚠"


def _fmt(score: float | None) -> str:
    return "–" if score is None else f"{100 * score:.1f}"


def _shot_keys(payload: dict) -> list[str]:
    return [str(k) for k in payload["config"]["shots"]]


def _cells(payload: dict, split: str, level: str, name: str | None) -> list[str]:
    """Per model: a cell per shot count, then the shot mean (when there are several)."""
    cells = []
    shots = _shot_keys(payload)
    for model in payload["models"].values():
        sp = model["scores"].get(split)
        for k in shots:
            lv = sp["shots"].get(k) if sp else None
            cells.append(_fmt(_get(lv, level, name)))
        if len(shots) > 1:
            cells.append(_fmt(_get(sp["mean"] if sp else None, level, name)))
    return cells


def _get(lv: dict | None, level: str, name: str | None) -> float | None:
    if lv is None:
        return None
    if level == "split":
        return lv["score"]
    entry = lv[level].get(name)
    return None if entry is None else entry["score"]


def _header(payload: dict, first: list[str]) -> str:
    shots = _shot_keys(payload)
    cols = list(first)
    for m in payload["models"]:
        cols += [f"{m} {k}-shot" for k in shots]
        if len(shots) > 1:
            cols.append(f"{m} mean")
    return (
        "| "
        + " | ".join(cols)
        + " |\n|"
        + "|".join(["---"] * len(first) + ["---:"] * (len(cols) - len(first)))
        + "|\n"
    )


def _row(first: list[str], cells: list[str]) -> str:
    return "| " + " | ".join(first + cells) + " |\n"


def _first_scores(payload: dict, split: str) -> dict | None:
    for model in payload["models"].values():
        if split in model["scores"]:
            return model["scores"][split]
    return None


def render_markdown(payload: dict) -> str:
    """Tables per split: overall, by category, by benchmark, by task (contamination flagged)."""
    cfg = payload["config"]
    contamination = payload.get("contamination", {})
    out = [
        "# Evaluation report\n",
        f"Bench: `{payload['bench']}`. Shots: {', '.join(map(str, cfg['shots']))}"
        f" (mean = their average). Rank classification: {cfg['length_norm']} log-likelihood"
        f"{' incl. </s>' if cfg['score_eos'] else ''}; generation: greedy, at most"
        f" {cfg['max_new_tokens']} new tokens, headline {cfg['generation_metric']}."
        f" Scores x100; task -> category -> split means.\n",
    ]
    splits = [s for s in cfg["splits"] if _first_scores(payload, s) is not None]
    out.append("\n## Summary\n\n" + _header(payload, ["split"]))
    for split in splits:
        out.append(_row([split], _cells(payload, split, "split", None)))
    for split in splits:
        ref = _first_scores(payload, split)
        any_shot = next(iter(ref["shots"].values()))
        out.append(f"\n## {split}\n\n### By category\n\n" + _header(payload, ["category", "tasks"]))
        for cat, entry in any_shot["categories"].items():
            out.append(
                _row([cat, str(len(entry["tasks"]))], _cells(payload, split, "categories", cat))
            )
        out.append("\n### By benchmark\n\n" + _header(payload, ["benchmark", "tasks"]))
        for bench, entry in any_shot["benchmarks"].items():
            out.append(
                _row([bench, str(len(entry["tasks"]))], _cells(payload, split, "benchmarks", bench))
            )
        out.append(
            "\n### By task\n\n"
            + _header(
                payload,
                ["task", "category", "metric", "n", f"{cfg['contamination_ngram']}-gram overlap"],
            )
        )
        cont = contamination.get(split, {})
        for task, entry in any_shot["tasks"].items():
            c = cont.get(task)
            overlap = "–"
            if c is not None:
                overlap = (
                    f"{100 * c['fraction']:.0f}% (other tasks {100 * c['other_fraction']:.0f}%)"
                )
                if c["flagged"]:
                    overlap = f"{FLAG} {overlap}"
            out.append(
                _row(
                    [task, entry["category"], entry["metric"], str(entry["instances"]), overlap],
                    _cells(payload, split, "tasks", task),
                )
            )
    flagged = [t for tasks in contamination.values() for t in tasks.values() if t["flagged"]]
    out.append(
        f"\n{FLAG} = more than {100 * cfg['contamination_threshold']:g}% of the task's instances"
        f" share a {cfg['contamination_ngram']}-gram with another task's training text"
        f" ({len(flagged)} task(s)); the overlap column gives the fraction of instances sharing"
        " any n-gram with training (held-out instances of a seen task overlap their own task's"
        " training instances by design, e.g. through a shared template). Details:"
        " contamination.json.\n"
    )
    return "".join(out)


def plot_categories(payload: dict, path: str | os.PathLike) -> Path:
    """Grouped bars per category (shot-averaged score), one bar per model, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = payload["config"]
    splits = [s for s in cfg["splits"] if _first_scores(payload, s) is not None]
    models = list(payload["models"])
    fig, axes = plt.subplots(
        len(splits),
        1,
        figsize=(max(6.0, 1.6 * _max_categories(payload, splits) + 2), 3.2 * len(splits)),
        squeeze=False,
    )
    width = 0.8 / max(len(models), 1)
    for ax, split in zip(axes[:, 0], splits):
        cats = list(_first_scores(payload, split)["mean"]["categories"])
        for mi, m in enumerate(models):
            sp = payload["models"][m]["scores"].get(split)
            vals = [
                100 * sp["mean"]["categories"][c]["score"]
                if sp and c in sp["mean"]["categories"]
                else 0.0
                for c in cats
            ]
            xs = [i + (mi - (len(models) - 1) / 2) * width for i in range(len(cats))]
            ax.bar(xs, vals, width=width, label=m)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("score (x100)")
        shots = "/".join(map(str, cfg["shots"]))
        ax.set_title(f"{split} (mean of {shots}-shot)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _max_categories(payload: dict, splits: list[str]) -> int:
    return max((len(_first_scores(payload, s)["mean"]["categories"]) for s in splits), default=1)
