/**
 * Tests for lib/data/gmm.ts (exact mixture fields) and lib/metrics/fisher.ts, checked
 * against plain-JS Monte Carlo and closed forms written independently here.
 */
import { strict as assert } from "node:assert";
import {
  fisherDivergence,
  full,
  GaussianMixture,
  Generator,
  nn,
  openRun,
  type Tensor,
  tensor,
  varianceCurves,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

// A small seeded PRNG for the independent Monte-Carlo estimates (mulberry32 + Box–Muller).
function rng(seed: number) {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const n = () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return { u, n };
}

function drawMixture(g: GaussianMixture, r: ReturnType<typeof rng>, only?: number) {
  const d = g.dim;
  let k = only ?? 0;
  if (only === undefined) {
    let c = r.u(), acc = 0;
    for (k = 0; k < g.numModes - 1; k++) {
      acc += g.weights[k]!;
      if (c < acc) break;
    }
    c = 0;
  }
  return Array.from(
    { length: d },
    (_, j) => g.means[k * d + j]! + Math.sqrt(g.variances[k * d + j]!) * r.n(),
  );
}

// Self-normalised importance estimate of E[x1 − x0 | x_t = x]: draw x1 from the data,
// set x0 = (x − t·x1)/(1−t), weight by N(x; t·x1, (1−t)² I). Also returns the
// delta-method standard error √(Σ w_i² (f_i − est)²)/Σ w_i per coordinate.
function mcVelocity(g: GaussianMixture, x: number[], t: number, draws: number, only?: number) {
  const r = rng(1234 + Math.round(t * 100) + (only ?? 99) * 7), d = g.dim;
  const ws: number[] = [], fs: number[][] = [];
  for (let i = 0; i < draws; i++) {
    const x1 = drawMixture(g, r, only);
    let q = 0;
    for (let j = 0; j < d; j++) q += (x[j]! - t * x1[j]!) ** 2;
    ws.push(Math.exp(-q / (2 * (1 - t) ** 2)));
    fs.push(x1.map((v, j) => v - (x[j]! - t * v) / (1 - t)));
  }
  const wsum = ws.reduce((a, b) => a + b, 0);
  const est = Array.from(
    { length: d },
    (_, j) => ws.reduce((a, w, i) => a + w * fs[i]![j]!, 0) / wsum,
  );
  const se = est.map((e, j) =>
    Math.sqrt(ws.reduce((a, w, i) => a + w * w * (fs[i]![j]! - e) ** 2, 0)) / wsum
  );
  return { est, se };
}

// log p_t(x) in plain JS: Σ_k π_k N(x; tμ_k, diag(t²σ²_k + (1−t)²)).
function logPt(g: GaussianMixture, x: number[], t: number): number {
  const d = g.dim;
  let p = 0;
  for (let k = 0; k < g.numModes; k++) {
    let lp = Math.log(g.weights[k]!);
    for (let j = 0; j < d; j++) {
      const s = t * t * g.variances[k * d + j]! + (1 - t) ** 2;
      lp += -0.5 * (Math.log(2 * Math.PI * s) + (x[j]! - t * g.means[k * d + j]!) ** 2 / s);
    }
    p += Math.exp(lp);
  }
  return Math.log(p);
}

const G = GaussianMixture.reference({ dim: 2, numModes: 3, seed: 5 });
const POINTS = [[0.1, -0.2], [0.6, 0.4], [-0.5, 0.3]];

Deno.test("GaussianMixture.velocity matches a Monte-Carlo estimate of E[x1 − x0 | x_t]", async () => {
  // Tolerance: 4 standard errors of the importance estimate (+0.005); the estimate must also
  // be informative (SE < 0.05), so the test cannot pass by having a huge error bar.
  for (const t of [0.2, 0.5, 0.8]) {
    const v = await G.velocity(tensor(POINTS), t).data();
    for (let i = 0; i < POINTS.length; i++) {
      const { est, se } = mcVelocity(G, POINTS[i]!, t, 200000);
      for (let j = 0; j < 2; j++) {
        assert.ok(se[j]! < 0.05, `t=${t} i=${i}: MC standard error ${se[j]} too large`);
        assert.ok(
          Math.abs(v[2 * i + j]! - est[j]!) <= 4 * se[j]! + 0.005,
          `t=${t} i=${i} j=${j}: exact ${v[2 * i + j]} vs MC ${est[j]} ± ${se[j]}`,
        );
      }
    }
  }
});

Deno.test("GaussianMixture.conditionalVelocity matches Monte Carlo within one component", async () => {
  for (const t of [0.3, 0.7]) {
    const v = await G.conditionalVelocity(tensor(POINTS), t, tensor([1, 1, 1])).data();
    for (let i = 0; i < POINTS.length; i++) {
      const { est, se } = mcVelocity(G, POINTS[i]!, t, 40000, 1);
      for (let j = 0; j < 2; j++) {
        assert.ok(se[j]! < 0.05, `MC standard error ${se[j]} too large`);
        assert.ok(Math.abs(v[2 * i + j]! - est[j]!) <= 4 * se[j]! + 0.005, `t=${t} i=${i} j=${j}`);
      }
    }
  }
});

Deno.test("GaussianMixture.velocity has the closed forms at t = 0 and t = 1", async () => {
  // t = 0: x_t = x0, so v = E[x1] − x; t = 1: x_t = x1 and E[x0] = 0, so v = x.
  const mean = [0, 0];
  for (let k = 0; k < 3; k++) {
    for (let j = 0; j < 2; j++) mean[j] += G.weights[k]! * G.means[2 * k + j]!;
  }
  const v0 = await G.velocity(tensor(POINTS), 0).data();
  const v1 = await G.velocity(tensor(POINTS), 1).data();
  assertClose(v0, POINTS.flatMap((p) => [mean[0]! - p[0]!, mean[1]! - p[1]!]), { atol: 1e-5 });
  assertClose(v1, POINTS.flat(), { atol: 1e-5 });
});

Deno.test("GaussianMixture.score and logProb match finite differences of a plain-JS log p_t", async () => {
  const h = 1e-4;
  for (const t of [0, 0.4, 0.9, 1]) {
    const s = await G.score(tensor(POINTS), t).data();
    const lp = await G.logProb(tensor(POINTS), t).data();
    for (let i = 0; i < POINTS.length; i++) {
      const p = POINTS[i]!;
      const fd = [0, 1].map((j) => {
        const a = [...p], b = [...p];
        a[j]! += h;
        b[j]! -= h;
        return (logPt(G, a, t) - logPt(G, b, t)) / (2 * h);
      });
      assertClose(s.subarray(2 * i, 2 * i + 2), fd, { rtol: 1e-3, atol: 1e-3, msg: `t=${t}` });
      assertClose([lp[i]!], [logPt(G, p, t)], { rtol: 1e-5, atol: 1e-4 });
    }
  }
});

Deno.test("GaussianMixture fields with per-row t tensors equal the shared-t fields", async () => {
  const g = GaussianMixture.reference({ dim: 3, numModes: 7, seed: 2 });
  const { x } = g.sample(10, new Generator(3));
  for (const t of [0.05, 0.5, 0.97]) {
    const tt = full([10], t);
    assertClose(await g.velocity(x, tt).data(), await g.velocity(x, t).data(), { atol: 1e-4 });
    assertClose(await g.score(x, tt).data(), await g.score(x, t).data(), { atol: 1e-3 });
  }
  // The class-conditional score is the Gaussian one, −(x − tμ)/(t²σ² + (1−t)²).
  const cs = await g.conditionalScore(x, 0.3, full([10], 4)).data();
  const xs = await x.data();
  const want = Array.from(xs, (xv, i) => {
    const j = i % 3;
    return -(xv - 0.3 * g.means[12 + j]!) / (0.09 * g.variances[12 + j]! + 0.49);
  });
  assertClose(cs, want, { rtol: 1e-5, atol: 1e-5 });
});

Deno.test("GaussianMixture.sample follows the mixture weights and moments", async () => {
  const g = GaussianMixture.reference({ dim: 2, numModes: 4, seed: 9 });
  const n = 20000;
  const { x, labels } = g.sample(n, new Generator(0));
  const xs = await x.data(), ls = await labels.data();
  const counts = new Array(4).fill(0);
  const mean = [0, 0];
  ls.forEach((l, i) => {
    counts[l]++;
    mean[0] += xs[2 * i]! / n;
    mean[1] += xs[2 * i + 1]! / n;
  });
  // Binomial std of a frequency is ≤ 0.0036 at n = 20000: 0.015 is > 4 std.
  assertClose(counts.map((c) => c / n), g.weights, { atol: 0.015, rtol: 0 });
  const want = [0, 1].map((j) =>
    [0, 1, 2, 3].reduce((a, k) => a + g.weights[k]! * g.means[2 * k + j]!, 0)
  );
  assertClose(mean, want, { atol: 0.02, rtol: 0 });
  const host = g.sampleHost(n, new Generator(1));
  const hm = [0, 1].map((j) => host.x.filter((_, i) => i % 2 === j).reduce((a, b) => a + b, 0) / n);
  assertClose(hm, want, { atol: 0.02, rtol: 0 });
});

Deno.test("GaussianMixture rejects bad parameters and inputs with named errors", () => {
  assert.throws(
    () => GaussianMixture.reference({ dim: 0 }),
    /mixture dim.*integer >= 1 but found 0/,
  );
  assert.throws(
    () => new GaussianMixture({ dim: 1, means: [0], variances: [0], weights: [1] }),
    /variance 0/,
  );
  assert.throws(() => G.velocity(tensor([[1, 2, 3]]), 0.5), /shape \[n, 2\]/);
  assert.throws(() => G.velocity(tensor([[1, 2]]), 1.5), /Expected t/);
});

Deno.test("fisherDivergence is 0 for the exact field and ‖c‖² for the field shifted by c", async () => {
  const g = GaussianMixture.reference({ dim: 2, numModes: 5, seed: 1 });
  const exact = (x: Tensor, t: Tensor) => g.velocity(x, t);
  const z = await fisherDivergence(exact, g, {
    generator: new Generator(0),
    n: 300,
    batchSize: 128,
  });
  assert.deepEqual(z.map((p) => p.t), [0.5, 0.6, 0.7, 0.8]);
  for (const p of z) assert.ok(p.value < 1e-8, `exact field gave ${p.value}`);
  const c = tensor([[0.3, -0.4]]);
  const shifted = (x: Tensor, t: Tensor, y: Tensor) => g.conditionalScore(x, t, y).add(c);
  const s = await fisherDivergence(shifted, g, {
    generator: new Generator(0),
    n: 200,
    kind: "score",
    conditional: true,
    times: [0.3],
  });
  assertClose([s[0]!.value], [0.25], { rtol: 1e-4 });
});

Deno.test("varianceCurves: StableVM and STF targets vary less than CFM at high noise", async () => {
  const r = await varianceCurves({
    dims: [4],
    numT: 3,
    n: 400,
    bankSize: 64,
    refSize: 256,
    numModes: 10,
    tMin: 0.1,
    tMax: 0.4,
    targets: ["cfm", "stf", "stablevm"],
  });
  assert.equal(r.length, 1);
  const c = r[0]!.curves;
  assert.deepEqual(r[0]!.t.map((t) => +t.toFixed(6)), [0.1, 0.25, 0.4]);
  for (let i = 0; i < 3; i++) {
    assert.ok(c.cfm!.q15[i]! <= c.cfm!.median[i]! && c.cfm!.median[i]! <= c.cfm!.q85[i]!);
    // At t ≤ 0.4 the CFM target's error is O(1) while the bank posterior mean is close to
    // the exact field; a factor 3 leaves a wide margin.
    assert.ok(c.stablevm!.median[i]! * 3 < c.cfm!.median[i]!, `t index ${i}`);
    assert.ok(c.stf!.median[i]! * 3 < c.cfm!.median[i]!, `t index ${i}`);
  }
});

Deno.test("gmm task main(): variance curves, Fisher log, GIF and JSON under plots/", async () => {
  const { main } = await import("../../tasks/gmm.ts");
  const out = await Deno.makeTempDir({ prefix: "gmm-task-" });
  try {
    const small = [
      "--output-dir",
      out,
      "--variance-dims",
      "3,5",
      "--variance-num-t",
      "2",
      "--variance-samples",
      "40",
      "--bank-size",
      "16",
      "--ref-batch-size",
      "64",
      "--num-modes",
      "6",
    ];
    const a = await main(["--only_plot", "--exp", "stf", "--exp-name", "plot", ...small]);
    assert.ok(a);
    assert.equal(a.fisher.length, 0);
    assert.deepEqual(a.variance.map((v) => v.dim), [3, 5]);
    const json = JSON.parse(
      await Deno.readTextFile(`${out}/plot/plots/data/variance_velocity.json`),
    );
    assert.deepEqual(Object.keys(json.curves[0].curves).sort(), ["cfm", "cfm-stf", "stf"]);
    assert.equal(json.curves[1].curves.cfm.median.length, 2);
    for (const d of [3, 5]) await Deno.stat(`${out}/plot/plots/variance_velocity_d${d}.png`);

    const b = await main([
      "--exp=stable_vm_efficient",
      "--vector_field=score",
      "--no_plot_variance",
      "--enable_visualization",
      "--max-train-steps",
      "4",
      "--eval-every",
      "2",
      "--fisher-samples",
      "64",
      "--batch-size",
      "16",
      "--exp-name",
      "train",
      ...small,
    ]);
    assert.ok(b);
    assert.equal(b.variance.length, 0);
    assert.deepEqual(b.fisher.map((e) => e.step), [2, 4]);
    for (const e of b.fisher) {
      assert.deepEqual(e.values.map((p) => p.t), [0.5, 0.6, 0.7, 0.8]);
    }
    // The step-4 values against an independent evaluation: the saved EMA weights on the same
    // held-out draws (a fresh Generator(seed + 777), as the task documents) and the ring
    // mixture's exact noise posterior written here in f64.
    const want = await hostFisherNoise(`${out}/train`, [0.5, 0.6, 0.7, 0.8], 64);
    assertClose(b.fisher.at(-1)!.values.map((p) => p.value), want, { rtol: 1e-3, atol: 1e-5 });
    const fj = JSON.parse(
      await Deno.readTextFile(`${out}/train/plots/data/fisher_stable_vm_efficient_score.json`),
    );
    assert.deepEqual(fj.steps, [2, 4]);
    assert.equal(fj.values["0.5"].length, 2);
    const gif = await Deno.readFile(`${out}/train/plots/field_stable_vm_efficient_score.gif`);
    assert.equal(new TextDecoder().decode(gif.subarray(0, 6)), "GIF89a");
    await Deno.stat(`${out}/train/plots/fisher_stable_vm_efficient_score.png`);
    await assert.rejects(
      () => main(["--exp", "ot"]),
      /"cfm", "stf", "stable_vm", "stable_vm_efficient"/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

/**
 * E‖f(x_t, t) − (−E[x0 | x_t])‖² of the GMM task's `--enable_visualization` run (the 2-D ring:
 * 8 modes, radius 2, variance 0.02) from the run's last checkpoint's EMA weights: the posterior
 * mean of x0 is −(1 − t)·∇log p_t with p_t = Σ_k ⅛ N(t·μ_k, ((1 − t)² + t²·0.02) I), in f64.
 */
async function hostFisherNoise(runDir: string, times: number[], n: number): Promise<number[]> {
  const run = await openRun(runDir);
  const found = await run.checkpoints.latest();
  assert.ok(found?.checkpoint.ema, "the run saved EMA weights");
  const net = new nn.AdaLNMLP({ dim: 2, hidden: 32, blocks: 4, dropout: 0.1, seed: 2 });
  net.loadStateDict(found.checkpoint.ema);
  net.eval();
  const ring = GaussianMixture.ring({ numModes: 8 });
  const gen = new Generator(777);
  const out: number[] = [];
  for (const t of times) {
    const x1 = await ring.sample(n, gen).x.data();
    const x0 = await gen.normal([n, 2]).data();
    const xt = Float64Array.from(x0, (v, i) => (1 - t) * v + t * x1[i]!);
    const f = await net.forward(tensor(Float32Array.from(xt), [n, 2]), full([n], t)).data();
    const s2 = (1 - t) ** 2 + t * t * 0.02;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const x = xt[2 * i]!, y = xt[2 * i + 1]!;
      const logw = Array.from({ length: 8 }, (_, k) => {
        const a = (2 * Math.PI * k) / 8;
        return -((x - 2 * t * Math.cos(a)) ** 2 + (y - 2 * t * Math.sin(a)) ** 2) / (2 * s2);
      });
      const top = Math.max(...logw);
      const w = logw.map((l) => Math.exp(l - top));
      const z = w.reduce((a, v) => a + v, 0);
      let sx = 0, sy = 0;
      w.forEach((wk, k) => {
        const a = (2 * Math.PI * k) / 8;
        sx += (wk / z) * (2 * t * Math.cos(a) - x) / s2;
        sy += (wk / z) * (2 * t * Math.sin(a) - y) / s2;
      });
      total += (f[2 * i]! - (1 - t) * sx) ** 2 + (f[2 * i + 1]! - (1 - t) * sy) ** 2;
    }
    out.push(total / n);
  }
  net.dispose();
  return out;
}
