import { strict as assert } from "node:assert";
import {
  checkerboard,
  Generator,
  histogramKL,
  integrate,
  mmdRbf,
  randn,
  straightness,
  type Tensor,
  tensor,
  varianceCurves,
  w2,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

function permutations(n: number): number[][] {
  if (n === 0) return [[]];
  const out: number[][] = [];
  for (const p of permutations(n - 1)) {
    for (let k = 0; k <= p.length; k++) out.push([...p.slice(0, k), n - 1, ...p.slice(k)]);
  }
  return out;
}

Deno.test("histogramKL: 0 for identical sets, matches a hand computation, and is KL(target‖model)", async () => {
  const cb = await checkerboard(5000, { generator: new Generator(1) }).data();
  assert.ok(histogramKL(cb, cb) < 1e-6);
  // 2 bins per axis on [0, 2]²: target mass (½, ½) in bins (0,0), (1,1); model (¾, ¼).
  const target = new Float32Array([0.5, 0.5, 1.5, 1.5]);
  const model = new Float32Array([0.5, 0.5, 0.2, 0.7, 0.9, 0.1, 1.5, 1.5]);
  const want = 0.5 * Math.log(0.5 / 0.75) + 0.5 * Math.log(0.5 / 0.25);
  assertClose([histogramKL(target, model, { bins: 2, range: [0, 2], eps: 0 })], [want], {
    atol: 1e-12,
  });
  // The reverse direction differs (KL is not symmetric).
  const rev = 0.75 * Math.log(0.75 / 0.5) + 0.25 * Math.log(0.25 / 0.5);
  assertClose([histogramKL(model, target, { bins: 2, range: [0, 2], eps: 0 })], [rev], {
    atol: 1e-12,
  });
  // An empty model bin is smoothed as (Q + eps)/(1 + K·eps): finite.
  const kl = histogramKL(target, new Float32Array([0.5, 0.5]), {
    bins: 2,
    range: [0, 2],
    eps: 1e-6,
  });
  const z = 1 + 4e-6;
  const smoothed = 0.5 * Math.log(0.5 / ((1 + 1e-6) / z)) + 0.5 * Math.log(0.5 / (1e-6 / z));
  assertClose([kl], [smoothed], { rtol: 1e-9 });
  // Two independent checkerboard samples are much closer than checkerboard vs Gaussian noise.
  const cb2 = await checkerboard(5000, { generator: new Generator(2) }).data();
  const noise = await randn([5000, 2], { seed: 3 }).data();
  assert.ok(histogramKL(cb, cb2, { bins: 20 }) < 0.1);
  assert.ok(histogramKL(cb, noise, { bins: 20 }) > 0.5);
  assert.throws(() => histogramKL(new Float32Array(3), cb), /n×2/);
  assert.throws(() => histogramKL(cb, cb, { bins: 0 }), /histogram bins/);
});

Deno.test("w2: exact equals brute force, a translation costs its length, Gaussians give ‖m‖", async () => {
  const g = new Generator(4);
  const a = await g.normal([6, 2]).data(), b = await g.normal([6, 2]).data();
  let best = Infinity;
  for (const p of permutations(6)) {
    let s = 0;
    for (let i = 0; i < 6; i++) {
      s += (a[2 * i]! - b[2 * p[i]!]!) ** 2 + (a[2 * i + 1]! - b[2 * p[i]! + 1]!) ** 2;
    }
    best = Math.min(best, s / 6);
  }
  assertClose([await w2(a, b)], [Math.sqrt(best)], { rtol: 1e-5 });
  const x = g.normal([200, 3]);
  assertClose([await w2(x, x.add(tensor([1, 2, 2])))], [3], { rtol: 1e-4 });
  // N(0, I) vs N(m, I), ‖m‖ = 5: W2 ≈ 5 up to the sampling error of 400 points.
  const p = randn([400, 2], { seed: 5 }), q = randn([400, 2], { seed: 6 }).add(tensor([3, 4]));
  const exact = await w2(p, q);
  assert.ok(Math.abs(exact - 5) < 0.15, `W2 ${exact}`);
  // The entropic estimate sits just above the exact one and accepts unequal sizes.
  const ps = randn([120, 2], { seed: 7 }), qs = randn([120, 2], { seed: 8 }).add(1);
  const ex = await w2(ps, qs), sk = await w2(ps, qs, { method: "sinkhorn" });
  assert.ok(sk >= ex - 1e-3 && sk < ex * 1.05, `sinkhorn ${sk} vs exact ${ex}`);
  const uneq = await w2(ps, randn([90, 2], { seed: 9 }).add(1), { method: "sinkhorn" });
  assert.ok(Math.abs(uneq - ex) < 0.3, `unequal sizes ${uneq}`);
  await assert.rejects(() => w2(ps, randn([90, 2], { seed: 9 })), /equal sample counts/);
  await assert.rejects(() => w2(new Float32Array(5), new Float32Array(4)), /multiple of dim/);
});

Deno.test("mmdRbf: matches plain loops, ≈ 0 for one distribution, grows with the shift", async () => {
  const g = new Generator(12);
  const a = g.normal([30, 3]), b = g.normal([20, 3]).add(0.5);
  const A = await a.data(), B = await b.data();
  const hs = [0.5, 2];
  const k = (x: Float32Array, i: number, y: Float32Array, j: number) => {
    let d = 0;
    for (let q = 0; q < 3; q++) d += (x[3 * i + q]! - y[3 * j + q]!) ** 2;
    return hs.reduce((s, h) => s + Math.exp(-d / (2 * h * h)), 0);
  };
  let kaa = 0, kbb = 0, kab = 0;
  for (let i = 0; i < 30; i++) for (let j = 0; j < 30; j++) if (i !== j) kaa += k(A, i, A, j);
  for (let i = 0; i < 20; i++) for (let j = 0; j < 20; j++) if (i !== j) kbb += k(B, i, B, j);
  for (let i = 0; i < 30; i++) for (let j = 0; j < 20; j++) kab += k(A, i, B, j);
  const want = kaa / (30 * 29) + kbb / (20 * 19) - (2 * kab) / 600;
  assertClose([await mmdRbf(a, b, { bandwidths: hs })], [want], { atol: 2e-5, rtol: 1e-4 });

  const p = randn([300, 2], { seed: 20 }), q = randn([300, 2], { seed: 21 });
  const same = await mmdRbf(p, q);
  const shifts = [];
  for (const s of [0.5, 1, 2]) shifts.push(await mmdRbf(p, q.add(s)));
  assert.ok(Math.abs(same) < 0.02, `same distribution MMD² ${same}`);
  assert.ok(
    shifts[0]! > 5 * Math.abs(same) && shifts[0]! < shifts[1]! && shifts[1]! < shifts[2]!,
    `${shifts}`,
  );
  await assert.rejects(() => mmdRbf(p, q, { bandwidths: [] }), /bandwidth/);
});

Deno.test("straightness: 0 for straight paths, the quarter-circle closed form for a rotation", async () => {
  const x0 = randn([16, 2], { seed: 1 });
  const st = await integrate((x) => x.mul(0).add(tensor([1, -2])), x0, { steps: 5, record: true });
  const s = await straightness(st.trajectory!, st.times);
  assert.ok(s.straightness < 1e-9 && Math.abs(s.lengthRatio - 1) < 1e-6, JSON.stringify(s));
  assertClose([s.energy, s.displacementSq, s.displacement], [5, 5, Math.sqrt(5)], { rtol: 1e-5 });

  // dx/dt = (π/2)·(−y, x) from (1, 0): a quarter circle; energy (π/2)², chord² 2.
  const rot = (x: Tensor) => x.mul(Math.PI / 2).matmul(tensor([[0, 1], [-1, 0]]));
  const r = await integrate(rot, tensor([[1, 0], [0, 2]]), {
    method: "rk4",
    steps: 64,
    record: true,
  });
  const q = await straightness(r.trajectory!, r.times);
  // Radii 1 and 2: E r² = 2.5.
  assertClose([q.energy, q.displacementSq], [2.5 * (Math.PI / 2) ** 2, 2.5 * 2], { rtol: 1e-3 });
  assertClose([q.straightness], [2.5 * ((Math.PI / 2) ** 2 - 2)], { rtol: 2e-3 });
  assertClose([q.lengthRatio], [Math.PI / 2 / Math.SQRT2], { rtol: 1e-3 });
  assertClose([q.straightness], [q.energy - q.displacementSq], { rtol: 1e-6 });
  await assert.rejects(() => straightness([x0]), /at least 2 states/);
  await assert.rejects(() => straightness([x0, x0], [0, 0.5, 1]), /times/);
});

Deno.test("varianceCurves 'cfm-stf' (SV's plotted curve): high near noise, ~0 near data since x1 is a reference", async () => {
  // ‖x1 − x0 − STF‖² = ‖E_STF[x1 | x_t] − x1‖²/(1−t)²: near noise the posterior mean is the
  // data mean (error ≈ the data's spread), near data it collapses onto x1 itself because x1 is
  // one of the references (were it not, the error would blow up as 1/(1−t)²).
  const [r] = await varianceCurves({
    dims: [10],
    numT: 2,
    tMin: 0.1,
    tMax: 0.98,
    n: 256,
    pairRefSize: 1024,
    targets: ["cfm-stf"],
    numModes: 20,
  });
  const c = r!.curves["cfm-stf"]!;
  assert.equal(c.mean.length, 2);
  assert.ok(c.mean[0]! > 0.3, `near noise ${c.mean[0]}`);
  assert.ok(c.mean[1]! < c.mean[0]! / 100, `near data ${c.mean[1]} vs ${c.mean[0]}`);
  assert.ok(c.q15[0]! <= c.median[0]! && c.median[0]! <= c.q85[0]!);
});
