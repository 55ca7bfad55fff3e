"""Starting weights in-process: naming, safe reading, detectron2's loading semantics, downloads."""

from __future__ import annotations

import http.server
import json
import pickle
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.model_dir import Category, LabelMap, save_model, write_model_archive
from detector.training import weights as W
from detector.training.config import adjust_for_scratch, load_model_config

SMALL = "detector/faster_rcnn_R_18_FPN_128px.yaml"
LABELS = LabelMap.from_categories([Category(3, "circle"), Category(7, "square"), Category(12, "triangle")])


def build(num_classes: int = 3, seed: int = 0, config: str = SMALL):
    from detectron2.modeling import build_model

    cfg = load_model_config(config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    torch.manual_seed(seed)
    return build_model(cfg)


def same(a, b, key: str) -> bool:
    return torch.equal(a.state_dict()[key], b.state_dict()[key])


CLS = "roi_heads.box_predictor.cls_score.weight"
STEM = "backbone.bottom_up.stem.conv1.weight"


# -- naming the source --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["none", "None", "scratch", " none "])
def test_none_means_from_scratch(value):
    assert W.resolve_source(value, "detectron2://ImageNetPretrained/MSRA/R-50.pkl", {}) == ""


def test_sources_resolve_to_urls_or_absolute_paths(tmp_path, monkeypatch):
    assert W.resolve_source("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "", {}) == (
        "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    )
    assert W.resolve_source("https://example.com/w.pth", "", {}) == "https://example.com/w.pth"
    zoo = W.resolve_source("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "", {})
    assert zoo.startswith("https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/faster_rcnn_R_50_FPN_3x/") and zoo.endswith(".pkl")
    monkeypatch.chdir(tmp_path)
    Path("w.pth").write_bytes(b"x")
    assert W.resolve_source("w.pth", "", {}) == str(tmp_path / "w.pth")
    # Unset: the config's own weights; empty config weights: from scratch.
    assert W.resolve_source(None, "detectron2://a/b.pkl", {}) == "https://dl.fbaipublicfiles.com/detectron2/a/b.pkl"
    assert W.resolve_source(None, "", {}) == ""


def test_the_pretrained_channel_is_used_unless_weights_is_set(tmp_path):
    channel = tmp_path / "pretrained"
    channel.mkdir()
    (channel / "R-18.pkl").write_bytes(b"x")
    assert W.resolve_source(None, "detectron2://a/b.pkl", {"pretrained": channel}) == str(channel / "R-18.pkl")
    assert W.resolve_source("none", "", {"pretrained": channel}) == ""


def test_a_channel_with_several_files_names_what_it_holds(tmp_path):
    (tmp_path / "a.pkl").write_bytes(b"x")
    (tmp_path / "b.pth").write_bytes(b"x")
    with pytest.raises(W.WeightsError, match=r"expected one weights file .* it holds: a.pkl, b.pth"):
        W.pretrained_file(tmp_path)


def test_an_unknown_source_is_refused_with_the_choices():
    with pytest.raises(W.WeightsError, match=r"'weights'='missing.pth' is neither 'none', a detectron2:// path"):
        W.resolve_source("missing.pth", "", {})


def test_the_identity_of_a_file_is_its_digest_and_of_a_url_the_url(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"one")
    first = W.identity(str(tmp_path / "w.pth"))
    (tmp_path / "w.pth").write_bytes(b"two")
    assert first.startswith("sha256:") and W.identity(str(tmp_path / "w.pth")) != first
    assert W.identity("https://example.com/w.pkl") == "https://example.com/w.pkl" and W.identity("") == ""


# -- reading and loading ------------------------------------------------------------------------


def test_a_detectron2_pkl_of_numpy_arrays_loads_every_tensor(tmp_path):
    source = build(seed=1)
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in source.state_dict().items()}, "__author__": "test"}, f)
    target = build(seed=2)
    assert not same(source, target, STEM)
    summary = W.load_weights(target, path, str(path))
    assert same(source, target, STEM) and same(source, target, CLS)
    assert len(summary.loaded) == summary.model_tensors and not summary.shape_mismatch and not summary.unused


def test_a_pth_state_dict_and_a_checkpoint_with_a_model_key_load(tmp_path):
    source = build(seed=1)
    torch.save(source.state_dict(), tmp_path / "state.pth")
    torch.save({"model": source.state_dict(), "iteration": 5}, tmp_path / "checkpoint.pth")
    for name in ("state.pth", "checkpoint.pth"):
        target = build(seed=2)
        W.load_weights(target, tmp_path / name, name)
        assert same(source, target, STEM)


def test_class_heads_of_another_class_count_are_skipped_and_listed(tmp_path):
    source = build(num_classes=5, seed=1)
    torch.save(source.state_dict(), tmp_path / "five.pth")
    target = build(num_classes=3, seed=2)
    before = target.state_dict()[CLS].clone()
    summary = W.load_weights(target, tmp_path / "five.pth", "five.pth")
    skipped = {k for k, _, _ in summary.shape_mismatch}
    assert CLS in skipped and all(k.startswith("roi_heads.box_predictor.") for k in skipped)
    assert torch.equal(target.state_dict()[CLS], before) and same(source, target, STEM)
    assert f"skipped {len(skipped)} (shape or categories differ)" in summary.line()


def test_a_model_directory_with_other_categories_keeps_its_class_heads_out(tmp_path):
    source = build(seed=1)
    theirs = LabelMap.from_categories([Category(1, "cat"), Category(2, "dog"), Category(5, "bird")])
    save_model(tmp_path / "model", source.state_dict(), "", theirs, {})
    target = build(seed=2)
    before = target.state_dict()[CLS].clone()
    summary = W.load_weights(target, tmp_path / "model", "earlier model", LABELS)
    assert summary.dropped_class_heads and torch.equal(target.state_dict()[CLS], before)
    assert same(source, target, STEM)
    # The same categories: everything loads.
    save_model(tmp_path / "same", source.state_dict(), "", LABELS, {})
    target = build(seed=2)
    W.load_weights(target, tmp_path / "same", "earlier model", LABELS)
    assert same(source, target, CLS)


def test_weights_for_another_architecture_are_refused_with_the_summary(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2), "backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(W.WeightsError, match=r"do not fit this model: loaded 0 of the model's \d+ tensors .* 1 in the file are unused"):
        W.load_weights(build(), tmp_path / "other.pth", "other.pth")


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": RunsCode(marker)}, "__author__": "x"}))
    with pytest.raises(W.WeightsError, match=rf"{path}: refused to load: the pickle asks for pathlib"):
        W.load_weights(build(), path, str(path))
    assert not marker.exists()
    torch.save({"w": RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(W.WeightsError, match="cannot load the weights safely"):
        W.load_weights(build(), tmp_path / "evil.pth", "evil.pth")
    assert not marker.exists()


def test_protocol_2_pickles_of_arrays_are_admitted(tmp_path):
    path = tmp_path / "p2.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(4, dtype=np.float32), "b": [1, 2.5, "x"]}, protocol=2))
    data = W.read_pickle(path)
    assert data["a"].tolist() == [0, 1, 2, 3] and data["b"] == [1, 2.5, "x"]


# -- from scratch -------------------------------------------------------------------------------


def test_from_scratch_nothing_stays_frozen():
    cfg = load_model_config("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    changes = adjust_for_scratch(cfg, several_gpus=False)
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.RESNETS.NORM == "BN" and len(changes) == 2
    cfg = load_model_config("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
    adjust_for_scratch(cfg, several_gpus=True)
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    assert adjust_for_scratch(load_model_config(SMALL), several_gpus=False) == []


# -- downloads ----------------------------------------------------------------------------------


class FlakyServer:
    """A loopback HTTP server whose first ``failures`` answers are 503."""

    def __init__(self, body: bytes, failures: int = 1):
        self.body, self.failures, self.requests = body, failures, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if outer.requests <= outer.failures:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/weights/model.pth"

    def close(self):
        self.server.shutdown()


def test_a_download_retries_once_then_lands_in_the_cache(tmp_path):
    server = FlakyServer(b"weights" * 1000, failures=1)
    try:
        path = W.download(server.url, tmp_path / "cache", backoff=0.01)
        assert path.read_bytes() == b"weights" * 1000 and server.requests == 2
        assert path.name == "model.pth" and tmp_path / "cache" in path.parents
        assert W.download(server.url, tmp_path / "cache") == path and server.requests == 2, "the cache is reused"
    finally:
        server.close()


def test_an_unreachable_url_fails_fast_naming_the_url_and_the_ways_out(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    url = f"http://127.0.0.1:{port}/R-50.pkl"
    started = time.monotonic()
    with pytest.raises(W.WeightsError) as error:
        W.download(url, tmp_path / "cache", backoff=0.01)
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert url in message and "'pretrained' channel" in message and "weights=none" in message
    assert not list((tmp_path / "cache").rglob("*.pth")) and not list((tmp_path / "cache").rglob("R-50.pkl"))


def test_a_model_archive_is_extracted_to_its_model_directory(tmp_path):
    save_model(tmp_path / "model", build(seed=1).state_dict(), "", LABELS, {})
    archive = write_model_archive(tmp_path / "model", tmp_path / "model.tar.gz")
    local = W.local_weights(str(archive), tmp_path / "cache")
    assert (local / "model_final.pth").is_file() and json.loads((local / "labels.json").read_text())


def test_an_s3_uri_is_downloaded_with_the_jobs_credentials(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="weights")
        boto3.client("s3").put_object(Bucket="weights", Key="models/R-18.pkl", Body=b"pickled")
        path = W.download("s3://weights/models/R-18.pkl", tmp_path / "cache")
        assert path.read_bytes() == b"pickled" and path.name == "R-18.pkl"
        with pytest.raises(W.WeightsError, match=r"cannot download the starting weights s3://weights/missing.pkl .*weights=none"):
            W.download("s3://weights/missing.pkl", tmp_path / "cache", backoff=0.01)


MASK_CLS = "roi_heads.mask_head.predictor.weight"


def test_a_mask_model_fine_tunes_from_another_mask_model_without_its_class_heads(tmp_path):
    """Mask R-CNN's mask predictor is per class too: from a model with other categories it starts fresh."""
    mask_config = "detector/mask_rcnn_R_18_FPN_128px.yaml"
    source = build(seed=1, config=mask_config)
    theirs = LabelMap.from_categories([Category(1, "cat"), Category(2, "dog"), Category(5, "bird")])
    save_model(tmp_path / "model", source.state_dict(), "", theirs, {})
    target = build(seed=2, config=mask_config)
    before = target.state_dict()[MASK_CLS].clone()
    summary = W.load_weights(target, tmp_path / "model", "earlier model", LABELS)
    assert any(k.startswith("roi_heads.mask_head.predictor.") for k in summary.dropped_class_heads)
    assert torch.equal(target.state_dict()[MASK_CLS], before)
    assert same(source, target, STEM) and same(source, target, "roi_heads.mask_head.mask_fcn1.weight")
