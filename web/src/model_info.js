// A gapcam model's metadata (contract 2), read and checked as runtime/formats/onnx_model.py's ModelInfo
// and CamSession (runtime/inference/session.py) check it: every field the graph also determines must agree.

import { readOnnx } from "./onnx.js";

export const FORMAT = "gapcam-onnx";
export const FORMAT_VERSION = 1;
export const INPUT_NAME = "input";
export const OUTPUT_NAMES = ["logits", "features"];
export const CLASS_MAPS_NAME = "cams";
export const PAPER_BOX_THRESHOLD = 0.2;
export const RESIZE_METHODS = ["nearest", "bilinear", "bicubic", "lanczos"];
export const ACTIVATIONS = ["softmax", "sigmoid"];
const DEFAULT_THRESHOLD = 0.5; // a multi-label class's decision threshold on its probability, where none was calibrated
const COLOR_MODES = { L: 1, RGB: 3 };
const POOLINGS = ["gap", "gmp"];
const MAX_INPUT_SIDE = 8192; // the largest model input side believed when the graph leaves it open
const PREFIX = "gapcam.";

// Python's repr of a shape list (['batch', 3, 64, 64]), so messages read as CamSession's do.
const shapeText = (dims) => `[${dims.map((d) => (typeof d === "string" ? `'${d}'` : d === null ? "None" : d)).join(", ")}]`;

export function decodeArray(data) {
  const raw = atob(data.base64);
  const view = new DataView(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) view.setUint8(i, raw.charCodeAt(i));
  const values = new Float32Array(raw.length / 4);
  for (let i = 0; i < values.length; i++) values[i] = view.getFloat32(4 * i, true);
  const count = data.shape.reduce((a, b) => a * b, 1);
  if (count !== values.length) throw new Error(`array of shape ${shapeText(data.shape)} holds ${values.length} values`);
  return { shape: data.shape, values };
}

function preprocessFrom(data) {
  const spec = {
    height: Number(data.height),
    width: Number(data.width),
    color: String(data.color),
    mean: data.mean.map(Number),
    std: data.std.map(Number),
    resize: String(data.resize ?? "bilinear"),
  };
  if (!(spec.color in COLOR_MODES)) throw new Error(`preprocess: color must be one of ['L', 'RGB'], got '${spec.color}'`);
  if (!RESIZE_METHODS.includes(spec.resize)) throw new Error(`preprocess: resize must be one of ${RESIZE_METHODS}, got '${spec.resize}'`);
  spec.channels = COLOR_MODES[spec.color];
  if (spec.mean.length !== spec.channels || spec.std.length !== spec.channels) {
    throw new Error(`preprocess: mean and std need ${spec.channels} values for color ${spec.color}`);
  }
  if (![...spec.mean, ...spec.std].every(Number.isFinite) || Math.min(...spec.std) <= 0) {
    throw new Error("preprocess: mean must be finite and std finite and positive");
  }
  if (!(Number.isInteger(spec.height) && Number.isInteger(spec.width) && spec.height >= 1 && spec.width >= 1)) {
    throw new Error("preprocess: the input size must be at least 1x1");
  }
  return spec;
}

function infoFrom(values) {
  if (values.format !== FORMAT) throw new Error(`not a gapcam model's metadata (no '${FORMAT}' format field)`);
  if (values.format_version !== FORMAT_VERSION) {
    throw new Error(
      `gapcam model's metadata format version ${values.format_version} is not supported (this gapcam reads version ${FORMAT_VERSION})`,
    );
  }
  const labels = values.labels.map(String);
  const weight = decodeArray(values.fc_weight);
  const bias = decodeArray(values.fc_bias);
  if (weight.shape.length !== 2 || weight.shape[0] !== labels.length) {
    throw new Error(`metadata: fc weight shape ${shapeText(weight.shape)} does not fit ${labels.length} labels`);
  }
  if (bias.shape.length !== 1 || bias.shape[0] !== labels.length) {
    throw new Error(`metadata: fc bias shape ${shapeText(bias.shape)} does not fit ${labels.length} labels`);
  }
  if (![...weight.values, ...bias.values].every(Number.isFinite)) throw new Error("metadata: fc_weight and fc_bias must be finite numbers");
  const pool = values.pool;
  if (!POOLINGS.includes(pool)) throw new Error(`metadata: pool must be one of ${POOLINGS}, got '${pool}'`);
  const boxThreshold = values.box_threshold ?? PAPER_BOX_THRESHOLD;
  if (!(typeof boxThreshold === "number" && boxThreshold >= 0 && boxThreshold <= 1)) {
    throw new Error(`metadata: box_threshold must be a number within [0, 1], got ${JSON.stringify(boxThreshold)}`);
  }
  const activation = values.activation ?? "softmax";
  if (!ACTIVATIONS.includes(activation)) throw new Error(`metadata: activation must be one of ${ACTIVATIONS}, got '${activation}'`);
  let thresholds = values.thresholds ?? [];
  if (activation === "softmax" && thresholds.length) {
    throw new Error("metadata: thresholds are for sigmoid (multi-label) models; a softmax model takes its top class");
  }
  if (activation === "sigmoid" && !thresholds.length) thresholds = labels.map(() => DEFAULT_THRESHOLD);
  if (!(Array.isArray(thresholds) && thresholds.every((t) => typeof t === "number" && t >= 0 && t <= 1))) {
    throw new Error(`metadata: thresholds must be a list of numbers within [0, 1], got ${JSON.stringify(thresholds)}`);
  }
  if (thresholds.length && thresholds.length !== labels.length)
    throw new Error(`metadata: ${thresholds.length} thresholds do not fit ${labels.length} labels`);
  return {
    labels,
    preprocess: preprocessFrom(values.preprocess),
    fcWeight: weight,
    fcBias: bias.values,
    pool,
    boxThreshold,
    activation,
    thresholds,
    faceCrops: values.face_crops ?? false,
  };
}

/** ModelInfo from metadata_props (key -> JSON text); throws an Error naming `source` as ModelInfo.from_props does. */
export function modelInfo(props, source) {
  if (!(PREFIX + "format" in props))
    throw new Error(`${source}: not a gapcam model (no gapcam metadata; export it with \`python -m export\`)`);
  const values = {};
  try {
    for (const [key, textValue] of Object.entries(props)) {
      if (key.startsWith(PREFIX)) values[key.slice(PREFIX.length)] = JSON.parse(textValue);
    }
    return infoFrom(values);
  } catch (err) {
    const message =
      err instanceof TypeError || err instanceof SyntaxError ? `malformed gapcam metadata (${err.name}: ${err.message})` : err.message;
    throw new Error(message.startsWith(source) ? message : `${source}: ${message}`);
  }
}

/** The graph's signature checked against the metadata, as CamSession._check_signature does; true when it has `cams`. */
function checkGraph(info, inputs, outputs, source) {
  const outputNames = outputs.map((o) => o.name);
  const extra = outputNames.slice(2);
  if (
    inputs.length !== 1 ||
    inputs[0].name !== INPUT_NAME ||
    outputNames[0] !== OUTPUT_NAMES[0] ||
    outputNames[1] !== OUTPUT_NAMES[1] ||
    !(extra.length === 0 || (extra.length === 1 && extra[0] === CLASS_MAPS_NAME))
  ) {
    throw new Error(
      `${source}: expected input '${INPUT_NAME}' and outputs ['logits', 'features'] (then optionally '${CLASS_MAPS_NAME}'), ` +
        `got inputs [${inputs.map((i) => `'${i.name}'`).join(", ")}] and outputs [${outputNames.map((n) => `'${n}'`).join(", ")}]`,
    );
  }
  const hasClassMaps = extra.length === 1;
  const shapes = Object.fromEntries(outputs.map((o) => [o.name, o.shape ?? []]));
  const inputShape = inputs[0].shape ?? [];
  const { channels, height, width } = info.preprocess;
  const declared = [
    ["input", inputShape, ["batch", channels, height, width], "preprocess (channels, height, width)"],
    ["logits", shapes.logits, ["batch", info.labels.length], "labels (their number)"],
    ["features", shapes.features.slice(0, 2), ["batch", info.fcWeight.shape[1]], "fc_weight (its width K)"],
  ];
  if (hasClassMaps) declared.push(["cams", shapes.cams.slice(0, 2), ["batch", info.labels.length], "labels (their number)"]);
  for (const [tensor, graph, metadata, field] of declared) {
    if (graph.length !== metadata.length || graph.slice(1).some((g, i) => typeof g === "number" && g !== metadata[i + 1])) {
      throw new Error(
        `${source}: metadata field ${field} says ${shapeText(metadata.slice(1))}, but the graph's '${tensor}' is ${shapeText(graph)}`,
      );
    }
  }
  if (shapes.features.length !== 4) throw new Error(`${source}: the graph's 'features' is ${shapeText(shapes.features)}, not [N, K, h, w]`);
  if (inputShape.slice(2).some((d) => typeof d !== "number") && Math.max(height, width) > MAX_INPUT_SIDE) {
    throw new Error(
      `${source}: metadata field preprocess asks for a ${height}x${width} input, larger than ${MAX_INPUT_SIDE} a side, and the graph does not fix it`,
    );
  }
  return hasClassMaps;
}

/** A gapcam ONNX file's ModelInfo, checked against its graph; `hasClassMaps` says whether it has the `cams` output. */
export function readModel(bytes, source) {
  const { metadata, inputs, outputs } = readOnnx(bytes, source);
  const info = modelInfo(metadata, source);
  info.hasClassMaps = checkGraph(info, inputs, outputs, source);
  return info;
}
