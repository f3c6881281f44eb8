/**
 * @file Size checks before a trainer allocates anything: a closed-form estimate of a training
 * step's memory (parameters with their gradient, Adam moments and EMA copies, plus the
 * activations kept for the backward pass) and of its largest single tensor, compared with
 * the backend's limits (WebGPU `maxBufferSize`/`maxStorageBufferBindingSize`; the host's
 * memory). Too large a `--hidden` or `--batch-size` is a `RangeError` that says how much was
 * needed and which values fit, instead of minutes of swapping or an allocation failure.
 * @module
 */
import { getBackend } from "../backend/select.ts";

/** Sizes of a training step, in f32 elements. */
export interface StepSize {
  /** Trained parameters. */
  params: number;
  /** Elements alive during one step besides the parameters' own state (activations, batch). */
  activations: number;
  /** The largest single tensor. */
  largest: number;
}

/** What the backend allows, in bytes. */
export interface SizeLimits {
  /** One buffer (tensor). */
  maxBufferBytes: number;
  /** Everything together. */
  maxTotalBytes: number;
  /** Where the limits come from (for messages). */
  source: string;
}

/** Copies of each parameter a training step keeps: weight, gradient, Adam m and v, EMA, EMA model. */
const PARAM_COPIES = 6;
const GiB = 2 ** 30;

/**
 * Bytes a step needs: `[largest tensor, total]`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { stepBytes } from "../../mod.ts";
 * assert.deepEqual(stepBytes({ params: 10, activations: 100, largest: 50 }), [200, 640]);
 * ```
 */
export function stepBytes(s: StepSize): [number, number] {
  return [4 * s.largest, 4 * (PARAM_COPIES * s.params + s.activations)];
}

/**
 * The current backend's limits: on WebGPU the device's buffer limits (and 16 GiB in all);
 * on the CPU the host's memory when `--allow-sys=systemMemoryInfo` was granted, else 16 GiB.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sizeLimits } from "../../mod.ts";
 * const l = sizeLimits();
 * assert.ok(l.maxBufferBytes > 2 ** 20 && l.maxTotalBytes >= l.maxBufferBytes);
 * ```
 */
export function sizeLimits(): SizeLimits {
  let total = 16 * GiB, totalSource = "16 GiB assumed";
  try {
    const D = (globalThis as { Deno?: typeof Deno }).Deno;
    if (D?.permissions.querySync({ name: "sys", kind: "systemMemoryInfo" }).state === "granted") {
      total = D.systemMemoryInfo().total;
      totalSource = "the host's memory";
    }
  } catch { /* not Deno, or no permission API */ }
  const b = getBackend() as { name: string; runtime?: { device?: GPUDevice } };
  const lim = b.runtime?.device?.limits;
  if (b.name === "webgpu" && lim) {
    const per = Math.min(lim.maxBufferSize, lim.maxStorageBufferBindingSize);
    return {
      maxBufferBytes: per,
      maxTotalBytes: Math.max(total, per),
      source: `${
        per === lim.maxStorageBufferBindingSize ? "maxStorageBufferBindingSize" : "maxBufferSize"
      } of the WebGPU device; ${totalSource} in all`,
    };
  }
  return { maxBufferBytes: total, maxTotalBytes: total, source: `CPU backend; ${totalSource}` };
}

const fmt = (bytes: number) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let i = 0;
  while (bytes >= 1024 && i < u.length - 1) (bytes /= 1024), i++;
  return `${bytes >= 100 || i === 0 ? Math.round(bytes) : bytes.toPrecision(3)} ${u[i]}`;
};

/**
 * Throw a `RangeError` when a step of `size(knobs)` does not fit `limits`, naming each knob
 * (a flag such as `--hidden`) with the largest value that fits while the others stay.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkStepFits } from "../../mod.ts";
 * const mlp = (k: Record<string, number>) => {
 *   const h = k["--hidden"]!, b = k["--batch-size"]!;
 *   return { params: 3 * h * h, activations: 8 * b * h, largest: Math.max(h * h, b * h) };
 * };
 * const limits = { maxBufferBytes: 2 ** 30, maxTotalBytes: 2 ** 32, source: "test" };
 * checkStepFits(mlp, { "--hidden": 256, "--batch-size": 256 }, limits); // fits
 * assert.throws(
 *   () => checkStepFits(mlp, { "--hidden": 1e9, "--batch-size": 256 }, limits),
 *   // 4·(6·3h² + 8·256·h) bytes <= 2³² holds up to h = 7666
 *   /--hidden 1000000000 .*needs about 62.5 EiB .*, --hidden <= 7666 fits$/,
 * );
 * ```
 */
export function checkStepFits(
  size: (knobs: Record<string, number>) => StepSize,
  knobs: Record<string, number>,
  limits: SizeLimits = sizeLimits(),
): void {
  const fits = (k: Record<string, number>) => {
    const [one, all] = stepBytes(size(k));
    return one <= limits.maxBufferBytes && all <= limits.maxTotalBytes;
  };
  if (fits(knobs)) return;
  const [one, all] = stepBytes(size(knobs));
  const hints: string[] = [];
  for (const [name, v] of Object.entries(knobs)) {
    let lo = 0, hi = v; // the largest value in [1, v) that fits, by bisection
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (fits({ ...knobs, [name]: mid })) lo = mid;
      else hi = mid;
    }
    if (lo >= 1) hints.push(`${name} <= ${lo} fits`);
  }
  const given = Object.entries(knobs).map(([k, v]) => `${k} ${v}`).join(" with ");
  throw new RangeError(
    `${given} needs about ${fmt(all)} for a training step (largest tensor ${fmt(one)}); ` +
      `this backend allows ${fmt(limits.maxBufferBytes)} per tensor and ` +
      `${fmt(limits.maxTotalBytes)} in all (${limits.source}); ` +
      (hints.length ? `keeping the other values, ${hints.join("; ")}` : "lower them"),
  );
}

/**
 * Step size of an MLP of width `hidden` and `depth` hidden layers on `width`-dimensional
 * rows, with a batch of `batch` (conditioning and adaptive-norm layers counted generously).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { mlpStepSize } from "../../mod.ts";
 * const s = mlpStepSize({ hidden: 128, depth: 3, width: 2, batch: 256 });
 * assert.ok(s.params > 3 * 128 * 128 && s.largest >= 128 * 128);
 * ```
 */
export function mlpStepSize(
  o: { hidden: number; depth: number; width: number; batch: number },
): StepSize {
  const { hidden: h, depth: d, width: w, batch: b } = o;
  return {
    params: 3 * (d + 2) * h * h + 4 * w * h,
    activations: b * (12 * h * (d + 2) + 8 * w),
    largest: Math.max(3 * h * h, 4 * b * h, b * w),
  };
}

/**
 * Step size of a DiT with `tokens` tokens of width `hidden`, `depth` blocks, `heads` heads
 * and `patchDim` values per patch, with a batch of `batch`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ditStepSize } from "../../mod.ts";
 * const s = ditStepSize({ hidden: 64, depth: 4, tokens: 49, heads: 4, patchDim: 16, batch: 64 });
 * assert.equal(s.largest, 4 * 64 * 49 * 64); // the MLP input of a block, [batch, tokens, 4h]
 * ```
 */
export function ditStepSize(
  o: {
    hidden: number;
    depth: number;
    tokens: number;
    heads: number;
    patchDim: number;
    batch: number;
  },
): StepSize {
  const { hidden: h, depth: d, tokens: T, heads: H, patchDim: p, batch: b } = o;
  return {
    params: 18 * d * h * h + 4 * p * h + 4 * h * h,
    activations: b * d * (24 * T * h + 3 * H * T * T) + 4 * b * T * p,
    largest: Math.max(6 * h * h, 4 * b * T * h, b * H * T * T),
  };
}
