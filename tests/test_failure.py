"""The one error boundary: messages, failure files and exit statuses."""

from __future__ import annotations

import pytest

from detector.errors import DetectorError, UsageError
from detector.failure import MAX_REASON, run_command


def fail_with(error: BaseException):
    def action() -> int:
        raise error

    return action


def test_a_users_error_is_one_line_the_failure_file_and_status_1(tmp_path, capsys):
    failure = tmp_path / "output" / "failure"
    assert run_command(fail_with(DetectorError("train.json: annotations[3] has no bbox")), failure) == 1
    err = capsys.readouterr().err
    assert err == "ERROR: train.json: annotations[3] has no bbox\n"
    assert failure.read_text() == "train.json: annotations[3] has no bbox\n"


def test_a_usage_error_keeps_its_status(tmp_path):
    assert run_command(fail_with(UsageError("--batch-size 0: expected at least 1")), tmp_path / "failure") == 2


def test_a_fault_of_the_program_has_its_traceback_and_says_so(tmp_path, capsys):
    failure = tmp_path / "failure"
    assert run_command(fail_with(KeyError("boxes")), failure) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'boxes'" in err
    assert failure.read_text().startswith("Unexpected error KeyError: 'boxes'. The job log has the traceback.")


def test_the_failure_file_describes_only_this_run_and_at_most_1024_characters(tmp_path):
    failure = tmp_path / "failure"
    failure.write_text("an earlier run's reason\n")
    assert run_command(lambda: 0, failure) == 0
    assert not failure.exists()
    run_command(fail_with(DetectorError("x" * 5000)), failure)
    assert len(failure.read_text()) == MAX_REASON + 1


def test_a_base_folder_that_is_a_file_is_said_plainly(tmp_path, capsys):
    base = tmp_path / "ml"
    base.write_text("not a folder")
    ran = []
    assert run_command(lambda: ran.append(1) or 0, base / "output" / "failure") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith(f"ERROR: {base / 'output' / 'failure'}: cannot clear the failure file (Not a directory)")
    assert "SAGEMAKER_BASE_DIR" in err and ran == []


@pytest.mark.parametrize("status", [0, 3])
def test_the_commands_own_status_is_returned(status):
    assert run_command(lambda: status) == status
