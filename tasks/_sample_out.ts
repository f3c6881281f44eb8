/**
 * @file The output side of `deno task sample` (apart from the task so it stays thin): the
 * sampler `--mode` selects, and samples written as a PNG (image grid, labelled class grid or
 * 2-D scatter) or an `.npz` (ADM-suite uint8 NHWC for images).
 * @module
 */
import {
  atomicWrite,
  encodePng,
  FASHION_MNIST_CLASSES,
  type SamplerMethod,
  saveNpz,
  toUint8Nhwc,
} from "../mod.ts";
import { imageGrid, labelGridRows, scatterPlot } from "../viz/mod.ts";

/**
 * The sampler `--mode` selects: `ode` keeps `--sampler`; `sde` is Euler–Maruyama, and a
 * `--sampler` given with it must be that one (REPA's `--mode sde` has no other).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { samplerOf } from "./sample.ts";
 * assert.equal(samplerOf("sde", "euler", []), "euler-maruyama");
 * assert.throws(() => samplerOf("sde", "heun", ["--sampler", "heun"]), /--mode sde/);
 * ```
 */
export function samplerOf(mode: string, sampler: string, argv: readonly string[]): SamplerMethod {
  if (mode !== "sde") return sampler as SamplerMethod;
  const given = argv.some((a) => /^--sampler(=|$)/.test(a));
  if (given && sampler !== "euler-maruyama") {
    throw new RangeError(
      `--mode sde samples with Euler–Maruyama, but --sampler ${sampler} was given: drop one`,
    );
  }
  return "euler-maruyama";
}

/** What {@linkcode writeSamples} needs beside the samples. */
export interface WriteSamplesOptions {
  /** Samples. */
  n: number;
  /** The checkpoint's dataset (Fashion-MNIST rows are 28×28 images; class names). */
  dataset: string;
  /** Classes of the model (0: unconditional). */
  numClasses: number;
  /** Intended labels, if any (scatter colours). */
  labels?: Float32Array;
  /** Images per row of a class grid (one row per class), or undefined. */
  classGridCols?: number;
  /** Class-grid PNG scale; > 1 also names the rows. */
  upscale: number;
  /** Scatter title. */
  title: string;
}

/**
 * Write samples `x` of one-sample `shape` to `out` (`.png` or `.npz`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { writeSamples } from "./_sample_out.ts";
 * import { loadNpz } from "../mod.ts";
 * const out = await Deno.makeTempFile({ suffix: ".npz" });
 * await writeSamples(out, new Float32Array([1, 2, 3, 4]), [2], { n: 2, dataset: "moons", numClasses: 0, upscale: 1, title: "" });
 * assert.deepEqual((await loadNpz(out)).x!.shape, [2, 2]);
 * await Deno.remove(out);
 * ```
 */
export async function writeSamples(
  out: string,
  x: Float32Array,
  shape: readonly number[],
  o: WriteSamplesOptions,
): Promise<void> {
  const { n } = o, C = o.numClasses;
  const ext = /\.(png|npz)$/i.exec(out)?.[1]?.toLowerCase();
  if (!ext) throw new RangeError(`Expected --out to end in .png or .npz but found "${out}"`);
  // A flat Fashion-MNIST model (--model velocity-mlp) samples 784-D rows: 28×28 images.
  const flatImages = o.dataset === "fashion-mnist" && shape.length === 1;
  const image = shape.length === 3 || flatImages;
  if (!image && shape.length !== 1) {
    throw new RangeError(`Cannot write samples of shape [${shape}]`);
  }
  if (ext === "png") {
    let png: Uint8Array;
    if (image) {
      const [ch, h, w] = (flatImages ? [1, 28, 28] : shape) as [number, number, number];
      const raw = imageGrid(x, {
        n,
        channels: ch,
        height: h,
        width: w,
        nrow: o.classGridCols,
      });
      // A class grid is for reading: upscaled, each row named by its class.
      const names = o.dataset === "fashion-mnist"
        ? FASHION_MNIST_CLASSES
        : Array.from({ length: C }, (_, k) => `class ${k}`);
      const grid = o.classGridCols !== undefined && o.upscale > 1
        ? labelGridRows(raw, names.slice(0, C), { scale: o.upscale })
        : raw;
      png = await encodePng(grid.width, grid.height, grid.rgba);
    } else {
      if (shape[0] !== 2) {
        throw new RangeError(
          `A .png scatter needs 2-D samples but they have ${shape[0]} dims; use .npz`,
        );
      }
      png = await scatterPlot(x, {
        title: o.title,
        labels: o.labels ? Array.from(o.labels) : undefined,
      });
    }
    await atomicWrite(out, png);
  } else if (image) {
    const [ch, h, w] = (flatImages ? [1, 28, 28] : shape) as [number, number, number];
    const u8 = toUint8Nhwc(x, { n, channels: ch, height: h, width: w, rgb: true });
    await saveNpz(out, { arr_0: { shape: [n, h, w, 3], data: u8 } });
  } else {
    await saveNpz(out, { x: { shape: [n, shape[0]!], data: x } });
  }
}
