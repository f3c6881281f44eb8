/**
 * @file lib/io: files and formats (safetensors, NumPy .npy/.npz, PNG, GIF), atomic
 * writes, checkpoints, plots, run directories, progress bars and CLI flags. Nothing here
 * touches the file system, environment or network at import time.
 * @module
 */
export { crc32, FileFormatError } from "./_bytes.ts";
export { atomicWrite, ensureDir } from "./fs.ts";
export {
  bf16ToF32,
  type DecodedArray,
  decodeSafetensors,
  decodeSafetensorsWithMetadata,
  encodeSafetensors,
  f16ToF32,
  type HostArray,
  loadSafetensors,
  loadSafetensorsFromBytes,
  saveSafetensors,
} from "./safetensors.ts";
export {
  decodeNpy,
  decodeNpz,
  encodeNpy,
  encodeNpz,
  loadNpy,
  loadNpz,
  type NpyArray,
  type NpyInput,
  type NpyWriteDtype,
  saveNpy,
  saveNpz,
} from "./npy.ts";
export {
  type Checkpoint,
  CheckpointError,
  CheckpointManager,
  type CheckpointManagerOptions,
  decodeCheckpoint,
  encodeCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
export {
  decodePng,
  encodePng,
  imageGrid,
  type ImageGridOptions,
  type RawImage,
  type RgbaImage,
  toRgba,
  toUint8Nhwc,
} from "./png.ts";
export { encodeGif, type GifOptions } from "./gif.ts";
export {
  Canvas,
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
export { createRun, type CreateRunOptions, openRun, readMetrics, Run } from "./run.ts";
export { Progress, type ProgressOptions } from "./progress.ts";
export {
  type CamelCase,
  type FlagSpec,
  formatUsage,
  type ParsedFlags,
  parseFlags,
  type ParseFlagsOptions,
} from "./cli.ts";
