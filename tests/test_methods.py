"""gradcam and eigencam from logits and features, against pytorch-grad-cam on the torch model."""

import numpy as np
import pytest
import torch
from torch import nn

from runtime import CamError
from runtime.maps.cam import eigencam_maps, gradcam_maps, normalize_maps


class LogitsOnly(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def at_feature_size(extractor, features_shape):
    """Make pytorch-grad-cam scale its maps at the feature resolution (its resize becomes a no-op)."""
    extractor.get_target_width_height = lambda input_tensor: (features_shape[-1], features_shape[-2])
    return extractor


def test_gradcam_is_relu_cam_over_area():
    cams = np.array([[[[1.0, -2.0], [3.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(gradcam_maps(cams), [[[[0.25, 0.0], [0.75, 0.0]]]])


def test_gradcam_matches_pytorch_grad_cam(exported_session, tiny_model, shape_images):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images = list(shape_images.images[:4])
    classes = np.array([[1], [3], [0], [4]])
    ours = exported_session.run(images, classes=classes, method="gradcam")
    x = torch.from_numpy(exported_session.to_batch(images))
    features_shape = ours[0].cams_raw.shape
    extractor = at_feature_size(GradCAM(model=LogitsOnly(tiny_model), target_layers=[tiny_model.cam_conv]), features_shape)
    theirs = extractor(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes[:, 0]])
    cams = exported_session.run(images, classes=classes, method="cam")
    for result, reference, cam in zip(ours, theirs, cams, strict=True):
        np.testing.assert_allclose(normalize_maps(result.cams_raw)[0], reference, atol=1e-4)
        h, w = result.cams_raw.shape[-2:]
        np.testing.assert_allclose(result.cams_raw, np.maximum(cam.cams_raw, 0) / (h * w), rtol=1e-6)


def test_eigencam_matches_pytorch_grad_cams_projection(exported_session, tiny_model, shape_images):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    images = list(shape_images.images[:4])
    with torch.no_grad():
        _, features = tiny_model(torch.from_numpy(exported_session.to_batch(images)))
    features = features.numpy()
    theirs = get_2d_projection(features.copy())  # pytorch-grad-cam's Eigen-CAM, before its ReLU
    ours = np.stack([r.cams_raw[0] for r in exported_session.run(images, method="eigencam")])
    for mine, reference, f in zip(ours, theirs, features, strict=True):
        oriented = reference if (reference.ravel() @ f.reshape(f.shape[0], -1).sum(0)) >= 0 else -reference
        np.testing.assert_allclose(normalize_maps(mine), normalize_maps(np.maximum(oriented, 0)), atol=1e-3)
    np.testing.assert_allclose(eigencam_maps(features), ours, rtol=1e-4, atol=1e-6)


def test_eigencam_is_class_agnostic_and_methods_are_checked(session, shape_images):
    result = session.run(shape_images.images[0], classes=[0, 2], method="eigencam")[0]
    np.testing.assert_array_equal(result.cams_raw[0], result.cams_raw[1])
    np.testing.assert_array_equal(result.cams_scaled[0], result.cams_scaled[1])  # scaled and boxed once, then repeated
    np.testing.assert_array_equal(result.boxes[0], result.boxes[1])
    alone = session.run(shape_images.images[0], classes=[2], method="eigencam")[0]
    np.testing.assert_array_equal(alone.boxes[0], result.boxes[1])
    with pytest.raises(CamError, match="method"):
        session.run(shape_images.images[0], method="lime")


def test_scorecam_matches_pytorch_grad_cam_and_torchcam(exported_session, tiny_model, shape_images, monkeypatch):
    """pytorch-grad-cam's ScoreCAM, its masks upsampled with align_corners=False as gapcam's (and torchcam's)
    are, gives our maps within 1e-4; torchcam's, which scales the maps before upsampling them, within 1e-3."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    images = list(shape_images.images[:3])
    classes = np.array([[1], [3], [0]])
    ours = np.stack([r.cams_raw[0] for r in exported_session.run(images, classes=classes, method="scorecam")])
    x = torch.from_numpy(exported_session.to_batch(images))
    model = LogitsOnly(tiny_model).eval()
    monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", lambda size: torch.nn.Upsample(size=size, mode="bilinear", align_corners=False))
    extractor = at_feature_size(ScoreCAM(model=model, target_layers=[tiny_model.cam_conv]), ours.shape)
    theirs = extractor(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes[:, 0]])
    np.testing.assert_allclose(normalize_maps(ours), theirs, atol=1e-4)
    with TorchcamScoreCAM(model, tiny_model.cam_conv, input_shape=tuple(x.shape[1:])) as torchcam_extractor:
        with torch.no_grad():
            scores = model(x)
        torchcams = torchcam_extractor(class_idx=[int(c) for c in classes[:, 0]], scores=scores)[0].numpy()
    np.testing.assert_allclose(normalize_maps(ours), torchcams, atol=1e-3)


def test_reciprocam_is_the_papers_algorithm_on_the_torch_model(exported_session, tiny_model, shape_images):
    """The authors' algorithm (training_extensions' recipro_cam.py) on the torch model: each position's
    features spread by the 3x3 Gaussian into an otherwise empty map, through the model's own pooling and fc."""
    images = list(shape_images.images[:3])
    ours = exported_session.run(images, topk=2, method="reciprocam")
    kernel = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 16
    with torch.no_grad():
        _, features = tiny_model(torch.from_numpy(exported_session.to_batch(images)))
        for result, f in zip(ours, features, strict=True):
            channels, h, w = f.shape
            mosaic = torch.zeros(h * w, channels, h + 2, w + 2)
            for b in range(h * w):
                i, j = divmod(b, w)
                mosaic[b, :, i : i + 3, j : j + 3] = f[:, i, j, None, None] * kernel
            probs = torch.softmax(tiny_model.fc(mosaic[:, :, 1:-1, 1:-1].mean(dim=(2, 3))), dim=1)
            reference = probs[:, torch.from_numpy(result.classes)].T.reshape(-1, h, w).numpy()
            np.testing.assert_allclose(result.cams_raw, reference, atol=1e-5)
