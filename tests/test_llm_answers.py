"""Reading real models' answers: reasoning stripped before anything reads them, the
last object that validates, code as code (fenced blocks, JSON strings with literal
newlines, SEARCH/REPLACE edits), cut-off answers told as cut off, prompts that fit
the window. Answers come from the scripted model through litellm, shaped like what
real models write."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab.agents.state import Proposal
from archlab.llm import LLMClient
from archlab.llm.answers import code_in, read_object, strip_reasoning
from archlab.llm.edits import apply_edits, parse_edits
from archlab.llm.window import count_tokens, fit_sections
from archlab.tasks import get_task

ASK = [{"role": "user", "content": "Propose an architecture."}]
GOOD = {"name": "gated-conv", "motivation": "cheaper than attention", "design": "a gated 3x3 convolution"}
PARENT = "def cell(x0, ops):\n    x1 = ops.nor_conv_3x3(x0)\n    x2 = ops.none(x0) + ops.skip_connect(x1)\n" \
         "    x3 = ops.skip_connect(x0) + ops.none(x1) + ops.nor_conv_1x1(x2)\n    return x3\n"


def client(tmp_path: Path, rules: list[dict], **kw) -> LLMClient:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"rules": rules}))
    return LLMClient(f"scripted/{path}", tmp_path / "llm.jsonl", **kw)


def log(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]


NB201 = get_task("nb201", {"table": "unused"})


# -- reasoning ----------------------------------------------------------------------------------

def test_a_draft_inside_think_is_never_the_answer(tmp_path):
    draft = json.dumps({**GOOD, "name": "draft-idea"})
    answer = f"<think>Maybe {draft}? No, better:</think>\n{json.dumps(GOOD)}"
    llm = client(tmp_path, [{"step": "research", "response": answer}])
    proposal = llm.structured(ASK, Proposal, step="research", experiment=1)
    assert proposal.name == "gated-conv" and "draft" not in proposal.model_dump_json()
    [rec] = log(tmp_path)
    assert rec["valid"] and "draft-idea" in rec["reasoning"] and rec["response"] == answer


@pytest.mark.parametrize("raw, answer, reasoning", [
    ("<thinking>plan</thinking>The mixer wins.", "The mixer wins.", "plan"),
    ("<REASONING>x</REASONING>ok", "ok", "x"),
    ("my hidden chain</think>The answer.", "The answer.", "my hidden chain"),  # opening tag in the template
    ("Answer first. <think>then a thought that never ends", "Answer first.", "then a thought"),
])
def test_reasoning_blocks_are_stripped(raw, answer, reasoning):
    text, thought = strip_reasoning(raw)
    assert text == answer and reasoning in thought


def test_analyst_reasoning_never_becomes_the_lesson(tmp_path):
    from archlab.memory.vector import lesson

    raw = "<think>\nLesson: a made-up lesson from my scratchpad\n</think>It helped by 0.1.\nLesson: keep the gate."
    llm = client(tmp_path, [{"step": "analyse", "response": raw, "reasoning": "provider-side thoughts"}])
    text = llm.text(ASK, step="analyse", experiment=3)
    assert text == "It helped by 0.1.\nLesson: keep the gate." and lesson(text) == "keep the gate."
    [rec] = log(tmp_path)
    assert "provider-side thoughts" in rec["reasoning"] and "scratchpad" in rec["reasoning"]


def test_an_answer_that_is_only_reasoning_is_asked_again(tmp_path):
    llm = client(tmp_path, [{"step": "analyse", "attempt": 0, "response": "<think>hmm, let me see"},
                            {"step": "analyse", "response": "Fine."}])
    assert llm.text(ASK, step="analyse", experiment=1) == "Fine."
    assert [r["valid"] for r in log(tmp_path)] == [False, True]


# -- objects ------------------------------------------------------------------------------------

def test_the_last_object_that_validates_wins():
    first = json.dumps({**GOOD, "name": "first"})
    assert read_object(f"Option A: {first}\nFinal: {json.dumps(GOOD)}", Proposal)[0].name == "gated-conv"
    broken = '{"name": "only-a-name"}'
    assert read_object(f"{json.dumps(GOOD)} and also {broken}", Proposal)[0].name == "gated-conv"
    nested = json.dumps({"proposal": GOOD})
    assert read_object(nested, Proposal)[0].name == "gated-conv"


def test_keys_ids_and_strings_the_way_models_write_them():
    raw = '{"Name": "x", "MOTIVATION": "line one\nline two", "Design": "d", "parent-id": "#3",}'
    obj, errors = read_object(raw, Proposal)
    assert errors == [] and obj.parent_id == 3 and obj.motivation == "line one\nline two"
    assert read_object(json.dumps({**GOOD, "parent_id": "none"}), Proposal)[0].parent_id is None
    obj, errors = read_object(json.dumps({**GOOD, "parent_id": "the best one"}), Proposal)
    assert obj is None and errors[0].startswith("field 'parent_id'") and "the best one" in errors[0]


def test_feedback_names_the_field_to_fix(tmp_path):
    llm = client(tmp_path, [{"step": "research", "attempt": 0, "response": {"name": "x", "design": "d"}},
                            {"step": "research", "response": GOOD}])
    llm.structured(ASK, Proposal, step="research", experiment=1)
    first, second = log(tmp_path)
    assert first["error"] == "field 'motivation': Field required"
    assert "- field 'motivation': Field required" in second["request"]["messages"][-1]["content"]


# -- code ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, where", [
    (f"Here it is:\n```python\n{PARENT}```\nIt uses a skip.", "```python"),
    (f'{{"notes": "see the block"}}\n```python\n{PARENT}```', "```python"),  # a block beside the JSON
    ('{"code": "' + PARENT.replace("\n", "\\n") + '"}', "JSON"),
    ('{"code": "' + PARENT + '"}', "JSON"),  # literal newlines inside the string
    (json.dumps({"code": f"```python\n{PARENT}```"}), "JSON"),  # a fence inside the string
    (PARENT, "the answer itself"),
])
def test_code_is_found_in_the_forms_models_write(answer, where):
    code, found = code_in(answer)
    assert code == PARENT and where in found


def test_no_code_says_how_to_answer():
    code, why = code_in("I would use a gated convolution here.")
    assert code is None and "```python" in why


def test_fenced_code_goes_through_the_client_and_the_task_check(tmp_path):
    class_wrapped = "```python\nclass Cell:\n    def cell(self, x0, ops):\n        return x0\n```"
    llm = client(tmp_path, [{"step": "code", "attempt": 0, "response": class_wrapped},
                            {"step": "code", "response": f"```python\n{PARENT}```"}])
    assert llm.code(ASK, step="code", experiment=1, base_code=None, check=NB201.static_errors) == PARENT
    first = log(tmp_path)[0]
    assert "`cell` is defined inside class `Cell` (line 2)" in first["error"]


# -- edits --------------------------------------------------------------------------------------

EDIT = """<<<<<<< SEARCH
    x2 = ops.none(x0) + ops.skip_connect(x1)
=======
    x2 = ops.nor_conv_3x3(x0) + ops.skip_connect(x1)
>>>>>>> REPLACE"""


def test_search_replace_edits_apply_against_the_parent(tmp_path):
    llm = client(tmp_path, [{"step": "code", "response": f"One change:\n{EDIT}\n"}])
    out = llm.code(ASK, step="code", experiment=1, base_code=PARENT, check=NB201.static_errors)
    assert out == PARENT.replace("ops.none(x0) + ops.skip_connect(x1)", "ops.nor_conv_3x3(x0) + ops.skip_connect(x1)")


@pytest.mark.parametrize("block, says", [
    (EDIT.replace("ops.none(x0) +", "ops.avg_pool_3x3(x0) +", 1),
     "edit block 1: its SEARCH lines (starting 'x2 = ops.avg_pool_3x3"),
    ("<<<<<<< SEARCH\n    return x3\n=======\n    return x3\n>>>>>>> REPLACE", "edit block 1 changes nothing"),
    ("<<<<<<< SEARCH\nops.none(x\n=======\nops.skip_connect(x\n>>>>>>> REPLACE", "match 2 places"),
    (EDIT.rsplit("\n", 1)[0], "edit block 1 is not closed"),
])
def test_a_bad_edit_is_named_and_goes_back(tmp_path, block, says):
    llm = client(tmp_path, [{"step": "code", "attempt": 0, "response": block},
                            {"step": "code", "response": EDIT}])
    llm.code(ASK, step="code", experiment=1, base_code=PARENT, check=NB201.static_errors)
    first, second = log(tmp_path)
    assert not first["valid"] and says in first["error"], first["error"]
    assert says in second["request"]["messages"][-1]["content"]


def test_edits_apply_in_order_and_trailing_spaces_do_not_matter():
    blocks, errors = parse_edits(EDIT.replace("skip_connect(x1)\n=", "skip_connect(x1)   \n=") + "\n" + EDIT.replace(
        "ops.none(x0) + ops.skip_connect(x1)\n=", "ops.nor_conv_3x3(x0) + ops.skip_connect(x1)\n=").replace(
        "ops.nor_conv_3x3(x0) + ops.skip_connect(x1)\n>", "ops.nor_conv_1x1(x0) + ops.skip_connect(x1)\n>"))
    code, problems = apply_edits(PARENT, blocks)
    assert errors == [] and problems == [] and "ops.nor_conv_1x1(x0) + ops.skip_connect(x1)" in code


def test_edits_without_a_parent_ask_for_the_whole_module(tmp_path):
    llm = client(tmp_path, [{"step": "code", "attempt": 0, "response": EDIT},
                            {"step": "code", "response": f"```python\n{PARENT}```"}])
    llm.code(ASK, step="code", experiment=1, base_code=None, check=NB201.static_errors)
    assert "no code to edit" in log(tmp_path)[0]["error"]


# -- length and window ----------------------------------------------------------------------------

def test_a_cut_off_answer_is_told_as_cut_off_not_as_invalid_json(tmp_path):
    cut = '{"name": "gated-conv", "motivation": "because the long explanation goes on and on'
    llm = client(tmp_path, [{"step": "research", "attempt": 0, "response": cut, "finish_reason": "length",
                             "usage": {"prompt_tokens": 900, "completion_tokens": 1024}},
                            {"step": "research", "response": GOOD}], max_tokens={"research": 1024})
    llm.structured(ASK, Proposal, step="research", experiment=1)
    first, second = log(tmp_path)
    assert first["finish_reason"] == "length" and first["request"]["max_tokens"] == 1024
    assert "cut off at the 1024-token limit" in first["error"] and "invalid" not in first["error"]
    assert second["request"]["messages"][-1]["content"].startswith("Your previous answer was cut off")


def test_a_cut_off_module_is_asked_again_as_edits(tmp_path):
    llm = client(tmp_path, [{"step": "code", "attempt": 0, "response": f"```python\n{PARENT[:40]}",
                             "finish_reason": "length"},
                            {"step": "code", "response": EDIT}])
    llm.code(ASK, step="code", experiment=1, base_code=PARENT, check=NB201.static_errors)
    assert "SEARCH/REPLACE" in log(tmp_path)[0]["error"]


def test_an_oversized_parent_is_cut_at_line_ends_to_fit_the_window(tmp_path):
    from archlab.prompts import render

    parent = "def cell(x0, ops):\n" + "".join(f"    h{i} = ops.skip_connect(x0)  # step {i} of a long module\n"
                                              for i in range(2000)) + "    return x0\n"
    proposal = {"name": "n", "motivation": "m", "design": "d"}
    context = {"task": NB201, "proposal": proposal, "parent_code": parent, "reference_code": None, "code": None,
               "error": "", "schema": {}, "format": "code", "diff": True}
    full = [{"role": "user", "content": render("coder.j2", **context)}]
    assert count_tokens("openai/gpt-4o", full) > 40_000  # the 41.7k-token prompt of the report
    llm = client(tmp_path, [{"step": "code:0", "response": f"```python\n{PARENT}```"}], context_tokens=8192)

    def fit(budget: int) -> list[dict]:
        return fit_sections(lambda c: [{"role": "user", "content": render("coder.j2", **c)}], context, (), budget,
                            llm.model, code_keys=("parent_code",))[0]

    llm.code(None, step="code:0", experiment=1, base_code=parent, fit=fit, check=NB201.static_errors)
    [rec] = log(tmp_path)
    sent = rec["request"]["messages"]
    assert count_tokens(llm.model, sent) <= llm.budget("code:0") < 8192
    shown = sent[0]["content"].split("```python\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert shown[-1].startswith("# ... ") and "more lines not shown" in shown[-1]
    assert all(line in parent.splitlines() for line in shown[:-1]), "the parent is never cut mid-line"


def test_the_researcher_prompt_is_trimmed_by_priority(tmp_path):
    rows = [{"ref": f"#{i}", "name": f"e{i}", "status": "done", "score": 90.0, "parent": None, "motivation": "m" * 400,
             "summary": "", "id": str(i)} for i in range(6)]
    exemplar = [{**r, "code": PARENT * 40} for r in rows[:3]]
    context = {"task": NB201, "metric": "val_acc", "direction": "higher", "elites": rows, "parent": [],
               "near_parent": rows, "near_idea": rows, "failures": [], "insights": [], "notes": [],
               "exemplars": exemplar, "rejections": [], "schema": Proposal.model_json_schema(),
               "ideas": 1, "parent_note": None, "predictions": []}
    from archlab.agents.researcher import TRIM_ORDER
    from archlab.prompts import render

    def render_researcher(c: dict) -> list[dict]:
        return [{"role": "user", "content": render("researcher.j2", **c)}]

    messages, dropped = fit_sections(render_researcher, context, TRIM_ORDER, 2500, "openai/gpt-4o")
    assert count_tokens("openai/gpt-4o", messages) <= 2500
    assert dropped.get("exemplars") == 3 and "elites" not in dropped


def test_the_lm_researcher_prompt_fits_ollamas_default_window(tmp_path):
    """The lm researcher prompt with its exemplars was 4.2k tokens: over Ollama's default window,
    which cuts the prompt silently. An ollama model string assumes 4096 and trims to fit."""
    from archlab.agents.researcher import TRIM_ORDER
    from archlab.agents.state import proposal_schema
    from archlab.llm.schemas import for_prompt
    from archlab.prompts import render

    lm = get_task("lm", {}, "tiny")
    rows = [{"ref": f"#{i}", "name": c.name, "status": "done", "score": 2.9, "parent": None, "motivation": c.motivation,
             "summary": "", "id": str(i)} for i, c in enumerate(lm.seeds(), 1)]
    context = {"task": lm, "metric": lm.metric, "direction": "lower", "elites": rows, "parent": rows[:1],
               "near_parent": rows[1:], "near_idea": rows, "failures": [], "insights": [], "notes": [],
               "exemplars": [{**r, "code": c.code} for r, c in zip(rows, lm.seeds(), strict=True)], "rejections": [],
               "schema": for_prompt(proposal_schema(lm)), "ideas": 1, "parent_note": None, "predictions": []}

    def render_researcher(c: dict) -> list[dict]:
        return [{"role": "user", "content": render("researcher.j2", **c)}]

    llm = LLMClient("ollama/qwen2.5-coder", tmp_path / "llm.jsonl")
    assert llm.window() == 4096 and llm.budget("research:0") == 4096 - 1024 - 64
    assert count_tokens(llm.model, render_researcher(context)) > 4096
    messages, dropped = fit_sections(render_researcher, context, TRIM_ORDER, llm.budget("research:0"), llm.model)
    assert count_tokens(llm.model, messages) <= llm.budget("research:0") and dropped["exemplars"] >= 1
    assert "Best evaluated experiments" in messages[0]["content"]  # the elites stay
    assert LLMClient("ollama/qwen2.5-coder", tmp_path / "l.jsonl", context_tokens=32768).window() == 32768


def test_tools_mode_reads_the_forced_tool_call(tmp_path):
    llm = client(tmp_path, [{"step": "research", "response": "",
                             "tool_calls": [{"name": "Proposal", "arguments": GOOD}]}],
                 structured="tools")
    assert llm.mode == "tools"
    assert llm.structured(ASK, Proposal, step="research", experiment=1).name == "gated-conv"
    [rec] = log(tmp_path)
    assert rec["request"]["mode"] == "tools" and json.loads(rec["response"]) == GOOD and rec["tool_calls"] is None
