"""Names that moved or were renamed in 0.2 still work for one minor version, each with a DeprecationWarning naming the new one."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

from runtime.deprecation import MOVED_MODULES, REMOVED_IN


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_names_import_the_new_modules_with_a_warning(old):
    """In a fresh interpreter (the module cache of this one already holds some old names)."""
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        f"new = importlib.import_module({MOVED_MODULES[old]!r})\n"
        "try:\n"
        f"    importlib.import_module({old!r})\n"
        "except DeprecationWarning as warning:\n"
        "    print(warning)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        f"assert importlib.import_module({old!r}) is new\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{old} is deprecated; use {MOVED_MODULES[old]} ({old} will be removed in gapcam {REMOVED_IN})"


def test_the_warning_points_at_the_users_own_line(tmp_path):
    """Python shows a DeprecationWarning by default only where it is attributed to __main__: the
    warning must name the user's import line, not importlib's frames."""
    script = tmp_path / "user.py"
    script.write_text("import runtime.session\nimport runtime\nruntime.image.load_image\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{script}:1: DeprecationWarning: runtime.session is deprecated; use runtime.inference.session" in done.stderr
    assert f"{script}:3: DeprecationWarning: runtime.image is deprecated; use runtime.inputs.image" in done.stderr


def test_moved_names_of_old_cam_and_results_modules():
    from runtime.maps import activations, boxes, cam, methods, results

    for module, name, home in (
        (results, "softmax", activations),
        (cam, "box_iou", boxes),
        (cam, "cam_box", boxes),
        (cam, "largest_component_box", boxes),
        (results, "box_map_size", boxes),
        (results, "refine_box", boxes),
    ):
        with pytest.warns(DeprecationWarning, match=rf"{module.__name__}.{name} is deprecated; use {home.__name__}.{name}"):
            assert getattr(module, name) is getattr(home, name)
    with pytest.warns(DeprecationWarning, match="runtime.maps.cam.METHODS is deprecated"):
        assert cam.METHODS[:3] == ("cam", "gradcam", "eigencam") and cam.METHODS == tuple(methods.METHODS)  # 0.1's tuple of names
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cam.nothing  # noqa: B018


@pytest.mark.slow  # train imports torch
def test_roc_auc_moved_beside_the_multilabel_metrics():
    pytest.importorskip("torch", reason="train.evaluate imports torch")
    import train.evaluate
    from runtime.evaluation import multilabel

    with pytest.warns(DeprecationWarning, match="train.evaluate.roc_auc is deprecated; use runtime.evaluation.multilabel.roc_auc"):
        assert train.evaluate.roc_auc is multilabel.roc_auc


def test_renamed_functions_warn_and_answer_as_before(session, shape_images):
    from runtime.maps import boxes, methods

    with pytest.warns(DeprecationWarning, match="best_iou is deprecated; use runtime.maps.boxes.box_iou"):
        assert boxes.best_iou((0, 0, 10, 10), np.array([[0, 0, 10, 5]])) == pytest.approx(0.5)
    images = list(shape_images.images[:2])
    with pytest.warns(DeprecationWarning, match="CamSession.preprocess is deprecated; use CamSession.to_batch"):
        np.testing.assert_array_equal(session.preprocess(images), session.to_batch(images))
    logits, features = session.infer(session.to_batch(images))
    classes = np.argsort(-logits, axis=1)[:, :1]
    cam = importlib.import_module("runtime.maps.cam")
    with pytest.warns(DeprecationWarning):
        old = cam.explanation_maps("gradcam", features, session.info.fc_weight, classes)
    np.testing.assert_array_equal(old, methods.get_method("gradcam").maps(classes, features=features, weight=session.info.fc_weight))
    with pytest.warns(DeprecationWarning):
        class_maps = session.infer(session.to_batch(images), ("cams",))[0]
        np.testing.assert_array_equal(cam.maps_of_classes("cam", class_maps, classes), class_maps[np.arange(2)[:, None], classes])
