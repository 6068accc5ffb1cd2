// Images in the browser -> the model input, equal to runtime/inputs/image.py's `preprocess`: colors converted as
// Pillow converts them, resized by the port of Pillow's resampling, then (x / 255 - mean) / std in float32.

import { resizePlane } from "./resample.js";

/** Raw RGBA pixels of any image source: { data: Uint8ClampedArray (RGBA), width, height }. */
export async function pixelsOf(image, name = "image") {
  if (image && image.data && Number.isInteger(image.width) && Number.isInteger(image.height)) {
    if (image.data.length !== image.width * image.height * 4) {
      throw new Error(
        `${name}: expected ${image.width}x${image.height} RGBA pixels (${image.width * image.height * 4} bytes), got ${image.data.length}`,
      );
    }
    return image; // ImageData or { data, width, height }
  }
  if (typeof image === "string" || image instanceof URL) return pixelsOf(await fetchImage(String(image)), String(image));
  if (typeof Blob !== "undefined" && image instanceof Blob) {
    // Decoded without color management, as Pillow decodes (an <img> would convert embedded color profiles to sRGB).
    const bitmap = await createImageBitmap(image, { colorSpaceConversion: "none", premultiplyAlpha: "none" }).catch(() => {
      throw new Error(`${image.name ?? name}: not a readable image`);
    });
    return drawn(bitmap, bitmap.width, bitmap.height, image.name ?? name);
  }
  if (typeof HTMLImageElement !== "undefined" && image instanceof HTMLImageElement) {
    if (!image.complete) await image.decode().catch(() => {});
    if (!image.naturalWidth) throw new Error(`${image.currentSrc || image.src || name}: not a readable image`);
    return drawn(image, image.naturalWidth, image.naturalHeight, name);
  }
  if (typeof HTMLVideoElement !== "undefined" && image instanceof HTMLVideoElement) {
    if (!image.videoWidth) throw new Error(`${name}: the video has no frame yet`);
    return drawn(image, image.videoWidth, image.videoHeight, name);
  }
  if (image && Number.isInteger(image.width) && Number.isInteger(image.height) && image.width > 0) {
    return drawn(image, image.width, image.height, name); // ImageBitmap, canvas, OffscreenCanvas, VideoFrame
  }
  throw new Error(
    `${name}: expected an <img>, ImageBitmap, canvas, <video>, Blob, URL or RGBA pixels, got ${Object.prototype.toString.call(image)}`,
  );
}

async function fetchImage(url) {
  const response = await fetch(url).catch((err) => {
    throw new Error(`${url}: cannot be fetched (${err.message})`);
  });
  if (!response.ok) throw new Error(`${url}: cannot be fetched (HTTP ${response.status})`);
  const blob = await response.blob();
  return Object.assign(blob, { name: url });
}

function drawn(source, width, height, name) {
  const canvas =
    typeof OffscreenCanvas !== "undefined"
      ? new OffscreenCanvas(width, height)
      : Object.assign(document.createElement("canvas"), { width, height });
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(source, 0, 0);
  try {
    return context.getImageData(0, 0, width, height);
  } catch (err) {
    throw new Error(`${name}: its pixels cannot be read (${err.message}; an image from another origin needs CORS)`);
  }
}

/**
 * Planes (Uint8Array per channel) in color mode "L" or "RGB", as runtime/inputs/image.py's `to_color` makes them:
 * transparent pixels composited on black (Pillow's alpha_composite), gray by ITU-R 601-2 in Pillow's fixed point.
 */
export function toColor({ data, width, height }, color) {
  const count = width * height;
  const [r, g, b] = Array.from({ length: 3 }, () => new Uint8Array(count));
  // AlphaComposite.c over opaque black: coef1 = alpha * 128, then its rounded division by 255.
  const composite = (value, alpha) => {
    const sum = value * alpha * 128 + (0x80 << 7);
    return (((sum >> 8) + sum) >> 8) >> 7;
  };
  for (let i = 0, j = 0; i < count; i++, j += 4) {
    const alpha = data[j + 3];
    if (alpha === 255) {
      r[i] = data[j];
      g[i] = data[j + 1];
      b[i] = data[j + 2];
    } else if (alpha > 0) {
      r[i] = composite(data[j], alpha);
      g[i] = composite(data[j + 1], alpha);
      b[i] = composite(data[j + 2], alpha);
    }
  }
  const planes = [r, g, b];
  if (color === "RGB") return planes;
  const gray = new Uint8Array(count);
  for (let i = 0; i < count; i++) gray[i] = (r[i] * 19595 + g[i] * 38470 + b[i] * 7471 + 0x8000) >> 16;
  return [gray];
}

/** The model-size planes (runtime/inputs/image.py's `resize`). */
export function resized(pixels, spec) {
  const planes = toColor(pixels, spec.color);
  if (pixels.width === spec.width && pixels.height === spec.height) return planes;
  return planes.map((plane) => resizePlane(plane, pixels.width, pixels.height, spec.width, spec.height, spec.resize));
}

/** float32 C x H x W of model-size planes, (x / 255 - mean) / std in float32 arithmetic as numpy does it. */
export function normalize(planes, spec, out = new Float32Array(planes.length * spec.height * spec.width), offset = 0) {
  const f = Math.fround;
  const size = spec.height * spec.width;
  planes.forEach((plane, c) => {
    const mean = f(spec.mean[c]);
    const std = f(spec.std[c]);
    for (let i = 0; i < size; i++) out[offset + c * size + i] = f(f(f(plane[i] / 255) - mean) / std);
  });
  return out;
}
