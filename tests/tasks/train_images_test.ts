/**
 * @file `deno task train:images` (issue 14's preset): a short seeded run goes through train:cfm
 * with the preset's recipe (the user's flags winning), writes its class grid, and reports the
 * FD and class agreement that `eval` computes on the same run with the shipped classifier.
 */
import { strict as assert } from "node:assert";
import { decodePng, parseConfigFile, readMetrics } from "../../mod.ts";
import { main, splitImagesArgs } from "../../tasks/train_images.ts";
import { DEFAULT_CLASSIFIER } from "../../tasks/eval.ts";
import { main as presetMain } from "../../tasks/images_preset.ts";
import { main as trainAe } from "../../tasks/train_autoencoder.ts";
// The default backend, as `deno task` selects it: without init() the DiT would run on the CPU
// backend's plain loops (minutes for a two-step run).
import { quiet } from "../_helpers.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
const ready = await Promise.all(
  [FASHION, DEFAULT_CLASSIFIER].map((p) => Deno.stat(p).then(() => true, () => false)),
);
if (!ready.every((x) => x)) {
  console.log(`train:images test ignored: ${FASHION} or ${DEFAULT_CLASSIFIER} missing`);
}

Deno.test({
  name:
    "train:images: preset recipe (user flags win), class grid, FD and class agreement of the run",
  ignore: !ready.every((x) => x),
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "train-images-" });
    try {
      const argv = [
        ...["--model", "velocity-mlp", "--max-train-steps", "12", "--hidden", "32"],
        ...["--warmup-steps", "4"],
        ...["--output-dir", out, "--exp-name", "r", "--seed", "3"],
        ...["--eval-samples", "40", "--eval-steps", "2", "--samples-per-class", "2"],
        ...["--cfg-scale", "2", "--checkpoint-every", "12", "--log-every", "1"],
      ];
      const r = (await main(argv))!;
      const cfg = parseConfigFile(await Deno.readTextFile(`${out}/r/config.json`)) as Record<
        string,
        unknown
      >;
      // The preset's recipe, with the user's --hidden/--warmup-steps/--max-train-steps on top.
      assert.equal(cfg.model, "velocity-mlp");
      assert.equal(cfg.dataset, "fashion-mnist");
      assert.equal(cfg.cfgDropout, 0.1);
      assert.equal(cfg.emaDecay, 0.999);
      assert.equal(cfg.hidden, 32);
      assert.equal(cfg.warmupSteps, 4);
      assert.deepEqual(cfg.dataShape, [784]);
      // The warm-up really ran: the logged learning rate climbs (step + 1)/4 of the base.
      const m = await readMetrics(`${out}/r/metrics.jsonl`);
      const lr = m.filter((x) => "training/lr" in x).slice(0, 5).map((x) => x["training/lr"]);
      assert.deepEqual(lr, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]);
      // One row per class, two columns of 28-pixel tiles with 2-pixel padding, upscaled 3×
      // with the class names on a margin ("T-shirt/top": 11 glyphs of 6 pixels − 1, + 8).
      const img = await decodePng(await Deno.readFile(r.grid));
      assert.equal(img.width, 11 * 6 - 1 + 8 + 3 * (2 * 28 + 3 * 2));
      assert.equal(img.height, 3 * (10 * 28 + 11 * 2));
      // The scores are eval's record on this run, appended to its eval.jsonl.
      const ev = (await Deno.readTextFile(`${out}/r/eval.jsonl`)).trim().split("\n").map((l) =>
        JSON.parse(l)
      ).at(-1);
      assert.equal(ev.class_acc, r.classAcc);
      assert.equal(ev.fd, r.fd);
      assert.equal(ev.cfg_scale, 2);
      assert.equal(ev.num_samples, 40);
      assert.ok(r.classAcc >= 0 && r.classAcc <= 1 && r.classAccPerClass.length === 10);
      assert.ok(r.fd > r.fdRealTrainTest, "12 steps are far from the data");
      // Resumed without --model: the preset is the run's own (velocity-mlp, from its
      // config.json), not the default DiT's — scored with the MLP preset's 50 sampler steps,
      // not the DiT's 25 — and the run goes on from step 12.
      const again = (await main([
        ...["--resume", `${out}/r`, "--max-train-steps", "16", "--log-every", "1"],
        ...["--eval-samples", "40", "--samples-per-class", "2"],
      ]))!;
      const cfg2 = parseConfigFile(await Deno.readTextFile(`${out}/r/config.json`)) as Record<
        string,
        unknown
      >;
      assert.equal(cfg2.model, "velocity-mlp");
      assert.equal(cfg2.hidden, 32);
      const steps = (await readMetrics(`${out}/r/metrics.jsonl`))
        .filter((x) => "training/lr" in x).map((x) => x.step as number);
      assert.equal(Math.max(...steps), 16);
      const evs = (await Deno.readTextFile(`${out}/r/eval.jsonl`)).trim().split("\n");
      assert.equal(evs.length, 2, "the resumed run is scored again");
      assert.equal(JSON.parse(evs[1]!).class_acc, again.classAcc);
      assert.equal(JSON.parse(evs[1]!).num_steps, 50, "the MLP preset's sampler steps");
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test("train:images splits its own flags (any spelling) from train:cfm's", () => {
  const { own, rest } = splitImagesArgs([
    "--samples_per_class",
    "4",
    "--model=dit-tiny",
    "--classifier=x.safetensors",
    "--lr",
    "1e-4",
  ]);
  assert.deepEqual(own, ["--samples_per_class", "4", "--classifier=x.safetensors"]);
  assert.deepEqual(rest, ["--model=dit-tiny", "--lr", "1e-4"]);
});

Deno.test({
  name: "train:images takes the DiT preset by default (user flags still win)",
  ignore: !ready.every((x) => x),
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "train-images-dit-" });
    try {
      const r = (await main([
        ...["--max-train-steps", "2", "--batch-size", "8"],
        ...["--output-dir", out, "--exp-name", "d", "--eval-samples", "20", "--eval-steps", "1"],
        ...["--samples-per-class", "1", "--checkpoint-every", "2", "--sample-steps", "1"],
      ]))!;
      const cfg = parseConfigFile(await Deno.readTextFile(`${out}/d/config.json`)) as Record<
        string,
        unknown
      >;
      // DIT_PRESET's recipe, not the MLP's 3 × 512 at lr 1e-3 / batch 128 / 6000 steps.
      assert.deepEqual(
        [cfg.model, cfg.hidden, cfg.depth, cfg.learningRate ?? cfg.lr, cfg.warmupSteps],
        ["dit-tiny", 128, 4, 1e-3, 500],
      );
      assert.deepEqual([cfg.batchSize, cfg.maxTrainSteps], [8, 2]);
      assert.deepEqual(cfg.dataShape, [1, 28, 28]);
      assert.ok(r.classAcc >= 0 && r.classAcc <= 1);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test({
  name: "images:preset: one row per seed from train:images's own scores; reruns skip; render-only",
  ignore: !ready.every((x) => x),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "images-preset-" });
    try {
      const argv = [
        ...["--models", "velocity-mlp", "--seeds", "0,1", "--max-train-steps", "3"],
        ...["--eval-samples", "20", "--eval-steps", "1"],
        ...["--output-dir", `${dir}/runs`, "--out", `${dir}/t.md`],
      ];
      const rows = (await presetMain(argv))!;
      assert.deepEqual(rows.map((r) => [r.model, r.seed, r.steps]), [
        ["velocity-mlp", 0, 3],
        ["velocity-mlp", 1, 3],
      ]);
      for (const r of rows) {
        // The row is eval's record of that run (its eval.jsonl), not a number of its own.
        const run = `${dir}/runs/velocity-mlp-s${r.seed}-3`;
        const ev = JSON.parse(
          (await Deno.readTextFile(`${run}/eval.jsonl`)).trim().split("\n").at(-1)!,
        );
        assert.deepEqual([r.classAcc, r.fd, r.evalSamples], [ev.class_acc, ev.fd, 20]);
        const cfg = parseConfigFile(await Deno.readTextFile(`${run}/config.json`)) as Record<
          string,
          unknown
        >;
        assert.deepEqual([cfg.seed, cfg.maxTrainSteps, cfg.hidden], [r.seed, 3, 512]);
        assert.equal(r.resumed, false);
      }
      // Seed 0's grid is copied beside the table and linked from it.
      assert.ok((await Deno.stat(`${dir}/img/images_preset_velocity-mlp_seed0.png`)).isFile);
      const md = await Deno.readTextFile(`${dir}/t.md`);
      assert.match(md, /\(img\/images_preset_velocity-mlp_seed0\.png\)/);
      assert.match(md, /\| MLP 3 × 512 \(`--model velocity-mlp`\) \| 2 \| 3 \|/);
      // A rerun finds both rows and trains nothing; --render-only rewrites from the rows.
      const before = (await Deno.stat(`${dir}/runs/velocity-mlp-s0-3/config.json`)).mtime;
      assert.deepEqual(await presetMain(argv), rows);
      assert.deepEqual(
        (await Deno.stat(`${dir}/runs/velocity-mlp-s0-3/config.json`)).mtime,
        before,
      );
      await Deno.remove(`${dir}/t.md`);
      await presetMain([...argv, "--render-only"]);
      assert.equal(await Deno.readTextFile(`${dir}/t.md`), md);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "images:preset --models latents: train:images --latents on the given autoencoder's codes",
  ignore: !ready.every((x) => x),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "images-preset-lat-" });
    try {
      const base = ["--seeds", "0", "--max-train-steps", "3", "--eval-samples", "20"];
      const where = ["--output-dir", `${dir}/runs`, "--out", `${dir}/t.md`];
      // An --autoencoder that no preset would use is refused before anything runs.
      await assert.rejects(
        () => presetMain(["--models", "velocity-mlp", "--autoencoder", "x", ...base, ...where]),
        /--autoencoder serves the latents preset/,
      );
      await quiet(() =>
        trainAe([
          ...["--hidden", "64", "--latent-dim", "4", "--max-train-steps", "20"],
          ...["--output-dir", dir, "--exp-name", "ae"],
        ])
      );
      const rows = (await presetMain([
        ...["--models", "latents", "--autoencoder", `${dir}/ae`, "--eval-steps", "1"],
        ...base,
        ...where,
      ]))!;
      assert.equal(rows.length, 1);
      const r = rows[0]!;
      assert.deepEqual([r.model, r.autoencoder, r.seed, r.steps], ["latents", `${dir}/ae`, 0, 3]);
      const run = `${dir}/runs/latents-s0-3`;
      const cfg = parseConfigFile(await Deno.readTextFile(`${run}/config.json`)) as Record<
        string,
        unknown
      >;
      // The MLP preset on the codes: a flat 4-D input, the autoencoder recorded.
      assert.deepEqual([cfg.model, cfg.hidden, cfg.dataShape], ["velocity-mlp", 512, [4]]);
      assert.match(JSON.stringify(cfg.latents), /ae/);
      const ev = JSON.parse(
        (await Deno.readTextFile(`${run}/eval.jsonl`)).trim().split("\n").at(-1)!,
      );
      assert.deepEqual([r.classAcc, r.fd], [ev.class_acc, ev.fd]);
      assert.match(r.command, /--latents .*\/ae --seed 0/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
