"""k-shot prompts: the training renderer, seeded demonstrations, never the instance itself."""

from __future__ import annotations

from data_prep.render import render_example
from data_prep.schema import Instance, Task
from megatron_optiml.eval.prompts import demonstration_pool, render_eval_example


def make_task(n=8, demos=0):
    return Task(
        name="t",
        benchmark="b",
        category="c",
        instruction_level="task",
        definition="Do it.",
        demonstrations=[
            Instance(input=f"demo {i}", outputs=[f"d{i}"], id=f"d{i}") for i in range(demos)
        ],
        instances=[Instance(input=f"input {i}", outputs=[f"out {i}"], id=str(i)) for i in range(n)],
    )


def test_k_shot_never_shows_the_instance_and_is_deterministic():
    task = make_task()
    for index in range(len(task.instances)):
        ex, demos = render_eval_example(
            task, index, split="s", k=5, pool=task.instances, delimiter="\nAnswer:", seed=1
        )
        assert len(demos) == 5
        assert task.instances[index] not in demos
        assert f"input {index}\nAnswer:" == ex.prompt.split("\n\n\n")[-1]
        assert ex.prompt == render_example(task, task.instances[index], demonstrations=demos).prompt
        again, demos2 = render_eval_example(
            task, index, split="s", k=5, pool=task.instances, delimiter="\nAnswer:", seed=1
        )
        assert again == ex and demos2 == demos
    _, other = render_eval_example(
        task, 0, split="s", k=5, pool=task.instances, delimiter="\nAnswer:", seed=2
    )
    _, first = render_eval_example(
        task, 0, split="s", k=5, pool=task.instances, delimiter="\nAnswer:", seed=1
    )
    assert other != first  # the seed matters


def test_zero_shot_is_the_training_render():
    task = make_task()
    ex, demos = render_eval_example(
        task, 3, split="s", k=0, pool=task.instances, delimiter=" A:", seed=1
    )
    assert demos == []
    assert ex == render_example(task, task.instances[3], delimiter=" A:")


def test_demonstration_pool_order():
    train = {"t": [Instance(input=f"train {i}", outputs=["x"]) for i in range(6)]}
    assert demonstration_pool(make_task(demos=5), 5, "auto", train)[0] == "demonstrations"
    assert demonstration_pool(make_task(demos=2), 5, "auto", train)[0] == "train"
    assert demonstration_pool(make_task(demos=2), 5, "auto", {})[0] == "task"
    src, pool = demonstration_pool(make_task(demos=5), 5, "train", train)
    assert src == "train" and pool is train["t"]
