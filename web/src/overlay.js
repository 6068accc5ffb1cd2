// Heatmap overlays, pixel for pixel as runtime/reports/overlay.py makes them: the map as 8-bit levels, resized to
// the image by Pillow's bilinear resampling, colored through a 256-level colormap table, blended over the image.

import { resizePlane } from "./resample.js";

// Piecewise-linear colormaps as (position, value) knots per channel, as matplotlib defines them (overlay.py's COLORMAPS).
// prettier-ignore
export const COLORMAPS = {
  jet: [
    [[0, 0], [0.35, 0], [0.66, 1], [0.89, 1], [1, 0.5]],
    [[0, 0], [0.125, 0], [0.375, 1], [0.64, 1], [0.91, 0], [1, 0]],
    [[0, 0.5], [0.11, 1], [0.34, 1], [0.65, 0], [1, 0]],
  ],
  hot: [
    [[0, 0.0416], [0.365079, 1], [1, 1]],
    [[0, 0], [0.365079, 0], [0.746032, 1], [1, 1]],
    [[0, 0], [0.746032, 0], [1, 1]],
  ],
  gray: [[[0, 0], [1, 1]], [[0, 0], [1, 1]], [[0, 0], [1, 1]]],
};

/** numpy's interp at x of knots [[x, y], ...] sorted by x. */
function interp(x, knots) {
  if (x <= knots[0][0]) return knots[0][1];
  const last = knots[knots.length - 1];
  if (x >= last[0]) return last[1];
  let j = 0;
  while (knots[j + 1][0] <= x) j++;
  const [[x0, y0], [x1, y1]] = [knots[j], knots[j + 1]];
  return x === x0 ? y0 : ((y1 - y0) / (x1 - x0)) * (x - x0) + y0;
}

const tables = {};

/** Uint8Array [256 * 3]: the colormap's RGB at 256 evenly spaced levels of [0, 1] (overlay.py's colormap_table). */
export function colormapTable(colormap) {
  if (!(colormap in COLORMAPS)) throw new Error(`colormap must be one of ${Object.keys(COLORMAPS)}, got '${colormap}'`);
  if (!tables[colormap]) {
    const table = new Uint8Array(256 * 3);
    for (let i = 0; i < 256; i++) {
      const level = i === 255 ? 1 : i * (1 / 255); // numpy's linspace(0, 1, 256)
      COLORMAPS[colormap].forEach((knots, c) => (table[3 * i + c] = Math.floor(interp(level, knots) * 255 + 0.5)));
    }
    tables[colormap] = table;
  }
  return tables[colormap];
}

const rint = (v) => {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** A [0, 1] map -> 8-bit levels (overlay.py's to_levels). */
export function toLevels(map) {
  return Uint8Array.from(map, (v) => rint(Math.fround(Math.min(1, Math.max(0, v)) * 255)));
}

/**
 * ImageData of `map` [h, w] (values in [0, 1]; a scaled map at model resolution, or any size) in `colormap`, resized
 * to the image and blended over its RGB planes with weight `alpha`, as Pillow's Image.blend does.
 */
export function overlayPixels(planes, [height, width], map, [h, w], { alpha = 0.5, colormap = "jet" } = {}) {
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`alpha must be within [0, 1], got ${alpha}`);
  const table = colormapTable(colormap);
  let levels = toLevels(map);
  if (h !== height || w !== width) levels = resizePlane(levels, w, h, width, height, "bilinear");
  const [r, g, b] = planes.length === 3 ? planes : [planes[0], planes[0], planes[0]];
  const out = new ImageData(width, height);
  const a = Math.fround(alpha);
  const blend = (base, heat) => (a === 0 ? base : a === 1 ? heat : Math.trunc(Math.fround(base + Math.fround(a * (heat - base)))));
  for (let i = 0; i < width * height; i++) {
    const level = 3 * levels[i];
    out.data[4 * i] = blend(r[i], table[level]);
    out.data[4 * i + 1] = blend(g[i], table[level + 1]);
    out.data[4 * i + 2] = blend(b[i], table[level + 2]);
    out.data[4 * i + 3] = 255;
  }
  return out;
}
