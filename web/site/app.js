// The page `gapcam web` writes: choose images or the camera, see the top classes, the overlay and the box.
// index.html?image=URL runs that image and writes its results (results.json's fields) into #gapcam-result;
// ?backend=webgpu asks for WebGPU where the site has it. Every failure is shown as one line in #gapcam-error.

import { CamSession, pixelsOf } from "./gapcam/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let session = null;
let camera = null; // the live stream, while the camera runs

function fail(err) {
  $("gapcam-error").textContent = String(err?.message ?? err).split("\n")[0];
  $("status").textContent = "";
}

function show(pixels, result) {
  $("classes").replaceChildren(
    ...result.classes.map((c, i) => {
      const item = document.createElement("li");
      const prob = result.probs[c];
      const found = session.info.activation === "sigmoid" && result.positive.includes(result.labels[i]) ? " (positive)" : "";
      item.textContent = `${result.labels[i]} ${(100 * prob).toFixed(1)}%${found}`;
      const bar = Object.assign(document.createElement("span"), { className: "bar" });
      bar.style.width = `${Math.round(prob * 8)}rem`;
      item.append(bar);
      return item;
    }),
  );
  $("box").textContent = `box (x0, y0, x1, y1): ${result.box.join(", ")} of ${pixels.width}x${pixels.height}`;
  return session.drawOverlay($("overlay"), pixels, result);
}

async function explain(image, name) {
  const pixels = await pixelsOf(image, name);
  const started = performance.now();
  const chosen = $("topk").value; // "positive": a multi-label model's positive findings, as gapcam run explains them
  const topk = chosen === "positive" ? undefined : Math.min(Number(chosen), session.labels.length);
  const [result] = await session.run(pixels, { topk });
  const took = performance.now() - started;
  $("status").textContent = camera ? `camera: ${took.toFixed(0)} ms a frame` : `${name}: ${pixels.width}x${pixels.height}`;
  await show(pixels, result);
  return result;
}

async function open(config) {
  const backend = params.get("backend") ?? $("backend").value;
  $("backend").value = backend;
  session = await CamSession.create(config.model, { backend, name: config.name });
  $("model").textContent = `${config.name}: ${session.labels.length} classes, input ${session.inputSize.join("x")}, ${backend}`;
  const multilabel = session.info.activation === "sigmoid";
  $("topk").querySelector('[value="positive"]').hidden = !multilabel;
  if (multilabel) $("topk").value = "positive";
}

async function runFiles() {
  $("gapcam-error").textContent = "";
  for (const file of $("files").files) await explain(file, file.name);
}

async function startCamera() {
  if (camera) {
    camera.getTracks().forEach((track) => track.stop());
    camera = null;
    $("camera").textContent = "Camera";
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia)
    throw new Error("camera: this browser offers no camera here (a page needs https or localhost)");
  camera = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }).catch((err) => {
    throw new Error(`camera: ${err.name === "NotAllowedError" ? "permission refused" : "not available"} (${err.name}: ${err.message})`);
  });
  $("camera").textContent = "Stop";
  $("video").srcObject = camera;
  await $("video").play();
  while (camera) {
    await explain($("video"), "camera");
    await new Promise(requestAnimationFrame);
  }
}

async function main() {
  const config = await (await fetch("./site.json")).json();
  $("backend").disabled = config.backends.length < 2;
  await open(config);
  $("files").addEventListener("change", () => runFiles().catch(fail));
  $("camera").addEventListener("click", () => startCamera().catch(fail));
  $("backend").addEventListener("change", () => open(config).catch(fail));
  const image = params.get("image");
  if (image) {
    const result = await explain(image, image);
    $("gapcam-result").textContent = JSON.stringify({ file: image, ...result.toDict() });
  }
}

main().catch((err) => {
  fail(err);
  if (params.get("image"))
    $("gapcam-result").textContent = JSON.stringify({ file: params.get("image"), error: $("gapcam-error").textContent });
});
