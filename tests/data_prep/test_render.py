import random

import pytest

from data_prep.render import (
    PAPER_DELIMITERS,
    ShotPolicy,
    add_delimiter,
    render_example,
    render_sampled,
    render_target,
    sample_demonstrations,
    zipf_probabilities,
)
from data_prep.schema import Instance, Task


def _task(level="task", definition="Summarize the text.", n=6):
    insts = [Instance(input=f"text {i}", outputs=[f"out {i}"], id=str(i)) for i in range(n)]
    return Task(
        name="t",
        benchmark="niv2",
        category="c",
        instruction_level=level,
        definition=definition,
        instances=insts,
    )


def test_task_level_layout_with_demos_between_definition_and_input():
    t = _task()
    ex = render_example(
        t, t.instances[0], demonstrations=[t.instances[1], t.instances[2]], delimiter=" A:"
    )
    assert ex.prompt == "Summarize the text.\n\ntext 1 A: out 1\n\n\ntext 2 A: out 2\n\n\ntext 0 A:"
    assert ex.target == " out 0"


def test_instance_level_demos_before_example_and_definition_per_instance():
    t = _task(level="instance", definition="Is this GPT-2?")
    ex = render_example(t, t.instances[0], demonstrations=[t.instances[1]], delimiter="\nOutput:")
    assert ex.prompt == "Is this GPT-2?\ntext 1\nOutput: out 1\n\n\nIs this GPT-2?\ntext 0\nOutput:"
    t0 = _task(level="instance", definition="")
    assert render_example(t0, t0.instances[0], delimiter=" A:").prompt == "text 0 A:"


def test_delimiter_only_when_prompt_does_not_end_in_colon():
    assert add_delimiter("Question: why?\n", " A:") == "Question: why? A:"
    assert add_delimiter("Answer:\n", " A:") == "Answer:"
    assert add_delimiter("", " A:") == ""
    assert "\noutput:" in PAPER_DELIMITERS and len(PAPER_DELIMITERS) == 8


def test_empty_prompt_target_has_no_leading_space():
    assert render_target("", "whole text") == "whole text"
    assert render_target("p", "  x ") == " x"


def test_zipf_matches_paper_zero_shot_fractions():
    assert zipf_probabilities(4.0, 5)[0] == pytest.approx(0.925, abs=1e-3)
    assert zipf_probabilities(2.0, 5)[0] == pytest.approx(0.671, abs=1e-3)
    assert len(zipf_probabilities(2.0, 5)) == 6


def test_demonstrations_never_include_the_instance():
    t = _task(n=4)
    rng = random.Random(0)
    for _ in range(300):
        inst = t.instances[rng.randrange(4)]
        demos = sample_demonstrations(t.instances, 3, rng, exclude=inst)
        assert len(demos) == 3 and inst not in demos
        assert len({d.id for d in demos}) == 3
    # a pool that only holds the instance gives no demonstrations
    assert sample_demonstrations([t.instances[0]], 2, rng, exclude=t.instances[0]) == []


def test_render_sampled_is_deterministic_and_uses_zipf_shots():
    t = _task(n=20)
    shots = ShotPolicy(zipf_a=1.0, max_k=5)
    a = [
        render_sampled(t, i, random.Random(f"s:{i.id}"), pool=t.instances, shots=shots)
        for i in t.instances
    ]
    b = [
        render_sampled(t, i, random.Random(f"s:{i.id}"), pool=t.instances, shots=shots)
        for i in t.instances
    ]
    assert a == b
    assert any(ex.prompt.count("\n\n\n") > 0 for ex in a)  # some examples got demonstrations
    for inst, ex in zip(t.instances, a):
        assert ex.prompt.count(inst.input + " ") + ex.prompt.count(inst.input + "\n") == 1
