/**
 * The flow-matching tasks in shortened form: `train:cfm` (files, metric names, the first
 * logged loss against a host recomputation, bit-identical resume on the CPU backend),
 * `sample` (PNG size, NPZ contents against a one-step Euler recomputation, errors) and
 * `eval` (printed JSON, eval.jsonl, metric validation).
 */
import { strict as assert } from "node:assert";
import {
  buildCfmModel as buildModel,
  cfmModelFromCheckpoint,
  decodePng,
  Generator,
  getBackend,
  loadCheckpoint,
  loadNpz,
  moons,
  nn,
  parseConfigFile,
  readCfmCheckpoint,
  readMetrics,
  referenceData,
  sampleCfmModel,
  sampleToy,
  saveCheckpoint,
  setBackend,
  tensor,
  zeros,
} from "../../mod.ts";
import { main as trainMain } from "../../tasks/train_cfm.ts";
import { main as sampleMain } from "../../tasks/sample.ts";
import { main as evalMain } from "../../tasks/eval.ts";
import { saveTinyDit } from "../_image_scoring.ts";

const TINY = ["--batch-size", "32", "--hidden", "16", "--depth", "2", "--sample-steps", "2"];

/**
 * L1 row-marginal error Σ_i |Σ_j π_ij − 1/n| of a plain f64 log-domain Sinkhorn (uniform
 * marginals, `iters` row-then-column updates) on the squared distances of n×2 points a, b.
 */
function sinkhornRowErrorF64(
  a: Float32Array,
  b: Float32Array,
  n: number,
  reg: number,
  iters: number,
): number {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      c[i * n + j] = (a[2 * i]! - b[2 * j]!) ** 2 + (a[2 * i + 1]! - b[2 * j + 1]!) ** 2;
    }
  }
  const f = new Float64Array(n), g = new Float64Array(n);
  const lse = (xs: number[]) => {
    const mx = Math.max(...xs);
    return mx + Math.log(xs.reduce((s, x) => s + Math.exp(x - mx), 0));
  };
  for (let it = 0; it < iters; it++) {
    for (let i = 0; i < n; i++) {
      f[i] = -Math.log(n) - lse(Array.from({ length: n }, (_, j) => -c[i * n + j]! / reg + g[j]!));
    }
    for (let j = 0; j < n; j++) {
      g[j] = -Math.log(n) - lse(Array.from({ length: n }, (_, i) => -c[i * n + j]! / reg + f[i]!));
    }
  }
  let err = 0;
  for (let i = 0; i < n; i++) {
    let row = 0;
    for (let j = 0; j < n; j++) row += Math.exp(-c[i * n + j]! / reg + f[i]! + g[j]!);
    err += Math.abs(row - 1 / n);
  }
  return err;
}

async function tmp(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "tasks-cfm-" });
}

/** Run `fn` with console.log captured; returns the captured lines. */
async function captureLog(fn: () => Promise<unknown>): Promise<string[]> {
  const lines: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => lines.push(a.map(String).join(" "));
  try {
    await fn();
  } finally {
    console.log = orig;
  }
  return lines;
}

/** Run on the CPU backend (bit-exact), restoring the previous backend afterwards. */
async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  try {
    return await fn();
  } finally {
    setBackend(prev);
  }
}

Deno.test("train:cfm main() writes config, metrics, checkpoints and samples; first loss matches a host recomputation", async () => {
  const out = await tmp();
  try {
    const r = await onCpu(() =>
      trainMain([
        "--dataset",
        "8gaussians",
        "--max-train-steps",
        "4",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--sample-every",
        "2",
        "--grad-clip",
        "0",
        "--output-dir",
        out,
        "--exp-name",
        "plain",
        ...TINY,
      ])
    );
    assert.ok(r);
    assert.equal(r.runDir, `${out}/plain`);
    assert.equal(r.steps, 4);
    const cfg = parseConfigFile(
      await Deno.readTextFile(`${out}/plain/config.json`),
    ) as Parameters<typeof buildModel>[0] & {
      task: string;
      ot: string;
      seed: number;
      dataset: string;
    };
    assert.equal(cfg.task, "train:cfm");
    assert.equal(cfg.dataset, "8gaussians");
    assert.equal(cfg.ot, "none");
    assert.equal(cfg.model, "velocity-mlp");
    const m = await readMetrics(r.metrics);
    assert.deepEqual(m.map((x) => x.step), [1, 2, 3, 4]);
    for (const x of m) {
      for (const k of ["training/loss_flow", "training/grad_norm", "training/lr"]) {
        assert.ok(Number.isFinite(x[k] as number) && (x[k] as number) > 0, `${k} at ${x.step}`);
      }
      assert.ok(!("training/ot_marginal_error" in x));
    }
    for (const f of ["step-000002.safetensors", "step-000004.safetensors", "last.safetensors"]) {
      assert.ok((await Deno.stat(`${out}/plain/checkpoints/${f}`)).isFile, f);
    }
    for (const s of ["step-000002.png", "step-000004.png"]) {
      const png = await decodePng(await Deno.readFile(`${out}/plain/samples/${s}`));
      assert.ok(png.width > 100 && png.height > 100, s);
    }
    const ck = await loadCheckpoint(r.checkpoint);
    assert.equal(ck.step, 4);
    assert.deepEqual(Object.keys(ck.ema!).sort(), Object.keys(ck.model).sort());
    assert.ok(Object.keys(ck.optimizer!).some((k) => k.startsWith("exp_avg")));
    assert.ok(ck.rng && ck.rng.counter > 0);
    assert.equal((ck.config as { task: string }).task, "train:cfm");
    assert.equal(ck.extra?.optimizerStep, 4);

    // Step 1's loss, recomputed with host loops from the same streams: x1 from the toy, then
    // x0 ~ N(0, I), t ~ U[0, 1) from the training generator (cfmLoss's draw order).
    const loss1 = await onCpu(async () => {
      const model = buildModel(cfg);
      const gen = new Generator(cfg.seed);
      const x1 = await sampleToy("8gaussians", 32, gen).data();
      const x0 = await gen.normal([32, 2]).data();
      const t = await gen.uniform([32]).data();
      const xt = new Float32Array(64);
      for (let i = 0; i < 64; i++) {
        const ti = t[Math.floor(i / 2)]!;
        xt[i] = (1 - ti) * x0[i]! + ti * x1[i]!;
      }
      const v = await model.forward(tensor(xt, [32, 2]), tensor(t)).data();
      let s = 0;
      for (let i = 0; i < 64; i++) s += (v[i]! - (x1[i]! - x0[i]!)) ** 2;
      model.dispose();
      return s / 64;
    });
    const got = m[0]!["training/loss_flow"] as number;
    assert.ok(Math.abs(got - loss1) <= 1e-4 * loss1, `logged ${got} vs recomputed ${loss1}`);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:cfm --ot (bare = argmax) logs the Sinkhorn marginal error", async () => {
  const out = await tmp();
  try {
    const r = await trainMain([
      "--dataset",
      "moons",
      "--ot",
      "--max-train-steps",
      "2",
      "--log-every",
      "1",
      "--output-dir",
      out,
      "--exp-name",
      "ot",
      ...TINY,
    ]);
    assert.ok(r);
    const cfg = JSON.parse(await Deno.readTextFile(`${r.runDir}/config.json`));
    assert.equal(cfg.ot, "argmax");
    assert.equal(cfg.ot_reg, 0.05); // config.json uses the seeds' snake_case keys
    assert.equal(cfg.ot_iters, 50);
    const m = await readMetrics(r.metrics);
    assert.equal(m.length, 2);
    // The bound comes from an independent f64 Sinkhorn with the same settings (reg 0.05 on
    // the raw squared distances, 50 iterations ending on the column update) on batches drawn
    // like the task's (32 moons points against 32 normals, 8 seeds): its L1 row-marginal
    // errors span [lo, hi] (about 0.2–0.5); the logged errors must lie in [lo/2, 2·hi]. A
    // column error (≈ 0 after the column update), a zero, or a converged plan's value fails.
    const ref: number[] = [];
    for (let s = 0; s < 8; s++) {
      const gen = new Generator(100 + s);
      const b = await moons(32, { generator: gen }).data(), a = await gen.normal([32, 2]).data();
      ref.push(sinkhornRowErrorF64(a, b, 32, 0.05, 50));
    }
    const lo = Math.min(...ref), hi = Math.max(...ref);
    for (const x of m) {
      const e = x["training/ot_marginal_error"] as number;
      assert.ok(e >= lo / 2 && e <= 2 * hi, `marginal error ${e} outside [${lo / 2}, ${2 * hi}]`);
      assert.ok(Number.isFinite(x["training/loss_flow"] as number));
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:cfm --resume continues bit-identically to an uninterrupted run (CPU backend)", async () => {
  const out = await tmp();
  try {
    await onCpu(async () => {
      const common = [
        "--dataset",
        "checkerboard",
        "--ot",
        "sample",
        "--log-every",
        "2",
        "--checkpoint-every",
        "3",
        "--output-dir",
        out,
        ...TINY,
      ];
      const a = await trainMain([...common, "--max-train-steps", "6", "--exp-name", "a"]);
      const b1 = await trainMain([...common, "--max-train-steps", "3", "--exp-name", "b"]);
      assert.equal(b1!.steps, 3);
      const b = await trainMain([
        "--resume",
        `${out}/b`,
        "--max-train-steps",
        "6",
        "--checkpoint-every",
        "3",
      ]);
      assert.equal(b!.steps, 6);
      const ca = await loadCheckpoint(a!.checkpoint), cb = await loadCheckpoint(b!.checkpoint);
      assert.equal(cb.step, 6);
      assert.deepEqual(cb.rng, ca.rng);
      for (const sec of ["model", "ema", "optimizer"] as const) {
        const ta = ca[sec]!, tb = cb[sec]!;
        assert.deepEqual(Object.keys(tb).sort(), Object.keys(ta).sort());
        for (const k of Object.keys(ta)) {
          assert.deepEqual(await tb[k]!.data(), await ta[k]!.data(), `${sec}.${k} differs`);
        }
      }
      // The resumed run appended to the same metrics file.
      const steps = (await readMetrics(`${out}/b/metrics.jsonl`)).map((x) => x.step);
      assert.deepEqual(steps, [2, 3, 4, 6]);
    });
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:cfm --optimizer muon keeps Muon state for the matrices, AdamW state for the rest, and resumes bit-identically (CPU)", async () => {
  const out = await tmp();
  try {
    await onCpu(async () => {
      const common = ["--dataset", "moons", "--optimizer", "muon", "--muon-lr", "0.01"];
      const more = ["--log-every", "2", "--checkpoint-every", "2", "--output-dir", out, ...TINY];
      const a = await trainMain([...common, ...more, "--max-train-steps", "4", "--exp-name", "a"]);
      await trainMain([...common, ...more, "--max-train-steps", "2", "--exp-name", "b"]);
      const b = await trainMain(["--resume", `${out}/b`, "--max-train-steps", "4"]);
      const ca = await loadCheckpoint(a!.checkpoint), cb = await loadCheckpoint(b!.checkpoint);
      const cfg = JSON.parse(await Deno.readTextFile(`${out}/a/config.json`));
      assert.deepEqual([cfg.optimizer, cfg.muon_lr ?? cfg.muonLr], ["muon", 0.01]);
      // Slot per parameter: momentum for rank-2 weights, the AdamW moments for biases.
      const names = Object.keys(ca.model);
      const keys = Object.keys(ca.optimizer!);
      names.forEach((n, i) => {
        const matrix = ca.model[n]!.shape.length === 2;
        assert.equal(keys.includes(`momentum_buffer.${i}`), matrix, n);
        assert.equal(keys.includes(`exp_avg.${i}`), !matrix, n);
      });
      assert.ok(keys.some((k) => k.startsWith("momentum_buffer.")));
      for (const sec of ["model", "ema", "optimizer"] as const) {
        const ta = ca[sec]!, tb = cb[sec]!;
        assert.deepEqual(Object.keys(tb).sort(), Object.keys(ta).sort());
        for (const k of Object.keys(ta)) {
          assert.deepEqual(await tb[k]!.data(), await ta[k]!.data(), `${sec}.${k} differs`);
        }
      }
      await assert.rejects(
        trainMain(["--dataset", "moons", "--muon-lr", "0.01", "--output-dir", out]),
        /--muon-lr .*--optimizer muon/,
      );
    });
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("sample writes a 2-D scatter PNG and an NPZ equal to a one-step Euler recomputation", async () => {
  const out = await tmp();
  try {
    const r = await trainMain([
      "--dataset",
      "8gaussians",
      "--max-train-steps",
      "2",
      "--output-dir",
      out,
      "--exp-name",
      "s",
      ...TINY,
    ]);
    const png = await sampleMain([
      "--checkpoint",
      r!.runDir,
      "--num-samples",
      "50",
      "--num-steps",
      "3",
      "--sampler",
      "midpoint",
      "--out",
      `${out}/x.png`,
    ]);
    assert.equal(png!.nfe, 6); // midpoint: 2 evaluations per step
    const img = await decodePng(await Deno.readFile(`${out}/x.png`));
    assert.equal(img.width, 320);
    assert.equal(img.height, 320);

    const lines = await captureLog(() =>
      sampleMain([
        "--checkpoint",
        r!.checkpoint,
        "--num-samples",
        "40",
        "--num-steps",
        "1",
        "--seed",
        "7",
        "--out",
        `${out}/x.npz`,
      ])
    );
    assert.match(lines.join("\n"), /NFE 1 -> .*x\.npz/);
    const bytes = await Deno.readFile(`${out}/x.npz`);
    assert.deepEqual([...bytes.subarray(0, 4)], [0x50, 0x4b, 0x03, 0x04]); // a zip, as np.savez
    const { x } = await loadNpz(`${out}/x.npz`);
    assert.equal(x!.dtype, "<f4");
    assert.deepEqual(x!.shape, [40, 2]);
    // One Euler step from t = 0 with the EMA weights: x = x0 + v(x0, 0).
    const ck = await loadCheckpoint(r!.checkpoint);
    const net = new nn.VelocityMLP({ dim: 2, hidden: 16, depth: 2 });
    net.loadStateDict(ck.ema!);
    const x0 = new Generator(7).normal([40, 2]);
    const v = await net.forward(x0, zeros([40])).data();
    const x0h = await x0.data();
    const want = Float32Array.from(x0h, (a, i) => a + v[i]!);
    for (let i = 0; i < want.length; i++) {
      assert.ok(Math.abs(x!.data[i]! - want[i]!) <= 1e-4 * (1 + Math.abs(want[i]!)), `x[${i}]`);
    }
    net.dispose();
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("sample writes images as uint8 [N, H, W, 3] arr_0 and a class-grid PNG", async () => {
  const out = await tmp();
  try {
    // A tiny class-conditional DiT checkpoint written directly (no dataset needed).
    await saveTinyDit(`${out}/dit.safetensors`);
    const r = await sampleMain([
      "--checkpoint",
      `${out}/dit.safetensors`,
      "--class-grid",
      "--samples-per-class",
      "2",
      "--cfg-scale",
      "2",
      "--num-steps",
      "1",
      "--out",
      `${out}/g.npz`,
    ]);
    assert.equal(r!.n, 20);
    assert.equal(r!.nfe, 1);
    const { arr_0 } = await loadNpz(`${out}/g.npz`);
    assert.equal(arr_0!.dtype, "|u1");
    assert.deepEqual(arr_0!.shape, [20, 28, 28, 3]);
    // Gray images repeated to RGB.
    for (let i = 0; i < arr_0!.data.length; i += 3) {
      assert.ok(arr_0!.data[i] === arr_0!.data[i + 1] && arr_0!.data[i] === arr_0!.data[i + 2]);
    }
    await sampleMain([
      "--checkpoint",
      `${out}/dit.safetensors`,
      "--class-grid",
      "--samples-per-class",
      "2",
      "--num-steps",
      "1",
      "--out",
      `${out}/g.png`,
    ]);
    const img = await decodePng(await Deno.readFile(`${out}/g.png`));
    // 2 columns and 10 rows of 28-pixel tiles with 2-pixel padding, upscaled 3× by default,
    // the class names on a white margin to the left (the longest, "T-shirt/top", 11 glyphs
    // of 6 pixels less 1, plus 8).
    const margin = 11 * 6 - 1 + 8;
    assert.equal(img.width, margin + 3 * (2 * 28 + 3 * 2));
    assert.equal(img.height, 3 * (10 * 28 + 11 * 2));
    // The margin has dark text pixels in the first row's band and none above it.
    const dark = (y0: number, y1: number) => {
      let k = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = 0; x < margin; x++) {
          k += img.data[(y * img.width + x) * img.channels]! < 128 ? 1 : 0;
        }
      }
      return k;
    };
    assert.ok(dark(0, 3 * 30) > 20, "class name drawn");
    assert.equal(dark(0, 3 * 1), 0);
    const raw = await sampleMain([
      ...["--checkpoint", `${out}/dit.safetensors`, "--class-grid", "--samples-per-class"],
      ...["2", "--num-steps", "1", "--upscale", "1", "--out", `${out}/raw.png`],
    ]);
    // A class-conditional image model is guided (scale 3) unless --cfg-scale says otherwise.
    assert.equal(raw!.cfgScale, 3);
    assert.equal(r!.cfgScale, 2);
    const img1 = await decodePng(await Deno.readFile(`${out}/raw.png`));
    assert.equal(img1.width, 2 * 28 + 3 * 2);
    assert.equal(img1.height, 10 * 28 + 11 * 2);
    // --mode sde: Euler–Maruyama (a different sampler, so different pixels from the same noise).
    const sde = await sampleMain([
      ...["--checkpoint", `${out}/dit.safetensors`, "--class-grid", "--samples-per-class"],
      ...["2", "--num-steps", "4", "--mode", "sde", "--out", `${out}/sde.npz`],
    ]);
    assert.equal(sde!.sampler, "euler-maruyama");
    await assert.rejects(
      sampleMain([
        ...["--checkpoint", `${out}/dit.safetensors`, "--mode", "sde", "--sampler", "heun"],
        ...["--out", `${out}/x.png`],
      ]),
      /--mode sde samples with Euler–Maruyama, but --sampler heun/,
    );
    await assert.rejects(
      sampleMain([
        "--checkpoint",
        `${out}/dit.safetensors`,
        "--upscale",
        "2",
        "--out",
        `${out}/x.png`,
      ]),
      /--upscale scales a --class-grid PNG/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("sample and eval reject missing, garbage and foreign checkpoints naming the path", async () => {
  const out = await tmp();
  try {
    await assert.rejects(
      sampleMain(["--checkpoint", `${out}/nope.safetensors`, "--out", `${out}/a.png`]),
      (e: Error) =>
        e instanceof RangeError && e.message.includes(`${out}/nope.safetensors`) &&
        /no such file/.test(e.message),
    );
    await Deno.writeTextFile(`${out}/junk.safetensors`, "this is not a checkpoint");
    await assert.rejects(
      evalMain(["--checkpoint", `${out}/junk.safetensors`]),
      (e: Error) =>
        e instanceof RangeError && e.message.includes(`${out}/junk.safetensors`) &&
        /not a readable checkpoint/.test(e.message),
    );
    await saveCheckpoint(`${out}/other.safetensors`, { model: { w: tensor([1]) }, step: 0 });
    await assert.rejects(
      sampleMain(["--checkpoint", `${out}/other.safetensors`, "--out", `${out}/a.png`]),
      /other\.safetensors: not a train:cfm checkpoint/,
    );
    await assert.rejects(sampleMain(["--out", "x.png"]), /Expected --checkpoint/);
    await assert.rejects(
      sampleMain(["--checkpoint", out, "--out", `${out}/a.jpg`]),
      /Expected --out to end in \.png or \.npz/,
    );
    // Nothing was written.
    const names = [];
    for await (const e of Deno.readDir(out)) names.push(e.name);
    assert.deepEqual(names.sort(), ["junk.safetensors", "other.safetensors"]);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("eval prints one JSON record with the requested metrics and appends it to eval.jsonl", async () => {
  const out = await tmp();
  try {
    const r = await trainMain([
      "--dataset",
      "moons",
      "--max-train-steps",
      "2",
      "--output-dir",
      out,
      "--exp-name",
      "e",
      ...TINY,
    ]);
    const lines = await captureLog(() =>
      evalMain([
        "--checkpoint",
        r!.runDir,
        "--metrics",
        "w2,kl,mmd,straightness,nfe",
        "--num-samples",
        "64",
        "--num-steps",
        "5",
        "--sampler",
        "heun",
      ])
    );
    assert.equal(lines.length, 1);
    const rec = JSON.parse(lines[0]!);
    assert.equal(rec.dataset, "moons");
    assert.equal(rec.step, 2);
    assert.equal(rec.nfe, 10); // heun: 2 evaluations per step
    for (const k of ["w2", "kl", "mmd", "straightness"]) {
      assert.ok(Number.isFinite(rec[k]), `${k} = ${rec[k]}`);
    }
    assert.ok(rec.kl >= 0 && rec.straightness >= 0);
    // W2 against bounds an independent computation sets on the same samples (regenerated here
    // with eval's seed and sampler) and eval's reference data: ‖mean(x) − mean(y)‖ ≤ W2 (any
    // coupling preserves the means) and W2 ≤ the cost of pairing row i with row i.
    {
      const ck = await readCfmCheckpoint(r!.runDir);
      const g = await sampleCfmModel(cfmModelFromCheckpoint(ck, true), [2], {
        n: 64,
        sampler: "heun",
        steps: 5,
        seed: rec.seed,
      });
      const y = await referenceData("moons", 64, rec.seed);
      let mx = 0, my = 0, nx = 0, ny = 0, ident = 0;
      for (let i = 0; i < 64; i++) {
        mx += g.x[2 * i]! / 64, nx += g.x[2 * i + 1]! / 64;
        my += y[2 * i]! / 64, ny += y[2 * i + 1]! / 64;
        ident += ((g.x[2 * i]! - y[2 * i]!) ** 2 + (g.x[2 * i + 1]! - y[2 * i + 1]!) ** 2) / 64;
      }
      const lower = Math.hypot(mx - my, nx - ny), upper = Math.sqrt(ident);
      assert.ok(
        rec.w2 >= lower - 1e-4 && rec.w2 <= upper + 1e-4,
        `${lower} ≤ ${rec.w2} ≤ ${upper}`,
      );
      assert.ok(upper > lower + 1e-3); // the bounds constrain
    }
    // The printed line and eval.jsonl use the seeds' snake_case keys.
    assert.ok(rec.length_ratio >= 1 - 1e-6);
    assert.equal(rec.num_samples, 64);
    assert.equal(rec.lengthRatio, undefined);
    const saved = (await Deno.readTextFile(`${r!.runDir}/eval.jsonl`)).trim().split("\n");
    assert.deepEqual(JSON.parse(saved[saved.length - 1]!), rec);

    const only = await evalMain([
      "--checkpoint",
      r!.checkpoint,
      "--metrics",
      "nfe",
      "--num-samples",
      "8",
      "--sampler",
      "rk4",
      "--num-steps",
      "2",
    ]);
    assert.equal(only!.nfe, 8);
    assert.ok(!("w2" in only!) && !("kl" in only!));
    await assert.rejects(
      evalMain(["--checkpoint", r!.runDir, "--metrics", "w2,fid"]),
      /Unknown metric "fid" in --metrics: expected .*w2, kl, mmd, straightness, nfe/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:cfm, sample and eval reject unknown and malformed flags before writing anything", async () => {
  const out = await tmp();
  try {
    await assert.rejects(
      trainMain(["--datset", "moons", "--output-dir", out]),
      /Unknown flag --datset for train:cfm; did you mean --dataset/,
    );
    await assert.rejects(
      trainMain(["--ot", "greedy", "--output-dir", out]),
      /Expected --ot to be one of "none", "argmax", "sample", "exact" but found "greedy"/,
    );
    await assert.rejects(
      trainMain(["--max-train-steps", "1.5", "--output-dir", out]),
      /Expected --max-train-steps to be an integer >= 1 but found "1.5"/,
    );
    await assert.rejects(
      trainMain(["--dataset", "moons", "--model", "dit-tiny", "--output-dir", out]),
      /dit-tiny needs images/,
    );
    await assert.rejects(
      sampleMain(["--checkpoint", "x", "--sampler", "rk45"]),
      /Expected --sampler to be one of .*"dopri5"/,
    );
    await assert.rejects(
      evalMain(["--checkpoint", "x", "--num-samples", "many"]),
      /Expected --num-samples to be an integer >= 2 but found "many"/,
    );
    let n = 0;
    for await (const _ of Deno.readDir(out)) n++;
    assert.equal(n, 0);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train:cfm diverging to NaN exits with status 3, one line naming the step, and keeps the last finite checkpoint", async () => {
  const out = await tmp();
  try {
    const task = new URL("../../tasks/train_cfm.ts", import.meta.url).pathname;
    const { code, stderr } = await new Deno.Command("deno", {
      args: [
        "run",
        "--allow-read=.,/tmp",
        "--allow-write=/tmp",
        "--allow-env=FLOWGPU_BACKEND",
        task,
        "--dataset=moons",
        "--lr=1e30", // Adam moves every weight by ~1e30 in the first step: the loss overflows
        "--max-train-steps=20",
        "--log-every=5",
        "--checkpoint-every=1",
        `--output-dir=${out}`,
        "--exp-name=nan",
        ...TINY,
      ],
      env: { FLOWGPU_BACKEND: "cpu", XDG_RUNTIME_DIR: "/tmp" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 3, err);
    assert.match(
      err,
      /^train:cfm: training\/loss_flow became (NaN|Infinity) at step 2; .*step-000001\.safetensors\)$/m,
    );
    assert.ok(!/^\s+at /m.test(err), "no stack trace");
    const names = (await Array.fromAsync(Deno.readDir(`${out}/nan/checkpoints`))).map((e) =>
      e.name
    );
    assert.deepEqual(names.sort(), ["last.safetensors", "step-000001.safetensors"]);
    assert.equal((await loadCheckpoint(`${out}/nan/checkpoints/last.safetensors`)).step, 1);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
