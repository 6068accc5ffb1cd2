// What happens after inference, as runtime/maps/results.py's explain_outputs does it: probabilities, the classes
// to explain, their maps scaled like their upsampling to the image, and boxes.

import { boundedBox } from "./boxes.js";
import { classMaps, scaleLikeUpsampled, upsampled } from "./cam.js";

/** Probabilities of one image's logits: softmax, or an element-wise sigmoid for multi-label models. */
export function probabilities(logits, activation) {
  if (activation === "sigmoid") return Float32Array.from(logits, (v) => 1 / (1 + Math.exp(-v)));
  const top = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp(v - top));
  const sum = exp.reduce((a, b) => a + b, 0);
  return Float32Array.from(exp, (v) => v / sum);
}

/** Class indices by descending score, ties by index (numpy's stable argsort of -scores). */
const ranked = (scores) => [...scores.keys()].sort((a, b) => scores[b] - scores[a] || a - b);

/**
 * The classes the model says are present, most probable first (runtime.maps.results.positive_classes): a softmax
 * model's top class; a sigmoid model's classes whose probability reaches their threshold, which may be none.
 * Ranked by logit: probabilities that saturate to 1 would tie.
 */
function positives(info, logits, probs) {
  const order = ranked(logits);
  return info.activation === "sigmoid" ? order.filter((c) => probs[c] >= Math.fround(info.thresholds[c])) : order.slice(0, 1);
}

/**
 * Class indices to explain: `classes` (indices or labels) when given, else the top `topk` by logit, else the top
 * class of a softmax model and the positive classes of a sigmoid model (its most probable one where none is). Throws an Error naming the argument for anything else.
 */
export function chooseClasses(info, logits, probs, classes, topk) {
  const count = info.labels.length;
  if (classes === undefined || classes === null) {
    if ((topk === undefined || topk === null) && info.activation === "sigmoid") {
      const chosen = positives(info, logits, probs);
      return chosen.length ? chosen : ranked(logits).slice(0, 1);
    }
    topk ??= 1;
    if (!(Number.isInteger(topk) && topk >= 1 && topk <= count)) throw new Error(`topk must be within 1..${count}, got ${topk}`);
    return ranked(logits).slice(0, topk);
  }
  const wanted = Array.isArray(classes) ? classes : [classes];
  if (!wanted.length) throw new Error("classes: empty list");
  return wanted.map((item) => {
    if (typeof item === "string") {
      if (!info.labels.includes(item)) throw new Error(`classes: unknown label '${item}' (labels: ${info.labels.join(", ")})`);
      return info.labels.indexOf(item);
    }
    if (Number.isInteger(item) && item >= 0 && item < count) return item;
    throw new Error(`classes: ${item} is not a label or an index within 0..${count - 1}`);
  });
}

/**
 * One image's result from its logits and either its all-class CAMs ({ cams }) or its features ({ features }),
 * flat arrays of [num_classes or K, h, w]; `imageSize` is the original image's [H, W].
 */
export function explain(info, logits, maps, mapSize, imageSize, { classes, topk, boxThreshold = info.boxThreshold } = {}) {
  const probs = probabilities(logits, info.activation);
  const chosen = chooseClasses(info, logits, probs, classes, topk);
  const size = mapSize[0] * mapSize[1];
  const camsRaw = maps.cams
    ? chosen.map((c) => maps.cams.slice(c * size, (c + 1) * size))
    : classMaps(maps.features, info.fcWeight.shape[1], size, info.fcWeight, chosen);
  const scaledMaps = camsRaw.map((raw) => scaleLikeUpsampled(raw, mapSize, imageSize));
  const inputSize = [info.preprocess.height, info.preprocess.width];
  const boxes = scaledMaps.map(({ scaled, peak }) => boundedBox(scaled, mapSize, peak, boxThreshold, imageSize, inputSize));
  return new CamResult({
    logits: Float32Array.from(logits),
    probs,
    classes: chosen,
    labels: chosen.map((c) => info.labels[c]),
    positive: positives(info, logits, probs).map((c) => info.labels[c]),
    camsRaw,
    camsScaled: scaledMaps.map(({ scaled }) => scaled),
    mapSize,
    boxes,
    imageSize,
  });
}

/** One image's prediction and the maps of its explained classes (runtime.maps.results.CamResult). */
export class CamResult {
  constructor(fields) {
    Object.assign(this, fields);
  }

  get label() {
    return this.labels[0];
  }

  get prob() {
    return this.probs[this.classes[0]];
  }

  get box() {
    return this.boxes[0];
  }

  /** The i-th explained class's map at the image size, in [0, 1] (Float32Array H x W), made when asked for. */
  cam(i = 0) {
    return upsampled(this.camsScaled[i], this.mapSize, this.imageSize);
  }

  /** The fields of CamResult.to_dict() (results.json), and the positive labels. */
  toDict() {
    return {
      label: this.label,
      explained: this.classes.map((c, i) => ({ class: c, label: this.labels[i], prob: this.probs[c], box: this.boxes[i] })),
      probs: Array.from(this.probs),
      positive: this.positive,
    };
  }
}
