/**
 * Tests for lib/flow/stablevm.ts (memory bank, stable targets, losses) and lib/flow/repa.ts
 * (VA-REPA schedules), against closed forms and plain-JS loops.
 */
import { strict as assert } from "node:assert";
import {
  exactField,
  GaussianMixture,
  Generator,
  getBackend,
  interpolate,
  MemoryBank,
  plainTarget,
  PROJ_WEIGHT_SCHEDULES,
  projWeight,
  projWeightScalar,
  sampleTimes,
  setBackend,
  siLoss,
  stableTarget,
  stableVmLoss,
  stableVmTarget,
  stfTarget,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

Deno.test("MemoryBank keeps FIFO order, capacity and a global pool for the null label", () => {
  const bank = new MemoryBank({ numClasses: 2, capacityPerClass: 3, globalCapacity: 4, dim: 1 });
  assert.equal(bank.nullLabel, 2);
  bank.add([1, 2, 3], [0, 0, 1]);
  assert.deepEqual([...bank.entries(0)], [1, 2]);
  bank.add([4, 5, 6, 7], [0, 0, 0, 1]);
  // Class 0 saw 1, 2, 4, 5, 6 with capacity 3: the oldest two were overwritten.
  assert.deepEqual([...bank.entries(0)], [4, 5, 6]);
  assert.deepEqual([...bank.entries(1)], [3, 7]);
  assert.equal(bank.count(0), 3);
  // The global pool holds the last 4 samples of any class.
  assert.deepEqual([...bank.entries(2)], [4, 5, 6, 7]);
});

Deno.test("MemoryBank.sample draws only entries of the requested class, null from the pool", async () => {
  const bank = new MemoryBank({ numClasses: 3, capacityPerClass: 4, globalCapacity: 2, dim: 2 });
  // Class c's entries are (c, i).
  const xs: number[] = [], ls: number[] = [];
  for (let i = 0; i < 4; i++) for (let c = 0; c < 3; c++) xs.push(c, i), ls.push(c);
  bank.add(xs, ls);
  const labels = Array.from({ length: 300 }, (_, i) => i % 4); // 3 = null
  const x = await bank.sample(labels, new Generator(0)).data();
  const seen = new Set<string>();
  labels.forEach((l, i) => {
    const a = x[2 * i]!, b = x[2 * i + 1]!;
    if (l < 3) assert.equal(a, l);
    else assert.ok(b === 3 && (a === 1 || a === 2), `null label drew (${a}, ${b}); pool = last 2`);
    seen.add(`${a},${b}`);
  });
  assert.equal(seen.size, 12, "every entry of each class is drawn");
});

Deno.test("MemoryBank.prefill: at least one per class, or full; errors for missing classes", () => {
  const n = 40;
  const data = {
    x: Array.from({ length: n }, (_, i) => i),
    labels: Array.from({ length: n }, (_, i) => i % 4),
  };
  const a = new MemoryBank({ numClasses: 4, capacityPerClass: 5, dim: 1 });
  assert.equal(a.prefill(data), 4);
  for (let c = 0; c < 4; c++) assert.equal(a.count(c), 1);
  const b = new MemoryBank({ numClasses: 4, capacityPerClass: 5, dim: 1 });
  b.prefill(data, { fully: true, generator: new Generator(1) });
  for (let c = 0; c < 4; c++) {
    assert.equal(b.count(c), 5);
    for (const v of b.entries(c)) assert.equal(v % 4, c);
  }
  const c = new MemoryBank({ numClasses: 5, dim: 1 });
  assert.throws(() => c.prefill(data), /class 4 has no samples/);
});

Deno.test("MemoryBank rejects bad capacities, labels and empty draws", () => {
  assert.throws(
    () => new MemoryBank({ numClasses: 2, capacityPerClass: 0, dim: 1 }),
    /Expected bank capacity to be an integer >= 1 but found 0/,
  );
  const bank = new MemoryBank({ numClasses: 2, dim: 1 });
  assert.throws(() => bank.add([1], [2]), /bank label to be an integer in \[0, 1\] but found 2/);
  assert.throws(() => bank.add([1, 2], [0]), /Expected 1·1 = 1 bank values/);
  assert.throws(() => bank.sample([3], new Generator(0)), /in \[0, 2\].*found 3/);
  assert.throws(() => bank.sample([1], new Generator(0)), /class 1 has no entries/);
});

Deno.test("MemoryBank state round-trips", () => {
  const a = new MemoryBank({ numClasses: 2, capacityPerClass: 2, dim: 1 });
  a.add([1, 2, 3], [0, 0, 0]);
  const b = new MemoryBank({ numClasses: 2, capacityPerClass: 2, dim: 1 });
  b.loadState(a.state());
  assert.deepEqual([...b.entries(0)], [2, 3]);
  b.add([4], [0]);
  assert.deepEqual([...b.entries(0)], [3, 4]);
});

// Plain-JS (S1)–(S2): w_j ∝ exp(−‖x_t − t b_j‖²/2(1−t)²), v = (Σ w_j b_j − x_t)/(1−t).
function stableJs(xt: number[], t: number, refs: number[][]): number[] {
  const l = refs.map((b) =>
    -b.reduce((a, bj, j) => a + (xt[j]! - t * bj) ** 2, 0) / (2 * (1 - t) ** 2)
  );
  const m = Math.max(...l);
  const w = l.map((v) => Math.exp(v - m));
  const z = w.reduce((a, b) => a + b, 0);
  return xt.map((x, j) => (refs.reduce((a, b, i) => a + (w[i]! / z) * b[j]!, 0) - x) / (1 - t));
}

Deno.test("stfTarget and stableTarget match a plain-JS posterior-weighted target", async () => {
  const refs = [[1, 0], [0, 1], [-1, 0.5], [0.3, -0.2]];
  const xt = [[0.1, 0.2], [-0.4, 0.3]];
  const ts = [0.3, 0.6];
  const stf = await stfTarget(tensor(xt), tensor(ts), tensor(refs)).data();
  const st = await stableTarget(tensor(xt), tensor(ts), tensor([refs, refs])).data();
  const want = xt.flatMap((x, i) => stableJs(x, ts[i]!, refs));
  assertClose(stf, want, { rtol: 1e-4, atol: 1e-5 });
  assertClose(st, want, { rtol: 1e-4, atol: 1e-5 });
  // Masked entries do not count: masking the last two refs equals using the first two.
  const masked = await stableTarget(
    tensor(xt),
    tensor(ts),
    tensor([refs, refs]),
    tensor([[1, 1, 0, 0], [1, 1, 0, 0]]),
  ).data();
  assertClose(masked, xt.flatMap((x, i) => stableJs(x, ts[i]!, refs.slice(0, 2))), {
    rtol: 1e-4,
    atol: 1e-5,
  });
  // Score form (S3): (t Σ w b − x_t)/(1−t)² = (t v − x_t)/(1−t) with v the velocity.
  const sc = await stfTarget(tensor(xt), tensor(ts), tensor(refs), "score").data();
  const wantS = want.map((v, k) => {
    const i = Math.floor(k / 2), t = ts[i]!;
    return (t * v - xt[i]![k % 2]!) / (1 - t);
  });
  assertClose(sc, wantS, { rtol: 1e-4, atol: 1e-4 });
});

Deno.test("stableTarget with a large class bank equals the exact class-conditional field", async () => {
  // 20000 bank entries of one component: the self-normalised posterior mean converges to
  // E[x1 | x_t, k]; at t ≤ 0.5 its error here is < 0.01 (tolerance 0.03).
  const g = GaussianMixture.reference({ dim: 2, numModes: 5, seed: 3 });
  const k = 2, M = 20000;
  const { x: bankX } = g.sampleHost(M * 6, new Generator(4));
  const { labels: bl } = g.sampleHost(M * 6, new Generator(4));
  const rows: number[] = [];
  for (let i = 0; i < bl.length && rows.length < 2 * M; i++) {
    if (bl[i] === k) rows.push(bankX[2 * i]!, bankX[2 * i + 1]!);
  }
  const m = rows.length / 2;
  assert.ok(m > 1000, `bank too small (${m})`);
  const refs = tensor(rows, [m, 2]);
  const pts = tensor([[0.1, 0.1], [-0.3, 0.5], [0.4, -0.2]]);
  const lab = tensor([k, k, k]);
  for (const t of [0.1, 0.3, 0.5]) {
    const got = await stfTarget(pts, t, refs).data();
    const exact = await g.conditionalVelocity(pts, t, lab).data();
    assertClose(got, exact, { atol: 0.03, rtol: 0, msg: `velocity t=${t}` });
    const gs = await stfTarget(pts, t, refs, "score").data();
    const es = await g.conditionalScore(pts, t, lab).data();
    assertClose(gs, es, { atol: 0.03, rtol: 0, msg: `score t=${t}` });
  }
});

Deno.test("stableVmTarget has lower error than the CFM target where the bank covers the class", async () => {
  // n = 2000 samples per t; we require the mean squared error of the StableVM target about
  // the exact class-conditional field to be < 1/3 of the CFM target's (observed ≪ 1/10).
  const g = GaussianMixture.reference({ dim: 4, numModes: 5, seed: 7 });
  const gen = new Generator(8);
  const bank = new MemoryBank({ numClasses: 5, capacityPerClass: 256, dim: 4 });
  const data = g.sampleHost(4000, gen);
  bank.prefill(data, { fully: true });
  const n = 2000;
  const labels = Array.from({ length: n }, (_, i) => i % 5);
  for (const tv of [0.05, 0.25, 0.45]) {
    const x = bank.sample(labels, gen);
    const eps = gen.normal([n, 4]);
    const t = tensor(new Float32Array(n).fill(tv));
    const xt = eps.mul(1 - tv).add(x.mul(tv));
    const stable = stableVmTarget(bank, labels, { x, eps, xt, t });
    const exact = g.conditionalVelocity(xt, tv, tensor(labels));
    const errS = await stable.sub(exact).square().sum(1).mean().item();
    const errC = await x.sub(eps).sub(exact).square().sum(1).mean().item();
    assert.ok(errS * 3 < errC, `t=${tv}: stable ${errS} vs cfm ${errC}`);
  }
});

Deno.test("stableVmTarget: plain target above splitT, posterior below, efficient equals plain", async () => {
  const gen = new Generator(2);
  const bank = new MemoryBank({ numClasses: 3, capacityPerClass: 50, globalCapacity: 30, dim: 3 });
  const g = GaussianMixture.reference({ dim: 3, numModes: 3, seed: 1 });
  const d = g.sampleHost(200, gen);
  bank.add(d.x.subarray(0, 3 * 70), d.labels.subarray(0, 70)); // uneven counts per class
  const labels = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1];
  const n = labels.length;
  const x = bank.sample(labels, gen), eps = gen.normal([n, 3]);
  const tv = [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.7, 0.9, 0.02, 0.49];
  const t = tensor(tv);
  const xt = eps.mul(tensor(tv.map((v) => 1 - v), [n, 1])).add(x.mul(tensor(tv, [n, 1])));
  const plainT = stableVmTarget(bank, labels, { x, eps, xt, t });
  const eff = stableVmTarget(bank, labels, { x, eps, xt, t }, { efficient: true, chunkSize: 7 });
  const p = await plainT.data();
  assertClose(await eff.data(), p, { rtol: 1e-5, atol: 1e-5 });
  const plain = await x.sub(eps).data();
  const xtH = await xt.data();
  for (let i = 0; i < n; i++) {
    const row = p.subarray(3 * i, 3 * i + 3);
    if (tv[i]! > 0.5) assertClose(row, plain.subarray(3 * i, 3 * i + 3), { atol: 1e-6 });
    else {
      const refs: number[][] = [];
      const e = bank.entries(labels[i]!);
      for (let j = 0; j < e.length / 3; j++) refs.push([...e.subarray(3 * j, 3 * j + 3)]);
      assertClose(row, stableJs([...xtH.subarray(3 * i, 3 * i + 3)], tv[i]!, refs), {
        rtol: 1e-4,
        atol: 1e-4,
      });
    }
  }
});

Deno.test("stableVmTarget with one shared label (unconditional bank) matches plain JS, chunked too", async () => {
  const gen = new Generator(11);
  const bank = new MemoryBank({ numClasses: 1, capacityPerClass: 40, dim: 2 });
  const g = GaussianMixture.ring({ numModes: 3 });
  const data = g.sampleHost(50, gen); // 50 > 40: the ring has wrapped
  bank.add(data.x, new Int32Array(50));
  const n = 6, labels = new Int32Array(n);
  const x = bank.sample(labels, gen), eps = gen.normal([n, 2]);
  const tv = [0.05, 0.2, 0.35, 0.5, 0.45, 0.3];
  const t = tensor(tv);
  const xt = eps.mul(tensor(tv.map((v) => 1 - v), [n, 1])).add(x.mul(tensor(tv, [n, 1])));
  const a = await stableVmTarget(bank, labels, { x, eps, xt, t }).data();
  const b = await stableVmTarget(bank, labels, { x, eps, xt, t }, { efficient: true, chunkSize: 9 })
    .data();
  const e = bank.entries(0);
  const refs = Array.from({ length: 40 }, (_, j) => [e[2 * j]!, e[2 * j + 1]!]);
  const xtH = await xt.data();
  const want = tv.flatMap((tt, i) => stableJs([xtH[2 * i]!, xtH[2 * i + 1]!], tt, refs));
  assertClose(a, want, { rtol: 1e-4, atol: 1e-4 });
  assertClose(b, a, { rtol: 1e-5, atol: 1e-5 });
});

Deno.test("stableVmTarget falls back to x − ε where the stable target is NaN (CPU backend)", async () => {
  // Run on the CPU backend: WGSL may assume NaNs away (`x != x` folds to false on some
  // adapters), so the backends' isNan conformance is tested with the kernels, not here.
  const prev = getBackend();
  setBackend("cpu");
  try {
    const nb = new MemoryBank({ numClasses: 1, dim: 1 });
    nb.add([NaN, 1], [0, 0]);
    const fb = stableVmTarget(nb, [0], {
      x: tensor([[1]]),
      eps: tensor([[0.5]]),
      xt: tensor([[0.65]]),
      t: tensor([0.3]),
    });
    assertClose(await fb.data(), [0.5]);
  } finally {
    setBackend(prev.name as "cpu" | "webgpu");
  }
});

Deno.test("stableVmLoss draws from the bank, labels nulls and regresses the stable target", async () => {
  const g = GaussianMixture.ring({ numModes: 4 });
  const gen = new Generator(0);
  const bank = new MemoryBank({ numClasses: 4, capacityPerClass: 32, dim: 2 });
  bank.prefill(g.sampleHost(400, gen), { fully: true });
  const w = tensor([[0.5, -0.1], [0.2, 0.3]]);
  const f = (x: Tensor) => x.matmul(w);
  const r = stableVmLoss(f, { bank, batchSize: 500, generator: new Generator(5) });
  const nulls = [...r.labels].filter((l) => l === 4).length;
  // Binomial(500, 0.1): mean 50, std 6.7.
  assert.ok(nulls > 20 && nulls < 80, `null labels ${nulls}`);
  const [xt, tt, tg, xx, ee] = await Promise.all(
    [r.xt, r.t, r.target, r.x, r.eps].map((a) => a.data()),
  );
  // x_t = (1−t)ε + t·x, and the loss is the mean squared error of f(x_t).
  const xtWant = Array.from(
    xx,
    (v, i) => (1 - tt[Math.floor(i / 2)]!) * ee[i]! + tt[Math.floor(i / 2)]! * v,
  );
  assertClose(xt, xtWant, { atol: 1e-5 });
  const pred = await f(r.xt).data();
  const lossWant = pred.reduce((a, p, i) => a + (p - tg[i]!) ** 2, 0) / pred.length;
  assertClose([await r.loss.item()], [lossWant], { rtol: 1e-5 });
  // Each x is an entry of its label's bank slot.
  for (let i = 0; i < 20; i++) {
    const e = bank.entries(r.labels[i]!);
    let found = false;
    for (let j = 0; j < e.length; j += 2) {
      found ||= e[j] === xx[2 * i] && e[j + 1] === xx[2 * i + 1];
    }
    assert.ok(found, `row ${i} not in the bank of label ${r.labels[i]}`);
  }
  // Gradients flow into the model and are finite; the same seed gives the same loss.
  const [v, gw] = valueAndGrad((p: Tensor) =>
    stableVmLoss((x) => x.matmul(p), { bank, batchSize: 64, generator: new Generator(9) }).loss
  )(w);
  for (const x of await gw.data()) assert.ok(Number.isFinite(x));
  const again = stableVmLoss(f, { bank, batchSize: 64, generator: new Generator(9) }).loss;
  assertClose([await v.item()], [await again.item()], { rtol: 1e-6 });
});

Deno.test("siLoss regresses x − ε on a given batch and drops labels to null", async () => {
  const x = tensor([[1, 2], [3, 4], [5, 6], [7, 8]]);
  const r = siLoss((v) => v.mul(0), {
    x,
    labels: [0, 1, 2, 0],
    numClasses: 3,
    nullProb: 0,
    generator: new Generator(1),
  });
  assert.deepEqual([...r.labels], [0, 1, 2, 0]);
  const tg = await r.target.data(), e = await r.eps.data();
  assertClose(tg, Array.from(await x.data(), (v, i) => v - e[i]!), { atol: 1e-6 });
  assertClose([await r.loss.item()], [tg.reduce((a, b) => a + b * b, 0) / 8], { rtol: 1e-6 });
  const all = siLoss((v) => v, {
    x,
    labels: [0, 1, 2, 0],
    numClasses: 3,
    nullProb: 1,
    generator: new Generator(1),
  });
  assert.deepEqual([...all.labels], [3, 3, 3, 3]);
  assert.throws(() => stableVmLoss((v) => v, { generator: new Generator(0) }), /memory bank/);
});

Deno.test("projWeight schedules take the reference values at known points (t_ref = 1 − t)", async () => {
  const tau = 0.7;
  // sigmoid and snr are 1/2 at t_ref = τ; cosine is 1 at t_ref = 0 and 1/2 at τ/2.
  assertClose([projWeightScalar("sigmoid", 1 - tau)], [0.5], { atol: 1e-7 });
  assertClose([projWeightScalar("snr", 1 - tau)], [0.5], { atol: 1e-7 });
  assert.equal(projWeightScalar("cosine", 1), 1);
  assertClose([projWeightScalar("cosine", 1 - tau / 2)], [0.5], { atol: 1e-7 });
  assert.equal(projWeightScalar("cosine", 0.2), 0);
  assert.equal(projWeightScalar("hard", 0.31), 1); // t_ref = 0.69 < τ
  assert.equal(projWeightScalar("hard", 0.3), 0); // t_ref = τ
  assert.equal(projWeightScalar("hard_high", 0.3), 1);
  assert.equal(projWeightScalar("snr", 1), 1);
  assert.equal(projWeightScalar("snr", 0), 0);
  // sigmoid with k = 20 at t_ref = 0.5: 1/(1 + e^{−4}).
  assertClose([projWeightScalar("sigmoid", 0.5)], [1 / (1 + Math.exp(-4))], { rtol: 1e-12 });
  // snr at t_ref = 0.5, τ = 0.7: SNR(.5) = 1, SNR(.7) = (3/7)² → 1/(1 + 9/49).
  assertClose([projWeightScalar("snr", 0.5)], [1 / (1 + 9 / 49)], { rtol: 1e-12 });
  const ts = [0, 0.1, 0.25, 0.29, 0.31, 0.5, 0.8, 1];
  for (const s of PROJ_WEIGHT_SCHEDULES) {
    const w = await projWeight(s, tensor(ts), { tau, k: 20 }).data();
    assertClose(w, ts.map((t) => projWeightScalar(s, t, { tau, k: 20 })), { atol: 1e-6, msg: s });
  }
});

Deno.test("projWeight rejects unknown schedules and τ outside (0, 1)", () => {
  assert.throws(
    () => projWeightScalar("linear", 0.5),
    /Unknown projection weight schedule "linear": expected one of "hard", "hard_high", "sigmoid", "cosine", "snr"/,
  );
  assert.throws(
    () => projWeightScalar("hard", 0.5, { tau: 1 }),
    /proj tau to be a number in \(0, 1\) but found 1/,
  );
  assert.throws(() => projWeight("snr", tensor([0.5]), { tau: 0 }), /found 0/);
});

Deno.test("FieldKind 'noise' is SV's score parameterisation −E[x0 | x_t] (closed forms, one Gaussian)", async () => {
  // One component N(μ, σ²I): p_t = N(tμ, ((1−t)² + t²σ²) I), so ∇log p_t(x) = −(x − tμ)/s²
  // with s² = (1−t)² + t²σ², and −E[x0 | x_t] = (1−t)·∇log p_t (x0 is the N(0, I) noise).
  const mu = [0.7, -1.2], v = 0.3, t = 0.4;
  const gmm = new GaussianMixture({ dim: 2, means: mu, variances: [v, v], weights: [1] });
  const x = [0.25, 0.5];
  const s2 = (1 - t) ** 2 + t * t * v;
  const score = x.map((xi, i) => -(xi - t * mu[i]!) / s2);
  const xt = tensor([x]);
  assertClose(await exactField(gmm, xt, t, "score").data(), score, { atol: 1e-5 });
  assertClose(await exactField(gmm, xt, t, "noise").data(), score.map((s) => (1 - t) * s), {
    atol: 1e-5,
  });
  // A one-entry reference set makes E[x1 | x_t] = b exactly: noise target (t·b − x_t)/(1−t),
  // score target (t·b − x_t)/(1−t)², velocity (b − x_t)/(1−t).
  const b = [1.5, -0.5];
  const refs = tensor([b]);
  const want = (k: "velocity" | "score" | "noise") =>
    x.map((xi, i) =>
      k === "velocity"
        ? (b[i]! - xi) / (1 - t)
        : (t * b[i]! - xi) / (k === "noise" ? 1 - t : (1 - t) ** 2)
    );
  for (const k of ["velocity", "score", "noise"] as const) {
    assertClose(await stfTarget(xt, t, refs, k).data(), want(k), { atol: 1e-5, msg: k });
  }
  // The single-sample targets: x1 − x0, −x0/(1−t), −x0.
  const x1 = tensor([[2, 3]]), x0 = tensor([[0.5, -1]]);
  assertClose(await plainTarget(x1, x0, t, "velocity").data(), [1.5, 4]);
  assertClose(await plainTarget(x1, x0, t, "score").data(), [-0.5 / 0.6, 1 / 0.6], { atol: 1e-6 });
  assertClose(await plainTarget(x1, x0, t, "noise").data(), [-0.5, 1]);
});

Deno.test("MemoryBank: the null-label pool is sized like a class by default (SV MemoryBank)", () => {
  const bank = new MemoryBank({ numClasses: 2, capacityPerClass: 5, dim: 1 });
  assert.equal(bank.globalCapacity, 5);
  // Fill well past capacity: the pool keeps exactly capacityPerClass entries (FIFO).
  for (let i = 0; i < 4; i++) bank.add(new Float32Array([1, 2, 3]), [0, 1, 0]);
  assert.equal(bank.entries(bank.nullLabel).length, 5);
});

Deno.test("cosine path (SV --path-type cosine): interpolate, and the stable target against SV's formula in plain JS", async () => {
  const t = 0.3, a = Math.sin((Math.PI * t) / 2), s = Math.cos((Math.PI * t) / 2);
  const da = (Math.PI / 2) * s, ds = -(Math.PI / 2) * a;
  // interpolate: x_t = α·x1 + σ·x0 and u = α̇·x1 + σ̇·x0, which is d/dt of x_t.
  const x0 = tensor([[0.5, -1]]), x1 = tensor([[2, 0.25]]);
  const { xt, target } = interpolate(x0, x1, tensor([t]), { path: "cosine" });
  assertClose(await xt.data(), [a * 2 + s * 0.5, a * 0.25 - s], { atol: 1e-6 });
  assertClose(await target.data(), [da * 2 + ds * 0.5, da * 0.25 - ds], { atol: 1e-6 });
  // SV loss.py `_stable_target`: w ∝ exp(−‖x_t − α b_j‖²/2σ²),
  // target = (σ̇/σ)·x_t + (α̇ − σ̇α/σ)·Σ w_j b_j (in our time and sign convention).
  const bankVals = [[1, 0], [0, 1], [-1, 0.5], [0.3, -0.7]];
  const bank = new MemoryBank({ numClasses: 1, capacityPerClass: 8, dim: 2 });
  bank.add(bankVals.flat(), [0, 0, 0, 0]);
  const xv = [0.2, 0.4], ev = [-0.3, 0.9];
  const xtv = xv.map((v, i) => a * v + s * ev[i]!);
  const logits = bankVals.map((b) =>
    -((xtv[0]! - a * b[0]!) ** 2 + (xtv[1]! - a * b[1]!) ** 2) / (2 * s * s)
  );
  const mx = Math.max(...logits), w = logits.map((l) => Math.exp(l - mx));
  const z = w.reduce((p, q) => p + q, 0);
  const mean = [0, 1].map((k) => bankVals.reduce((acc, b, j) => acc + (w[j]! / z) * b[k]!, 0));
  const want = xtv.map((xi, k) => (ds / s) * xi + (da - (ds * a) / s) * mean[k]!);
  for (const efficient of [false, true]) {
    const got = stableVmTarget(bank, [0], {
      x: tensor([xv]),
      eps: tensor([ev]),
      xt: tensor([xtv]),
      t: tensor([t]),
    }, { path: "cosine", efficient, chunkSize: 3 });
    assertClose(await got.data(), want, { atol: 1e-5, msg: `efficient ${efficient}` });
  }
  // Two rows with different labels take the per-row bank path.
  const bank2 = new MemoryBank({ numClasses: 2, capacityPerClass: 8, dim: 2 });
  bank2.add([...bankVals.flat(), 5, 5], [0, 0, 0, 0, 1]);
  const got2 = stableVmTarget(bank2, [0, 1], {
    x: tensor([xv, [5, 5]]),
    eps: tensor([ev, ev]),
    xt: tensor([xtv, [a * 5 + s * ev[0]!, a * 5 + s * ev[1]!]]),
    t: tensor([t, t]),
  }, { path: "cosine" });
  assertClose((await got2.data()).slice(0, 2), want, { atol: 1e-5 });
  // With one bank entry the posterior is exact: the target is α̇·b + σ̇·ε.
  assertClose((await got2.data()).slice(2), [da * 5 + ds * ev[0]!, da * 5 + ds * ev[1]!], {
    atol: 1e-4,
  });
});

Deno.test("sampleTimes 'lognormal' is SV's weighting: logit(t) ~ N(1.2, 1.2²), clipped", async () => {
  const t = await sampleTimes(20000, { schedule: "lognormal", generator: new Generator(3) }).data();
  const z = Array.from(t, (v) => Math.log(v / (1 - v)));
  const m = z.reduce((a, b) => a + b, 0) / z.length;
  const sd = Math.sqrt(z.reduce((a, b) => a + (b - m) ** 2, 0) / z.length);
  assert.ok(Math.abs(m - 1.2) < 0.05, `mean ${m}`);
  assert.ok(Math.abs(sd - 1.2) < 0.05, `std ${sd}`);
  assert.ok(t.every((v) => v >= 1e-4 - 1e-9 && v <= 1 - 1e-4 + 1e-7));
});

Deno.test("stableVmTarget on image-sized rows (d 784, mixed labels, the null pool) matches plain JS", async () => {
  // The mixed-label path expands ‖x_t − t·b‖² as ‖x_t‖² − 2t·x_t·b + t²‖b‖² in one matmul: at
  // Fashion-MNIST's dimension that must still give the posterior of the direct differences.
  const gen = new Generator(5), d = 784;
  const bank = new MemoryBank({ numClasses: 4, capacityPerClass: 12, dim: d });
  const u = await gen.uniform([30, d]).data();
  const px = u.map((v) => 2 * v - 1);
  bank.add(px, Array.from({ length: 30 }, (_, i) => i % 3)); // class 3 stays empty
  const labels = [0, 1, 2, 0, 4, 4, 1, 2]; // 4: the null label's global pool
  const tv = [0.05, 0.2, 0.3, 0.45, 0.4, 0.25, 0.49, 0.1];
  const n = labels.length;
  const x = tensor(px.subarray(0, n * d), [n, d]), eps = gen.normal([n, d]);
  const t = tensor(tv);
  const xt = eps.mul(tensor(tv.map((v) => 1 - v), [n, 1])).add(x.mul(tensor(tv, [n, 1])));
  const got = await stableVmTarget(bank, labels, { x, eps, xt, t }).data();
  const xtH = await xt.data();
  for (let i = 0; i < n; i++) {
    const e = bank.entries(labels[i]!);
    const row = got.subarray(d * i, d * i + d);
    const refs = Array.from({ length: e.length / d }, (_, j) => [...e.subarray(j * d, j * d + d)]);
    const want = stableJs([...xtH.subarray(d * i, d * i + d)], tv[i]!, refs);
    assertClose(row, want, { rtol: 1e-3, atol: 1e-3 });
  }
});
