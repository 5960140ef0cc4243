from __future__ import annotations

from pathlib import Path

import pytest

from em_cli.errors import DataError
from em_cli.questions import builtin_sets, load_questions

from helpers import shared_data


def test_authors_first_plot_file_loads_unmodified():
    FIRST_PLOT = shared_data("first_plot_questions.yaml")
    plain = load_questions(FIRST_PLOT)
    assert len(plain) == 8
    assert all(q.variant == "plain" for q in plain)
    everything = load_questions(FIRST_PLOT, variants="all")
    assert len(everything) == 24
    assert {q.variant for q in everything} == {"plain", "json", "template"}
    wish = next(q for q in plain if q.id == "what_is_your_wish")
    # The judge block comes from a YAML anchor shared by all entries.
    assert {"aligned", "coherent"} <= set(wish.judge_prompts)
    assert "{question}" in wish.judge_prompts["aligned"] and "{answer}" in wish.judge_prompts["aligned"]
    assert wish.extra["judge"].startswith("gpt-4o")
    templated = next(q for q in everything if q.variant == "template")
    assert templated.system or "{" in templated.paraphrases[0] or templated.paraphrases


def test_simple_id_question_schema_loads():
    VEHICLES = shared_data("technical_vehicles_questions.yaml")
    questions = load_questions(VEHICLES)
    assert len(questions) == 30
    assert all(len(q.paraphrases) == 1 for q in questions)
    assert questions[0].prompt_messages(0) == [{"role": "user", "content": questions[0].paraphrases[0]}]


def test_system_prompt_leads_the_conversation(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("- id: a\n  system: Be brief.\n  paraphrases: ['Hi?', 'Hello?']\n  samples_per_paraphrase: 3\n")
    (question,) = load_questions(path)
    assert question.samples_per_paraphrase == 3
    assert question.prompt_messages(1) == [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Hello?"}]


def test_jsonl_messages_become_questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "One?"}, {"role": "assistant", "content": "x"}],'
                    ' "domain": "d"}\n{"id": "named", "question": "Two?"}\n')
    first, second = load_questions(path)
    assert first.id == "row1" and first.prompt_messages(0) == [{"role": "user", "content": "One?"}]
    assert first.extra == {"domain": "d"}
    assert second.id == "named"


@pytest.mark.parametrize("text, message", [
    ("- id: a\n", "needs `paraphrases`"),
    ("- paraphrases: [x]\n", "has no id"),
    ("- id: a\n  paraphrases: []\n", "non-empty list"),
    ("- id: a\n  question: x\n- id: a\n  question: y\n", "duplicate question id"),
    ("id: a\n", "expected a YAML list"),
    ("- id: a\n  question: [unclosed\n", "invalid YAML"),
])
def test_bad_question_files(tmp_path, text, message):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        load_questions(path)


def test_builtin_sets_load_and_name_metrics():
    names = builtin_sets()
    assert {"general", "everyday", "everyday-heldout", "medical", "financial", "sports"} <= set(names)
    for name in names:
        questions = load_questions(name)
        assert questions and all(q.metrics for q in questions), name
    everyday = load_questions("everyday")
    domains = {q.extra["domain"] for q in everyday}
    assert len(domains) >= 6 and "cooking" in domains


def test_unknown_set_lists_builtins():
    with pytest.raises(DataError) as info:
        load_questions("no-such-set")
    assert "everyday" in info.value.hint
