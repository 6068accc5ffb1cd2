// gapcam's runtime for browsers: a gapcam ONNX model in onnxruntime-web, from images to labels, CAMs, boxes and
// overlays, with the answers of Python's CamSession (runtime/inference/session.py).
//
//   import { CamSession } from "gapcam-web";
//   const session = await CamSession.create("model.onnx");
//   const [result] = await session.run(document.querySelector("img"));
//   result.label, result.prob, result.box;
//   session.drawOverlay(canvas, result);

import * as ort from "onnxruntime-web";

import { pixelsOf, resized, normalize, toColor } from "./image.js";
import { CLASS_MAPS_NAME, INPUT_NAME, OUTPUT_NAMES, readModel } from "./model_info.js";
import { overlayPixels } from "./overlay.js";
import { readPackage } from "./package.js";
import { explain } from "./results.js";

export { ort };
export { pixelsOf };
export { CamResult } from "./results.js";
export { COLORMAPS } from "./overlay.js";

/** The bytes behind a model source (URL, Blob/File, ArrayBuffer, typed array) and a name for messages. */
async function modelBytes(source, name) {
  if (typeof source === "string" || source instanceof URL) {
    const response = await fetch(source).catch((err) => {
      throw new Error(`${source}: cannot be fetched (${err.message})`);
    });
    if (!response.ok) throw new Error(`${source}: cannot be fetched (HTTP ${response.status})`);
    return [new Uint8Array(await response.arrayBuffer()), name ?? String(source)];
  }
  if (typeof Blob !== "undefined" && source instanceof Blob)
    return [new Uint8Array(await source.arrayBuffer()), name ?? source.name ?? "model"];
  if (source instanceof ArrayBuffer) return [new Uint8Array(source), name ?? "model"];
  if (ArrayBuffer.isView(source)) return [new Uint8Array(source.buffer, source.byteOffset, source.byteLength), name ?? "model"];
  throw new Error(`model: expected a URL, a File or Blob, or the file's bytes, got ${Object.prototype.toString.call(source)}`);
}

/** onnxruntime-web's errors are long and multi-line: their first line, named. */
const oneLine = (source, err) => new Error(`${source}: ${String(err?.message ?? err).split("\n")[0]}`);

export class CamSession {
  /**
   * Open a gapcam model: a `.onnx` file or a gapcam package archive (`.zip`), as a URL, File/Blob or bytes.
   *
   * options.backend: "wasm" (default) or "webgpu"; options.threads: WebAssembly threads (default: onnxruntime-web's
   * choice where the page is cross-origin isolated, else 1; onnxruntime-web reads it at the first session only);
   * options.boxThreshold: instead of the model's; options.name: the model's name in messages.
   * Rejects with a one-line Error naming the model when it is not a gapcam model, or its metadata and graph disagree.
   */
  static async create(source, { backend = "wasm", threads, boxThreshold, name } = {}) {
    if (boxThreshold !== undefined && !(boxThreshold >= 0 && boxThreshold <= 1))
      throw new Error(`boxThreshold must be within [0, 1], got ${boxThreshold}`);
    if (!["wasm", "webgpu"].includes(backend)) throw new Error(`backend must be "wasm" or "webgpu", got ${JSON.stringify(backend)}`);
    let [bytes, label] = await modelBytes(source, name);
    if (bytes[0] === 0x50 && bytes[1] === 0x4b) bytes = await readPackage(bytes, label); // "PK": a zip archive
    const info = readModel(bytes, label);
    ort.env.wasm.numThreads = threads ?? (globalThis.crossOriginIsolated ? 0 : 1); // 0: onnxruntime-web's choice
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: [backend] });
    } catch (err) {
      throw oneLine(label, err);
    }
    return new CamSession(session, info, label, backend, boxThreshold ?? info.boxThreshold);
  }

  constructor(session, info, name, backend, boxThreshold) {
    this.session = session;
    this.info = info;
    this.name = name;
    this.backend = backend;
    this.boxThreshold = boxThreshold;
  }

  get labels() {
    return this.info.labels;
  }

  /** [height, width] of the model input. */
  get inputSize() {
    return [this.info.preprocess.height, this.info.preprocess.width];
  }

  /** float32 [N, C, H, W] (flat) of one or many images: what the model sees (runtime.inputs.image.preprocess). */
  async toBatch(images) {
    const pixels = await Promise.all(images.map((image, i) => pixelsOf(image, images.length > 1 ? `image ${i}` : "image")));
    const spec = this.info.preprocess;
    const size = spec.channels * spec.height * spec.width;
    const batch = new Float32Array(images.length * size);
    pixels.forEach((p, i) => normalize(resized(p, spec), spec, batch, i * size));
    return { batch, sizes: pixels.map((p) => [p.height, p.width]) };
  }

  /**
   * Predict and explain one image or an array of them (one inference call): <img>, ImageBitmap, canvas,
   * <video> (its current frame), Blob/File, URL, ImageData or { data: RGBA bytes, width, height }.
   *
   * options.classes: indices or labels to explain; options.topk: the top-k by probability; neither: the top-1
   * (softmax models) or the positive classes (sigmoid models). Resolves to one CamResult per image; rejects with a
   * one-line Error for an unreadable image or a bad argument.
   */
  async run(images, { classes, topk } = {}) {
    const list = Array.isArray(images) ? images : [images];
    if (!list.length) throw new Error("run: no images given");
    const { batch, sizes } = await this.toBatch(list);
    const spec = this.info.preprocess;
    const mapsName = this.info.hasClassMaps ? CLASS_MAPS_NAME : OUTPUT_NAMES[1];
    let outputs;
    try {
      const input = new ort.Tensor("float32", batch, [list.length, spec.channels, spec.height, spec.width]);
      outputs = await this.session.run({ [INPUT_NAME]: input }, [OUTPUT_NAMES[0], mapsName]);
    } catch (err) {
      throw oneLine(this.name, err);
    }
    const logits = outputs[OUTPUT_NAMES[0]].data;
    const maps = outputs[mapsName];
    const [, depth, h, w] = maps.dims;
    const numClasses = this.labels.length;
    return sizes.map((size, i) => {
      const perImage = maps.data.subarray(i * depth * h * w, (i + 1) * depth * h * w);
      return explain(
        this.info,
        logits.subarray(i * numClasses, (i + 1) * numClasses),
        { [this.info.hasClassMaps ? "cams" : "features"]: perImage },
        [h, w],
        size,
        {
          classes,
          topk,
          boxThreshold: this.boxThreshold,
        },
      );
    });
  }

  /** ImageData of `image` with the map of `result`'s i-th class blended over it (runtime.reports.overlay.overlay). */
  async overlay(image, result, { index = 0, alpha = 0.5, colormap = "jet" } = {}) {
    const pixels = await pixelsOf(image);
    return overlayPixels(toColor(pixels, "RGB"), [pixels.height, pixels.width], result.camsScaled[index], result.mapSize, {
      alpha,
      colormap,
    });
  }

  /** The overlay drawn on `canvas` (resized to the image), with the class's box (a white outline) unless options.box is false. */
  async drawOverlay(canvas, image, result, { index = 0, alpha = 0.5, colormap = "jet", box = true } = {}) {
    const pixels = await this.overlay(image, result, { index, alpha, colormap });
    Object.assign(canvas, { width: pixels.width, height: pixels.height });
    const context = canvas.getContext("2d");
    context.putImageData(pixels, 0, 0);
    if (box) {
      const [x0, y0, x1, y1] = result.boxes[index];
      const line = Math.max(1, Math.round(Math.min(pixels.width, pixels.height) / 100)); // as overlay.py draws it
      context.strokeStyle = "white";
      context.lineWidth = line;
      context.strokeRect(x0 + line / 2, y0 + line / 2, Math.max(0, x1 - x0 - line), Math.max(0, y1 - y0 - line));
    }
    return canvas;
  }
}
