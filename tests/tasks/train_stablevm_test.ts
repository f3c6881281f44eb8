/**
 * The `train:stablevm` task in a shortened form (few steps, output under /tmp), its resume
 * path, and its flag validation.
 */
import { strict as assert } from "node:assert";
import { decodePng, encodeNpz, getBackend, loadCheckpoint, readMetrics } from "../../mod.ts";
import { main, parseTrainFlags } from "../../tasks/train_stablevm.ts";
import { assertClose } from "../_helpers.ts";

const QUICK = ["--sample-steps", "4", "--fisher-samples", "128", "--log-every", "5"];

Deno.test("train:stablevm main() writes config, metrics, checkpoint and sample plot, then resumes", async () => {
  const out = await Deno.makeTempDir({ prefix: "stablevm-" });
  const before = getBackend().liveBytes();
  try {
    const r = await main([
      "--max-train-steps",
      "12",
      "--checkpoint-every",
      "10",
      "--batch-size",
      "64",
      "--output-dir",
      out,
      "--exp-name",
      "quick",
      ...QUICK,
    ]);
    assert.ok(r);
    // Every tensor of the run (model, optimizer, EMA, per-step work) was freed.
    assert.equal(getBackend().liveBytes(), before);
    assert.equal(r.runDir, `${out}/quick`);
    assert.equal(r.steps, 12);
    const cfg = JSON.parse(await Deno.readTextFile(`${out}/quick/config.json`));
    assert.equal(cfg.loss_type, "stablevm"); // the seeds' snake_case keys
    assert.equal(cfg.bank_capacity_per_class, 256);
    assert.equal(cfg.max_train_steps, 12);
    const m = await readMetrics(r.metrics);
    const train = m.filter((x) => "training/loss_flow" in x);
    assert.deepEqual(train.map((x) => x.step), [5, 10, 12]);
    for (const x of train) {
      for (const k of ["training/loss_flow", "training/grad_norm", "training/lr"]) {
        assert.ok(Number.isFinite(x[k] as number), `${k} at step ${x.step}`);
      }
      assert.equal(x["training/lr"], 1e-3);
    }
    const fisherRec = m.find((x) => "eval/fisher_divergence" in x);
    assert.ok(fisherRec && Number.isFinite(fisherRec["eval/fisher_divergence"] as number));
    assert.ok(r.fisher !== null && r.fisher > 0);
    // Checkpoint: model + EMA + optimizer + step + RNG + config.
    assert.equal(r.checkpoint, `${out}/quick/checkpoints/step-000012.safetensors`);
    const ck = await loadCheckpoint(r.checkpoint);
    assert.equal(ck.step, 12);
    assert.ok(Object.keys(ck.model).length > 0);
    assert.deepEqual(Object.keys(ck.ema!).sort(), Object.keys(ck.model).sort());
    assert.ok(Object.keys(ck.optimizer!).length > 0);
    assert.ok(ck.rng && ck.rng.counter > 0);
    assert.equal((ck.config as { lossType: string }).lossType, "stablevm");
    // The sample plot is a real PNG.
    assert.ok(r.samplePlot.endsWith("samples/samples-step-000012.png"));
    const png = await decodePng(await Deno.readFile(r.samplePlot));
    assert.ok(png.width > 100 && png.height > 100);

    // Resume from the run directory and train to step 17.
    const r2 = await main(["--resume", r.runDir, "--max-train-steps", "17", ...QUICK]);
    assert.ok(r2);
    assert.equal(r2.steps, 17);
    const m2 = (await readMetrics(r.metrics)).filter((x) => "training/loss_flow" in x);
    assert.deepEqual(m2.map((x) => x.step), [5, 10, 12, 15, 17]);
    const ck2 = await loadCheckpoint(r2.checkpoint);
    assert.equal(ck2.step, 17);
    // The optimizer continued (Adam's step count) rather than restarting.
    assert.equal(ck2.extra?.optimizerStep, 17);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:stablevm --loss-type si trains on a labelled .npz from --data-dir", async () => {
  const out = await Deno.makeTempDir({ prefix: "stablevm-si-" });
  try {
    const n = 60;
    const x = new Float32Array(n * 3).map((_, i) => Math.sin(i));
    const labels = new Int32Array(n).map((_, i) => i % 3);
    await Deno.writeFile(
      `${out}/data.npz`,
      encodeNpz({
        x: { data: x, shape: [n, 3] },
        labels: { data: labels, shape: [n], dtype: "<i8" },
      }),
    );
    const r = await main([
      "--loss_type=si",
      "--data_dir",
      out,
      "--max-train-steps",
      "3",
      "--batch-size",
      "16",
      "--output-dir",
      out,
      ...QUICK,
    ]);
    assert.ok(r);
    assert.equal(r.fisher, null);
    assert.ok(Number.isFinite(r.finalLoss));
    const cfg = JSON.parse(await Deno.readTextFile(`${r.runDir}/config.json`));
    assert.equal(cfg.loss_type, "si");
    assert.equal(cfg.num_classes, 3);
    // A dataset without labels is refused before training.
    await Deno.writeFile(`${out}/nolabels.npz`, encodeNpz({ x: { data: x, shape: [n, 3] } }));
    await assert.rejects(
      () => main(["--data-dir", `${out}/nolabels.npz`, "--output-dir", out, ...QUICK]),
      /has no "labels" array: the class-conditional objective needs one/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:stablevm flags: seed spellings parse, bad values give the promised errors", () => {
  const c = parseTrainFlags([
    "--loss_type=stablevm",
    "--bank_capacity_per_class=64",
    "--prefill-bank-fully",
    "--proj-weight-schedule=sigmoid",
    "--proj-k=20.0",
    "--proj-tau=0.7",
    "--use-proj-loss",
    "--model=dit-tiny",
    "--report-to=wandb",
    "--allow-tf32",
    "--mixed-precision=fp16",
    "--lr",
    "0.01",
  ])!;
  assert.equal(c.bankCapacityPerClass, 64);
  assert.equal(c.prefillBankFully, true);
  assert.equal(c.projWeightSchedule, "sigmoid");
  assert.equal(c.learningRate, 0.01);
  assert.throws(() => parseTrainFlags(["--loss-type", "ot"]), /"si", "stablevm"/);
  assert.throws(
    () => parseTrainFlags(["--bank-capacity-per-class", "0"]),
    /--bank-capacity-per-class to be an integer >= 1 but found 0/,
  );
  assert.throws(
    () => parseTrainFlags(["--proj-tau", "1.5"]),
    /--proj-tau to be a number in \(0, 1\)/,
  );
  assert.throws(
    () => parseTrainFlags(["--proj-weight-schedule", "linear"]),
    /"hard", "hard_high", "sigmoid", "cosine", "snr"/,
  );
  assert.throws(
    () => parseTrainFlags(["--path-type", "spiral"]),
    /--path-type "spiral": expected one of "linear", "cosine"/,
  );
  assert.throws(() => parseTrainFlags(["--model", "SiT-XL/2"]), /use --model dit-tiny/);
  assert.throws(() => parseTrainFlags(["--use-proj-loss"]), /add --model dit-tiny/);
  assert.throws(() => parseTrainFlags(["--proj-k", "5"], new Set()), /no effect without/);
  assert.throws(
    () => parseTrainFlags(["--model", "unet"]),
    /--model "unet": expected one of "adaln-mlp"/,
  );
  assert.throws(
    () => parseTrainFlags(["--bank-capcity", "3"]),
    /Unknown flag --bank-capcity/,
  );
});

Deno.test("train:stablevm: --use-proj-loss without a DiT, image data or an encoder is refused with the reason, before any run", async () => {
  const { main } = await import("../../tasks/train_stablevm.ts");
  const out = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => main(["--use-proj-loss", "--output-dir", out]),
      (e: Error) => e instanceof RangeError && /add --model dit-tiny/.test(e.message),
    );
    await assert.rejects(
      () => main(["--use-proj-loss", "--model", "dit-tiny", "--output-dir", out]),
      /--model dit-tiny needs image rows \(e.g. --data-dir fashion-mnist\) but the data are 2-D/,
    );
    assert.deepEqual([...Deno.readDirSync(out)], [], "nothing written");
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:stablevm --warmup-steps ramps the learning rate linearly, then holds it", async () => {
  const out = await Deno.makeTempDir({ prefix: "stablevm-warm-" });
  try {
    const r = (await main([
      ...QUICK,
      ...["--max-train-steps", "12", "--warmup-steps", "8", "--log-every", "2"],
      ...["--batch-size", "32", "--output-dir", out, "--exp-name", "w"],
    ]))!;
    const lr = (await readMetrics(r.metrics)).filter((x) => "training/lr" in x);
    // Step s trains at lr·min(1, s/8) (optim.linearWarmup of the step index s − 1).
    assert.deepEqual(lr.map((x) => x.step), [2, 4, 6, 8, 10, 12]);
    for (const x of lr) {
      assertClose([x["training/lr"] as number], [1e-3 * Math.min(1, (x.step as number) / 8)], {
        rtol: 1e-9,
      });
    }
    const cfg = JSON.parse(await Deno.readTextFile(`${out}/w/config.json`));
    assert.equal(cfg.warmup_steps, 8);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:stablevm --optimizer muon: Muon state for the matrices, AdamW's for the rest; resume continues it", async () => {
  const out = await Deno.makeTempDir({ prefix: "stablevm-muon-" });
  try {
    const common = ["--optimizer", "muon", "--muon-lr", "0.01", ...QUICK, "--batch-size", "32"];
    const where = ["--checkpoint-every", "2", "--output-dir", out];
    const a = (await main([...common, ...where, "--max-train-steps", "4", "--exp-name", "a"]))!;
    await main([...common, ...where, "--max-train-steps", "2", "--exp-name", "b"]);
    const b = (await main(["--resume", `${out}/b`, "--max-train-steps", "4"]))!;
    const cfg = JSON.parse(await Deno.readTextFile(`${out}/a/config.json`));
    assert.deepEqual([cfg.optimizer, cfg.muon_lr], ["muon", 0.01]);
    const ca = await loadCheckpoint(a.checkpoint), cb = await loadCheckpoint(b.checkpoint);
    const names = Object.keys(ca.model), keys = Object.keys(ca.optimizer!);
    // Muon's rule: hidden weight matrices; embedding tables, biases and norms go to AdamW.
    names.forEach((n, i) => {
      const matrix = ca.model[n]!.shape.length === 2 && !n.includes("embedding");
      assert.equal(keys.includes(`momentum_buffer.${i}`), matrix, n);
      assert.equal(keys.includes(`exp_avg.${i}`), !matrix, n);
    });
    assert.ok(keys.some((k) => k.startsWith("momentum_buffer.")));
    // The resumed run's optimizer state has the same slots, and the same step count.
    assert.deepEqual(Object.keys(cb.optimizer!).sort(), [...keys].sort());
    assert.equal(cb.step, 4);
    await assert.rejects(
      main(["--muon-lr", "0.01", "--output-dir", out]),
      /--muon-lr is Muon's learning rate: use it with --optimizer muon/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
