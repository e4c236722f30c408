import json
from pathlib import Path

import pytest

from data_prep.config import SourceConfig
from data_prep.errors import DataError
from data_prep.mapping import TaskMap, load_task_map
from data_prep.readers import read_sources
from data_prep.readers.bigbench import read_bigbench
from data_prep.readers.jsonl import read_jsonl, read_text
from data_prep.readers.niv2 import read_niv2
from data_prep.readers.promptsource import read_promptsource
from data_prep.readers.templates import read_flan, read_jinja

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_bundled_niv2():
    tasks = read_niv2(DATA / "natural_instructions")
    assert [t.name for t in tasks] == [
        "task1290_xsum_summarization",
        "task1292_yelp_review_full_text_categorization",
    ]
    t = tasks[1]
    assert t.instruction_level == "task" and t.category == "sentiment analysis"
    assert t.definition.startswith("You are given a review about a place.")
    assert len(t.instances) == 100 and t.demonstrations
    assert t.instances[0].outputs == ["1 star"]


def test_bundled_bigbench_multiple_choice_becomes_options():
    tasks = {t.name: t for t in read_bigbench(DATA / "bigbench")}
    assert len(tasks) == 10
    mc = tasks["hindu_knowledge"].instances[0]
    assert mc.options and len(mc.options) >= 2 and mc.outputs[0] in mc.options
    gen = tasks["auto_debugging"].instances[0]
    assert gen.options is None and gen.outputs == ["2"]
    assert sum(1 for t in tasks.values() if t.instances[0].options) == 8


def test_bundled_promptsource_templates_form_one_task():
    names = ["ag_news", "amazon_polarity", "yelp_review_full", "xsum", "samsum", "glue_mrpc"]
    names += ["paws_labeled_final", "paws", "sciq", "commonsense_qa"]
    tasks = {t.name: t for t in read_promptsource(DATA / "promptsource_t0", datasets=names)}
    ag = tasks["ag_news"]
    assert ag.instruction_level == "instance" and len(ag.instances) == 3 * 40
    assert all("<|endoftext|>" not in o for i in ag.instances for o in i.outputs)
    assert "paws_labeled_final" in tasks and "paws" not in tasks  # longest prefix wins


def test_jsonl_split_on_newline_only(tmp_path):
    f = tmp_path / "x.jsonl"
    recs = [{"prompt": "a\u2028b\rc", "completion": "ok"}, {"prompt": "d", "completion": "e"}]
    f.write_bytes(("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n").encode())
    (t,) = read_jsonl(f, benchmark="x", task="t")
    assert [i.input for i in t.instances] == ["a\u2028b\rc", "d"]


def test_jsonl_input_output_with_task_field_and_text(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text(
        '{"task": "b", "input": "i", "output": ["o1", "o2"], "options": ["o1", "x"]}\n'
        '{"task": "a", "input": "j", "output": "p"}\n'
    )
    tasks = read_jsonl(f, benchmark="reasoning")
    assert [t.name for t in tasks] == ["a", "b"] and tasks[1].instances[0].options == ["o1", "x"]
    g = tmp_path / "pt.jsonl"
    g.write_text('{"text": "Plain pre-training text."}\n')
    (pt,) = read_text(g, benchmark="pretrain", task="pretrain")
    assert pt.instances[0].input == "" and pt.instances[0].outputs == ["Plain pre-training text."]


def test_jinja_templates(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text('{"text": "Stocks rose.", "label": 2}\n{"text": "Team won.", "label": 1}\n')
    tpl = tmp_path / "t.yaml"
    tpl.write_text(
        "templates:\n"
        "  - name: classify\n"
        '    jinja: "{{text}}\\nWhich topic? ||| {{answer_choices[label]}}"\n'
        '    answer_choices: "World ||| Sports ||| Business"\n'
        "  - name: plain\n"
        '    jinja: "Topic of: {{text}} ||| {{label}}"\n'
    )
    t = read_jinja(recs, tpl, task="news", benchmark="promptsource")
    assert len(t.instances) == 4
    assert t.instances[0].input == "Stocks rose.\nWhich topic?"
    assert t.instances[0].outputs == ["Business"] and t.instances[0].options == [
        "World",
        "Sports",
        "Business",
    ]


def test_flan_templates(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text(
        '{"premise": "P.", "hypothesis": "H.", "answer": "yes", "choices": ["yes", "no"]}\n'
    )
    tpl = tmp_path / "t.yaml"
    tpl.write_text(
        'options_field: choices\ntemplates:\n  - ["{premise}\\nDoes it follow that {hypothesis}?\\n{options_}", "{answer}"]\n'
    )
    (inst,) = read_flan(recs, tpl, task="nli", benchmark="flan").instances
    assert inst.input == "P.\nDoes it follow that H.?\nOPTIONS:\n- yes\n- no"
    assert inst.outputs == ["yes"] and inst.options == ["yes", "no"]


# --- bad input: errors name the file, line, task and field ------------------------------


def test_malformed_json_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        read_jsonl(f, benchmark="x", task="t")


def test_missing_field_names_line_and_field(tmp_path):
    f = tmp_path / "ds_tpl.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c"}\n')
    with pytest.raises(DataError, match=r"ds_tpl\.jsonl:3: missing field 'completion'"):
        read_promptsource(f, datasets=["ds"])


def test_empty_output_is_an_error(tmp_path):
    f = tmp_path / "ds_tpl.jsonl"
    f.write_text('{"prompt": "a", "completion": "<|endoftext|>"}\n')
    with pytest.raises(DataError, match=r"ds_tpl\.jsonl:1: field 'completion' is empty"):
        read_promptsource(f, datasets=["ds"])
    g = tmp_path / "task1_x.json"
    g.write_text(
        json.dumps({"Definition": ["d"], "Instances": [{"id": "i0", "input": "x", "output": [""]}]})
    )
    with pytest.raises(
        DataError, match=r"task1_x\.json: Instances\[0\] \(id 'i0'\): field 'output' is empty"
    ):
        read_niv2(g)


def test_niv2_missing_definition(tmp_path):
    g = tmp_path / "task2_y.json"
    g.write_text(json.dumps({"Instances": []}))
    with pytest.raises(DataError, match=r"task2_y\.json: missing field 'Definition'"):
        read_niv2(g)


def test_unreadable_template(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text('{"text": "a"}\n')
    tpl = tmp_path / "t.yaml"
    tpl.write_text('templates:\n  - name: broken\n    jinja: "{{ text ||| x"\n')
    with pytest.raises(DataError, match=r"t\.yaml: template 'broken': unreadable template"):
        read_jinja(recs, tpl, task="t", benchmark="b")
    tpl.write_text('templates:\n  - name: ok\n    jinja: "{{ title }} ||| x"\n')
    with pytest.raises(DataError, match=r"r\.jsonl:1: template 'ok': 'title' is undefined"):
        read_jinja(recs, tpl, task="t", benchmark="b")


def test_unknown_category_names_task_and_mapping(tmp_path):
    m = tmp_path / "map.yaml"
    m.write_text("categories: [summarization]\ntasks:\n  t: {category: sentiment analysis}\n")
    f = tmp_path / "d.jsonl"
    f.write_text('{"input": "x", "output": "y"}\n')
    src = SourceConfig(type="jsonl", path=str(f), benchmark="b", task="t")
    with pytest.raises(
        DataError, match=r"task 't' .*unknown category 'sentiment analysis'.*map\.yaml"
    ):
        read_sources([src], load_task_map(m))
    src2 = SourceConfig(type="jsonl", path=str(f), benchmark="b", task="u")
    with pytest.raises(DataError, match=r"task 'u' .*field 'category' is missing"):
        read_sources([src2], TaskMap())


def test_bundled_task_map_covers_bundled_data(bench_config):
    tasks, _ = read_sources(bench_config.sources, load_task_map(bench_config.task_map))
    assert len(tasks) == 21
    assert {t.benchmark for t in tasks} == {"niv2", "promptsource", "bigbench"}
