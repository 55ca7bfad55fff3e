import pytest
import torch

from detector.training.checkpoint import CheckpointStore
from detector.errors import CheckpointError


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "fingerprint": '{"SOLVER.BASE_LR": 0.02}'}


def test_saves_loads_and_keeps_the_last_two(tmp_path):
    store = CheckpointStore(tmp_path)
    for it in (10, 20, 30):
        store.save(it, state(it))
    assert [it for it, _ in store.files()] == [20, 30]
    latest = store.latest()
    assert latest.iteration == 30 and torch.equal(latest.state["model"]["w"], torch.full((3,), 30.0))
    assert not list(tmp_path.glob(".*tmp"))


def test_a_torn_newest_file_falls_back_to_the_previous(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(10, state(1))
    path = store.save(20, state(2))
    path.write_bytes(path.read_bytes()[:100])
    latest = store.latest()
    assert latest.iteration == 10


def test_leftover_temporary_files_are_ignored(tmp_path):
    store = CheckpointStore(tmp_path)
    (tmp_path / ".checkpoint_00000040.pth.tmp").write_bytes(b"partial")
    assert store.latest() is None
    store.save(10, state(1))
    assert store.latest().iteration == 10


def test_files_load_without_executing_code(tmp_path):
    store = CheckpointStore(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"model": {}, "iteration": 50, "x": Evil()}, tmp_path / "checkpoint_00000050.pth")
    assert store.latest() is None


def test_a_different_configuration_is_refused_with_the_differences(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(10, {"model": {}, "fingerprint": '{"SOLVER.BASE_LR": 0.02, "SEED": 1}'})
    checkpoint = store.latest()
    store.check_compatible(checkpoint, {"SOLVER.BASE_LR": 0.02, "SEED": 1})
    with pytest.raises(CheckpointError, match=r"SOLVER.BASE_LR: checkpoint has 0.02, this job has 0.04.*reset_checkpoints=true"):
        store.check_compatible(checkpoint, {"SOLVER.BASE_LR": 0.04, "SEED": 1})
