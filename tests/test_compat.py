"""Which onnxruntime runs which model: lowest IR and opset imports at export, the recorded
requirement, the header check before loading, and onnxruntime's own reasons shown whole."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime import CamError, CamSession, ModelInfo
from runtime.inference import compat, providers


def small_export(tmp_path, opset, name="small.onnx"):
    from export.onnx_export import export_model
    from fixtures import small_gapcam

    model, info = small_gapcam()
    return export_model(model, info, tmp_path / name, opset=opset)


@pytest.mark.parametrize("opset", compat.OPSETS)
@pytest.mark.slow  # exports
def test_each_supported_opset_exports_with_parity_the_lowest_ir_and_its_requirement(tmp_path, opset):
    report = small_export(tmp_path, opset)
    model = onnx.load(report.path)
    assert [(entry.domain, entry.version) for entry in model.opset_import] == [("", opset)]
    assert model.ir_version == {18: 8, 19: 9, 20: 9, 21: 10, 22: 10}[opset]  # onnx's release table
    assert report.parity["passed"]
    session = CamSession(report.path)
    assert session.info.min_onnxruntime == compat.ONNXRUNTIME_FOR_OPSET[opset][0]
    assert compat.read_header(report.path).min_onnxruntime == session.info.min_onnxruntime


@pytest.mark.parametrize("opset", [17, 23])
@pytest.mark.slow  # exports
def test_an_opset_outside_the_tested_range_is_refused_in_one_line(tmp_path, opset):
    from export import ExportError

    with pytest.raises(ExportError, match=rf"--opset {opset}: gapcam exports opsets 18 to 22") as err:
        small_export(tmp_path, opset)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_the_default_opset_runs_on_the_oldest_supported_onnxruntime():
    assert compat.required_onnxruntime(compat.DEFAULT_OPSET, "fp32") == compat.OLDEST_ONNXRUNTIME
    assert compat.required_onnxruntime(compat.DEFAULT_OPSET, "int8") == compat.OLDEST_ONNXRUNTIME
    assert compat.required_onnxruntime(19, "int8") == "1.16"  # 1.15 has no QuantizeLinear(19) kernel


@pytest.mark.slow  # export imports torch
def test_lowest_ir_version_follows_onnx_releases():
    from export.versions import lowest_ir_version

    assert [lowest_ir_version({"": opset}) for opset in (13, 18, 19, 21)] == [7, 8, 9, 10]
    assert lowest_ir_version({"": 18, "ai.onnx.ml": 5}) > lowest_ir_version({"": 18})


def tool_model(**kwargs):
    """A Relu graph imported with every domain onnxruntime's quantization tools add, stamped IR 10."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        **kwargs,
    )
    imports = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 5), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


@pytest.mark.slow  # export imports torch
def test_stamping_drops_unused_domains_and_lowers_the_ir_but_keeps_the_graph():
    from export.versions import stamp_lowest_versions

    model = tool_model()
    graph = model.graph.SerializeToString()
    stamp_lowest_versions(model)
    assert [(e.domain, e.version) for e in model.opset_import] == [("", 18)] and model.ir_version == 8
    assert model.graph.SerializeToString() == graph
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.slow  # export imports torch
def test_stamping_keeps_what_the_nodes_use_and_what_their_types_need():
    from export.versions import stamp_lowest_versions

    model = tool_model(initializer=[helper.make_tensor("w", TensorProto.INT4, [2], [1, 2])])
    model.graph.node.append(helper.make_node("Gelu", ["y"], ["z"], domain="com.microsoft"))
    stamp_lowest_versions(model)
    assert {e.domain for e in model.opset_import} == {"", "com.microsoft"} and model.ir_version == 10


def test_the_header_reader_agrees_with_onnx(tiny_onnx):
    model = onnx.load(tiny_onnx)
    for source in (tiny_onnx, tiny_onnx.read_bytes()):
        header = compat.read_header(source)
        assert header.ir_version == model.ir_version
        assert header.opsets == {e.domain: e.version for e in model.opset_import}
        assert header.min_onnxruntime == ModelInfo.from_props({p.key: p.value for p in model.metadata_props}).min_onnxruntime
    assert compat.MIN_ONNXRUNTIME_KEY in {p.key for p in model.metadata_props}


@pytest.mark.parametrize("data", [b"", b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x08" + b"\xff" * 20])
def test_the_header_reader_gives_up_on_what_is_not_onnx(tmp_path, data):
    """Garbage, a declared 4 GB field in six bytes, a varint that never ends: None, nothing allocated."""
    (tmp_path / "bad.onnx").write_bytes(data)
    assert compat.read_header(data) is None and compat.read_header(tmp_path / "bad.onnx") is None


def test_a_truncated_model_is_not_misread(tiny_onnx):
    assert compat.read_header(tiny_onnx.read_bytes()[:1000]) is None


def stamped(tiny_onnx, tmp_path, ir_version=None, min_onnxruntime=None):
    model = onnx.load(tiny_onnx)
    if ir_version is not None:
        model.ir_version = ir_version
    for prop in model.metadata_props:
        if prop.key == compat.MIN_ONNXRUNTIME_KEY and min_onnxruntime is not None:
            prop.value = min_onnxruntime
    path = tmp_path / "stamped.onnx"
    onnx.save(model, path)
    return path


def test_a_model_for_a_newer_onnxruntime_is_refused_in_one_line_naming_both_and_the_fixes(tiny_onnx, tmp_path, monkeypatch):
    path = stamped(tiny_onnx, tmp_path, min_onnxruntime='"1.18"')
    monkeypatch.setattr(providers.ort, "__version__", "1.16.3")
    with pytest.raises(CamError) as err:
        CamSession(path)
    message = str(err.value)
    assert message.startswith(f"{path}: this model needs onnxruntime >= 1.18") and "onnxruntime 1.16.3 is installed" in message
    assert "pip install -U 'onnxruntime>=1.18'" in message and "--opset 18" in message and "\n" not in message


def test_an_onnxruntime_older_than_gapcam_supports_is_told_so(tiny_onnx, monkeypatch):
    monkeypatch.setattr(providers.ort, "__version__", "1.14.1")
    with pytest.raises(
        CamError, match=r"needs onnxruntime >= 1\.15 .* onnxruntime 1\.14\.1 is older than the oldest gapcam supports \(1\.15\)"
    ):
        CamSession(tiny_onnx)


def test_a_model_from_before_the_field_is_judged_by_its_ir_version(tiny_onnx, tmp_path, monkeypatch):
    """gapcam 0.1 stamped IR 10 and recorded nothing: onnxruntime 1.16 is told it needs 1.18."""
    path = stamped(tiny_onnx, tmp_path, ir_version=10, min_onnxruntime='""')
    monkeypatch.setattr(providers.ort, "__version__", "1.16.3")
    with pytest.raises(CamError, match=r"needs onnxruntime >= 1\.18 \(ONNX IR version 10, opset 18\)"):
        CamSession(path)
    monkeypatch.setattr(providers.ort, "__version__", "1.18.0")
    assert CamSession(path).labels


def test_the_refusal_reaches_the_command_line_as_one_line(tiny_onnx, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from runtime.__main__ import main

    monkeypatch.setattr(providers.ort, "__version__", "1.14.1")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    result = CliRunner().invoke(main, [str(tiny_onnx), str(image), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()][-1].endswith("(1.15)")


def test_onnxruntimes_own_load_error_reaches_the_user_whole(tiny_onnx, tmp_path):
    """No table entry for IR 99: onnxruntime decides, and its reason is not cut at 200 characters."""
    path = stamped(tiny_onnx, tmp_path, ir_version=99)
    with pytest.raises(CamError) as err:
        CamSession(path)
    message = str(err.value)
    assert "Unsupported model IR version: 99" in message and ".cc:" not in message and "::" not in message


def test_source_locations_are_cut_from_onnxruntime_messages():
    text = (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:149 "
        "onnxruntime::Model::Model(onnx::ModelProto&&, const PathString&, const IOnnxRuntimeOpSchemaRegistryList*, "
        "const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) "
        "Unsupported model IR version: 10, max supported IR version: 9\n"
    )
    assert providers.onnxruntime_reason(RuntimeError(text)) == (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed: Unsupported model IR version: 10, max supported IR version: 9"
    )
    opset = (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/a b/m.onnx failed:"
        "/onnxruntime_src/onnxruntime/core/graph/model_load_utils.h:46 "
        "void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::basic_string<char>, int>&, "
        "const onnxruntime::logging::Logger&, bool, const string&, int) ONNX Runtime only *guarantees* support for models stamped "
        "with official released onnx opset versions. Current official support for domain ai.onnx is till opset 19."
    )
    assert providers.onnxruntime_reason(RuntimeError(opset)) == (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/a b/m.onnx failed: ONNX Runtime only *guarantees* support for models "
        "stamped with official released onnx opset versions. Current official support for domain ai.onnx is till opset 19."
    )


def test_an_old_build_beside_numpy_2_is_told_to_pin_numpy(monkeypatch):
    monkeypatch.setattr(providers, "installed_versions", lambda names: ["numpy 2.1.0"])
    assert "pip install 'numpy<2'" in providers._load_hint(["onnxruntime 1.16.3"])
    assert providers._load_hint(["onnxruntime 1.19.2"]) == providers.INSTALL_HINT


@pytest.mark.parametrize("text", ["1.15", "1.16.3", "1.20.0+cu118", "1.17.0.dev20231010"])
def test_versions_compare_by_number(text):
    assert compat.version_tuple(text) >= (1, 15, 0)
    assert compat.version_tuple("1.9") < compat.version_tuple("1.15")


def test_a_malformed_requirement_in_metadata_is_refused(valid_props):
    props = {**valid_props, compat.MIN_ONNXRUNTIME_KEY: '"soon"'}
    with pytest.raises(CamError, match="min_onnxruntime must be a version"):
        ModelInfo.from_props(props)


def test_packages_and_cards_carry_the_requirement(packed):
    assert packed.manifest.min_onnxruntime == compat.OLDEST_ONNXRUNTIME
    card = (packed.folder / "README.md").read_text()
    assert f"Runs on onnxruntime {compat.OLDEST_ONNXRUNTIME} and newer (opset 18)" in card


def test_a_manifest_that_misstates_the_requirement_is_refused(packed, tmp_path):
    from tests.fixtures import copy_package, rewrite_manifest

    folder = copy_package(packed, tmp_path)
    rewrite_manifest(folder, lambda manifest: manifest.update(min_onnxruntime="1.21"))
    with pytest.raises(CamError, match="min_onnxruntime '1.21' vs the model's '1.15'"):
        CamSession(folder)


@pytest.mark.slow  # export imports torch
def test_int8_models_lose_the_tools_domains_and_record_their_requirement(tiny_onnx, tmp_path, shape_images):
    from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options, quantize_model
    from runtime.evaluation.shapes import render_split

    held_out = list(render_split(24, seed=3, split="test").images)
    data = CalibrationData(list(shape_images.images), held_out, source="test")
    options = Int8Options(data, gate=NO_GATE, speed_gate=NO_SPEED_GATE, out=tmp_path / "m.int8.onnx")
    report = quantize_model(tiny_onnx, options)
    model = onnx.load(report.path)
    assert [(e.domain, e.version) for e in model.opset_import] == [("", 18)] and model.ir_version == 8
    assert CamSession(report.path).info.min_onnxruntime == compat.ONNXRUNTIME_FOR_OPSET[18][1]
    np.testing.assert_equal(CamSession(report.path).info.labels, CamSession(tiny_onnx).info.labels)


@pytest.mark.parametrize(
    "installed,said", [("1.14.1", "older than 1.15, the oldest gapcam supports"), ("1.16.3", "gapcam supports 1.15 and newer")]
)
def test_gapcam_version_says_whether_the_onnxruntime_is_supported(monkeypatch, installed, said):
    from gapcam.cli import version_text

    monkeypatch.setattr(providers.ort, "__version__", installed)
    monkeypatch.setattr(providers, "onnxruntime_builds", lambda: [f"onnxruntime {installed}"])
    line = next(line for line in version_text().splitlines() if line.startswith("onnxruntime: "))
    assert line.startswith(f"onnxruntime: onnxruntime {installed} ({said})")
