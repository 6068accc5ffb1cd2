"""Faithfulness of explanation maps, measured with the model alone (`python -m runtime faithfulness`).

Does a map show what the model used? Every metric perturbs the model input (after normalization,
as pytorch-grad-cam and torchcam do) by the map of the explained class (the true class where the
data has labels, else the predicted one), taken at the model's input size and min-max scaled to
[0, 1], and reads that class's probability (softmax, or sigmoid for a multi-label model) again:
- ROAD (Rong et al., ICML 2022): remove p% of the pixels, most relevant first (MoRF: the
  probability should fall fast) or least relevant first (LeRF: it should stay), filled by noisy
  linear imputation (`runtime.evaluation.perturbation`); ROAD-combined is the mean over p of
  (LeRF - MoRF) / 2, pytorch-grad-cam's `ROADCombined`: higher is better.
- Average Drop and Average Increase in confidence (Chattopadhay et al., WACV 2018, Grad-CAM++):
  the input times the map; drop max(0, y - o) / y, lower is better; increase the share of images
  with o > y, higher is better (y, o: the probability before and after), torchcam's definitions.
- Deletion and insertion AUC (Petsiuk et al., BMVC 2018, RISE): the pixels, in order of the map,
  set to a baseline (deletion: lower is better) or revealed from it (insertion: higher is better)
  a 1/steps share at a time; the area under the probability against the share changed, torchcam's
  `DeletionInsertionMetric`.
- Pointing game (Zhang et al., ECCV 2016): the share of images whose map, at the image's size,
  has its maximum in a true box; where the data has boxes.

All perturbed inputs of the images go through the model in batched inference calls
(`runtime.maps.forward.batched_logits`), made lazily: memory is bounded by the batch. A folder
run's report (`gapcam run --deletion-curves`) draws each image's deletion and insertion curves
with `deletion_curves`, this module's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.errors import CamError
from runtime.evaluation.datasets import ImageSet
from runtime.evaluation.perturbation import gaussian_blur, linear_imputation, removal_masks
from runtime.formats.files import atomic_path, write_text_atomic
from runtime.inference.session import CamSession
from runtime.inputs.image import load_image
from runtime.maps.activations import activate
from runtime.maps.cam import normalize_maps, upsample_bilinear
from runtime.maps.forward import DEFAULT_BATCH, Forward, batched_logits
from runtime.maps.methods import get_method
from runtime.maps.results import CamResult
from runtime.reports.plot import line_chart

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # ROAD: percent of pixels removed (the paper's axis)
ROAD_NOISE = 0.01  # std of the imputation noise, in model input units: pytorch-grad-cam's NoisyLinearImputer
BASELINES = ("constant", "blur")  # deletion and insertion: zeros of the model input (the preprocessing's mean colour), or RISE's blur
DROP_EPSILON = 1e-7  # Average Drop divides by y + this, as torchcam does
MIN_IMAGES = 2  # a spread needs two
DEFINITIONS = {
    "explained_class": "the true class where the data has labels, else the predicted class",
    "map": "the method's map of the explained class, bilinearly upsampled to the model input size and min-max scaled to [0, 1]",
    "probability": "the model's probability of the explained class (softmax; sigmoid for multi-label models)",
    "road_morf": "probability after removing p% of the pixels, most relevant first, by noisy linear imputation (Rong et al. 2022)",
    "road_lerf": "probability after removing p% of the pixels, least relevant first, by noisy linear imputation (Rong et al. 2022)",
    "road_combined": "mean over p of (LeRF - MoRF) / 2; higher is better (pytorch-grad-cam's ROADCombined)",
    "average_drop": "mean of max(0, y - o) / (y + 1e-7), y the probability, o that of the input times the map (Grad-CAM++)",
    "average_increase": "share of images with o > y (Grad-CAM++'s increase in confidence); higher is better",
    "deletion_auc": "area under the probability as the map's pixels go to the baseline, most relevant first (RISE); lower is better",
    "insertion_auc": "area under the probability as the map's pixels return on the baseline, most relevant first (RISE); higher is better",
    "pointing_game": "share of images whose map (at image size) has its maximum in a true box (Zhang et al. 2016); a constant map misses",
    "mean_std": "mean and sample standard deviation over the images",
}


@dataclass(frozen=True)
class FaithfulnessSettings:
    """How the perturbation metrics are run; every field is checked, naming its CLI option."""

    percentiles: tuple[float, ...] = PERCENTILES  # ROAD: percent of pixels removed, each within (0, 100)
    noise: float = ROAD_NOISE  # ROAD: std of the noise added to imputed values (0: none)
    seed: int = 0  # ROAD's noise: image i draws from numpy's default_rng([seed, i]), the same for every method
    steps: int = 20  # deletion and insertion: at most this many intervals (torchcam's default)
    baseline: str = "constant"  # deletion and insertion: one of BASELINES
    batch_size: int = DEFAULT_BATCH  # images per map call and perturbed inputs per inference call

    def __post_init__(self) -> None:
        percentiles: object = self.percentiles  # a caller's value, checked: the annotation promises nothing at run time
        if (
            not isinstance(percentiles, tuple)
            or not percentiles
            or not all(isinstance(p, (int, float)) and 0 < p < 100 for p in percentiles)
            or len(set(percentiles)) != len(percentiles)
        ):
            raise CamError(f"--percentiles must be distinct numbers within (0, 100), got {percentiles!r}")
        noise: object = self.noise  # as given: the annotations promise nothing at run time
        steps: object = self.steps
        batch_size: object = self.batch_size
        if not (isinstance(noise, (int, float)) and noise >= 0):
            raise CamError(f"--noise must be a number >= 0, got {noise!r}")
        for option, value in (("--steps", steps), ("--batch-size", batch_size)):
            if not (isinstance(value, int) and value >= 1):
                raise CamError(f"{option} must be a whole number >= 1, got {value!r}")
        if self.baseline not in BASELINES:
            raise CamError(f"--baseline must be one of {list(BASELINES)}, got {self.baseline!r}")


@dataclass
class Curves:
    """Per image, the explained class's probability as its pixels, most relevant first, go to the
    baseline (deletion) or are revealed from it (insertion), at `fractions` of the pixels changed."""

    fractions: npt.NDArray[np.float64]  # [T] the share of pixels changed at each point of the curves
    deletion: npt.NDArray[np.float64]  # [N, T]: starts at the input's probability
    insertion: npt.NDArray[np.float64]  # [N, T]: ends there

    @property
    def deletion_auc(self) -> npt.NDArray[np.float64]:
        return _area(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> npt.NDArray[np.float64]:
        return _area(self.insertion, self.fractions)

    def image(self, index: int) -> dict[str, Any]:
        """Image `index`'s curves and areas, JSON-ready: what a folder run records and draws."""
        return {
            "fractions": self.fractions.tolist(),
            "deletion": self.deletion[index].tolist(),
            "insertion": self.insertion[index].tolist(),
            "deletion_auc": float(self.deletion_auc[index]),
            "insertion_auc": float(self.insertion_auc[index]),
        }


@dataclass
class ImageScores(Curves):
    """Per image, the explained class's probability on the input and on each of its perturbations."""

    original: npt.NDArray[np.float64]  # [N]
    morf: npt.NDArray[np.float64]  # [N, P] ROAD, most relevant removed first, per percentile
    lerf: npt.NDArray[np.float64]  # [N, P] ROAD, least relevant removed first
    masked: npt.NDArray[np.float64]  # [N] the input times the map

    @property
    def road_combined(self) -> npt.NDArray[np.float64]:
        combined: npt.NDArray[np.float64] = ((self.lerf - self.morf) / 2).mean(axis=1)
        return combined

    @property
    def average_drop(self) -> npt.NDArray[np.float64]:
        drop: npt.NDArray[np.float64] = np.maximum(self.original - self.masked, 0) / (self.original + DROP_EPSILON)
        return drop

    @property
    def increase(self) -> npt.NDArray[np.bool_]:
        rises: npt.NDArray[np.bool_] = self.masked > self.original
        return rises


def _area(curves: npt.NDArray[np.float64], xs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Trapezoidal area under each curve [N, T] over xs [T]."""
    area: npt.NDArray[np.float64] = ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(xs)).sum(axis=1)
    return area


def step_counts(pixels: int, steps: int) -> npt.NDArray[np.int64]:
    """Pixels changed at each point of the deletion and insertion curves: 0, s, 2s, ... and all,
    with s = ceil(pixels / steps), as torchcam's DeletionInsertionMetric counts them."""
    step = -(-pixels // steps)
    return np.array([*range(0, pixels, step), pixels], dtype=np.int64)


def baseline_of(image: npt.NDArray[np.float32], baseline: str) -> npt.NDArray[np.float32]:
    """What deletion puts in and insertion starts from: zeros of the model input, or the image blurred."""
    return gaussian_blur(image) if baseline == "blur" else np.zeros_like(image)


def explained_maps(results: Sequence[CamResult], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """[N, H, W] each result's map of its first explained class at the model input `size`, min-max
    scaled to [0, 1]: the map that every metric perturbs the input by."""
    return normalize_maps(upsample_bilinear(np.stack([result.cams_raw[0] for result in results]), size))


def _curve_inputs(
    image: npt.NDArray[np.float32], relevance: npt.NDArray[np.floating[Any]], counts: npt.NDArray[np.int64], baseline: str
) -> Iterator[npt.NDArray[np.float32]]:
    """The model inputs of one image's curves: the input, the all-baseline input, then the T - 2
    deletion steps and the T - 2 insertion steps between them."""
    height, width = relevance.shape
    yield image[None]
    base = baseline_of(image, baseline)
    yield base[None]
    ranks = np.empty(height * width, np.int64)
    ranks[np.argsort(-relevance.ravel(), kind="stable")] = np.arange(height * width)  # 0: the most relevant
    changed = (ranks[None] < counts[1:-1, None]).reshape(len(counts) - 2, 1, height, width)
    yield np.where(changed, base, image)  # deletion: the most relevant pixels set to the baseline
    yield np.where(changed, image, base)  # insertion: the most relevant pixels revealed


def _probabilities(
    forward: Forward, chunks: Iterator[npt.NDArray[np.float32]], classes: npt.NDArray[np.int64], batch_size: int, activation: str
) -> npt.NDArray[np.float64]:
    """[N, items]: the probability (the model's `activation`, in float64) of each image's class on
    each of its model inputs, which `chunks` gives image after image, the same number for each."""
    probs = activate(np.asarray(batched_logits(forward, chunks, batch_size), np.float64), activation)
    n = len(classes)
    chosen: npt.NDArray[np.float64] = probs.reshape(n, -1, probs.shape[1])[np.arange(n), :, classes]
    return chosen


def _curves(probs: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]) -> Curves:
    """The curves from the probabilities [N, 2 (T - 1)] of `_curve_inputs`' inputs."""
    t = len(counts)
    original, base, steps = probs[:, 0], probs[:, 1], probs[:, 2:]
    deletion = np.column_stack([original, steps[:, : t - 2], base])
    insertion = np.column_stack([base, steps[:, t - 2 :], original])
    return Curves(counts / counts[-1], deletion, insertion)


def deletion_curves(
    forward: Forward,
    inputs: npt.NDArray[np.float32],
    saliency: npt.NDArray[np.floating[Any]],
    classes: npt.NDArray[np.int64],
    settings: FaithfulnessSettings,
    activation: str = "softmax",
) -> Curves:
    """The deletion and insertion curves alone, those of `perturbation_scores` (same arguments):
    2 (T - 1) model inputs per image, in batches of `settings.batch_size`. A folder run's report shows them."""
    counts = step_counts(saliency[0].size, settings.steps)
    pairs = zip(inputs, saliency, strict=True)
    chunks = (chunk for image, relevance in pairs for chunk in _curve_inputs(image, relevance, counts, settings.baseline))
    return _curves(_probabilities(forward, chunks, classes, settings.batch_size, activation), counts)


def explained_curves(
    session: CamSession, pictures: Sequence[Image.Image], results: Sequence[CamResult], settings: FaithfulnessSettings
) -> Curves:
    """`deletion_curves` of each picture's first explained class in `results` (`session.run`'s on
    `pictures`), by that class's map."""
    classes = np.array([result.classes[0] for result in results], dtype=np.int64)
    maps = explained_maps(results, session.input_size)
    return deletion_curves(session.logits, session.to_batch(pictures), maps, classes, settings, session.info.activation)


def road_inputs(
    image: npt.NDArray[np.float32], relevance: npt.NDArray[np.floating[Any]], settings: FaithfulnessSettings, index: int
) -> npt.NDArray[np.float32]:
    """[2P, C, H, W] ROAD's model inputs of image number `index` (which seeds its noise): MoRF at each
    percentile, then LeRF."""
    percentiles = list(settings.percentiles)
    removed = np.concatenate([removal_masks(relevance, percentiles, True), removal_masks(relevance, percentiles, False)])
    return linear_imputation(image, removed, settings.noise, np.random.default_rng([settings.seed, index]))


def perturbation_scores(
    forward: Forward,
    inputs: npt.NDArray[np.float32],
    saliency: npt.NDArray[np.floating[Any]],
    classes: npt.NDArray[np.int64],
    settings: FaithfulnessSettings,
    indices: Sequence[int],
    activation: str = "softmax",
) -> ImageScores:
    """Every perturbation metric's probabilities for inputs [N, C, H, W] (the model's), maps [N, H, W]
    in [0, 1] and explained classes [N]; `indices` number the images for ROAD's noise; `activation`
    the model's (`ModelInfo.activation`: a multi-label model's class probability is its sigmoid).

    Per image: the curves' 2 (T - 1) inputs (the input, the all-baseline input, the deletion and
    insertion steps), 2P ROAD imputations and the input times the map, all through `forward` in
    batches of `settings.batch_size`, made as they are needed.
    """
    counts = step_counts(saliency[0].size, settings.steps)
    p, curve_items = len(settings.percentiles), 2 * (len(counts) - 1)

    def perturbed() -> Iterator[npt.NDArray[np.float32]]:
        for image, relevance, index in zip(inputs, saliency, indices, strict=True):
            yield from _curve_inputs(image, relevance, counts, settings.baseline)
            yield road_inputs(image, relevance, settings, index)
            yield (image * relevance)[None].astype(np.float32)

    probs = _probabilities(forward, perturbed(), classes, settings.batch_size, activation)
    curves = _curves(probs[:, :curve_items], counts)
    road = probs[:, curve_items : curve_items + 2 * p]
    return ImageScores(
        curves.fractions, curves.deletion, curves.insertion, probs[:, 0], road[:, :p], road[:, p:], probs[:, curve_items + 2 * p]
    )


def pointing_hits(cam: npt.NDArray[np.floating[Any]], boxes: npt.NDArray[np.number[Any]]) -> bool:
    """Whether a maximum of `cam` [H, W] lies in one of the boxes (x0, y0, x1, y1, end-exclusive); a constant map points nowhere."""
    peak = cam.max()
    if peak <= cam.min():
        return False
    ys, xs = np.nonzero(cam == peak)
    inside = (xs[:, None] >= boxes[None, :, 0]) & (xs[:, None] < boxes[None, :, 2]) & (ys[:, None] >= boxes[None, :, 1])
    return bool((inside & (ys[:, None] < boxes[None, :, 3])).any())


def _spread(values: npt.NDArray[np.floating[Any]] | npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Mean and sample standard deviation over images (axis 0), as JSON numbers or lists."""
    data = np.asarray(values, np.float64)
    mean, std = data.mean(axis=0), data.std(axis=0, ddof=1)
    return {"mean": mean.tolist(), "std": std.tolist()}


def evaluate_faithfulness(
    session: CamSession,
    data: ImageSet,
    methods: Sequence[str],
    settings: FaithfulnessSettings = FaithfulnessSettings(),
    progress: Callable[[int], None] = lambda done: None,
) -> dict[str, Any]:
    """Every metric of the module docstring for each method, on `data`'s images.

    Raises CamError for an unknown method, fewer than MIN_IMAGES images, or an unreadable image.
    """
    explainers = [get_method(name) for name in methods]
    if not explainers:
        raise CamError("--method: no method chosen")
    if len(data.images) < MIN_IMAGES:
        raise CamError(f"DATA: {len(data.images)} image(s); faithfulness needs at least {MIN_IMAGES} for a spread")
    scores: dict[str, list[ImageScores]] = {m.name: [] for m in explainers}
    hits: dict[str, list[bool]] = {m.name: [] for m in explainers}
    seconds = {m.name: {"maps": 0.0, "metrics": 0.0} for m in explainers}
    for start in range(0, len(data.images), settings.batch_size):
        stop = min(start + settings.batch_size, len(data.images))
        pictures = [load_image(image) for image in data.images[start:stop]]
        inputs = session.to_batch(pictures)
        classes = None if data.labels is None else data.labels[start:stop, None]
        for method in explainers:
            began = time.perf_counter()
            results = session.run(pictures, classes=classes, method=method.name)
            saliency = explained_maps(results, session.input_size)
            seconds[method.name]["maps"] += time.perf_counter() - began
            began = time.perf_counter()
            explained = np.array([r.classes[0] for r in results], dtype=np.int64)
            scores[method.name].append(
                perturbation_scores(session.logits, inputs, saliency, explained, settings, range(start, stop), session.info.activation)
            )
            seconds[method.name]["metrics"] += time.perf_counter() - began
            if data.boxes is not None:
                hits[method.name] += [
                    pointing_hits(r.cam, np.asarray(data.boxes[i])) for i, r in zip(range(start, stop), results, strict=True)
                ]
            progress(stop - start)
    return {
        "images": len(data.images),
        "explained": "true class" if data.labels is not None else "predicted class",
        "settings": {**asdict(settings), "percentiles": list(settings.percentiles)},
        "methods": {name: _summary(name, parts, hits[name], seconds[name]) for name, parts in scores.items()},
        "definitions": DEFINITIONS,
    }


def _summary(name: str, parts: list[ImageScores], hits: list[bool], seconds: Mapping[str, float]) -> dict[str, Any]:
    """One method's numbers: mean and spread over the images of every metric, and its curves."""

    def joined(field: str) -> npt.NDArray[np.float64]:
        return np.concatenate([getattr(part, field) for part in parts])

    return {
        "summary": get_method(name).summary,
        "probability": _spread(joined("original")),
        "road_morf": _spread(joined("morf")),
        "road_lerf": _spread(joined("lerf")),
        "road_combined": _spread(joined("road_combined")),
        "average_drop": _spread(joined("average_drop")),
        "average_increase": _spread(joined("increase")),
        "deletion_auc": _spread(joined("deletion_auc")),
        "insertion_auc": _spread(joined("insertion_auc")),
        "fractions": parts[0].fractions.tolist(),
        "deletion": _spread(joined("deletion")),
        "insertion": _spread(joined("insertion")),
        "pointing_game": float(np.mean(hits)) if hits else None,
        "seconds": dict(seconds),
    }


def parse_percentiles(text: str) -> tuple[float, ...]:
    """`--percentiles`: comma-separated numbers ("10,20,30"). Raises CamError naming the option."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise CamError(f"--percentiles must be comma-separated numbers within (0, 100), got {text!r}") from None
    return tuple(int(v) if v.is_integer() else v for v in values)


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """A table of every method's means (± std for ROAD-combined), for the terminal."""
    columns = ("road_combined", "average_drop", "average_increase", "deletion_auc", "insertion_auc")
    lines = [f"{'method':<12} {'ROAD-combined':>15} {'avg drop':>9} {'avg incr':>9} {'deletion':>9} {'insertion':>9} {'pointing':>9}"]
    for name, values in metrics["methods"].items():
        road, *others = (values[column] for column in columns)
        pointing = "-" if values["pointing_game"] is None else f"{values['pointing_game']:.3f}"
        cells = " ".join(f"{value['mean']:>9.3f}" for value in others)
        lines.append(f"{name:<12} {road['mean']:>7.3f} ± {road['std']:.3f} {cells} {pointing:>9}")
    return lines


def write_faithfulness_report(metrics: Mapping[str, Any], out_dir: Path, title: str) -> list[Path]:
    """faithfulness.json and faithfulness.png: ROAD MoRF and LeRF, deletion and insertion curves
    (mean over the images), one line per method."""
    json_path, plot_path = out_dir / "faithfulness.json", out_dir / "faithfulness.png"
    write_text_atomic(json_path, json.dumps(metrics, indent=2))
    methods = metrics["methods"]
    shares = [p / 100 for p in metrics["settings"]["percentiles"]]
    panels = [
        ("ROAD MoRF (lower is better)", "share of pixels removed", {m: (shares, v["road_morf"]["mean"]) for m, v in methods.items()}),
        ("ROAD LeRF (higher is better)", "share of pixels removed", {m: (shares, v["road_lerf"]["mean"]) for m, v in methods.items()}),
        ("deletion (lower is better)", "share of pixels deleted", {m: (v["fractions"], v["deletion"]["mean"]) for m, v in methods.items()}),
        (
            "insertion (higher is better)",
            "share of pixels inserted",
            {m: (v["fractions"], v["insertion"]["mean"]) for m, v in methods.items()},
        ),
    ]
    charts = [line_chart(series, title=f"{title}: {name}", xlabel=xlabel, ylabel="probability") for name, xlabel, series in panels]
    width, height = charts[0].size
    figure = Image.new("RGB", (2 * width, 2 * height), "white")
    for index, chart in enumerate(charts):
        figure.paste(chart, ((index % 2) * width, (index // 2) * height))
    with atomic_path(plot_path) as tmp:
        figure.save(tmp, format="PNG")
    return [json_path, plot_path]
