"""rote.names: the shared names, and `planned_stages`, the one rule for which stages a run goes
through (the runner runs them, the report calls the others 'not in config', a study counts them)."""
import pytest

from rote.names import EVAL_STAGES, RUN_STAGES, asks_facts, planned_stages


@pytest.mark.parametrize("eval_stages, from_checkpoint, expected", [
    (EVAL_STAGES, False, RUN_STAGES),
    # eval/base always runs: the reference of the damage measures (asks_facts: facts only when asked)
    (("phase2",), False, ("data", "eval/base", "phase1", "phase2", "eval/phase2", "report")),
    (("base", "phase1", "phase2"), True, ("data", "eval/base", "phase2", "eval/phase2", "report")),
    ((), True, ("data", "eval/base", "phase2", "report")),
])
def test_planned_stages(eval_stages, from_checkpoint, expected):
    assert planned_stages(eval_stages, from_checkpoint) == expected


def test_eval_base_asks_the_facts_only_when_in_eval_stages():
    assert asks_facts("eval/base", ("base", "phase2")) and not asks_facts("eval/base", ("phase2",))
    assert asks_facts("eval/phase2", ()) and asks_facts("eval/custom", ())  # `rote eval --stage custom`


def test_the_report_and_the_runner_agree_on_skipped_stages(tmp_path):
    """A stage planned_stages leaves out is 'not in config' in the report; a planned one not yet
    done is 'not finished' (the report used to keep its own copy of the rule)."""
    from rote.report.headline import stage_status
    config = {"config": {"eval": {"stages": ["phase2"]}, "phase2": {"checkpoint": "elsewhere"}}}
    status = stage_status(tmp_path, config)
    planned = planned_stages(("phase2",), True)
    assert {s for s, v in status.items() if v == "not in config"} == set(RUN_STAGES[:-1]) - set(planned)
    assert {s for s, v in status.items() if v == "not finished"} == set(planned) - {"report"}
