// A gapcam package archive (zoo's zip: manifest.json, model.onnx, ...) -> its model's bytes, checked against the
// manifest's sha256 and size, and its labels against the model's (runtime/formats/package.py checks as much).
// Zip entries are stored or deflated; deflate is undone by the browser's DecompressionStream.

import { readOnnx } from "./onnx.js";

const MODEL = "model.onnx";
const MANIFEST = "manifest.json";

/** name -> { method, compressedSize, size, offset } from a zip's central directory. */
function entries(bytes, source) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = bytes.length - 22;
  while (end >= 0 && view.getUint32(end, true) !== 0x06054b50) end--; // end of central directory record
  if (end < 0) throw new Error(`${source}: not a zip archive (no central directory)`);
  const count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  const found = {};
  const names = new TextDecoder();
  for (let i = 0; i < count; i++) {
    if (at + 46 > bytes.length || view.getUint32(at, true) !== 0x02014b50) throw new Error(`${source}: damaged zip archive`);
    const nameLength = view.getUint16(at + 28, true);
    const name = names.decode(bytes.subarray(at + 46, at + 46 + nameLength));
    found[name] = {
      method: view.getUint16(at + 10, true),
      compressedSize: view.getUint32(at + 20, true),
      size: view.getUint32(at + 24, true),
      offset: view.getUint32(at + 42, true),
    };
    at += 46 + nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
  }
  return found;
}

async function extract(bytes, entry, name, source) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const start = entry.offset + 30 + view.getUint16(entry.offset + 26, true) + view.getUint16(entry.offset + 28, true);
  const data = bytes.subarray(start, start + entry.compressedSize);
  if (entry.method === 0) return data;
  if (entry.method !== 8) throw new Error(`${source}: ${name} uses zip method ${entry.method}, not stored or deflated`);
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

/** The model.onnx bytes of a package archive. Throws an Error naming `source` for a damaged or tampered package. */
export async function readPackage(bytes, source) {
  const files = entries(bytes, source);
  for (const name of [MANIFEST, MODEL]) {
    if (!files[name]) throw new Error(`${source}: not a gapcam package (no ${name})`);
  }
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(await extract(bytes, files[MANIFEST], MANIFEST, source)));
  } catch (err) {
    throw new Error(`${source}: ${MANIFEST} is not readable JSON (${err.message})`);
  }
  const model = await extract(bytes, files[MODEL], MODEL, source).catch((err) => {
    throw new Error(`${source}: ${MODEL} cannot be unpacked (${err.message})`);
  });
  const declared = manifest.files?.[MODEL];
  if (!globalThis.crypto?.subtle) {
    throw new Error(`${source}: a package's checksum needs the browser's crypto.subtle, which only https and localhost pages have`);
  }
  const digest = hex(await crypto.subtle.digest("SHA-256", model));
  if (!declared || declared.size !== model.length || declared.sha256 !== digest) {
    throw new Error(`${source}: ${MODEL} does not match its sha256 in the manifest (checksum check failed)`);
  }
  const labels = readOnnx(model, source).metadata["gapcam.labels"]; // JSON text; readModel checks the rest
  if (labels !== undefined && JSON.stringify(manifest.labels) !== JSON.stringify(JSON.parse(labels))) {
    throw new Error(`${source}: manifest disagrees with ${MODEL}: labels ${JSON.stringify(manifest.labels)} vs the model's ${labels}`);
  }
  return model;
}
