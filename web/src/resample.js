// Pillow's resize of 8-bit images, ported from src/libImaging/Resample.c (bilinear, bicubic, lanczos) and
// Geometry.c's ImagingScaleAffine (nearest), so that the browser feeds a model the pixels
// runtime/inputs/image.py feeds it. A plane is a Uint8Array of width * height samples of one channel.

const PRECISION_BITS = 32 - 8 - 2;

const sinc = (x) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));

// Pillow's filters and their support (Resample.c).
const FILTERS = {
  bilinear: [1, (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0)],
  bicubic: [
    2,
    (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  ],
  lanczos: [3, (x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0)],
};

/** precompute_coeffs and normalize_coeffs_8bpc: for each output sample, its first input index, tap count and fixed-point weights. */
function coefficients(inSize, outSize, [support, filter]) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const reach = support * filterscale;
  const ksize = Math.ceil(reach) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  const inverse = 1 / filterscale; // Pillow multiplies by the inverse: dividing rounds differently
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - reach + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + reach + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      weights[x] = filter((x + xmin - center + 0.5) * inverse);
      ww += weights[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? weights[x] / ww : weights[x];
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

// clip8: the accumulator's top bits, clamped to 0..255 (the accumulator wraps like C's int).
const clip8 = (sum) => Math.min(255, Math.max(0, (sum | 0) >> PRECISION_BITS));

const cache = new Map(); // coefficients by sizes and filter: a camera's frames all resize alike

function cached(inSize, outSize, method) {
  const key = `${inSize} ${outSize} ${method}`;
  if (!cache.has(key)) {
    if (cache.size > 64) cache.clear();
    cache.set(key, coefficients(inSize, outSize, FILTERS[method]));
  }
  return cache.get(key);
}

const HALF = 1 << (PRECISION_BITS - 1);

/** _ImagingResampleHorizontal_8bpc: each row of a plane resampled to outWidth samples. */
function horizontal(plane, width, height, outWidth, { bounds, kk, ksize }) {
  const out = new Uint8Array(outWidth * height);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < outWidth; x++) {
      const first = row + bounds[2 * x];
      const taps = bounds[2 * x + 1];
      const k = x * ksize;
      let sum = HALF;
      for (let i = 0; i < taps; i++) sum += plane[first + i] * kk[k + i];
      out[y * outWidth + x] = clip8(sum);
    }
  }
  return out;
}

/** _ImagingResampleVertical_8bpc: each column of a plane resampled to outHeight samples. */
function vertical(plane, width, outHeight, { bounds, kk, ksize }) {
  const out = new Uint8Array(width * outHeight);
  for (let y = 0; y < outHeight; y++) {
    const first = bounds[2 * y] * width;
    const taps = bounds[2 * y + 1];
    const k = y * ksize;
    for (let x = 0; x < width; x++) {
      let sum = HALF;
      for (let i = 0; i < taps; i++) sum += plane[first + i * width + x] * kk[k + i];
      out[y * width + x] = clip8(sum);
    }
  }
  return out;
}

/** Geometry.c's ImagingScaleAffine: each output takes the input sample at trunc of a running position. */
function nearest(plane, width, height, outWidth, outHeight) {
  const positions = (inSize, outSize) => {
    const step = inSize / outSize;
    const index = new Int32Array(outSize);
    let position = step * 0.5;
    for (let i = 0; i < outSize; i++, position += step) index[i] = position < 0 ? -1 : Math.trunc(position);
    return index;
  };
  const xs = positions(width, outWidth);
  const ys = positions(height, outHeight);
  const out = new Uint8Array(outWidth * outHeight);
  for (let y = 0; y < outHeight; y++) for (let x = 0; x < outWidth; x++) out[y * outWidth + x] = plane[ys[y] * width + xs[x]];
  return out;
}

/** A plane resized to outWidth x outHeight as Pillow's Image.resize(size, method) resizes an "L" image (or each band of "RGB"). */
export function resizePlane(plane, width, height, outWidth, outHeight, method) {
  if (method === "nearest") return nearest(plane, width, height, outWidth, outHeight);
  if (!FILTERS[method]) throw new Error(`resize must be one of nearest, ${Object.keys(FILTERS)}, got '${method}'`);
  let out = plane;
  if (outWidth !== width) out = horizontal(out, width, height, outWidth, cached(width, outWidth, method));
  if (outHeight !== height) out = vertical(out, outWidth, outHeight, cached(height, outHeight, method));
  return out === plane ? plane.slice() : out;
}
