/**
 * @file `deno task train:classifier` — the small Fashion-MNIST classifier whose penultimate
 * features define the toolkit's Fréchet distance (FD; not the Inception FID, not comparable
 * to published FIDs) and whose predictions give the class agreement of generated samples.
 * An MLP 784 → 256 → 128 → 10 (ReLU) trained with AdamW on the training split; the test
 * accuracy (overall and per class) is printed and written to `<run>/eval.json`. Train it
 * once; `shortcut:table --dataset fashion-mnist` and other evaluations read
 * `runs/classifier-fmnist` (the default run directory).
 *
 *   deno task train:classifier
 *   deno task train:classifier --epochs 1 --output-dir /tmp --exp-name clf
 * @module
 */
import {
  classifierAccuracy,
  classifierTrainer,
  type ClassifierTrainerConfig,
  FASHION_MNIST_CLASSES,
  fit,
  Generator,
  loadFashionMnist,
  openTrainingRun,
  optim,
  saveCheckpoint,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, parseWidths, runTask, taskSignal } from "../cli/mod.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_CLASSIFIER_FLAGS } from "./train_classifier.ts";
 * assert.equal(TRAIN_CLASSIFIER_FLAGS.find((f) => f.name === "exp-name")?.default, "classifier-fmnist");
 * ```
 */
export const TRAIN_CLASSIFIER_FLAGS = [
  { name: "data-dir", type: "string", help: "IDX folder (default the Debian package's)" },
  { name: "hidden", type: "string", default: "512,256", help: "hidden widths (last: FD features)" },
  { name: "epochs", type: "number", default: 20, min: 0, help: "passes over the 60000 images" },
  { name: "max-train-steps", type: "int", min: 1, help: "steps (default: from --epochs)" },
  { name: "batch-size", type: "int", default: 128, min: 2, help: "batch size" },
  { name: "lr", type: "number", default: 1e-3, min: 0, help: "AdamW learning rate" },
  { name: "weight-decay", type: "number", default: 1e-4, min: 0, help: "AdamW decay" },
  {
    name: "lr-schedule",
    type: "choice",
    choices: ["constant", "cosine"],
    default: "cosine",
    help: "learning rate over the run",
  },
  { name: "augment-shift", type: "int", default: 1, min: 0, help: "random ±px translations" },
  { name: "train-limit", type: "int", min: 1, help: "use the first N training images" },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", default: "classifier-fmnist", help: "run directory name" },
  { name: "resume", type: "string", help: "a run directory or checkpoint to continue" },
  { name: "log-every", type: "int", default: 200, min: 1, help: "steps per metrics line" },
  {
    name: "export",
    type: "string",
    help: "also write the weights alone (+ config, accuracy) here",
  },
] as const satisfies readonly FlagSpec[];

/** What `main` returns. */
export interface TrainClassifierResult {
  /** The run directory (its checkpoints/last.safetensors is the classifier). */
  runDir: string;
  /** Steps trained. */
  steps: number;
  /** Test-split accuracy. */
  testAccuracy: number;
  /** Test-split accuracy per class. */
  perClass: number[];
  /** Training seconds. */
  seconds: number;
}

/**
 * Run the task (null for --help).
 *
 * @example
 * ```ts
 * import { main } from "./train_classifier.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainClassifierResult | null> {
  const given = new Set<string>();
  const f = parseTaskFlags(argv, TRAIN_CLASSIFIER_FLAGS, {
    task: "train:classifier",
    given,
    usage: "Train the Fashion-MNIST MLP classifier used for FD and class accuracy.",
  });
  if (!f) return null;
  const hidden = parseWidths("--hidden", f.hidden);
  // The images come from the run's config, so a resumed run trains on the same ones.
  const load = (c: { dataDir?: string | null; trainLimit?: number | null }) =>
    Promise.all([
      loadFashionMnist({ dir: c.dataDir ?? undefined, limit: c.trainLimit ?? undefined }),
      loadFashionMnist({ dir: c.dataDir ?? undefined, split: "test" }),
    ]);
  const fresh = f.resume ? null : await load({ dataDir: f.dataDir, trainLimit: f.trainLimit });
  const trainN = fresh?.[0].n ?? 0;
  const flags: ClassifierTrainerConfig & Record<string, unknown> = {
    dataset: "fashion-mnist",
    dataDir: f.dataDir ?? null,
    trainLimit: f.trainLimit ?? null,
    inputDim: 784,
    hidden,
    numClasses: 10,
    seed: f.seed,
    batchSize: f.batchSize,
    lr: f.lr,
    weightDecay: f.weightDecay,
    augmentShift: f.augmentShift,
    lrSchedule: f.lrSchedule,
    maxTrainSteps: f.maxTrainSteps ?? Math.max(1, Math.ceil(f.epochs * trainN / f.batchSize)),
    logEvery: f.logEvery,
    trainImages: trainN,
    command: `deno task train:classifier ${argv.join(" ")}`.trim(),
  };
  const { run, config, resume } = await openTrainingRun({
    task: "train:classifier",
    config: flags,
    resume: f.resume ?? null,
    given,
    schedule: ["maxTrainSteps", "logEvery"],
    outputDir: f.outputDir,
    expName: f.expName,
  });
  const [train, test] = fresh ??
    await load(config as { dataDir?: string | null; trainLimit?: number | null });
  const steps = config.maxTrainSteps as number;
  const trainer = classifierTrainer(config, train);
  const t0 = performance.now();
  try {
    await fit(trainer, {
      run,
      maxSteps: steps,
      logEvery: Math.min(config.logEvery as number, steps),
      // Every 1000 steps too, so an interrupted run loses little.
      checkpointEvery: Math.min(1000, steps),
      resume,
      signal: taskSignal(),
      lrSchedule: config.lrSchedule === "cosine" ? optim.cosine(steps) : undefined,
      generator: new Generator(config.seed as number),
      config: { task: "train:classifier", ...config },
      label: "train:classifier",
    });
    const seconds = (performance.now() - t0) / 1000;
    trainer.model.eval();
    const acc = await classifierAccuracy(trainer.model, test.images, test.labels);
    const result = {
      runDir: run.dir,
      steps,
      testAccuracy: acc.accuracy,
      perClass: acc.perClass,
      seconds,
    };
    await run.writeFile("eval.json", JSON.stringify({ ...result, testImages: test.n }, null, 2));
    if (f.export) {
      // The weights alone (no optimizer state): a third of the checkpoint, what eval needs.
      await saveCheckpoint(f.export, {
        model: trainer.model.stateDict(),
        step: steps,
        config: { task: "train:classifier", ...config, testAccuracy: acc.accuracy },
      });
      console.log(`train:classifier: exported the weights to ${f.export}`);
    }
    console.log(
      `train:classifier: test accuracy ${(100 * acc.accuracy).toFixed(2)}% (${test.n} images) ` +
        `after ${steps} steps in ${seconds.toFixed(0)} s; per class: ` +
        acc.perClass.map((a, k) => `${FASHION_MNIST_CLASSES[k]} ${(100 * a).toFixed(1)}`)
          .join(", "),
    );
    console.log(`train:classifier: wrote ${run.dir}/checkpoints/last.safetensors`);
    return result;
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
  }
}

if (import.meta.main) await runTask("train:classifier", main);
