"""The model directory: the label map, reading a directory, extracting model.tar.gz, the inference config."""

import io
import json
import os
import re
import tarfile

import pytest

from detector.errors import ModelDirectoryError
from detector.model_dir import (
    CONFIG_FILE,
    LABELS_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    Category,
    LabelMap,
    config_from_yaml,
    extract_model_archive,
    read_model_dir,
    save_model,
    write_model_archive,
)

CATEGORIES = [Category(12, "triangle"), Category(3, "circle"), Category(7, "square")]
SOURCE_MESSAGE = "expected {'categories': [{'index', 'id', 'name'}, ...]} with indices 0..N-1"


def test_save_model_writes_files_everyone_can_read(tmp_path):
    """A model trained as root (the training image) is served by an unprivileged user (docker-compose.yml)."""
    import torch

    save_model(tmp_path / "model", {"w": torch.zeros(2)}, "MODEL: {}\n", LabelMap.from_categories(CATEGORIES), {"ap": 0.5})
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "model").iterdir()}
    assert set(modes) == {WEIGHTS_FILE, CONFIG_FILE, LABELS_FILE, METRICS_FILE}
    assert all(mode & 0o444 == 0o444 for mode in modes.values()), modes


def test_an_unreadable_model_file_is_named_with_the_user(tmp_path, monkeypatch):
    import pathlib

    import torch

    save_model(tmp_path / "model", {"w": torch.zeros(2)}, "MODEL: {}\n", LabelMap.from_categories(CATEGORIES), {})
    labels = tmp_path / "model" / LABELS_FILE
    read_text = pathlib.Path.read_text

    def unreadable(path, *args, **kwargs):  # what a user other than the owner meets with a 0600 file
        if path == labels:
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", unreadable)
    with pytest.raises(ModelDirectoryError, match=re.escape(f"{labels}: cannot be read by this user (uid {os.getuid()})")):
        read_model_dir(tmp_path / "model")


def test_label_map_sorts_categories_by_dataset_id():
    labels = LabelMap.from_categories(CATEGORIES)
    assert labels.dataset_ids == [3, 7, 12]
    assert labels.names == ["circle", "square", "triangle"]
    assert labels.num_classes == 3


def test_index_of_maps_dataset_ids_to_contiguous_indices():
    labels = LabelMap.from_categories(CATEGORIES)
    assert [labels.index_of(i) for i in (3, 7, 12)] == [0, 1, 2]
    with pytest.raises(ValueError):
        labels.index_of(5)


def test_label_map_json_round_trip(tmp_path):
    labels = LabelMap.from_categories(CATEGORIES)
    document = labels.to_json()
    assert document == {
        "categories": [
            {"index": 0, "id": 3, "name": "circle"},
            {"index": 1, "id": 7, "name": "square"},
            {"index": 2, "id": 12, "name": "triangle"},
        ]
    }
    assert LabelMap.from_json(json.loads(json.dumps(document)), tmp_path / LABELS_FILE) == labels


def test_from_json_orders_by_index_not_by_position(tmp_path):
    shuffled = {"categories": [{"index": 1, "id": 3, "name": "b"}, {"index": 0, "id": 9, "name": "a"}]}
    labels = LabelMap.from_json(shuffled, tmp_path / LABELS_FILE)
    assert labels.dataset_ids == [9, 3] and labels.names == ["a", "b"]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"labels": []},
        {"categories": [{"index": 0, "name": "circle"}]},
        {"categories": [{"index": 0, "id": 3}]},
        {"categories": [{"id": 3, "name": "circle"}]},
        {"categories": [{"index": 0, "id": 3, "name": "a"}, {"index": 2, "id": 7, "name": "b"}]},
        {"categories": [{"index": 1, "id": 3, "name": "a"}]},
        {"categories": [{"index": 0, "id": 3, "name": "a"}, {"index": 0, "id": 7, "name": "b"}]},
        {"categories": []},
        {"categories": [{"index": 0, "id": "three", "name": "a"}]},
        {"categories": "circle"},
        [],
    ],
    ids=[
        "no-categories", "other-key", "no-id", "no-name", "no-index", "gap-in-indices", "not-from-zero",
        "repeated-index", "empty-list", "id-not-a-number", "categories-not-a-list", "not-an-object",
    ],
)
def test_from_json_errors_name_the_file_and_the_expected_shape(tmp_path, data):
    source = tmp_path / LABELS_FILE
    with pytest.raises(ModelDirectoryError) as info:
        LabelMap.from_json(data, source)
    message = str(info.value)
    assert message.startswith(f"{source}: "), message
    assert SOURCE_MESSAGE in message, message


def write_model_dir(directory, labels=LabelMap.from_categories(CATEGORIES)):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WEIGHTS_FILE).write_bytes(b"not read by read_model_dir")
    (directory / CONFIG_FILE).write_text("MODEL:\n  DEVICE: cpu\n")
    (directory / LABELS_FILE).write_text(json.dumps(labels.to_json()))
    (directory / METRICS_FILE).write_text("{}")
    return directory


def test_read_model_dir(tmp_path):
    model_dir = write_model_dir(tmp_path / "model")
    files = read_model_dir(model_dir)
    assert files.directory == model_dir and files.weights_path == model_dir / WEIGHTS_FILE
    assert files.config_yaml == "MODEL:\n  DEVICE: cpu\n"
    assert files.labels == LabelMap.from_categories(CATEGORIES)


def test_read_missing_model_dir(tmp_path):
    with pytest.raises(ModelDirectoryError, match=re.escape(f"model directory {tmp_path / 'nope'} does not exist")):
        read_model_dir(tmp_path / "nope")


def test_read_model_dir_that_is_a_file(tmp_path):
    (tmp_path / "model").write_text("")
    with pytest.raises(ModelDirectoryError, match="does not exist"):
        read_model_dir(tmp_path / "model")


def test_missing_files_are_named_with_what_the_directory_holds(tmp_path):
    model_dir = write_model_dir(tmp_path / "model")
    (model_dir / WEIGHTS_FILE).unlink()
    (model_dir / LABELS_FILE).unlink()
    with pytest.raises(ModelDirectoryError) as info:
        read_model_dir(model_dir)
    message = str(info.value)
    assert f"model directory {model_dir} is missing {WEIGHTS_FILE}, {LABELS_FILE} " in message
    assert f"(it holds: {CONFIG_FILE}, {METRICS_FILE})" in message
    assert "expected the output of `detector train`" in message


def test_empty_model_dir_holds_nothing(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelDirectoryError, match=re.escape(f"is missing {WEIGHTS_FILE}, {CONFIG_FILE}, {LABELS_FILE} (it holds: nothing)")):
        read_model_dir(tmp_path / "model")


def test_a_directory_in_place_of_a_file_counts_as_missing(tmp_path):
    model_dir = write_model_dir(tmp_path / "model")
    (model_dir / CONFIG_FILE).unlink()
    (model_dir / CONFIG_FILE).mkdir()
    with pytest.raises(ModelDirectoryError, match=re.escape(f"is missing {CONFIG_FILE} (it holds: {CONFIG_FILE}, {LABELS_FILE}")):
        read_model_dir(model_dir)


@pytest.mark.parametrize("content", [b'{"categories": [', b"", b"\xff\xfe\x00not utf-8"])
def test_unreadable_labels_json(tmp_path, content):
    model_dir = write_model_dir(tmp_path / "model")
    (model_dir / LABELS_FILE).write_bytes(content)
    with pytest.raises(ModelDirectoryError, match=re.escape(f"{model_dir / LABELS_FILE}: not valid JSON (")):
        read_model_dir(model_dir)


def test_labels_json_of_the_wrong_shape(tmp_path):
    model_dir = write_model_dir(tmp_path / "model")
    (model_dir / LABELS_FILE).write_text(json.dumps({"categories": []}))
    with pytest.raises(ModelDirectoryError, match=re.escape(f"{model_dir / LABELS_FILE}: {SOURCE_MESSAGE}")):
        read_model_dir(model_dir)


def make_archive(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(params=["data filter", "no data filter"])
def tar_filters(request, monkeypatch):
    """Python 3.11.4+ and 3.12 have tarfile's data filter; Debian 12's 3.11.2 (the CPU images) has not."""
    if request.param == "no data filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_a_model_archive_written_then_extracted_is_the_same_model_directory(tmp_path, tar_filters):
    source = write_model_dir(tmp_path / "model")
    archive = write_model_archive(source, tmp_path / "out" / "model.tar.gz")
    with tarfile.open(archive) as tar:
        assert tar.getnames() == sorted(p.name for p in source.iterdir())  # at the root, as SageMaker packs /opt/ml/model
    into = tmp_path / "extracted"
    assert extract_model_archive(archive, into) == into
    assert read_model_dir(into).labels == LabelMap.from_categories(CATEGORIES)


@pytest.mark.parametrize("name", ["../escaped.txt", "model/../../escaped.txt", "./../escaped.txt"])
def test_extract_refuses_members_outside_the_target(tmp_path, name, tar_filters):
    archive = make_archive(tmp_path / "model.tar.gz", {name: b"outside"})
    into = tmp_path / "deep" / "extracted"
    with pytest.raises(ModelDirectoryError, match=re.escape(f"{archive}: cannot extract the model archive (")):
        extract_model_archive(archive, into)
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_extract_puts_absolute_members_inside_the_target(tmp_path, tar_filters):
    outside = tmp_path / "escaped-absolute.txt"
    archive = make_archive(tmp_path / "model.tar.gz", {str(outside): b"outside"})
    into = tmp_path / "extracted"
    extract_model_archive(archive, into)
    assert not outside.exists()
    assert (into / str(outside).lstrip("/")).read_bytes() == b"outside"


def test_extract_refuses_a_link_pointing_outside_the_target(tmp_path, tar_filters):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("labels.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../etc/passwd"
        tar.addfile(link)
    with pytest.raises(ModelDirectoryError, match="cannot extract the model archive"):
        extract_model_archive(archive, tmp_path / "extracted")


@pytest.mark.parametrize("content", [b"not a tar archive", b""])
def test_extract_refuses_a_broken_archive(tmp_path, content):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(content)
    with pytest.raises(ModelDirectoryError, match=re.escape(f"{archive}: cannot extract the model archive (")):
        extract_model_archive(archive, tmp_path / "extracted")


def test_extract_missing_archive(tmp_path):
    with pytest.raises(ModelDirectoryError, match="cannot extract the model archive"):
        extract_model_archive(tmp_path / "missing.tar.gz", tmp_path / "extracted")


def training_config_yaml() -> str:
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.WEIGHTS = "/opt/ml/checkpoints/model_0000099.pth"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.RESNETS.DEPTH = 18
    return cfg.dump()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_config_from_yaml_sets_the_device_and_blanks_the_weights(device):
    cfg = config_from_yaml(training_config_yaml(), device)
    assert cfg.MODEL.DEVICE == device
    assert cfg.MODEL.WEIGHTS == "", "weights come from model_final.pth, never from the training-time path"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3 and cfg.MODEL.RESNETS.DEPTH == 18
    assert cfg.is_frozen()


def test_config_from_yaml_keeps_keys_it_does_not_know():
    text = training_config_yaml() + "EXTRA_FROM_A_NEWER_VERSION:\n  VALUE: 4\n"
    assert config_from_yaml(text, "cpu").EXTRA_FROM_A_NEWER_VERSION.VALUE == 4
