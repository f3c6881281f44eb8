/**
 * @file Scoring Fashion-MNIST shortcut runs for `shortcut:table --dataset fashion-mnist`:
 * the toolkit's classifier (trained once by `train:classifier`, reused), the Gaussian fit of
 * its features on the 10000 test images (the FD reference), the data floor (real training
 * images scored the same way), and `evaluateFewStepImages` on a run's EMA weights.
 * @module
 */
import {
  cfmModelFromCheckpoint,
  type CfmNet,
  classifierAccuracy,
  evaluateFewStepImages,
  featureStats,
  frechetDistance,
  type ImageFewStepEval,
  loadClassifier,
  loadFashionMnist,
  readCfmCheckpoint,
  type Tensor,
} from "../mod.ts";
import { main as trainClassifierMain } from "./train_classifier.ts";
import { renderImageMarkdown, type Row } from "../cli/tables/shortcut.ts";

/** What scoring needs of a model's config. */
export type ImageModelConfig = {
  dataShape: number[];
  numClasses: number;
  denoiseTimesteps?: number;
};

/** Scores runs against the test split with one classifier. */
export interface ImageScorer {
  /** The classifier checkpoint used. */
  classifierPath: string;
  /** Its accuracy on the 10000 test images. */
  testAccuracy: number;
  /** The command that trained it (from its config). */
  classifierCommand: string;
  /** FD and class agreement of `n` real training images (the floor of the metric). */
  floor: { fd: number; classAcc: number };
  /** Few-step FD, class agreement and straightness of a model. */
  score(model: CfmNet, config: ImageModelConfig): Promise<ImageFewStepEval>;
  /** The same for a run's EMA weights (its checkpoints/last.safetensors). */
  scoreRun(runDir: string): Promise<ImageFewStepEval>;
  /** Free the classifier. */
  dispose(): void;
}

/**
 * Open the classifier at `dir` (a `train:classifier` run directory), training it first with
 * `deno task train:classifier --output-dir <parent> --exp-name <name>` when it does not
 * exist; `n` is the number of samples per score.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imageScorer } from "./_shortcut_images.ts";
 * assert.equal(typeof imageScorer, "function"); // trains/loads a classifier: see the task test
 * ```
 */
export async function imageScorer(
  dir: string,
  n: number,
  opts: { trainArgs?: string[]; steps?: readonly number[] } = {},
): Promise<ImageScorer> {
  const path = dir.replace(/\/+$/, "");
  const exists = await Deno.stat(`${path}/checkpoints/last.safetensors`).then(() => true)
    .catch(() => false);
  if (!exists) {
    const cut = path.lastIndexOf("/");
    const args = [
      `--output-dir=${cut > 0 ? path.slice(0, cut) : "."}`,
      `--exp-name=${path.slice(cut + 1)}`,
      ...(opts.trainArgs ?? []),
    ];
    console.error(
      `shortcut:table: no classifier at ${path}; deno task train:classifier ${args.join(" ")}`,
    );
    await trainClassifierMain(args);
  }
  const clf = await loadClassifier(path);
  const test = await loadFashionMnist({ split: "test" });
  const ref = await featureStats(clf.model, test.images);
  const testAccuracy = (await classifierAccuracy(clf.model, test.images, test.labels)).accuracy;
  const train = await loadFashionMnist({ limit: n });
  const floor = {
    fd: frechetDistance(await featureStats(clf.model, train.images), ref),
    classAcc: (await classifierAccuracy(clf.model, train.images, train.labels)).accuracy,
  };
  return {
    classifierPath: clf.path,
    testAccuracy,
    classifierCommand: String(clf.config.command ?? "deno task train:classifier"),
    floor,
    score: (model, config) =>
      evaluateFewStepImages(model, config, clf.model, ref, { n, steps: opts.steps }),
    async scoreRun(runDir: string) {
      const ck = await readCfmCheckpoint(runDir);
      const model = cfmModelFromCheckpoint(ck);
      for (const sec of [ck.checkpoint.model, ck.checkpoint.ema, ck.checkpoint.optimizer]) {
        for (const t of Object.values(sec ?? {}) as Tensor[]) t.dispose();
      }
      try {
        return await evaluateFewStepImages(model, ck.config, clf.model, ref, {
          n,
          steps: opts.steps,
        });
      } finally {
        model.dispose();
      }
    },
    dispose: () => clf.model.dispose(),
  };
}

/**
 * The Fashion-MNIST table's markdown and the JSON fields beside its rows.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imageMarkdown, type ImageScorer } from "./_shortcut_images.ts";
 * const scorer = { classifierPath: "c", testAccuracy: 0.9, classifierCommand: "x",
 *   floor: { fd: 0.5, classAcc: 0.95 } } as ImageScorer;
 * const { md } = imageMarkdown([], scorer, { commit: "a", backend: "cpu", model: "MLP",
 *   shared: "", n: 10, notes: "" });
 * assert.match(md, /90\.00% test accuracy/);
 * ```
 */
export function imageMarkdown(
  rows: readonly Row[],
  scorer: ImageScorer,
  m: { commit: string; backend: string; model: string; shared: string; n: number; notes: string },
): { md: string; extra: Record<string, unknown> } {
  const settings = `Data: Fashion-MNIST training split as flat 784-D pixels in [−1, 1], ` +
    `class-conditional (label dropout 0.1); ${m.model} (SiLU) with the step-size and label ` +
    `embeddings added to its first hidden layer and a scalar-gated input skip, v = f + c·x ` +
    `(\`--model velocity-mlp\`; DiT-tiny, the default image model, trains at < 1 step/s on ` +
    `this CPU adapter); ${m.shared}`;
  const classifier = `The classifier (\`${scorer.classifierPath}\`, MLP 784→256→128→10, ` +
    `\`${scorer.classifierCommand}\`) has ${(100 * scorer.testAccuracy).toFixed(2)}% test ` +
    `accuracy.`;
  const md = renderImageMarkdown(rows, {
    commit: m.commit,
    backend: m.backend,
    settings,
    n: String(m.n),
    floorFd: scorer.floor.fd.toFixed(2),
    floorAcc: scorer.floor.classAcc.toFixed(3),
    classifier,
    notes: m.notes + " Samples are drawn without guidance (cfg scale 1). Without the input " +
      "skip, a first trial (800 steps of batch 64, seed 0) left visible noise in every sample " +
      "(final loss 0.99 vs 0.45 with it). Run with LP_NUM_THREADS=1 on a loaded machine: " +
      "lavapipe's default thread pool ran these steps at 0.3–0.5 it/s under load 13 on 2 " +
      "cores, one thread at 3 it/s (batch 128).",
  });
  const extra = {
    settings,
    classifier: scorer.classifierPath,
    classifierTestAccuracy: scorer.testAccuracy,
    dataFloor: scorer.floor,
  };
  return { md, extra };
}
