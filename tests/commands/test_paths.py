"""The paths the commands' options name: the checks (``detector.commands.paths``), and every command
given the wrong kind of path, run as a user runs it (a process, relative paths, output not a terminal)."""

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import detector_command, detector_env, tiny_hyperparameters, write_training_job
from detector.commands import paths
from detector.errors import DetectorError, PathError

EXPECTED = "what the test expects"


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder holding the file ``afile`` and the folder ``adir``."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def message(call, *args, **kwargs) -> str:
    with pytest.raises(PathError) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, DetectorError) and info.value.exit_status == 1
    return str(info.value)


def test_an_input_folder_that_is_missing_or_a_file_is_named(place):
    assert message(paths.input_folder, "nowhere", "--test", EXPECTED) == (
        f"--test nowhere: no such folder (relative to {place}); expected {EXPECTED}")
    assert message(paths.input_folder, place / "nowhere", "--test", EXPECTED) == f"--test {place / 'nowhere'}: no such folder; expected {EXPECTED}"
    assert message(paths.input_folder, "afile", "--test", EXPECTED) == f"--test afile: is a file; expected {EXPECTED}"
    assert message(paths.input_folder, "afile/sub", "--test", EXPECTED) == f"--test afile/sub: afile is a file, not a folder; expected {EXPECTED}"
    assert paths.input_folder("adir", "--test", EXPECTED) == Path("adir")


def test_an_input_path_takes_a_file_or_a_folder(place):
    assert paths.input_path("afile", "INPUT", EXPECTED) == Path("afile")
    assert paths.input_path("adir", "INPUT", EXPECTED) == Path("adir")
    assert "INPUT nowhere: no such file or folder (relative to" in message(paths.input_path, "nowhere", "INPUT", EXPECTED)
    os.symlink("gone", "link")
    assert message(paths.input_path, "link", "INPUT", EXPECTED) == f"INPUT link: is a link to gone, which does not exist; expected {EXPECTED}"


def test_an_unreadable_input_says_so(place, monkeypatch):
    """Tests run as root here, where permissions do not stop a read: the refusal is played."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", refuse)
    monkeypatch.setattr(os, "open", refuse)
    uid = os.getuid()
    assert message(paths.input_folder, "adir", "--data", EXPECTED) == (
        f"--data adir: cannot be read by this user (uid {uid}): Permission denied; expected {EXPECTED}")
    assert message(paths.input_path, "afile", "--model", EXPECTED) == (
        f"--model afile: cannot be read by this user (uid {uid}): Permission denied; expected {EXPECTED}")


def test_an_output_folder_is_created_unless_a_file_is_in_the_way(place):
    assert paths.output_folder("new/deeper", "--root", EXPECTED) == Path("new/deeper") and (place / "new" / "deeper").is_dir()
    assert message(paths.output_folder, "afile", "--root", EXPECTED) == f"--root afile: is a file; expected {EXPECTED}"
    assert message(paths.output_folder, "afile/sub", "--root", EXPECTED) == f"--root afile/sub: afile is a file, not a folder; expected {EXPECTED}"
    # Not created when the caller creates it only on success; a file in the way is still named.
    assert paths.output_folder("later", "model folder", EXPECTED, create=False) == Path("later") and not (place / "later").exists()
    assert message(paths.output_folder, "afile", "model folder", EXPECTED, create=False) == f"model folder afile: is a file; expected {EXPECTED}"
    assert "afile is a file, not a folder" in message(paths.output_folder, "afile/model", "model folder", EXPECTED, create=False)


def test_an_output_folder_that_cannot_be_written_says_so(place, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert message(paths.output_folder, "adir", "OUTPUT", EXPECTED) == (
        f"OUTPUT adir: cannot be written by this user (uid {os.getuid()}): Permission denied; expected {EXPECTED}")
    assert message(paths.output_file, "adir/out.json", "--output", EXPECTED) == (
        f"--output adir/out.json: its folder adir cannot be written by this user (uid {os.getuid()}): Permission denied; expected {EXPECTED}")


def test_an_output_file_may_name_a_folder_when_the_option_says_what_goes_in_it(place):
    # A file: its folder is created, the file is not.
    assert paths.output_file("out/a.jsonl", "--output", EXPECTED) == Path("out/a.jsonl")
    assert (place / "out").is_dir() and not (place / "out" / "a.jsonl").exists()
    assert message(paths.output_file, "adir", "--output", EXPECTED) == f"--output adir: is a folder; expected {EXPECTED}"
    assert message(paths.output_file, "afile/a.jsonl", "--output", EXPECTED) == (
        f"--output afile/a.jsonl: afile is a file, not a folder; expected {EXPECTED}")
    # A folder, existing or named by a final /, holds the option's file.
    assert paths.output_file("adir", "--output", EXPECTED, "predictions.jsonl") == Path("adir/predictions.jsonl")
    assert paths.output_file("fresh/", "--output", EXPECTED, "predictions.jsonl") == Path("fresh/predictions.jsonl")
    assert (place / "fresh").is_dir()
    assert paths.output_file("afile", "--output", EXPECTED, "predictions.jsonl") == Path("afile")
    assert message(paths.output_file, "afile/", "--output", EXPECTED, "predictions.jsonl") == f"--output afile: is a file; expected {EXPECTED}"


def test_option_names_say_when_the_path_is_the_default():
    assert paths.option_name("--model-dir", Path("m")) == "--model-dir"
    assert paths.option_name("--model-dir", None) == "--model-dir (default)"


# Every command, given the wrong kind of path, as a user runs it: relative paths from the working folder,
# stderr not a terminal. (command line, extra environment, exit status, message)
COMMANDS = [
    pytest.param(["train"], {"SAGEMAKER_BASE_DIR": "job_model_is_a_file"}, 1,
                 "ERROR: model folder {cwd}/job_model_is_a_file/model: is a file; expected a folder for the trained model", id="train"),
    pytest.param(["evaluate", "--test", "afile", "--model", "adir", "--output", "evaluation"], {}, 1,
                 "ERROR: --test afile: is a file; expected a COCO channel: a folder with one annotation json at its root", id="evaluate-test"),
    pytest.param(["evaluate", "--test", "channel", "--model", "adir", "--output", "afile/evaluation"], {}, 1,
                 "ERROR: --output afile/evaluation: afile is a file, not a folder; expected a folder for evaluation.json", id="evaluate-output"),
    pytest.param(["evaluate", "--test", "channel", "--model", "missing.tar.gz"], {}, 1,
                 "ERROR: --model missing.tar.gz: no such file or folder (relative to {cwd}); expected model.tar.gz, a folder holding one",
                 id="evaluate-model"),
    pytest.param(["serve"], {"SAGEMAKER_BASE_DIR": "serve_model_is_a_file"}, 1,
                 "ERROR: model directory {cwd}/serve_model_is_a_file/model: is a file; expected a folder holding model_final.pth", id="serve"),
    pytest.param(["predict", "image.png", "--model-dir", "afile"], {}, 1,
                 "ERROR: --model-dir afile: is a file; expected a model directory holding model_final.pth", id="predict-model-dir"),
    pytest.param(["predict", "image.png", "--model-dir", "adir", "--output", "adir"], {}, 1,
                 "ERROR: --output adir: is a folder; expected a file for the responses", id="predict-output"),
    pytest.param(["predict", "image.png", "--model-dir", "adir", "--visualize", "afile"], {}, 1,
                 "ERROR: --visualize afile: is a file; expected a folder for the overlay PNGs", id="predict-visualize"),
    pytest.param(["transform", "photos", "--model-dir", "adir", "--output", "afile/predictions.jsonl"], {}, 1,
                 "ERROR: --output afile/predictions.jsonl: afile is a file, not a folder; expected a JSON Lines file, "
                 "or a folder to write predictions.jsonl into", id="transform-output"),
    pytest.param(["transform", "photos", "--model-dir", "nowhere", "--output", "out/"], {}, 1,
                 "ERROR: --model-dir nowhere: no such folder (relative to {cwd}); expected a model directory", id="transform-model-dir"),
    pytest.param(["transform", "channel", "--model-dir", "adir", "--output", "out/", "--coco-results", "afile/"], {}, 1,
                 "ERROR: --coco-results afile: is a file; expected a file, or a folder to write predictions.coco.json into",
                 id="transform-coco-results"),
    pytest.param(["transform", "records.jsonl", "--model-dir", "adir", "--output", "records.jsonl"], {}, 1,
                 "ERROR: --output records.jsonl: is INPUT, the file of records to score; expected another file, or a folder for "
                 "predictions.jsonl", id="transform-output-is-input"),
    pytest.param(["transform", "channel", "--model-dir", "adir", "--output", "channel", "--coco-results"], {}, 1,
                 "ERROR: --coco-results channel/predictions.coco.json: is at the root of the COCO channel INPUT, where a second json "
                 "makes its annotation file ambiguous; expected a file or a folder outside the channel", id="transform-coco-results-in-channel"),
    pytest.param(["synth", "afile", "--images", "1", "--size", "32"], {}, 1,
                 "ERROR: OUTPUT afile: is a file; expected a folder to write the data into", id="synth"),
    pytest.param(["pipeline", "--local", "--root", "afile/pipeline"], {}, 2,
                 "ERROR: --root afile/pipeline: afile is a file, not a folder; expected a folder for the executions", id="pipeline-root"),
    pytest.param(["pipeline", "--local", "--root", "runs", "--data", "afile"], {}, 2,
                 "ERROR: --data afile: is a file; expected a folder with the COCO channels training/ and testing/", id="pipeline-data"),
]


@pytest.fixture(scope="module")
def workplace(tmp_path_factory):
    """A working folder with a file, a folder, an image, a COCO channel and two jobs whose model is a file."""
    from detector.data.synthetic import generate

    place = tmp_path_factory.mktemp("workplace")
    (place / "afile").write_text("x")
    (place / "adir").mkdir()
    generate(place / "channel", num_images=1, image_size=32)
    (place / "photos").mkdir()
    [image] = (place / "channel" / "images").iterdir()
    (place / "photos" / "image.png").write_bytes(image.read_bytes())
    (place / "image.png").write_bytes(image.read_bytes())
    (place / "records.jsonl").write_text(json.dumps({"image": base64.b64encode(image.read_bytes()).decode()}) + "\n")
    write_training_job(place / "job_model_is_a_file", tiny_hyperparameters(), train_images=1, test_images=1)
    (place / "job_model_is_a_file" / "model").write_text("x")
    (place / "serve_model_is_a_file").mkdir()
    (place / "serve_model_is_a_file" / "model").write_text("x")
    return place


@pytest.mark.parametrize("argv, env, status, expected", COMMANDS)
def test_every_command_names_a_wrong_path_and_what_it_expected(workplace, argv, env, status, expected):
    environment = detector_env(workplace / "base", **env)
    result = subprocess.run(detector_command(*argv), env=environment, cwd=workplace, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == status, result.stderr
    assert expected.format(cwd=workplace) in result.stderr
    assert "Traceback" not in result.stderr and "job log" not in result.stderr


def test_the_failure_file_of_a_container_job_names_the_path(workplace):
    """The evaluation job (a processing job) writes the same reason where SageMaker shows it."""
    base = workplace / "evaluation_base"
    subprocess.run(detector_command("evaluate", "--test", "afile"), env=detector_env(base), cwd=workplace, capture_output=True, timeout=120)
    assert (base / "output" / "message").read_text().startswith("--test afile: is a file; expected a COCO channel")
