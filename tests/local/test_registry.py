import json

import pytest

from detector.local.registry import LocalModelRegistry


@pytest.fixture
def artifacts(tmp_path):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"archive")
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"metrics": {"testing_ap": {"value": 0.7}}}))
    return archive, evaluation


def register(registry, artifacts, status="Approved"):
    return registry.register("detector", *artifacts, approval_status=status, content_types=["image/png"],
                             response_types=["application/json"], source="test")


def test_versions_count_up_and_packages_hold_their_files(tmp_path, artifacts):
    registry = LocalModelRegistry(tmp_path / "registry")
    first, second = register(registry, artifacts), register(registry, artifacts, "PendingManualApproval")
    assert (first.version, second.version) == (1, 2)
    assert registry.versions("detector") == [1, 2]
    assert second.approval_status == "PendingManualApproval"
    assert first.description["Metrics"] == {"testing_ap": {"value": 0.7}}
    assert first.description["InferenceSpecification"]["SupportedContentTypes"] == ["image/png"]
    assert sorted(p.name for p in first.directory.iterdir()) == ["evaluation.json", "model.tar.gz", "package.json"]
    assert registry.get("detector", 1).description == first.description


def test_package_files_lose_their_write_bits(tmp_path, artifacts):
    package = register(LocalModelRegistry(tmp_path), artifacts)
    for path in package.directory.iterdir():
        assert not path.stat().st_mode & 0o222, path


def test_only_the_approval_status_changes(tmp_path, artifacts):
    registry = LocalModelRegistry(tmp_path)
    package = register(registry, artifacts, "PendingManualApproval")
    approved = registry.set_approval("detector", package.version, "Approved")
    assert approved.approval_status == "Approved"
    assert registry.get("detector", 1).approval_status == "Approved"
    assert approved.model_archive.read_bytes() == b"archive"


def test_pretrained_weights_registry_latest_names_the_newest_approved_archive(tmp_path, artifacts):
    from detector.local.backends import ProcessBackend
    from detector.local.runner import LocalRun, PipelineFailed, local_parameters

    run = LocalRun(root=tmp_path, parameters=local_parameters(tmp_path, {"PretrainedWeights": "registry:latest"}),
                   execution_id="x", backend=ProcessBackend(), log=lambda line: None)
    with pytest.raises(PipelineFailed, match="PretrainedWeights=registry:latest: no Approved model package"):
        run.training_hyperparameters()
    registry = LocalModelRegistry(tmp_path / "registry")
    approved = register(registry, artifacts)
    register(registry, artifacts, "PendingManualApproval")
    assert run.training_hyperparameters()["weights"] == str(approved.model_archive.absolute())
    # The local default: the small model's own (empty) weights, nothing downloaded.
    default = LocalRun(root=tmp_path, parameters=local_parameters(tmp_path, {}), execution_id="y", backend=ProcessBackend())
    assert default.training_hyperparameters()["weights"] == "default"


def test_latest_approved_is_the_newest_approved_package(tmp_path, artifacts):
    registry = LocalModelRegistry(tmp_path / "registry")
    assert registry.latest_approved("detector") is None
    register(registry, artifacts)
    second = register(registry, artifacts)
    register(registry, artifacts, "PendingManualApproval")
    assert registry.latest_approved("detector").version == second.version
    registry.set_approval("detector", 2, "Rejected")
    assert registry.latest_approved("detector").version == 1
