"""`prepend_bos`: prompts start with OPT's BOS as lm-evaluation-harness's (HF tokenizer's) do,
and the scores are those of a direct HF computation on those ids; off by default."""

from __future__ import annotations

import pytest
from test_scoring import direct_logprob
from transformers import AutoTokenizer

from data_prep.render import render_example, render_target
from data_prep.schema import Instance, Task
from megatron_optiml.eval.config import EvalConfig
from megatron_optiml.eval.runner import evaluate_model
from megatron_optiml.eval.tokens import BOS_ID, encode, fit_prompt
from megatron_optiml.tokenizer import OPT_TOKENIZER_DIR


@pytest.fixture(scope="module")
def hf_tokenizer():
    # What HF's facebook/opt-* tokenizers do, and lm-eval's HF backend relies on: BOS first.
    return AutoTokenizer.from_pretrained(str(OPT_TOKENIZER_DIR), add_bos_token=True)


def _task() -> Task:
    return Task(
        name="t",
        benchmark="b",
        category="c",
        instruction_level="task",
        definition="Answer the question.",
        instances=[
            Instance(
                input=f"Is {i} an even number?",
                outputs=["yes" if i % 2 == 0 else "no"],
                options=["yes", "no", "it depends"],
                id=str(i),
            )
            for i in range(3)
        ],
    )


def test_fit_prompt_keeps_bos_when_cutting():
    assert fit_prompt([7, 8, 9], 4, 10, bos=True) == [BOS_ID, 7, 8, 9]
    # 10 positions - 4 for the target - 1 for BOS: the last 5 prompt tokens survive.
    assert fit_prompt(list(range(10, 20)), 4, 10, bos=True) == [BOS_ID, 15, 16, 17, 18, 19]
    with pytest.raises(ValueError, match="no room"):
        fit_prompt([1], 9, 10, bos=True)


def test_bos_ids_are_the_hf_tokenizers(hf_tokenizer):
    task = _task()
    prompt = render_example(task, task.instances[0]).prompt
    hf_ids = hf_tokenizer(prompt)["input_ids"]
    assert hf_ids[0] == BOS_ID == hf_tokenizer.bos_token_id == 2  # OPT: bos = eos = </s>
    assert fit_prompt(encode(prompt), 4, 2048, bos=True) == hf_ids
    assert fit_prompt(encode(prompt), 4, 2048) == hf_ids[1:]  # default: no BOS


def test_scores_with_bos_equal_direct_hf_computation(tiny_model, hf_tokenizer):
    task = _task()
    runs = {}
    for bos in (False, True):
        cfg = EvalConfig(splits=["s"], shots=[0], predictions=True, progress=False, prepend_bos=bos)
        _, records = evaluate_model(tiny_model, {"s": [task]}, cfg)
        runs[bos] = records
    for i, inst in enumerate(task.instances):
        prompt = render_example(task, inst).prompt
        context = hf_tokenizer(prompt)["input_ids"]  # [BOS] + prompt, as lm-eval's context
        options = [
            hf_tokenizer(render_target(prompt, o), add_special_tokens=False)["input_ids"]
            for o in inst.options
        ]
        with_bos = [direct_logprob(tiny_model, context, o) for o in options]
        without = [direct_logprob(tiny_model, context[1:], o) for o in options]
        assert runs[True][i]["option_logprobs"] == pytest.approx(with_bos, abs=1e-4)
        assert runs[False][i]["option_logprobs"] == pytest.approx(without, abs=1e-4)
        # The flag changes what is scored (else the checks above would say nothing).
        assert max(abs(a - b) for a, b in zip(with_bos, without)) > 1e-3


def test_cli_flag_reaches_the_config(monkeypatch, tmp_path):
    from megatron_optiml.cli import evaluate as cli

    seen = []

    def fake_evaluate_bench(models, bench, out, cfg):
        seen.append(cfg)
        (tmp_path / "report.md").write_text("", encoding="utf-8")

    monkeypatch.setattr(cli, "evaluate_bench", fake_evaluate_bench)
    base = ["--model", "m", "--bench", "b", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(base) == 0
    assert cli.main([*base, "--prepend-bos"]) == 0
    assert [c.prepend_bos for c in seen] == [False, True]
