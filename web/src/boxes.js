// The CAM paper's box, by runtime/maps/boxes.py's rule: keep the pixels at or above `threshold` of the map's peak,
// box the largest 8-connected component (equal areas: the first in raster order), on a map no larger than the
// model input, then move each edge to where the image-size map puts it. Boxes are [x0, y0, x1, y1], end-exclusive.

import { sampleBilinear } from "./cam.js";

/** numpy's rint: halves round to even. */
const rint = (v) => {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** The box of the largest 8-connected component of mask [h, w], or null when the mask is empty. */
export function largestComponentBox(mask, h, w) {
  const seen = new Uint8Array(h * w);
  const stack = new Int32Array(h * w);
  let best = null;
  let bestArea = 0;
  for (let start = 0; start < h * w; start++) {
    if (!mask[start] || seen[start]) continue;
    let top = 0;
    stack[top++] = start;
    seen[start] = 1;
    let area = 0;
    let [x0, y0, x1, y1] = [w, h, 0, 0];
    while (top > 0) {
      const p = stack[--top];
      const y = Math.floor(p / w);
      const x = p - y * w;
      area++;
      [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x + 1), Math.max(y1, y + 1)];
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const ny = y + dy;
          const nx = x + dx;
          const q = ny * w + nx;
          if (ny >= 0 && ny < h && nx >= 0 && nx < w && mask[q] && !seen[q]) {
            seen[q] = 1;
            stack[top++] = q;
          }
        }
      }
    }
    if (area > bestArea) [best, bestArea] = [[x0, y0, x1, y1], area];
  }
  return best;
}

/** The box of map [h, w] at `threshold` of `peak`; the whole map when nothing reaches it (runtime.maps.boxes.cam_box). */
export function camBox(map, [h, w], threshold, peak) {
  const level = threshold * peak;
  const mask = new Uint8Array(map.length);
  for (let i = 0; i < map.length; i++) mask[i] = map[i] >= level;
  return largestComponentBox(mask, h, w) ?? [0, 0, w, h];
}

const span = (from, to) => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);

/** A box found on a smaller map, its edges moved to where the image-size map puts them (runtime.maps.boxes.refine_box). */
function refineBox(scaled, mapSize, box, level, [height, width], [my, mx]) {
  const [x0, y0, x1, y1] = box;
  const ys = span(Math.max(0, y0 - my), Math.min(height, y1 + my));
  const xs = span(Math.max(0, x0 - mx), Math.min(width, x1 + mx));
  const left = xs.filter((x) => x < x0 + mx);
  const right = xs.filter((x) => x >= x1 - mx);
  const top = ys.filter((y) => y < y0 + my);
  const bottom = ys.filter((y) => y >= y1 - my);
  const bandCols = [...left, ...right];
  const columns = sampleBilinear(scaled, mapSize, [height, width], ys, bandCols);
  const columnHit = bandCols.map((_, j) => ys.some((_, i) => columns[i * bandCols.length + j] >= level));
  const bandRows = [...top, ...bottom];
  const rows = sampleBilinear(scaled, mapSize, [height, width], bandRows, xs);
  const rowHit = bandRows.map((_, i) => xs.some((_, j) => rows[i * xs.length + j] >= level));
  const edges = [x0, y0, x1, y1];
  const firstHit = (positions, hits) => positions[hits.indexOf(true)];
  const lastHit = (positions, hits) => positions[hits.lastIndexOf(true)] + 1;
  const sides = [
    [0, left, columnHit.slice(0, left.length), firstHit],
    [1, top, rowHit.slice(0, top.length), firstHit],
    [2, right, columnHit.slice(left.length), lastHit],
    [3, bottom, rowHit.slice(top.length), lastHit],
  ];
  for (const [index, positions, hits, edge] of sides) {
    if (hits.includes(true)) edges[index] = edge(positions, hits);
  }
  return edges;
}

/**
 * The box in image pixels of a scaled map [h, w] whose image-size maximum is `peak` (runtime.maps.boxes.bounded_boxes):
 * found on the map upsampled to min(image, model input) per axis, scaled to the image, refined near each edge.
 */
export function boundedBox(scaled, mapSize, peak, threshold, imageSize, inputSize) {
  const [height, width] = imageSize;
  const small = [Math.min(height, inputSize[0]), Math.min(width, inputSize[1])];
  const box = camBox(sampleBilinear(scaled, mapSize, small), small, threshold, peak);
  if (small[0] === height && small[1] === width) return box;
  const rounded = [
    rint(box[0] * (width / small[1])),
    rint(box[1] * (height / small[0])),
    rint(box[2] * (width / small[1])),
    rint(box[3] * (height / small[0])),
  ];
  if (rounded[0] === 0 && rounded[1] === 0 && rounded[2] === width && rounded[3] === height) return rounded;
  const margin = [Math.ceil(height / small[0]) + 1, Math.ceil(width / small[1]) + 1];
  return refineBox(scaled, mapSize, rounded, threshold * peak, imageSize, margin);
}
