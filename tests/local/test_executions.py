"""Which execution a local pipeline run starts or resumes, and with which parameters."""

import calendar
import json

import pytest

from detector.errors import DetectorError
from detector.local.executions import (
    execution_dir,
    latest_execution,
    new_execution_id,
    plan_execution,
    resume_parameters,
    save_parameters,
)

DEFAULTS = {"MaxIter": 600, "MinTestingAP": 0.6}


def test_a_new_execution_is_named_after_its_utc_start_time():
    assert new_execution_id(calendar.timegm((2026, 12, 1, 15, 30, 5, 0, 0, 0))) == "20261201-153005"
    assert len(new_execution_id()) == len("20261201-153005")


def test_the_latest_execution_is_the_newest_folder(tmp_path):
    for name in ("20261201-090000", "20261201-153000", "20261130-235959"):
        (execution_dir(tmp_path, name)).mkdir(parents=True)
    (tmp_path / "executions" / "notes.txt").write_text("not an execution")
    assert latest_execution(tmp_path) == "20261201-153000"


@pytest.mark.parametrize("make", [lambda root: None, lambda root: (root / "executions").mkdir()], ids=["no folder", "empty"])
def test_resuming_without_an_execution_says_where_it_looked(tmp_path, make):
    make(tmp_path)
    with pytest.raises(DetectorError, match=f"--resume: no execution under {tmp_path / 'executions'} to resume"):
        latest_execution(tmp_path)


def test_a_resumed_execution_keeps_its_saved_parameters_unless_new_ones_are_given(tmp_path):
    saved = {"MaxIter": 12, "MinTestingAP": 0.1}
    path = save_parameters(tmp_path, "20261201-090000", saved)
    assert path == tmp_path / "executions" / "20261201-090000" / "parameters.json"
    assert json.loads(path.read_text()) == saved
    assert resume_parameters(tmp_path, "20261201-090000", DEFAULTS, overrides={}) == saved
    given = {**DEFAULTS, "MaxIter": 30}
    assert resume_parameters(tmp_path, "20261201-090000", given, overrides={"MaxIter": 30}) == given
    # An execution that stopped before saving them runs with the defaults.
    (execution_dir(tmp_path, "20261201-100000")).mkdir()
    assert resume_parameters(tmp_path, "20261201-100000", DEFAULTS, overrides={}) == DEFAULTS


def test_unreadable_saved_parameters_name_the_file(tmp_path):
    save_parameters(tmp_path, "20261201-090000", {})
    saved = execution_dir(tmp_path, "20261201-090000") / "parameters.json"
    saved.write_text("{broken")
    with pytest.raises(DetectorError, match="--resume: cannot read the parameters of execution 20261201-090000 from .*parameters.json"):
        resume_parameters(tmp_path, "20261201-090000", DEFAULTS, overrides={})
    saved.write_text("[1]")
    with pytest.raises(DetectorError, match="does not hold a JSON object"):
        resume_parameters(tmp_path, "20261201-090000", DEFAULTS, overrides={})


def test_plan_starts_a_new_execution_or_resumes_the_newest(tmp_path):
    execution_id, parameters = plan_execution(tmp_path, DEFAULTS, {}, resume=False)
    assert parameters == DEFAULTS and len(execution_id) == 15
    assert not (tmp_path / "executions").exists(), "planning writes nothing"
    save_parameters(tmp_path, "20261201-090000", {"MaxIter": 5})
    assert plan_execution(tmp_path, DEFAULTS, {}, resume=True) == ("20261201-090000", {"MaxIter": 5})
    with pytest.raises(DetectorError, match="no execution"):
        plan_execution(tmp_path / "elsewhere", DEFAULTS, {}, resume=True)


def test_the_command_turns_a_resume_without_executions_into_a_usage_error(tmp_path, capsys):
    from detector.cli import main

    code = main(["pipeline", "--local", "--root", str(tmp_path), "--resume"])
    assert code == 2
    assert f"--resume: no execution under {tmp_path / 'executions'} to resume" in capsys.readouterr().err
