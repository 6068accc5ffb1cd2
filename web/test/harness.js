// The test and benchmark harness: each step of ./cases.json runs in this page, and the answers go to POST /report
// as one JSON array, for Python to compare with CamSession (tests/test_web.py) or to record (benchmarks/web_bench.py).
// ?threads=N sets WebAssembly threads (the page is cross-origin isolated where the server sends COOP/COEP);
// ?backend=webgpu runs the models on WebGPU (a site written with --webgpu).

import { CamSession, pixelsOf } from "./gapcam/index.js";
import { resizePlane } from "./gapcam/resample.js";

const params = new URLSearchParams(location.search);
const threads = params.has("threads") ? Number(params.get("threads")) : undefined;
const backend = params.get("backend") ?? "wasm";
const sessions = {};

const base64 = (typed) => {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
};

const open = async (model) => (sessions[model] ??= await CamSession.create(model, { threads, backend }));

async function fetchBytes(url) {
  return new Uint8Array(await (await fetch(url)).arrayBuffer());
}

const STEPS = {
  async run({ model, images, options }) {
    const session = await open(model);
    const results = await session.run(images, options);
    const { batch } = await session.toBatch(images);
    return Promise.all(
      results.map(async (result, i) => ({
        ...result.toDict(),
        map_size: result.mapSize,
        cams_raw: result.camsRaw.map(base64),
        cams_scaled: result.camsScaled.map(base64),
        cam: base64(result.cam(0)),
        batch: base64(batch.subarray((i * batch.length) / images.length, ((i + 1) * batch.length) / images.length)),
        overlay: base64((await session.overlay(images[i], result)).data),
      })),
    );
  },
  async sources({ model, image }) {
    // The same PNG as an <img>, an ImageBitmap, a canvas and ImageData: one answer each.
    const session = await open(model);
    const element = new Image();
    element.src = image;
    await element.decode();
    const bitmap = await createImageBitmap(await (await fetch(image)).blob());
    const canvas = Object.assign(document.createElement("canvas"), { width: bitmap.width, height: bitmap.height });
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    const results = await session.run([element, bitmap, canvas, data]);
    return results.map((result) => result.toDict());
  },
  async video({ model, image }) {
    // A <video> playing a canvas's stream (no camera, no permission): a frame runs as an image does.
    const session = await open(model);
    const bitmap = await createImageBitmap(await (await fetch(image)).blob());
    const canvas = Object.assign(document.createElement("canvas"), { width: bitmap.width, height: bitmap.height });
    const context = canvas.getContext("2d");
    const video = Object.assign(document.createElement("video"), { muted: true, srcObject: canvas.captureStream(30) });
    const draw = setInterval(() => context.drawImage(bitmap, 0, 0), 20);
    await video.play();
    while (!video.videoWidth) await new Promise((r) => setTimeout(r, 20));
    const [result] = await session.run(video);
    clearInterval(draw);
    return { ...result.toDict(), image_size: result.imageSize };
  },
  async resize({ pixels, width, height, size, method }) {
    return base64(resizePlane(await fetchBytes(pixels), width, height, size[0], size[1], method));
  },
  async error({ model, image }) {
    try {
      const session = await open(model);
      if (image) await session.run(image);
    } catch (err) {
      return { message: err.message };
    }
    return { message: null };
  },
  async page({ url, click }) {
    const frame = document.createElement("iframe");
    frame.style.cssText = "width: 900px; height: 700px";
    document.body.append(frame);
    await new Promise((loaded) => ((frame.onload = loaded), (frame.src = url)));
    const $ = (id) => frame.contentDocument.getElementById(id);
    const settled = () => $("gapcam-error").textContent || $("gapcam-result").textContent;
    if (click) {
      while (!$("model").textContent.includes("classes") && !settled()) await new Promise((r) => setTimeout(r, 50));
      $(click).click();
    }
    while (!settled()) await new Promise((r) => setTimeout(r, 50));
    const answer = {
      error: $("gapcam-error").textContent,
      result: $("gapcam-result").textContent,
      visible: $("gapcam-error").checkVisibility(),
    };
    frame.remove();
    return answer;
  },
  async bench({ model, image, repeat }) {
    const started = performance.now();
    const session = await CamSession.create(model, { threads, backend, name: model });
    const load = performance.now() - started;
    const pixels = await pixelsOf(image);
    await session.run(pixels); // the first run also initializes onnxruntime's kernels
    const times = [];
    const preprocessing = [];
    for (let i = 0; i < repeat; i++) {
      let t = performance.now();
      await session.run(pixels);
      times.push(performance.now() - t);
      t = performance.now();
      await session.toBatch([pixels]);
      preprocessing.push(performance.now() - t);
    }
    return { load_ms: load, run_ms: times, preprocess_ms: preprocessing, isolated: crossOriginIsolated };
  },
};

const answers = [];
try {
  for (const step of await (await fetch("./cases.json")).json()) answers.push(await STEPS[step.kind](step));
} catch (err) {
  answers.push({ harness_error: String(err?.stack ?? err) });
}
await fetch("/report", { method: "POST", body: JSON.stringify(answers) });
