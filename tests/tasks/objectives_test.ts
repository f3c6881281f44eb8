/**
 * Each objective trains: a few hundred steps through its task beat the same-seed untrained
 * model by a clear margin on the objective's own metric (exact W2 for `train:cfm` on a toy,
 * Fisher divergence against the exact field for `gmm` and `train:stablevm`); OT coupling
 * really re-pairs noise and data; and every trainer resumes bit-identically on the CPU
 * backend (train:cfm has its own test in tasks_cfm_test.ts).
 */
import { strict as assert } from "node:assert";
import {
  buildCfmModel,
  cfmData,
  cfmTrainer,
  createRun,
  embeddedRing,
  evaluateCfm,
  fisherDivergence,
  fit,
  GaussianMixture,
  Generator,
  getBackend,
  gmmToyTrainer,
  loadCheckpoint,
  openRun,
  readCfmCheckpoint,
  readMetrics,
  setBackend,
  stableVmTrainer,
  type StepContext,
  type Tensor,
} from "../../mod.ts";
import { main as cfmMain, parseTrainCfmFlags } from "../../tasks/train_cfm.ts";
import { main as gmmMain } from "../../tasks/gmm.ts";
import { main as svMain, parseTrainFlags } from "../../tasks/train_stablevm.ts";

const mean = (v: { value: number }[]) => v.reduce((a, p) => a + p.value, 0) / v.length;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "objectives-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  try {
    return await fn();
  } finally {
    setBackend(prev);
  }
}

Deno.test("train:cfm: 300 steps on 8gaussians at least halve the untrained model's W2", async () => {
  await withDir(async (out) => {
    const r = await cfmMain([
      "--dataset=8gaussians",
      "--max-train-steps=300",
      "--batch-size=128",
      "--hidden=64",
      "--depth=2",
      "--log-every=100",
      "--sample-steps=4",
      `--output-dir=${out}`,
    ]);
    const ck = await readCfmCheckpoint(r!.runDir);
    const o = {
      metrics: ["w2"] as const,
      numSamples: 500,
      sampler: "euler" as const,
      numSteps: 20,
      seed: 0,
    };
    const trained = (await evaluateCfm(ck, o)).w2!;
    const model = buildCfmModel(ck.config); // same seed, no training
    const untrained =
      (await evaluateCfm({ ...ck, checkpoint: { model: model.stateDict(), step: 0 } }, o))
        .w2!;
    model.dispose();
    assert.ok(trained < 0.5 * untrained, `W2 trained ${trained} vs untrained ${untrained}`);
    const m = await readMetrics(r!.metrics);
    const loss = m.map((x) => x["training/loss_flow"] as number);
    assert.ok(loss[loss.length - 1]! < loss[0]!, `loss ${loss}`);
  });
});

Deno.test("OT-CFM: the coupling re-pairs noise and data and lowers the pairs' transport cost", async () => {
  for (const ot of ["exact", "argmax"] as const) {
    const cfg = parseTrainCfmFlags(["--dataset", "moons", "--ot", ot, "--batch-size", "64"])!;
    const gen = new Generator(0);
    const trainer = cfmTrainer(cfg, await cfmData("moons", 0), gen);
    const tracked: Tensor[] = [];
    const ctx = {
      step: 1,
      micro: 0,
      generator: gen,
      track: <T extends Tensor | undefined>(t: T) => (t && tracked.push(t), t),
    } as unknown as StepContext<typeof trainer.model>;
    const metrics = await trainer.prepare!(ctx);
    const b = trainer.batch!;
    const idx = b.coupling!.sourceIndex;
    const x0 = await b.coupling!.x0.data(), x1 = await b.coupling!.x1.data();
    // The noise as drawn: the coupled x0 row k is noise row idx[k].
    const raw = new Float32Array(x0.length);
    idx.forEach((src, k) => raw.set(x0.subarray(2 * k, 2 * k + 2), 2 * src));
    const cost = (a: Float32Array, pairs: (k: number) => number) =>
      Array.from({ length: 64 }, (_, k) => {
        const i = pairs(k);
        return (a[2 * i]! - x1[2 * k]!) ** 2 + (a[2 * i + 1]! - x1[2 * k + 1]!) ** 2;
      }).reduce((s, v) => s + v, 0) / 64;
    const coupled = cost(x0, (k) => k), independent = cost(raw, (k) => k);
    assert.ok(idx.some((v, k) => v !== k), `${ot}: the pairs were not changed`);
    if (ot === "exact") {
      assert.deepEqual([...idx].sort((p, q) => p - q), Array.from({ length: 64 }, (_, k) => k));
    } else {
      const err = (metrics as Record<string, number>)["training/ot_marginal_error"]!;
      assert.ok(Number.isFinite(err) && err >= 0);
    }
    assert.ok(coupled < 0.6 * independent, `${ot}: cost ${coupled} vs independent ${independent}`);
    tracked.forEach((t) => t.dispose());
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema!.dispose();
  }
});

Deno.test("gmm: 300 steps of stable_vm cut the Fisher divergence of the untrained model at least 4×", async () => {
  await withDir(async (out) => {
    const common = { dim: 2, numModes: 8, batchSize: 128, refBatchSize: 256, learningRate: 3e-3 };
    const r = await gmmMain([
      "--exp=stable_vm",
      "--max-train-steps=300",
      `--learning-rate=${common.learningRate}`,
      "--eval-every=300",
      "--fisher-samples=1000",
      "--no-plot-variance",
      `--dim=${common.dim}`,
      `--num-modes=${common.numModes}`,
      `--batch-size=${common.batchSize}`,
      `--ref-batch-size=${common.refBatchSize}`,
      `--output-dir=${out}`,
    ]);
    const trained = mean(r!.fisher[r!.fisher.length - 1]!.values);
    const gmm = GaussianMixture.reference({ dim: 2, numModes: 8, seed: 0 });
    const base = gmmToyTrainer({
      exp: "stable_vm",
      vectorField: "velocity",
      emaDecay: 0.999,
      seed: 0,
      ...common,
    }, gmm);
    base.model.eval();
    const untrained = mean(
      await fisherDivergence((x, t) => base.model.forward(x, t), gmm, {
        generator: new Generator(777),
        n: 1000,
        kind: "velocity",
      }),
    );
    base.model.dispose();
    base.optimizer.dispose();
    base.ema!.dispose();
    assert.ok(trained < 0.25 * untrained, `Fisher trained ${trained} vs untrained ${untrained}`);
    const m = await readMetrics(`${r!.runDir}/metrics.jsonl`);
    assert.deepEqual(m.filter((x) => "training/loss_flow" in x).map((x) => x.step), [
      50,
      100,
      150,
      200,
      250,
      300,
    ]);
    assert.ok(!m.some((x) => "training/loss" in x), "the old metric name is gone");
    assert.equal(m.find((x) => "eval/fisher_divergence" in x)!["eval/fisher_divergence"], trained);
  });
});

Deno.test("train:stablevm: 300 steps cut the untrained model's Fisher divergence at least 10×", async () => {
  await withDir(async (out) => {
    const argv = [
      "--max-train-steps=300",
      "--batch-size=128",
      "--fisher-samples=1000",
      "--sample-steps=4",
      "--log-every=100",
      `--output-dir=${out}`,
    ];
    const r = await svMain(argv);
    const c = parseTrainFlags(argv)!;
    const data = embeddedRing(c.seed);
    const base = stableVmTrainer(c, data);
    base.model.eval();
    const untrained = mean(
      await fisherDivergence((x, t, y) => base.model.forward(x, t, y), data.gmm!, {
        generator: new Generator(c.seed + 99),
        n: 1000,
        conditional: true,
      }),
    );
    base.model.dispose();
    base.optimizer.dispose();
    base.ema!.dispose();
    assert.ok(
      r!.fisher! < 0.1 * untrained,
      `Fisher trained ${r!.fisher} vs untrained ${untrained}`,
    );
  });
});

Deno.test("train:stablevm --resume is bit-identical (bank restored from state.bank.* tensors) and keeps the run's schedule", async () => {
  await withDir((out) =>
    onCpu(async () => {
      const q = [
        "--batch-size=32",
        "--hidden=8",
        "--blocks=1",
        "--fisher-samples=32",
        "--sample-steps=2",
      ];
      const sched = ["--log-every=3", "--checkpoint-every=4", `--output-dir=${out}`];
      const a = await svMain([...q, ...sched, "--max-train-steps=10", "--exp-name=a"]);
      await svMain([...q, ...sched, "--max-train-steps=4", "--exp-name=b"]);
      // Only a new budget: the cadence (log 3, checkpoint 4) comes from config.json.
      const b = await svMain(["--resume", `${out}/b`, "--max-train-steps=10"]);
      const ca = await loadCheckpoint(a!.checkpoint), cb = await loadCheckpoint(b!.checkpoint);
      assert.deepEqual(Object.keys(cb.state!).sort(), ["bank.counts", "bank.data", "bank.heads"]);
      assert.ok(!("bank" in (cb.extra ?? {})), "no base64 bank in the metadata");
      for (const sec of ["model", "ema", "optimizer", "state"] as const) {
        for (const [k, t] of Object.entries(ca[sec]!)) {
          assert.deepEqual(
            await (cb[sec]![k] as Tensor).data(),
            await (t as Tensor).data(),
            `${sec}.${k}`,
          );
        }
      }
      assert.deepEqual(cb.rng, ca.rng);
      const steps = (await readMetrics(`${out}/b/metrics.jsonl`)).filter((x) =>
        "training/loss_flow" in x
      )
        .map((x) => x.step);
      assert.deepEqual(steps, [3, 4, 6, 9, 10]);
      const ck = (await Array.fromAsync(Deno.readDir(`${out}/b/checkpoints`))).map((e) => e.name)
        .sort();
      assert.deepEqual(ck, [
        "last.safetensors",
        "step-000004.safetensors",
        "step-000008.safetensors",
        "step-000010.safetensors",
      ]);
    })
  );
});

Deno.test("gmm trainer: fit resumes bit-identically with the StableVM bank as trainer state (CPU)", async () => {
  await withDir((out) =>
    onCpu(async () => {
      const cfg = {
        exp: "stable_vm_efficient" as const,
        vectorField: "score" as const,
        batchSize: 16,
        refBatchSize: 32,
        learningRate: 1e-3,
        emaDecay: 0.99,
        seed: 3,
      };
      const gmm = GaussianMixture.reference({ dim: 3, numModes: 4, seed: 3 });
      const go = async (name: string, maxSteps: number, resume = false) => {
        const t = gmmToyTrainer(cfg, gmm);
        const run = resume
          ? openRun(`${out}/${name}`)
          : createRun("gmm", { outputDir: out, expName: name, config: cfg });
        try {
          return await fit(t, {
            run: await run,
            maxSteps,
            checkpointEvery: 3,
            logEvery: 2,
            gradClip: 1,
            generator: new Generator(4),
            resume,
            progress: false,
            log: () => {},
          });
        } finally {
          t.model.dispose();
          t.optimizer.dispose();
          t.ema!.dispose();
        }
      };
      const a = await go("a", 7);
      await go("b", 3);
      const b = await go("b", 7, true);
      const ca = await loadCheckpoint(a.checkpoint!), cb = await loadCheckpoint(b.checkpoint!);
      for (const sec of ["model", "ema", "optimizer", "state"] as const) {
        assert.ok(Object.keys(ca[sec]!).length > 0, sec);
        for (const [k, t] of Object.entries(ca[sec]!)) {
          assert.deepEqual(
            await (cb[sec]![k] as Tensor).data(),
            await (t as Tensor).data(),
            `${sec}.${k}`,
          );
        }
      }
      // The dropout stream of the AdaLN-MLP is one of the saved streams.
      assert.ok(Object.keys(cb.extra!.streams as object).length >= 1);
      assert.deepEqual(cb.extra!.streams, ca.extra!.streams);
    })
  );
});
