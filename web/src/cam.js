// CAM math after inference, as runtime/maps/cam.py does it: maps from features and fc weights, torch's bilinear
// upsampling (align_corners=False), and min-max scaling by the range of the upsampled map (a constant map -> zeros).
// A map is a Float32Array of h * w values.

const f = Math.fround;
const FLOAT32_TINY = 1.1754943508222875e-38;

/** CAM_c = sum_k w[c, k] f_k for each class index, from features [K, h, w] of one image. */
export function classMaps(features, channels, size, weight, classes) {
  return classes.map((c) => {
    const map = new Float64Array(size);
    for (let k = 0; k < channels; k++) {
      const w = weight.values[c * channels + k];
      const offset = k * size;
      for (let i = 0; i < size; i++) map[i] += w * features[offset + i];
    }
    return Float32Array.from(map);
  });
}

/** For each of `dst` outputs: first and second source index and their float32 weights (runtime.maps.cam.bilinear_taps). */
export function bilinearTaps(src, dst) {
  const first = new Int32Array(dst);
  const second = new Int32Array(dst);
  const w1 = new Float32Array(dst);
  const w2 = new Float32Array(dst);
  for (let i = 0; i < dst; i++) {
    const position = Math.max((i + 0.5) * (src / dst) - 0.5, 0);
    first[i] = Math.min(Math.floor(position), src - 1);
    second[i] = Math.min(first[i] + 1, src - 1);
    const frac = position - first[i];
    w1[i] = 1 - frac;
    w2[i] = frac;
  }
  return { first, second, w1, w2 };
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

/**
 * Values of the bilinear upsampling of `map` [h, w] to (H, W) at the given output rows and columns (all by
 * default), as a Float32Array rows x cols (runtime.maps.cam.sample_bilinear).
 */
export function sampleBilinear(map, [h, w], [height, width], rows = range(height), cols = range(width)) {
  const r = bilinearTaps(h, height);
  const c = bilinearTaps(w, width);
  const out = new Float32Array(rows.length * cols.length);
  const line = new Float32Array(w);
  rows.forEach((y, ri) => {
    const a = r.first[y] * w;
    const b = r.second[y] * w;
    for (let x = 0; x < w; x++) line[x] = f(f(map[a + x] * r.w1[y]) + f(map[b + x] * r.w2[y]));
    cols.forEach((x, ci) => {
      // where both taps are one source sample, torch's weights add up on it
      const value =
        c.first[x] === c.second[x] ? line[c.first[x]] * f(c.w1[x] + c.w2[x]) : line[c.first[x]] * c.w1[x] + line[c.second[x]] * c.w2[x];
      out[ri * cols.length + ci] = value;
    });
  });
  return out;
}

/** The output positions of a src -> dst resize where a map's extremes can lie: each source interval's first and last. */
function extremeSamples(src, dst) {
  const { first } = bilinearTaps(src, dst);
  const positions = new Set([0, dst - 1]);
  for (let i = 1; i < dst; i++) {
    if (first[i] !== first[i - 1]) positions.add(i).add(i - 1);
  }
  return [...positions].sort((a, b) => a - b);
}

/**
 * { scaled, peak }: `map` scaled so that its upsampling to `size` spans [0, 1] (runtime.maps.cam.scale_like_upsampled);
 * a constant map (spread below 1e-6 of its magnitude) scales to zeros with peak 0, else peak 1.
 */
export function scaleLikeUpsampled(map, mapSize, size) {
  const sampled = sampleBilinear(map, mapSize, size, extremeSamples(mapSize[0], size[0]), extremeSamples(mapSize[1], size[1]));
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of sampled) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const flat = hi - lo <= Math.max(1e-6 * Math.max(Math.abs(lo), Math.abs(hi)), FLOAT32_TINY);
  const scaled = new Float32Array(map.length);
  if (!flat) for (let i = 0; i < map.length; i++) scaled[i] = (map[i] - lo) / (hi - lo);
  return { scaled, peak: flat ? 0 : 1 };
}

/** A scaled map at image size (H, W), clipped to [0, 1]: CamResult.cams. */
export function upsampled(scaled, mapSize, size) {
  const out = sampleBilinear(scaled, mapSize, size);
  for (let i = 0; i < out.length; i++) out[i] = Math.min(1, Math.max(0, out[i]));
  return out;
}
