import dataclasses
import random
from pathlib import Path

import pytest

from data_prep.config import SplitConfig
from data_prep.errors import DataError
from data_prep.leak import (
    digest_lookup,
    enforce_leak_policy,
    find_exact_leaks,
    input_digest,
    input_digests,
    input_hash,
    ngram_hashes,
    normalize_text,
    task_pair_overlap,
)
from data_prep.mapping import load_task_map
from data_prep.readers import read_sources
from data_prep.schema import Instance, Task
from data_prep.splits import ALL_SPLITS, split_tasks


@pytest.fixture
def bundled(bench_config):
    tasks, train_only = read_sources(bench_config.sources, load_task_map(bench_config.task_map))
    return tasks, train_only, bench_config.splits


def _instances(tasks):
    return {(t.name, i.id) for t in tasks for i in t.instances}


def test_three_splits_are_disjoint_and_non_empty(bundled):
    tasks, train_only, cfg = bundled
    s = split_tasks(tasks, cfg, train_only=train_only)
    for name in ALL_SPLITS:
        assert s[name], name
    train_tasks = {t.name for t in s["train"]}
    # fully held-out categories never appear in train
    assert not {t.category for t in s["heldout_category"]} & {t.category for t in s["train"]}
    # held-out tasks: unseen tasks of seen categories
    assert not {t.name for t in s["heldout_task"]} & train_tasks
    assert {t.category for t in s["heldout_task"]} <= {t.category for t in s["train"]}
    # held-out instances and validation: seen tasks, unseen instances
    assert {t.name for t in s["heldout_instance"]} <= train_tasks
    ids = {name: _instances(s[name]) for name in ALL_SPLITS}
    for a in ALL_SPLITS:
        for b in ALL_SPLITS:
            if a < b:
                assert not ids[a] & ids[b], (a, b)
    # nothing lost: every instance lands in exactly one split
    assert sum(len(v) for v in ids.values()) == len(_instances(tasks))
    # and no exact input duplicate crosses train/eval
    assert find_exact_leaks(s["train"], s.evals()) == []


def test_splits_deterministic_given_seed(bundled):
    tasks, train_only, cfg = bundled
    a = split_tasks(tasks, cfg, train_only=train_only)
    b = split_tasks(list(reversed(tasks)), cfg, train_only=train_only)
    c = split_tasks(tasks, dataclasses.replace(cfg, seed=7), train_only=train_only)
    for name in ALL_SPLITS:
        assert _instances(a[name]) == _instances(b[name])
    assert _instances(a["validation"]) != _instances(c["validation"])


def test_heldout_task_fraction(bundled):
    tasks, train_only, cfg = bundled
    cfg = dataclasses.replace(cfg, heldout_tasks=[], heldout_task_fraction=0.5)
    s = split_tasks(tasks, cfg, train_only=train_only)
    assert s["heldout_task"]
    assert {t.category for t in s["heldout_task"]} <= {t.category for t in s["train"]}


def test_unknown_heldout_names_are_errors(bundled):
    tasks, _, cfg = bundled
    with pytest.raises(ValueError, match="heldout_categories: 'nope'"):
        split_tasks(tasks, dataclasses.replace(cfg, heldout_categories=["nope"]))


def _t(name, inputs, category="c"):
    return Task(
        name=name,
        benchmark="b",
        category=category,
        instruction_level="instance",
        instances=[Instance(input=x, outputs=["o"], id=str(i)) for i, x in enumerate(inputs)],
    )


def test_planted_leak_is_caught():
    train = [_t("tr", ["The cat sat.", "Dogs bark loudly"])]
    evals = {"heldout_task": [_t("ev", ["  the CAT sat ", "fresh input"])]}
    with pytest.raises(DataError, match=r"heldout_task/ev instance '0' also in train task\(s\) tr"):
        enforce_leak_policy(train, evals, "error")
    kept, leaks = enforce_leak_policy(train, evals, "report")
    assert len(leaks) == 1 and kept == train
    kept, _ = enforce_leak_policy(train, evals, "drop")
    assert [i.input for i in kept[0].instances] == ["Dogs bark loudly"]


def test_task_pair_13gram_overlap():
    words = " ".join(f"w{i}" for i in range(20))
    train = [_t("tr", [f"intro {words} outro"]), _t("other", ["unrelated text"])]
    ev = _t("ev", [f"{words[:60]}", *[f"clean example {i}" for i in range(9)]])
    pairs = task_pair_overlap(train, {"heldout_task": [ev]}, n=13, threshold=0.01)
    assert [(p.eval_task, p.train_task) for p in pairs] == [("ev", "tr")]
    assert pairs[0].fraction == pytest.approx(0.1)
    assert task_pair_overlap(train, {"heldout_task": [ev]}, n=13, threshold=0.2) == []
    assert normalize_text("A, b!  C") == "a b c"


def test_split_config_validation():
    with pytest.raises(ValueError, match=r"splits.validation_fraction=1.5"):
        SplitConfig(validation_fraction=1.5).validate()


def _reference_overlap(train, evals, n, threshold):
    """The original set-of-strings implementation of the task-pair check."""
    from data_prep.leak import PairOverlap

    def grams(inst):
        words = normalize_text(inst.input + " " + inst.outputs[0]).split()
        return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}

    eval_tasks = [(s, t) for s, ts in evals.items() for t in ts]
    pairs = []
    for tr in train:
        train_grams = set().union(*(grams(i) for i in tr.instances))
        for split, ev in eval_tasks:
            count = sum(bool(grams(i) & train_grams) for i in ev.instances)
            if count and count / len(ev.instances) > threshold:
                pairs.append(PairOverlap(split, ev.name, tr.name, count / len(ev.instances), count))
    return sorted(pairs, key=lambda p: (-p.fraction, p.eval_split, p.eval_task, p.train_task))


def test_ngram_index_matches_the_set_implementation():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5)]  # small vocabulary: many shared 3-grams

    def text():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))

    train = [_t(f"tr{k}", [text() for _ in range(rng.randint(1, 8))]) for k in range(6)]
    evals = {
        "heldout_task": [
            _t(f"ev{k}", [text() for _ in range(rng.randint(1, 8))]) for k in range(4)
        ],
        "heldout_instance": [_t("tr0", [text() for _ in range(5)])],
    }
    for threshold in (0.0, 0.3):
        got = task_pair_overlap(train, evals, n=3, threshold=threshold)
        assert got == _reference_overlap(train, evals, 3, threshold)
    assert len(task_pair_overlap(train, evals, n=3, threshold=0.0)) > 5


def test_ngrams_never_span_two_instances():
    a = " ".join(f"a{i}" for i in range(7))
    b = " ".join(f"b{i}" for i in range(7))
    hashes, owners = ngram_hashes(_t("x", [a, b]).instances, 5)  # input + output "o": 8 words
    assert owners.tolist() == [0] * 4 + [1] * 4
    both, _ = ngram_hashes(_t("y", [a + " o " + b]).instances, 5)
    assert len(set(both.tolist()) - set(hashes.tolist())) == 4  # the windows across a|b


def test_precomputed_digests_give_the_same_splits(bundled):
    tasks, train_only, cfg = bundled
    lookup = digest_lookup(tasks, [input_digests(t.instances) for t in tasks])
    a = split_tasks(tasks, cfg, train_only=train_only)
    b = split_tasks(tasks, cfg, train_only=train_only, digest=lookup)
    for name in ALL_SPLITS:
        assert _instances(a[name]) == _instances(b[name])
    assert input_hash("The  cat!") == input_digest("the cat").hex()


def test_nothing_held_out_needs_no_hashing(bundled):
    tasks, train_only, cfg = bundled
    cfg = dataclasses.replace(
        cfg,
        heldout_categories=[],
        heldout_tasks=[],
        heldout_instance_fraction=0.0,
        validation_fraction=0.0,
    )

    def no_digest(inst):
        raise AssertionError("hashed an input although nothing is held out")

    s = split_tasks(tasks, cfg, train_only=train_only, digest=no_digest)
    assert sum(len(t.instances) for t in s["train"]) == sum(len(t.instances) for t in tasks)
    assert enforce_leak_policy(s["train"], s.evals(), "error", digest=no_digest)[1] == []


def test_heldout_tasks_of_an_unseen_category_are_fully_held_out(bundled, caplog):
    """Holding out every summarization task left the category unseen, yet the tasks were
    reported as partially supervised (heldout_task)."""
    tasks, train_only, cfg = bundled
    summarization = sorted(t.name for t in tasks if t.category == "summarization")
    assert summarization == ["samsum", "task1290_xsum_summarization", "xsum"]
    cfg = dataclasses.replace(cfg, heldout_tasks=[*summarization, "known_unknowns"])
    with caplog.at_level("WARNING", logger="data_prep.splits"):
        s = split_tasks(tasks, cfg, train_only=train_only)
    assert [t.name for t in s["heldout_task"]] == ["known_unknowns"]
    assert set(summarization) <= {t.name for t in s["heldout_category"]}
    assert "summarization" not in {t.category for t in s["train"]}
    assert "category 'summarization' has no training task" in caplog.text
    assert all(name in caplog.text for name in summarization)


def test_holding_out_every_task_is_an_error(bundled, tmp_path):
    tasks, train_only, cfg = bundled
    every = sorted({t.category for t in tasks})
    with pytest.raises(ValueError, match="every task is held out, the train split is empty"):
        split_tasks(tasks, dataclasses.replace(cfg, heldout_categories=every, heldout_tasks=[]))
    # The CLI says so and exits 1 (it exited 0 with an empty training blend).
    import yaml

    from data_prep.cli import main

    examples = Path(__file__).resolve().parents[2] / "examples" / "data_prep"
    data = yaml.safe_load((examples / "bench_config.yaml").read_text())
    data["task_map"] = str(examples / data["task_map"])
    for src in data["sources"]:
        src["path"] = str((examples / src["path"]).resolve())
    data["splits"]["heldout_categories"] = every
    data["splits"]["heldout_tasks"] = []
    config = tmp_path / "all_held_out.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert not (tmp_path / "out").exists()


def test_dropping_every_training_instance_is_an_error():
    train = [_t("tr", ["The cat sat."])]
    evals = {"heldout_instance": [_t("ev", ["the cat sat"])]}
    with pytest.raises(DataError, match="removed every training instance"):
        enforce_leak_policy(train, evals, "drop")
