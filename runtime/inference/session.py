"""`CamSession`: an exported gapcam model in onnxruntime, from images to labels, CAMs and boxes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.deprecation import renamed
from runtime.errors import CamError
from runtime.formats.onnx_model import CLASS_MAPS_NAME, INPUT_NAME, OUTPUT_NAMES, ModelInfo
from runtime.formats.package import MODEL, Manifest
from runtime.formats.store import resolve_model
from runtime.inference.providers import open_inference_session
from runtime.inputs.dicom import DEFAULT_WINDOW, check_window
from runtime.inputs.image import ImageInput, Preprocess, image_list, load_image, preprocess
from runtime.maps.methods import get_method
from runtime.maps.results import CamResult, ClassChoice, explain_outputs
from runtime.reports.overlay import overlay

MAX_INPUT_SIDE = 8192  # the largest model input side believed when the graph leaves it open


class CamSession:
    """Run a gapcam ONNX model and explain its predictions with class activation maps.

    >>> session = CamSession("shapes.onnx")
    >>> result = session.run("image.png")[0]
    >>> result.label, result.prob, result.box
    >>> session.overlay("image.png", result.cams_scaled[0]).save("overlay.png")  # map at model resolution, resized by Pillow

    `providers=None` asks for CUDA when onnxruntime offers it and falls back to the CPU;
    `session.providers` reports what onnxruntime really uses. Safe to call from several threads.
    `dicom_window`: which of a DICOM file's VOI LUTs or windows its pixels are shown through (0,
    the first, as a viewer opens it; None: none, the image's own range); see docs/dicom.md.

    Raises CamError when the model cannot be found or loaded, is not a gapcam model, or a package's
    manifest disagrees with it; `run` raises CamError for unreadable images or bad arguments.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        *,
        box_threshold: float | None = None,
        dicom_window: int | None = DEFAULT_WINDOW,
    ):
        if box_threshold is not None and not 0.0 <= box_threshold <= 1.0:
            raise CamError(f"box_threshold must be within [0, 1], got {box_threshold}")
        self.dicom_window = check_window(dicom_window)
        self.path, self.package = resolve_model(model)
        # A package's model loads from memory, so it cannot reach files outside the package.
        source = self.package.read(MODEL) if self.package else str(self.path)
        self._session = open_inference_session(source, providers, str(self.path))
        self.providers: list[str] = self._session.get_providers()
        self.info = ModelInfo.from_props(self._session.get_modelmeta().custom_metadata_map, source=str(self.path))
        # The model's own threshold (calibrated on validation boxes at training) unless the caller sets one.
        self.box_threshold = self.info.box_threshold if box_threshold is None else box_threshold
        self._check_signature()
        if self.package:
            self._check_manifest(self.package.manifest)

    def _check_signature(self) -> None:
        inputs, graph_outputs = self._session.get_inputs(), self._session.get_outputs()
        outputs = [o.name for o in graph_outputs]
        if (
            len(inputs) != 1
            or inputs[0].name != INPUT_NAME
            or tuple(outputs[:2]) != OUTPUT_NAMES
            or outputs[2:] not in ([], [CLASS_MAPS_NAME])
        ):
            raise CamError(
                f"{self.path}: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)} (then optionally "
                f"{CLASS_MAPS_NAME!r}), got inputs {[i.name for i in inputs]} and outputs {outputs}"
            )
        # Models exported before the graph computed the class maps have only logits and features.
        self.has_class_maps = outputs[2:] == [CLASS_MAPS_NAME]
        self._check_metadata_against_graph(inputs[0].shape, {o.name: o.shape for o in graph_outputs})

    def _check_metadata_against_graph(self, input_shape: list[int | str | None], output_shapes: dict[str, list[int | str | None]]) -> None:
        """Every metadata field that the graph also determines must agree with it: an untrusted file's
        metadata is never believed alone (a declared 100000x100000 input would be allocated)."""
        info = self.info
        declared = [
            ("input", input_shape, ["batch", info.preprocess.channels, *info.preprocess.size], "preprocess (channels, height, width)"),
            ("logits", output_shapes["logits"], ["batch", info.num_classes], "labels (their number)"),
            ("features", output_shapes["features"][:2], ["batch", info.feature_channels], "fc_weight (its width K)"),
        ]
        if self.has_class_maps:
            declared.append(("cams", output_shapes[CLASS_MAPS_NAME][:2], ["batch", info.num_classes], "labels (their number)"))
        for tensor, graph, metadata, field in declared:
            if len(graph) != len(metadata) or any(isinstance(g, int) and g != m for g, m in zip(graph[1:], metadata[1:], strict=True)):
                raise CamError(f"{self.path}: metadata field {field} says {metadata[1:]}, but the graph's {tensor!r} is {graph}")
        if len(output_shapes["features"]) != 4:
            raise CamError(f"{self.path}: the graph's 'features' is {output_shapes['features']}, not [N, K, h, w]")
        if any(not isinstance(d, int) for d in input_shape[2:]) and max(info.preprocess.size) > MAX_INPUT_SIDE:
            raise CamError(
                f"{self.path}: metadata field preprocess asks for a {info.preprocess.height}x{info.preprocess.width} "
                f"input, larger than {MAX_INPUT_SIDE} a side, and the graph does not fix it"
            )

    def signature(self) -> dict[str, Any]:
        """The graph's input and outputs as a manifest declares them: name, dtype, shape (batch symbolic)."""

        def describe(value: Any) -> dict[str, Any]:  # an onnxruntime NodeArg: onnxruntime ships no types
            dtype = {"tensor(float)": "float32"}.get(value.type, value.type)
            return {"name": value.name, "dtype": dtype, "shape": list(value.shape)}

        return {"input": describe(self._session.get_inputs()[0]), "outputs": [describe(o) for o in self._session.get_outputs()]}

    def _check_manifest(self, manifest: Manifest) -> None:
        """A package's manifest must describe the model it holds: labels, input and output shapes."""
        problems = []
        if manifest.labels != self.info.labels:
            problems.append(f"labels {manifest.labels} vs the model's {self.info.labels}")
        actual = self.signature()
        declared_shapes = {o.get("name"): o.get("shape", [])[1:] for o in [manifest.input, *manifest.outputs]}
        actual_shapes = {o["name"]: o["shape"][1:] for o in [actual["input"], *actual["outputs"]]}
        if declared_shapes != actual_shapes:
            problems.append(f"shapes {declared_shapes} vs the model's {actual_shapes}")
        if manifest.min_onnxruntime and manifest.min_onnxruntime != self.info.min_onnxruntime:
            problems.append(f"min_onnxruntime {manifest.min_onnxruntime!r} vs the model's {self.info.min_onnxruntime!r}")
        if problems:
            raise CamError(f"{self.path}: manifest disagrees with {MODEL}: {'; '.join(problems)}")

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def preprocessing(self) -> Preprocess:
        return self.info.preprocess

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.info.preprocess.size

    def load_image(self, image: ImageInput) -> Image.Image:
        """`image` decoded as this session sees it (`runtime.inputs.image.load_image`, DICOM files
        through this session's `dicom_window`)."""
        return load_image(image, dicom_window=self.dicom_window)

    def to_batch(self, images: ImageInput | Sequence[ImageInput]) -> npt.NDArray[np.float32]:
        """float32 [N, C, H, W], exactly what the model sees; `preprocessing` says how it is made."""
        return preprocess(images, self.preprocessing, dicom_window=self.dicom_window)

    preprocess = renamed("CamSession.preprocess", to_batch, "CamSession.to_batch")  # deprecated in 0.2

    def infer(self, batch: npt.ArrayLike, outputs: Sequence[str] = OUTPUT_NAMES) -> tuple[npt.NDArray[np.float32], ...]:
        """One inference call; by default (logits [N, num_classes], features [N, K, h, w]).

        `outputs` names others, such as ("logits", "cams") where the model has the class maps.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        channels = self.preprocessing.channels
        if batch.ndim != 4 or batch.shape[1:] != (channels, *self.input_size):
            raise CamError(f"infer: expected a batch [N, {channels}, {self.input_size[0]}, {self.input_size[1]}], got {batch.shape}")
        return tuple(self._session.run(list(outputs), {INPUT_NAME: batch}))

    def run(
        self, images: ImageInput | Sequence[ImageInput], classes: ClassChoice = None, topk: int | None = None, method: str = "cam"
    ) -> list[CamResult]:
        """Predict and explain one or many images (a list runs as one inference call).

        classes=None explains the top-k predicted classes (topk=None: the top class; for a
        multi-label model, `info.activation == "sigmoid"`, every positive class, at or above its
        threshold, or the most probable where none is); an index, a label, or a list of them
        explains those classes for every image; an [N, k] index array chooses per image. Each
        result's `probs` are the model's activation (softmax or sigmoid) and `positives` the classes
        it finds present.
        method: a name in `runtime.maps.methods.METHODS`: "cam" (the paper's), "gradcam" (equal to
        ReLU(CAM) / (h w) for this head), "eigencam" (class-agnostic), "scorecam" (runs the model on
        one masked input per feature map, in batched calls) or "reciprocam". A method that can use
        the graph's class maps does where the model has them (less to copy from a GPU).
        The work after inference is `runtime.maps.results.explain_outputs`.
        """
        pictures = [self.load_image(item) for item in image_list(images)]
        logits, maps = self.model_outputs(pictures, method)
        return self.explain(logits, maps, [(picture.height, picture.width) for picture in pictures], classes, topk, method)

    def explain(
        self,
        logits: npt.NDArray[np.float32],
        maps: dict[str, npt.NDArray[np.float32]],
        image_sizes: Sequence[tuple[int, int]],
        classes: ClassChoice = None,
        topk: int | None = None,
        method: str = "cam",
    ) -> list[CamResult]:
        """`model_outputs`' logits and maps -> one `CamResult` per image of (H, W) `image_sizes`, with
        this session's box threshold and forward pass (`explain_outputs`)."""
        return explain_outputs(
            self.info,
            logits,
            image_sizes,
            class_maps=maps.get("class_maps"),
            features=maps.get("features"),
            inputs=maps.get("inputs"),
            classes=classes,
            topk=topk,
            method=method,
            box_threshold=self.box_threshold,
            forward=self.logits,
        )

    def logits(self, batch: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The logits [N, num_classes] of a model input batch, in one inference call: the forward
        pass of the methods and metrics that perturb inputs (Score-CAM, faithfulness)."""
        return self.infer(batch, OUTPUT_NAMES[:1])[0]

    def model_outputs(
        self, images: ImageInput | Sequence[ImageInput], method: str = "cam"
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        """One inference call: the logits [N, num_classes] and the maps `method` is made from, keyed as
        `explain_outputs` takes them (`class_maps` or `features`, and `inputs`, the batch, for a method
        that runs the model). For callers that combine outputs before explaining them, such as a
        video's temporal smoothing."""
        explainer = get_method(method)
        names = explainer.outputs(self.has_class_maps)
        batch = self.to_batch(images)
        logits, maps_from = self.infer(batch, names)
        return logits, {
            "class_maps" if names[1] == CLASS_MAPS_NAME else "features": maps_from,
            **({"inputs": batch} if explainer.runs_model else {}),
        }

    def overlay(self, image: ImageInput, cam: npt.NDArray[np.floating[Any]], **options: Any) -> Image.Image:
        """A heatmap of `cam` blended over `image` (jet by default); see `runtime.reports.overlay.overlay`."""
        return overlay(self.load_image(image), cam, **options)

    def __repr__(self) -> str:
        return f"CamSession({str(self.path)!r}, labels={self.labels}, input_size={self.input_size}, providers={self.providers})"
