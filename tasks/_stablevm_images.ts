/**
 * @file The image flags of `train:stablevm` (`--cfg-scale`, `--eval-samples`, `--eval-steps`,
 * `--classifier`), their checks against the data, and the classifier that scores a run; the
 * figures and scores themselves are tasks/_stablevm_final.ts.
 * @module
 */
import { type LabelledSet, loadClassifier, type LoadedClassifier } from "../mod.ts";
import type { FlagSpec } from "../cli/mod.ts";
import { DEFAULT_CLASSIFIER } from "./eval.ts";

/** Fashion-MNIST's test split: the most samples an FD can be scored against. */
const TEST_IMAGES = 10_000;

/** The flags of the final figures and scores (part of `TRAIN_STABLEVM_FLAGS`). */
export const STABLEVM_IMAGE_FLAGS = [
  {
    name: "cfg-scale",
    type: "number",
    default: 3,
    min: 0,
    help: "guidance of the class grid and the scored samples (class-conditional images)",
  },
  {
    name: "eval-samples",
    type: "int",
    default: 2000,
    min: 0,
    max: TEST_IMAGES,
    help: "fashion-mnist: guided samples scored for FD and class agreement (0: off)",
  },
  { name: "eval-steps", type: "int", default: 50, min: 1, help: "midpoint steps of those" },
  {
    name: "classifier",
    type: "string",
    default: DEFAULT_CLASSIFIER,
    help: "train:classifier checkpoint whose features and predictions score them",
  },
] as const satisfies readonly FlagSpec[];

/** The resolved settings (part of the run's config). */
export interface StableVmImageConfig {
  /** Guidance scale of the grid and the scored samples. */
  cfgScale: number;
  /** Samples scored (0: none). */
  evalSamples: number;
  /** Midpoint steps of the scored samples. */
  evalSteps: number;
  /** The classifier checkpoint. */
  classifier: string;
}

/** The flags' config keys, which a resumed run takes from the command line when given. */
export const IMAGE_SCHEDULE = ["cfgScale", "evalSamples", "evalSteps", "classifier"] as const;

const FLAG: Record<keyof StableVmImageConfig, string> = {
  cfgScale: "--cfg-scale",
  evalSamples: "--eval-samples",
  evalSteps: "--eval-steps",
  classifier: "--classifier",
};

/**
 * Resolve the flags; `--eval-steps` or `--classifier` with `--eval-samples 0` would do nothing
 * and are refused (`given` holds the flags on the command line).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { resolveImageFlags } from "./_stablevm_images.ts";
 * const f = { cfgScale: 2, evalSamples: 0, evalSteps: 10, classifier: "c.safetensors" };
 * assert.equal(resolveImageFlags(f, new Set(["cfgScale"])).cfgScale, 2);
 * assert.throws(() => resolveImageFlags(f, new Set(["evalSteps"])), /--eval-steps has no effect with --eval-samples 0/);
 * ```
 */
export function resolveImageFlags(
  f: StableVmImageConfig,
  given: ReadonlySet<string>,
): StableVmImageConfig {
  if (f.evalSamples === 1) {
    throw new RangeError("Expected --eval-samples to be 0 (off) or at least 2 (an FD) but found 1");
  }
  if (f.evalSamples === 0) {
    for (const k of ["evalSteps", "classifier"] as const) {
      if (given.has(k)) throw new RangeError(`${FLAG[k]} has no effect with --eval-samples 0`);
    }
  }
  return {
    cfgScale: f.cfgScale,
    evalSamples: f.evalSamples,
    evalSteps: f.evalSteps,
    classifier: f.classifier,
  };
}

/** [C, H, W] of image rows (1 or 3 channels, values in [−1, 1]), or null. */
export function imageShape(data: LabelledSet): [number, number, number] | null {
  const s = data.shape?.length === 2 ? [1, ...data.shape] : data.shape;
  return s?.length === 3 && (s[0] === 1 || s[0] === 3) ? [s[0]!, s[1]!, s[2]!] : null;
}

/**
 * [C, H, W] of the images the run's samples become: the rows' own shape, or for an
 * autoencoder's codes (`--latents`) the decoded images'; null for vectors.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { embeddedRing } from "../mod.ts";
 * import { figureShape } from "./_stablevm_images.ts";
 * assert.equal(figureShape(embeddedRing(0)), null);
 * const codes = { ...embeddedRing(0), decoded: { shape: [1, 28, 28], decode: () => Promise.resolve(new Float32Array(0)) } };
 * assert.deepEqual(figureShape(codes), [1, 28, 28]);
 * ```
 */
export function figureShape(data: LabelledSet): [number, number, number] | null {
  return data.decoded ? imageShape({ ...data, shape: data.decoded.shape }) : imageShape(data);
}

/** Whether the run's samples are scored: Fashion-MNIST and `--eval-samples` > 0. */
export function scoresImages(
  c: StableVmImageConfig & { dataDir: string | null },
  data: LabelledSet,
): boolean {
  return c.dataDir === "fashion-mnist" && figureShape(data) !== null && c.evalSamples > 0;
}

/**
 * Refuse (before a run is created or resumed) a flag given explicitly that the data make
 * meaningless: all four on vector data, `--cfg-scale` without ≥ 2 classes, and the scoring
 * flags on images other than Fashion-MNIST (the FD reference and the classifier are its).
 * `--eval-samples 0` (off) is always accepted.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { embeddedRing } from "../mod.ts";
 * import { checkImageFlags } from "./_stablevm_images.ts";
 * const c = { cfgScale: 3, evalSamples: 100, evalSteps: 50, classifier: "x", dataDir: null };
 * assert.throws(() => checkImageFlags(c, embeddedRing(0), new Set(["evalSamples"])),
 *   /--eval-samples scores class-conditional Fashion-MNIST samples.*2-D vectors/);
 * checkImageFlags(c, embeddedRing(0), new Set()); // defaults only: nothing to refuse
 * ```
 */
export function checkImageFlags(
  c: StableVmImageConfig & { dataDir: string | null },
  data: LabelledSet,
  given: ReadonlySet<string>,
): void {
  const img = figureShape(data),
    what = img
      ? `${c.dataDir}: images of shape [${img}] with ${data.numClasses} class(es)`
      : `${data.dim}-D vectors`;
  for (const k of IMAGE_SCHEDULE) {
    if (!given.has(k) || (k === "evalSamples" && c.evalSamples === 0)) continue;
    if (k === "cfgScale") {
      if (img && data.numClasses >= 2) continue;
      throw new RangeError(
        `--cfg-scale guides the class grid of class-conditional image data (≥ 2 classes, e.g. ` +
          `--data-dir fashion-mnist), but the data are ${what}`,
      );
    }
    if (img && c.dataDir === "fashion-mnist") continue;
    throw new RangeError(
      `${FLAG[k]} scores class-conditional Fashion-MNIST samples against its test split ` +
        `(--data-dir fashion-mnist), but the data are ${what}`,
    );
  }
}

/**
 * The scoring classifier, checked against the data (inputs and classes), or null when the run
 * is not scored. A RangeError names `--classifier` when it does not fit.
 */
export async function scoringClassifier(
  c: StableVmImageConfig & { dataDir: string | null },
  data: LabelledSet,
): Promise<LoadedClassifier | null> {
  if (!scoresImages(c, data)) return null;
  const clf = await loadClassifier(c.classifier);
  const width = figureShape(data)!.reduce((a, b) => a * b, 1);
  if (clf.model.inputDim !== width || clf.model.numClasses !== data.numClasses) {
    clf.model.dispose();
    throw new RangeError(
      `--classifier ${c.classifier}: it takes ${clf.model.inputDim} inputs and tells ` +
        `${clf.model.numClasses} classes, but the images have ${width} values and ` +
        `${data.numClasses} classes`,
    );
  }
  return clf;
}
