"""runtime.maps.methods: one registry of explanation methods, read by the session, the CLI and serving."""

import numpy as np
import pytest
from click.testing import CliRunner

from runtime import CamError, explain_outputs
from runtime.__main__ import main as runtime_main
from runtime.maps.cam import class_activation_maps
from runtime.maps.forward import ModelAccess, head_logits
from runtime.maps.methods import METHODS, Method, get_method, register

BUILTIN = ["cam", "gradcam", "eigencam", "scorecam", "reciprocam"]


@pytest.fixture()
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test (a test may register methods of its own)."""
    monkeypatch.setattr("runtime.maps.methods.METHODS", dict(METHODS))
    from runtime.maps import methods

    return methods.METHODS


def test_builtin_methods_and_their_one_validation():
    assert list(METHODS) == BUILTIN
    assert get_method("gradcam") is METHODS["gradcam"]
    for bad in ("lime", "", None, 3):
        with pytest.raises(CamError, match=rf"method must be one of \[{', '.join(repr(name) for name in BUILTIN)}\]"):
            get_method(bad)
    with pytest.raises(CamError, match="exactly one of from_features and from_model"):
        Method("both", "neither", from_features=class_activation_maps, from_model=lambda f, c, m: f)


def test_a_name_is_registered_once(scratch_registry):
    with pytest.raises(CamError, match="'cam' is already registered"):
        register(Method("cam", "another CAM", from_features=class_activation_maps))
    assert scratch_registry["cam"].summary.startswith("CAM (Zhou")


@pytest.mark.parametrize("name", list(METHODS))
def test_class_maps_and_features_give_the_same_maps(name, session, shape_images):
    """Every method that can use the graph's `cams` output gives what the features give."""
    batch = session.to_batch(list(shape_images.images[:3]))
    logits, features, cams = session.infer(batch, ("logits", "features", "cams"))
    classes = np.argsort(-logits, axis=1)[:, :2]
    method = get_method(name)
    model = ModelAccess(session.info, batch, session.logits)
    from_features = method.maps(classes, features=features, weight=session.info.fc_weight, model=model)
    assert from_features.shape == (3, 2, *features.shape[2:]) and from_features.dtype == np.float32
    if method.from_class_maps is None:
        assert method.outputs(has_class_maps=True) == ("logits", "features")
        with pytest.raises(CamError, match="needs the model's features"):
            method.maps(classes, class_maps=cams)
    else:
        assert method.outputs(has_class_maps=True) == ("logits", "cams")
        np.testing.assert_allclose(method.maps(classes, class_maps=cams), from_features, rtol=1e-4, atol=1e-5)
    assert method.outputs(has_class_maps=False) == ("logits", "features")


def test_a_registered_method_runs_everywhere_a_method_is_chosen(scratch_registry, session, shape_images):
    """A user's own method: CamSession.run, explain_outputs and the CLI take it by name."""
    register(Method("negcam", "minus the CAM", from_features=lambda f, w, c: -class_activation_maps(f, w, c)))
    image = shape_images.images[0]
    ours, cam = session.run(image, method="negcam")[0], session.run(image, method="cam")[0]
    np.testing.assert_allclose(ours.cams_raw, -cam.cams_raw, rtol=1e-6)
    logits, features = session.infer(session.to_batch([image]))
    again = explain_outputs(session.info, logits, [image.shape[:2]], features=features, method="negcam")[0]
    np.testing.assert_array_equal(again.cams_raw, ours.cams_raw)
    with pytest.raises(CamError, match="needs the model's features"):
        explain_outputs(
            session.info, logits, [image.shape[:2]], class_maps=session.infer(session.to_batch([image]), ("cams",))[0], method="negcam"
        )


def test_the_cli_and_serving_offer_the_registry():
    for command in ("explain", "eval", "faithfulness"):
        help_text = CliRunner().invoke(runtime_main, [command, "--help"], terminal_width=400).output
        assert f"[{'|'.join(BUILTIN)}]" in help_text
    pytest.importorskip("pytriton")
    from gapcam.serve import main as serve_main

    assert f"[{'|'.join(BUILTIN)}]" in CliRunner().invoke(serve_main, ["--help"], terminal_width=400).output


def test_methods_that_need_the_model_say_so(session, shape_images):
    """Score-CAM runs the model: explain_outputs needs the inputs and the forward pass, and with them gives what
    CamSession.run gives. ReciproCAM needs only the metadata's tail, which is the graph's."""
    images = list(shape_images.images[:3])
    batch = session.to_batch(images)
    logits, features = session.infer(batch)
    np.testing.assert_allclose(head_logits(features, session.info), logits, rtol=1e-4, atol=1e-5)
    sizes = [image.shape[:2] for image in images]
    with pytest.raises(CamError, match="'scorecam' runs the model on masked inputs: give inputs and forward"):
        explain_outputs(session.info, logits, sizes, features=features, method="scorecam")
    with pytest.raises(CamError, match="'reciprocam' needs the model's features"):
        explain_outputs(session.info, logits, sizes, class_maps=session.infer(batch, ("cams",))[0], method="reciprocam")
    calls = []

    def forward(inputs):
        calls.append(len(inputs))
        return session.logits(inputs)

    elsewhere = explain_outputs(session.info, logits, sizes, features=features, method="scorecam", inputs=batch, forward=forward)
    masks = 3 * session.info.feature_channels  # one masked input per image and feature map, 64 per call
    assert calls == [min(64, masks - start) for start in range(0, masks, 64)]
    for ours, run in zip(elsewhere, session.run(images, method="scorecam"), strict=True):
        np.testing.assert_allclose(ours.cams_raw, run.cams_raw, rtol=1e-5, atol=1e-7)
    assert get_method("scorecam").runs_model and not get_method("reciprocam").runs_model


def test_serving_explains_with_the_chosen_method(session, shape_images):
    pytest.importorskip("pytriton")
    import io

    from PIL import Image

    from gapcam.serve import CamInference

    encoded = io.BytesIO()
    Image.fromarray(shape_images.images[0]).save(encoded, format="PNG")
    request = {"images": np.array([[encoded.getvalue()]], dtype=np.object_)}
    for name in METHODS:
        served = CamInference(session, topk=2, method=name)([request])[0]
        expected = session.run(shape_images.images[0], topk=2, method=name)[0]
        np.testing.assert_allclose(served["cams"][0], expected.cams_raw, rtol=1e-6)
    with pytest.raises(CamError, match="method must be one of"):
        CamInference(session, topk=1, method="lime")
