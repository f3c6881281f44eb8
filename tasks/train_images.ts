/**
 * @file `deno task train:images` — issue 14's preset: a class-conditional flow-matching model on
 * Fashion-MNIST that gives recognisable samples on a 2-core CPU adapter within half an hour, then
 * its class grid (classifier-free guidance) and its measured quality (FD and class agreement
 * from the shipped classifier). It is `train:cfm` with these defaults, followed by `sample` and
 * `eval` on the run: no training loop of its own. Any `train:cfm` flag may be given and wins over
 * the preset (e.g. `--model velocity-mlp`, `--max-train-steps`; `--data-dir` is not needed for
 * the Debian package's Fashion-MNIST).
 *
 *   deno task train:images                      # the DiT preset (~20 min on the idle 2-core machine)
 *   deno task train:images --max-train-steps 500 --eval-samples 200   # a quick look
 *   deno task train:images --model velocity-mlp # the flat-pixel MLP preset (~5 min)
 *   deno task train:images --latents runs/autoencoder-fmnist   # the MLP on a train:autoencoder's codes
 *
 * The default network is issue 14's class-conditional DiT (patch 4, hidden 128, 4 blocks;
 * `DIT_PRESET`), measured over 3 seeds by `deno task images:preset` (README). The MLP preset
 * (`IMAGES_PRESET`: 3 × 512, SiLU, label embedding, gated input skip) is faster and scores higher
 * on this classifier; it serves `--latents`, whose codes are flat vectors.
 * @module
 */
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";
import { main as trainMain } from "./train_cfm.ts";
import { main as sampleMain } from "./sample.ts";
import { DEFAULT_CLASSIFIER, main as evalMain } from "./eval.ts";
import { parseConfigFile } from "../mod.ts";

/**
 * The `train:cfm` flags of the MLP preset (`--model velocity-mlp`, and `--latents`), given
 * before the user's so the user's win.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { IMAGES_PRESET } from "./train_images.ts";
 * assert.equal(IMAGES_PRESET[IMAGES_PRESET.indexOf("--cfg-dropout") + 1], "0.1"); // 10% label drop
 * ```
 */
export const IMAGES_PRESET: readonly string[] = [
  ...["--dataset", "fashion-mnist", "--model", "velocity-mlp", "--hidden", "512"],
  ...["--depth", "3", "--batch-size", "128", "--lr", "1e-3", "--warmup-steps", "500"],
  ...["--max-train-steps", "6000", "--cfg-dropout", "0.1", "--ema-decay", "0.999"],
  ...["--checkpoint-every", "1000", "--log-every", "100", "--sample-steps", "50"],
];

/**
 * The `train:cfm` flags of the default preset: the DiT at patch 4 (hidden 128, 4 blocks) on
 * batches of 64, lr 1e-3 after a 500-step warm-up, sized so that training, the grid and the
 * scores fit half an hour on the 2-core CPU (`wasm`; `deno task images:preset` measures it). The
 * MLP's 6000 steps of 128 would take the DiT hours.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DIT_PRESET } from "./train_images.ts";
 * assert.equal(DIT_PRESET[DIT_PRESET.indexOf("--max-train-steps") + 1], "2500");
 * ```
 */
export const DIT_PRESET: readonly string[] = [
  ...["--dataset", "fashion-mnist", "--model", "dit-tiny", "--hidden", "128"],
  ...["--depth", "4", "--batch-size", "64", "--lr", "1e-3", "--warmup-steps", "500"],
  ...["--max-train-steps", "2500", "--cfg-dropout", "0.1", "--ema-decay", "0.999"],
  ...["--checkpoint-every", "500", "--log-every", "50", "--sample-steps", "25"],
];

/**
 * The preset's `train:cfm` flags and scoring defaults for the model `argv` asks for: the DiT's
 * by default (500 samples at 25 midpoint steps: 2000 at 50 would take the DiT ~1 h), the MLP's
 * with `--model velocity-mlp` or `--latents` (codes are flat vectors: 2000 samples at 50 steps).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DIT_PRESET, IMAGES_PRESET, presetFor } from "./train_images.ts";
 * assert.equal(presetFor([]).train, DIT_PRESET);
 * assert.deepEqual(presetFor(["--hidden", "64"]).eval, { evalSamples: 500, evalSteps: 25 });
 * assert.equal(presetFor(["--model=velocity-mlp"]).train, IMAGES_PRESET);
 * assert.equal(presetFor(["--latents", "runs/ae"]).train, IMAGES_PRESET);
 * ```
 */
export function presetFor(argv: readonly string[]): {
  train: readonly string[];
  eval: { evalSamples: number; evalSteps: number };
} {
  let model: string | undefined, latents = false;
  argv.forEach((a, i) => {
    const m = /^--model(?:=(.*))?$/.exec(a);
    if (m) model = m[1] ?? argv[i + 1];
    if (/^--latents(=|$)/.test(a)) latents = true;
  });
  model ??= latents ? "velocity-mlp" : "dit-tiny";
  return model === "dit-tiny"
    ? { train: DIT_PRESET, eval: { evalSamples: 500, evalSteps: 25 } }
    : { train: IMAGES_PRESET, eval: { evalSamples: 2000, evalSteps: 50 } };
}

/**
 * The network of the run `--resume` names (its config.json), as a `--model` flag for
 * {@linkcode presetFor}, so a resumed run is scored by its own preset; `[]` when argv has no
 * `--resume` or already names the model.
 */
async function resumedModel(argv: readonly string[]): Promise<string[]> {
  const i = argv.findIndex((a) => /^--resume(=|$)/.test(a));
  if (i < 0 || argv.some((a) => /^--model(=|$)/.test(a))) return [];
  const dir = (argv[i]!.includes("=") ? argv[i]!.split("=")[1]! : argv[i + 1] ?? "")
    .replace(/\/(config\.json|checkpoints\/[^/]+)$/, "");
  try {
    const cfg = parseConfigFile(await Deno.readTextFile(`${dir}/config.json`));
    const model = (cfg as { model?: unknown }).model;
    return typeof model === "string" ? ["--model", model] : [];
  } catch {
    return []; // train:cfm names the problem with the run
  }
}

/**
 * The preset's own flags (everything else goes to `train:cfm`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_IMAGES_FLAGS } from "./train_images.ts";
 * assert.equal(TRAIN_IMAGES_FLAGS.find((f) => f.name === "cfg-scale")?.default, 3);
 * ```
 */
export const TRAIN_IMAGES_FLAGS = [
  { name: "cfg-scale", type: "number", default: 3, min: 0, help: "guidance for grid and eval" },
  { name: "samples-per-class", type: "int", default: 10, min: 1, help: "class-grid columns" },
  {
    name: "eval-samples",
    type: "int",
    min: 10,
    help: "samples for fd/class-acc (default 500; 2000 with --model velocity-mlp)",
  },
  {
    name: "eval-steps",
    type: "int",
    min: 1,
    help: "midpoint steps, grid and eval (default 25; 50 with --model velocity-mlp)",
  },
  { name: "classifier", type: "string", default: DEFAULT_CLASSIFIER, help: "for fd/class-acc" },
] as const satisfies readonly FlagSpec[];

const OWN = new Set<string>(TRAIN_IMAGES_FLAGS.map((f) => f.name));

/**
 * Split argv into the preset's own flags (with their values) and the rest, for `train:cfm`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { splitImagesArgs } from "./train_images.ts";
 * const { own, rest } = splitImagesArgs(["--cfg-scale=2", "--hidden", "64", "--eval_samples", "100"]);
 * assert.deepEqual(own, ["--cfg-scale=2", "--eval_samples", "100"]);
 * assert.deepEqual(rest, ["--hidden", "64"]);
 * ```
 */
export function splitImagesArgs(argv: readonly string[]): { own: string[]; rest: string[] } {
  const own: string[] = [], rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = /^--([^=]+)/.exec(a)?.[1]?.replaceAll("_", "-");
    if (name === undefined || !OWN.has(name)) {
      rest.push(a);
      continue;
    }
    own.push(a);
    if (!a.includes("=") && i + 1 < argv.length) own.push(argv[++i]!);
  }
  return { own, rest };
}

/** What `main` returns. */
export interface TrainImagesResult {
  /** The run directory. */
  runDir: string;
  /** The class grid written (PNG, one row per class). */
  grid: string;
  /** Fréchet distance on the classifier's features (not the Inception FID). */
  fd: number;
  /** The same for real training images: the floor. */
  fdRealTrainTest: number;
  /** Fraction of samples the classifier assigns to their intended class. */
  classAcc: number;
  /** Per class. */
  classAccPerClass: number[];
  /** Wall time of training, sampling and evaluation, in seconds. */
  seconds: number;
}

/**
 * Run the preset; returns the run and its scores (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./train_images.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainImagesResult | null> {
  const { own, rest } = splitImagesArgs(argv);
  if (argv.includes("--help")) {
    console.log(
      "train:images: a class-conditional Fashion-MNIST model, its class grid and its FD and " +
        `class agreement.\nPreset train:cfm flags (yours win): ${DIT_PRESET.join(" ")}\n` +
        `With --model velocity-mlp or --latents: ${IMAGES_PRESET.join(" ")}\n` +
        "Every train:cfm flag is accepted (deno task train:cfm --help lists them); the preset's own:",
    );
  }
  const f = parseTaskFlags(argv.includes("--help") ? ["--help"] : own, TRAIN_IMAGES_FLAGS, {
    task: "train:images",
  });
  if (!f) return null;
  const t0 = performance.now();
  const preset = presetFor([...rest, ...(await resumedModel(rest))]);
  const evalSamples = f.evalSamples ?? preset.eval.evalSamples;
  const evalSteps = f.evalSteps ?? preset.eval.evalSteps;
  const tr = await trainMain([...preset.train, ...rest]);
  if (!tr) return null;
  const guide = ["--cfg-scale", String(f.cfgScale), "--sampler", "midpoint"];
  const steps = ["--num-steps", String(evalSteps)];
  const grid = `${tr.runDir}/samples/class_grid.png`;
  await sampleMain([
    ...["--checkpoint", tr.runDir, "--class-grid", "--samples-per-class"],
    ...[String(f.samplesPerClass), ...guide, ...steps, "--out", grid],
  ]);
  const ev = await evalMain([
    ...["--checkpoint", tr.runDir, "--metrics", "fd,class-acc", "--classifier", f.classifier],
    ...["--num-samples", String(evalSamples), ...guide, ...steps],
  ]);
  const seconds = (performance.now() - t0) / 1000;
  const res: TrainImagesResult = {
    runDir: tr.runDir,
    grid,
    fd: ev!.fd!,
    fdRealTrainTest: ev!.fdRealTrainTest!,
    classAcc: ev!.classAcc!,
    classAccPerClass: ev!.classAccPerClass!,
    seconds,
  };
  console.log(
    `train:images: class agreement ${(100 * res.classAcc).toFixed(1)}% (classifier ` +
      `${f.classifier}, CFG ${f.cfgScale}), FD ${res.fd.toFixed(2)} (real train vs test ` +
      `${res.fdRealTrainTest.toFixed(2)}), ${seconds.toFixed(0)} s in all; grid ${grid}`,
  );
  return res;
}

if (import.meta.main) await runTask("train:images", main);
