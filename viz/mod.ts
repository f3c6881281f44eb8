/**
 * flowgpu/viz: figures — scatter and line plots, quiver fields, GIF animation and image
 * grids — rendered to RGBA and PNG with no permissions. Separate from the core `mod.ts`
 * so the library carries no plotting code.
 *
 * @example
 * ```ts
 * import { scatterPlot } from "./mod.ts";
 * import { strict as assert } from "node:assert";
 * const png = await scatterPlot(new Float32Array([0, 0, 1, 1]), { size: 64 });
 * assert.deepEqual(Array.from(png.subarray(1, 4)), [80, 78, 71]); // "PNG"
 * ```
 * @module
 */
export { encodeGif, type GifOptions } from "./gif.ts";
export {
  Canvas,
  labelGridRows,
  linePlot,
  type LinePlotOptions,
  type LineSeries,
  PALETTE,
  type PlotRange,
  type QuiverField,
  quiverFrame,
  type QuiverOptions,
  quiverPlot,
  renderLinePlot,
  renderScatter,
  renderScatterPanels,
  type Rgb,
  type ScatterOptions,
  type ScatterPanel,
  scatterPanels,
  type ScatterPanelsOptions,
  scatterPlot,
} from "./plot.ts";
export {
  imageGrid,
  type ImageGridOptions,
  type LabelledGridOptions,
  labelledGridSvg,
  upscaleNearest,
} from "./grid.ts";
