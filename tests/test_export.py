"""export: one self-describing ONNX file, dynamic batch, checker, metadata and the parity gate."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import export.onnx_export as onnx_export
from export import ExportError, export_checkpoint
from runtime.formats.onnx_model import ModelInfo
from runtime.inference.session import CamSession


def test_export_writes_exactly_one_file(tiny_checkpoint, tmp_path):
    shutil.copy(tiny_checkpoint, tmp_path / "model.pt")
    report = export_checkpoint(tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt"]
    assert report.path == tmp_path / "model.onnx" and report.size_bytes == report.path.stat().st_size


def test_one_file_with_named_outputs_and_dynamic_batch(exported_onnx):
    model = onnx.load(exported_onnx)
    onnx.checker.check_model(model, full_check=True)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits", "features", "cams"]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    for output in model.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == batch_dim.dim_param
    session = CamSession(exported_onnx)
    for n in (1, 2, 7):
        logits, features = session.infer(np.zeros((n, 3, 64, 64), np.float32))
        assert logits.shape == (n, 5) and features.shape == (n, 32, 8, 8)


def test_graph_class_maps_equal_the_numpy_cams(exported_onnx, shape_images):
    """The `cams` output is the fc weights applied to the features, inside the graph (parity on the CPU)."""
    from runtime.maps.cam import class_activation_maps

    session = CamSession(exported_onnx, providers=["CPUExecutionProvider"])
    batch = session.to_batch(list(shape_images.images))
    features, class_maps = session.infer(batch, ("features", "cams"))
    expected = class_activation_maps(features, session.info.fc_weight, np.tile(np.arange(5), (len(batch), 1)))
    assert class_maps.shape == (8, 5, 8, 8)
    np.testing.assert_allclose(class_maps, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert session.info.parity["class_maps"]["relative"] <= session.info.parity["tolerance"]


def test_the_file_carries_no_trace_of_the_exporting_machine(exported_onnx):
    """torch's exporter records stack traces (absolute paths of this machine) and module names on every
    node and value; the exported file has none of them."""
    model = onnx.load(exported_onnx)
    graph = model.graph
    assert not any(node.metadata_props or node.doc_string for node in graph.node)
    assert not any(v.metadata_props for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer))
    root = str(Path(__file__).resolve().parent.parent).encode()
    assert root not in Path(exported_onnx).read_bytes()


def fc_weight_copies(path, weight):
    """How many of the graph's initializers hold the fc weight (as is or transposed)."""
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(init) for init in onnx.load(path).graph.initializer]
    return sum(
        a.shape in (weight.shape, weight.T.shape) and np.allclose(a.reshape(weight.shape) if a.shape == weight.shape else a.T, weight)
        for a in arrays
    )


def test_the_graph_holds_the_fc_weight_once(tmp_path):
    """The class maps use the fc layer's own weight: one initializer serves logits and cams."""
    from export.onnx_export import export_model
    from fixtures import small_gapcam

    model, info = small_gapcam()
    report = export_model(model, info, tmp_path / "m.onnx")
    assert CamSession(report.path).has_class_maps and fc_weight_copies(report.path, info.fc_weight) == 1


def test_a_head_wider_than_its_features_gets_no_class_maps_output(tmp_path):
    """With more classes than K channels the class maps would outweigh the features: two outputs only."""
    from export.onnx_export import export_model
    from fixtures import small_gapcam

    model, info = small_gapcam(num_classes=6, cam_channels=4)
    report = export_model(model, info, tmp_path / "wide.onnx")
    assert [o.split()[0] for o in report.outputs] == ["logits", "features"] and "class_maps" not in report.parity
    session = CamSession(report.path)
    assert not session.has_class_maps and session.run(np.zeros((32, 32, 3), np.uint8), topk=6)[0].cams_raw.shape == (6, 32, 32)


def test_metadata_carries_labels_preprocessing_weights_and_parity(exported_onnx, tiny_checkpoint, tiny_model):
    props = {p.key: p.value for p in onnx.load(exported_onnx).metadata_props}
    info = ModelInfo.from_props(props)
    assert info.labels == ["circle", "square", "triangle", "star", "cross"]
    assert info.preprocess.size == (64, 64) and info.pool == "gap"
    np.testing.assert_array_equal(info.fc_weight, tiny_model.fc.weight.detach().numpy())
    np.testing.assert_array_equal(info.fc_bias, tiny_model.fc.bias.detach().numpy())
    import hashlib

    assert info.source_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert info.gapcam_version
    assert info.parity["passed"] and info.parity["argmax_agree"]
    assert set(info.parity["inputs"]) == {"random x1", "random x5", "samples x1", "samples x5"}
    for name in ("logits", "features", "cams"):
        assert info.parity[name]["relative"] <= info.parity["tolerance"]
    assert info.provenance["recipe"] == "shapes" and info.provenance["data_fingerprint"]
    assert json.loads(props["gapcam.format_version"]) == 1


def test_failed_parity_leaves_no_file(tiny_checkpoint, tmp_path, monkeypatch):
    real = onnx_export.measure_parity

    def broken(model, onnx_model, weight, batches):
        report = real(model, onnx_model, weight, batches)
        report["features"]["relative"], report["passed"] = 0.5, False
        return report

    monkeypatch.setattr(onnx_export, "measure_parity", broken)
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match="parity failed"):
        export_checkpoint(tiny_checkpoint, out)
    assert list(tmp_path.iterdir()) == []


def test_parity_catches_a_real_mismatch(tiny_checkpoint, exported_onnx):
    """The gate is live: a torch model that differs from the exported graph fails it."""
    from export.parity import measure_parity, parity_inputs
    from train.checkpoint import load_trained

    model, _, preprocess = load_trained(tiny_checkpoint)
    weight = model.fc.weight.detach().numpy()
    with torch.no_grad():
        model.fc.bias += 0.05
    report = measure_parity(model, exported_onnx, weight, parity_inputs(None, preprocess))
    assert not report["passed"] and report["logits"]["max_abs"] == pytest.approx(0.05, rel=1e-3)


def test_gmp_model_exports_with_parity(tmp_path):
    from train.loop import TrainConfig, fit

    ckpt = tmp_path / "gmp.pt"
    fit(TrainConfig(recipe="shapes", out=str(ckpt), samples=40, epochs=1, cam_channels=16, pool="gmp"), log=lambda s: None)
    report = export_checkpoint(ckpt)
    assert report.parity["passed"]
    session = CamSession(report.path)
    assert session.info.pool == "gmp"
    logits, features = session.infer(session.to_batch(np.zeros((64, 64, 3), np.uint8)))
    pooled = features.max(axis=(2, 3))  # GMP: the fc sees each map's maximum
    np.testing.assert_allclose(pooled @ session.info.fc_weight.T + session.info.fc_bias, logits, rtol=1e-4, atol=1e-4)


def test_refuses_to_overwrite_checkpoint_and_bad_checkpoints(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="refusing"):
        export_checkpoint(tiny_checkpoint, tiny_checkpoint)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:2000])
    with pytest.raises(ExportError, match="cut.pt: not a readable gapcam checkpoint"):  # never a TrainError
        export_checkpoint(truncated)
    assert not (tmp_path / "cut.onnx").exists()
    raw = torch.load(tiny_checkpoint, weights_only=True)
    raw["model"]["fc.weight"] = torch.zeros(3, 7)
    torch.save(raw, tmp_path / "misfit.pt")
    with pytest.raises(ExportError, match=r"misfit.pt: weights do not fit the stored architecture \(.*size mismatch"):
        export_checkpoint(tmp_path / "misfit.pt")


def test_a_checkpoint_the_runtime_refuses_is_an_export_error(tiny_checkpoint, tmp_path):
    raw = torch.load(tiny_checkpoint, weights_only=True)
    raw["preprocess"] = {"height": 64}
    torch.save(raw, tmp_path / "nopre.pt")
    with pytest.raises(ExportError, match="preprocess: malformed description"):
        export_checkpoint(tmp_path / "nopre.pt")
    assert not (tmp_path / "nopre.onnx").exists()


def test_export_model_leaves_the_callers_info_alone(tiny_checkpoint, tmp_path):
    from export.onnx_export import export_model
    from train.checkpoint import load_trained

    model, checkpoint, preprocess = load_trained(tiny_checkpoint)
    info = ModelInfo(
        labels=checkpoint.labels, preprocess=preprocess, fc_weight=model.fc.weight.detach().numpy(), fc_bias=model.fc.bias.detach().numpy()
    )
    report = export_model(model, info, tmp_path / "m.onnx")
    assert info.parity == {} and report.parity["passed"]
    assert CamSession(report.path).info.parity == report.parity


def test_parity_fails_on_a_model_that_outputs_nan(tmp_path):
    """NaN features used to drop out of the max() and read as a difference of 0; now nothing is written."""
    from export.onnx_export import export_model
    from fixtures import small_gapcam

    model, info = small_gapcam(size=16)
    with torch.no_grad():
        model.cam_conv[0].bias[2] = float("nan")
    with pytest.raises(ExportError, match=r"parity failed \(relative logits inf"):
        export_model(model, info, tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists()


def test_the_metadata_says_whether_inputs_are_face_crops_recipe_first_then_the_caller(tiny_checkpoint, tmp_path):
    from train.recipes import FER, RECIPES

    assert FER.face_crops and not RECIPES["shapes"].face_crops  # the fer recipe's exports find faces first
    assert not CamSession(export_checkpoint(tiny_checkpoint, tmp_path / "recipe.onnx").path).info.face_crops
    assert CamSession(export_checkpoint(tiny_checkpoint, tmp_path / "faces.onnx", face_crops=True).path).info.face_crops
    done = subprocess.run(
        [sys.executable, "-m", "export", str(tiny_checkpoint), "--out", str(tmp_path / "cli.onnx"), "--faces"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert CamSession(tmp_path / "cli.onnx").info.face_crops
