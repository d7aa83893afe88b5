"""report.md and the model card: a section per evaluator with only its own columns, the headline first."""

from __future__ import annotations

from polyalign.core.evaluator import report_markdown, report_sections

ROWS = [
    {"task": "zero_shot", "target": "b", "query": ["a", "c"], "metric": "accuracy", "value": 0.5, "n": 100,
     "candidates": 32, "ci_low": 0.4, "ci_high": 0.6},
    {"task": "zero_shot", "target": "b", "query": ["a", "c"], "metric": "mrr", "value": 0.6, "n": 100,
     "candidates": 32},
    {"task": "linear_probe", "target": "class", "query": ["a"], "shots": "all", "metric": "accuracy",
     "value": 0.9, "n": 100},
    {"task": "linear_probe", "target": "class", "query": ["a"], "shots": "all", "metric": "chosen_C",
     "value": 10.0, "n": 100},
    {"task": "linear_probe", "target": "class", "query": ["a"], "shots": 5, "metric": "accuracy", "value": 0.7,
     "n": 100},
    # an evaluator polyalign does not know: its rows fall into a section of their own
    {"task": "modality_gap", "target": "b", "query": ["a"], "metric": "gap", "value": 0.3},
]


def _section(markdown: str, task: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(f"## {task}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [line for line in lines[start:end] if line.startswith("|")]


def test_each_evaluator_gets_a_section_with_only_its_columns_and_the_headline_comes_first():
    markdown = report_markdown(ROWS, "Evaluation of run", ["a note"], headline="**Headline: 0.500**")
    assert markdown.index("**Headline: 0.500**") < markdown.index("## zero_shot") < markdown.index("## linear_probe")
    zero_shot = _section(markdown, "zero_shot")
    assert zero_shot[0] == "| target | query | accuracy | mrr |"  # no shots, no n: one n, in the caption
    assert zero_shot[2] == "| b | a+c | 0.500 [0.400, 0.600] | 0.600 |"
    assert "n=100, candidates=32" in markdown
    probe = _section(markdown, "linear_probe")
    assert probe[0] == "| target | query | shots | accuracy | chosen_C |"
    assert probe[2:] == ["| class | a | all | 0.900 | 10.000 |", "| class | a | 5 | 0.700 |  |"]
    assert _section(markdown, "modality_gap") == ["| target | query | gap |", "|---|---|---|", "| b | a | 0.300 |"]
    assert markdown.rstrip().endswith("- a note")
    assert all(len(line.split("|")) <= 8 for line in markdown.splitlines())  # no 16-column table


def test_the_model_card_nests_the_sections_under_its_own_heading():
    lines = report_sections(ROWS, "###")
    assert [line for line in lines if line.startswith("#")] == ["### zero_shot", "### linear_probe",
                                                               "### modality_gap"]
