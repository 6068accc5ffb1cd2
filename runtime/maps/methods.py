"""The registry of explanation methods: one entry per method, read by everything that offers a choice.

`CamSession.run`, `explain_outputs`, the CLI's `--method`, `gapcam serve` and the reports all take
a method by name from `METHODS` and validate it once, with `get_method`. Adding a method is one
`register(Method(...))` here (or in a user's code): nothing else in gapcam names methods.

A method makes raw maps [N, k, h, w] for class indices [N, k], from the graph's all-class CAMs
(`cams` output, when the model has it and the method can use it: less to copy from a GPU), from
the features and the fc weights, or, for a method that needs more of the model (Score-CAM runs it
on masked inputs, ReciproCAM runs its tail on masked features), from the features and a
`ModelAccess` (`runtime.maps.forward`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.deprecation import warn_deprecated
from runtime.errors import CamError
from runtime.formats.onnx_model import CLASS_MAPS_NAME, OUTPUT_NAMES
from runtime.maps.cam import class_activation_maps, eigencam_maps, gradcam_maps
from runtime.maps.forward import ModelAccess, reciprocam_maps, scorecam_maps

_Floats = npt.NDArray[np.floating[Any]]  # features and fc weights: float32, or any float dtype a caller has
FromFeatures = Callable[[_Floats, _Floats, npt.NDArray[np.int64]], npt.NDArray[np.float32]]  # (features, fc weight, classes) -> maps
FromClassMaps = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]  # the chosen classes' CAMs [N, k, h, w] -> maps
FromModel = Callable[[_Floats, npt.NDArray[np.int64], ModelAccess], npt.NDArray[np.float32]]  # (features, classes, model) -> maps


@dataclass(frozen=True)
class Method:
    """An explanation method of a GAP-CAM model, computed from its outputs after inference."""

    name: str  # what users pass: CamSession.run(method=...), --method
    summary: str  # one line for help texts and reports
    from_features: FromFeatures | None = None  # maps from the features [N, K, h, w], fc weight [C, K], classes [N, k]
    from_class_maps: FromClassMaps | None = None  # maps from the graph's CAMs of the classes, where it can
    exact_for_gap: bool = True  # equal to the method's own (gradient or hook) definition for a GAP + linear head (eval reports it)
    class_specific: bool = True  # False: one map per image, repeated for each explained class
    from_model: FromModel | None = None  # instead of from_features: maps from the features, classes and a ModelAccess
    runs_model: bool = False  # from_model calls the model's forward pass (more inference calls than one per batch)

    def __post_init__(self) -> None:
        if (self.from_features is None) == (self.from_model is None):
            raise CamError(f"method {self.name!r}: give exactly one of from_features and from_model")

    def outputs(self, has_class_maps: bool) -> tuple[str, str]:
        """The two graph outputs to fetch: logits, and the class maps or the features to make maps from."""
        return (OUTPUT_NAMES[0], CLASS_MAPS_NAME) if has_class_maps and self.from_class_maps else OUTPUT_NAMES

    def maps(
        self,
        classes: npt.ArrayLike,
        *,
        features: npt.ArrayLike | None = None,
        weight: _Floats | None = None,
        class_maps: npt.ArrayLike | None = None,
        model: ModelAccess | None = None,
    ) -> npt.NDArray[np.float32]:
        """Raw maps [N, k, h, w] float32 for class indices [N, k], from features (with the fc weight,
        or with `model` for a `from_model` method) or from the model's all-class maps
        [N, num_classes, h, w]. Raises CamError when the method cannot be made from what is given."""
        if self.from_model is not None:
            if features is None or model is None:
                raise CamError(f"method {self.name!r} needs the model's features and the model itself (CamSession.run gives both)")
            features = np.asarray(features)
            return self.from_model(features, np.asarray(classes, dtype=np.int64).reshape(len(features), -1), model)
        if features is not None and weight is not None and self.from_features is not None:
            features = np.asarray(features)
            return self.from_features(features, weight, np.asarray(classes, dtype=np.int64).reshape(len(features), -1))
        if class_maps is not None:
            if self.from_class_maps is None:
                raise CamError(f"method {self.name!r} needs the model's features, not its class maps")
            class_maps = np.asarray(class_maps, dtype=np.float32)
            chosen = np.asarray(classes, dtype=np.int64).reshape(len(class_maps), -1)
            return self.from_class_maps(class_maps[np.arange(len(class_maps))[:, None], chosen])
        raise CamError(f"method {self.name!r}: give class_maps, or features and the fc weight")


METHODS: dict[str, Method] = {}  # name -> Method, in registration order (the CLI lists them so)


def register(method: Method) -> Method:
    """Add a method to the registry. Raises CamError when the name is taken (never replaces one)."""
    if method.name in METHODS:
        raise CamError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called `name`. Raises CamError naming the choices for anything else."""
    given: object = name  # a caller's value, checked: the annotation promises nothing at run time
    if not isinstance(given, str) or given not in METHODS:
        raise CamError(f"method must be one of {list(METHODS)}, got {given!r}")
    return METHODS[given]


def _class_agnostic(features: _Floats, weight: _Floats, classes: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Eigen-CAM's one map per image, repeated for each of the image's explained classes."""
    return np.repeat(eigencam_maps(features)[:, None], classes.shape[1], axis=1)


register(
    Method(
        "cam",
        "CAM (Zhou et al. 2016): sum_k w[c, k] f_k, the map whose mean is the logit",
        from_features=class_activation_maps,
        from_class_maps=lambda cams: cams,
    )
)
register(
    Method(
        "gradcam",
        "Grad-CAM (Selvaraju et al. 2017): ReLU(CAM) / (h w) for a GAP or GMP head",
        from_features=lambda features, weight, classes: gradcam_maps(class_activation_maps(features, weight, classes)),
        from_class_maps=gradcam_maps,
    )
)
register(
    Method(
        "eigencam",
        "Eigen-CAM (Muhammad and Yeasin 2020): first principal component of the features, class-agnostic",
        from_features=_class_agnostic,
        class_specific=False,
    )
)
register(
    Method(
        "scorecam",
        "Score-CAM (Wang et al. 2020): ReLU(sum_k a_k f_k), a = softmax over k of the class logit of the input masked by f_k",
        from_model=scorecam_maps,
        runs_model=True,
    )
)
register(
    Method(
        "reciprocam",
        "ReciproCAM (Byun and Lee 2022): the class probability of the model's tail on the features kept at each position",
        from_model=reciprocam_maps,
    )
)


def explanation_maps(method: str, features: npt.ArrayLike, weight: _Floats, classes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Deprecated (0.1's `runtime.cam.explanation_maps`): `get_method(method).maps(classes, features=, weight=)`."""
    warn_deprecated("explanation_maps", "runtime.maps.methods.get_method(method).maps")
    return get_method(method).maps(classes, features=features, weight=weight)


def maps_of_classes(method: str, class_maps: npt.ArrayLike, classes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Deprecated (0.1's `runtime.cam.maps_of_classes`): `get_method(method).maps(classes, class_maps=)`."""
    warn_deprecated("maps_of_classes", "runtime.maps.methods.get_method(method).maps")
    return get_method(method).maps(classes, class_maps=class_maps)
