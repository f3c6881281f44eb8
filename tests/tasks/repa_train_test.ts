/**
 * `--use-proj-loss` (REPA with VA-REPA weights) in the image trainers: a short seeded
 * `train:cfm` run of a tiny DiT on Fashion-MNIST aligned to a classifier's features logs
 * `training/loss_proj`, which decreases; the projector is checkpointed and the checkpoint
 * samples; the same with `train:stablevm --model dit-tiny` on the StableVM loss; bad
 * encoders (also one swapped for a different feature width before a resume) and flags are
 * refused before anything is written.
 */
import { strict as assert } from "node:assert";
import {
  cfmModelFromCheckpoint,
  nn,
  readCfmCheckpoint,
  readMetrics,
  saveCheckpoint,
} from "../../mod.ts";
import { main as trainCfm } from "../../tasks/train_cfm.ts";
import { main as trainStableVm } from "../../tasks/train_stablevm.ts";
import { quiet } from "../_helpers.ts";

const HAS_FMNIST = (() => {
  try {
    return Deno.statSync("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").isFile;
  } catch {
    return false;
  }
})();

/** A `train:classifier`-style checkpoint of a fresh (seeded) MLP classifier. */
async function writeEncoder(path: string, inputDim: number, hidden: number[]): Promise<void> {
  const config = { task: "train:classifier", inputDim, hidden, numClasses: 10, seed: 3 };
  const m = new nn.MLPClassifier({ inputDim, hidden, numClasses: 10, seed: 4 });
  await saveCheckpoint(path, { model: m.stateDict(), step: 1, config });
  m.dispose();
}

const DIT = [
  "--dataset",
  "fashion-mnist",
  "--hidden",
  "16",
  "--depth",
  "2",
  "--batch-size",
  "16",
  "--sample-steps",
  "1",
  "--seed",
  "5",
];

Deno.test({
  name:
    "train:cfm --use-proj-loss: a seeded tiny-DiT run logs training/loss_proj, which decreases; the projector is checkpointed and ignored when sampling",
  ignore: !HAS_FMNIST,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "repa-" });
    try {
      await writeEncoder(`${out}/enc.safetensors`, 784, [32, 24]);
      const r = await quiet(() =>
        trainCfm([
          ...DIT,
          "--use-proj-loss",
          "--proj-encoder",
          `${out}/enc.safetensors`,
          "--encoder-depth",
          "1",
          "--projector-dim",
          "32",
          "--proj-weight-schedule",
          "sigmoid",
          "--proj-coeff",
          "0.5",
          "--lr",
          "3e-3",
          "--max-train-steps",
          "40",
          "--log-every",
          "10",
          "--output-dir",
          out,
          "--exp-name",
          "run",
        ])
      );
      const recs = await readMetrics(r!.metrics);
      assert.deepEqual(recs.map((x) => x.step), [10, 20, 30, 40]);
      const proj = recs.map((x) => Number(x["training/loss_proj"]));
      // −mean cosine: within [−1, 1], and alignment improves over the run.
      assert.ok(proj.every((v) => v >= -1 && v <= 1), `loss_proj ${proj}`);
      assert.ok(proj[3]! < proj[0]! - 0.05, `loss_proj should decrease: ${proj}`);
      // The logged total is flow + coeff·proj (window means are linear).
      for (const x of recs) {
        const want = Number(x["training/loss_flow"]) + 0.5 * Number(x["training/loss_proj"]);
        assert.ok(Math.abs(Number(x["training/loss"]) - want) < 1e-4, JSON.stringify(x));
      }
      const cfg = JSON.parse(await Deno.readTextFile(`${r!.runDir}/config.json`));
      assert.deepEqual(
        [cfg.use_proj_loss, cfg.encoder_depth, cfg.proj_feature_dim, cfg.proj_weight_schedule],
        [true, 1, 24, "sigmoid"],
      );
      const ck = await readCfmCheckpoint(r!.checkpoint);
      assert.deepEqual(ck.checkpoint.model["projectors.0.4.weight"]!.shape, [24, 32]);
      const m = cfmModelFromCheckpoint(ck);
      assert.ok(m instanceof nn.DiTWithProjector);
      m.dispose();
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "train:cfm --use-proj-loss refuses a missing encoder, an encoder of the wrong input size, a toy model, a too-deep --encoder-depth and REPA flags without it, writing nothing",
  ignore: !HAS_FMNIST,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "repa-bad-" });
    const runs = `${out}/runs`;
    try {
      await writeEncoder(`${out}/small.safetensors`, 100, [8]);
      await writeEncoder(`${out}/enc.safetensors`, 784, [8]);
      const base = [...DIT, "--output-dir", runs, "--max-train-steps", "1"];
      const cases: [string[], RegExp][] = [
        [["--use-proj-loss"], /--use-proj-loss needs --proj-encoder/],
        [
          ["--use-proj-loss", "--proj-encoder", `${out}/small.safetensors`],
          /--proj-encoder .*small.safetensors: the encoder takes 100 values per image but the data's images \[1,28,28\] have 784/,
        ],
        [
          ["--use-proj-loss", "--proj-encoder", `${out}/nope`],
          /--proj-encoder .*nope: no such file/,
        ],
        [
          ["--use-proj-loss", "--proj-encoder", `${out}/enc.safetensors`, "--encoder-depth", "3"],
          /--encoder-depth to be an integer in \[1, 2\]/,
        ],
        [["--proj-tau", "0.5"], /--proj-tau has no effect without --use-proj-loss/],
      ];
      for (const [flags, re] of cases) {
        await assert.rejects(quiet(() => trainCfm([...base, ...flags])), re, flags.join(" "));
      }
      await assert.rejects(
        trainCfm(["--dataset", "moons", "--use-proj-loss", "--output-dir", runs]),
        /--use-proj-loss aligns a DiT's tokens: use --model dit-tiny/,
      );
      assert.throws(() => Deno.statSync(runs), Deno.errors.NotFound, "nothing written");
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "train:stablevm --model dit-tiny --use-proj-loss: loss_proj logged and decreasing on the StableVM loss; a resume with an encoder of another feature width is refused",
  ignore: !HAS_FMNIST,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "repa-svm-" });
    try {
      await writeEncoder(`${out}/enc.safetensors`, 784, [32, 24]);
      const r = await quiet(() =>
        trainStableVm([
          "--data-dir",
          "fashion-mnist",
          "--model",
          "dit-tiny",
          "--hidden",
          "16",
          "--blocks",
          "2",
          "--batch-size",
          "16",
          "--bank-capacity-per-class",
          "8",
          "--use-proj-loss",
          "--proj-encoder",
          `${out}/enc.safetensors`,
          "--encoder-depth",
          "1",
          "--projector-dim",
          "32",
          "--proj-weight-schedule",
          "snr",
          "--learning-rate",
          "3e-3",
          "--max-train-steps",
          "30",
          "--log-every",
          "10",
          "--checkpoint-every",
          "30",
          "--sample-steps",
          "1",
          "--eval-samples",
          "0",
          "--seed",
          "5",
          "--output-dir",
          out,
          "--exp-name",
          "svm",
        ])
      );
      const recs = await readMetrics(r!.metrics);
      const proj = recs.map((x) => Number(x["training/loss_proj"]));
      assert.equal(proj.length, 3);
      assert.ok(proj.every((v) => v >= -1 && v <= 1), `loss_proj ${proj}`);
      assert.ok(proj[2]! < proj[0]! - 0.05, `loss_proj should decrease: ${proj}`);
      assert.ok(recs.every((x) => Number.isFinite(Number(x["training/loss_flow"]))));
      // The same path, now an encoder with 12-wide features: the projector outputs 24.
      await writeEncoder(`${out}/enc.safetensors`, 784, [32, 12]);
      await assert.rejects(
        quiet(() => trainStableVm(["--resume", `${out}/svm`, "--max-train-steps", "40"])),
        /--proj-encoder .*enc.safetensors: its features are 12 wide but the run's projector outputs 24/,
      );
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
