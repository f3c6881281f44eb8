import { strict as assert } from "node:assert";
import {
  checkerboard,
  frechetDistance,
  frechetDistanceOf,
  gaussianStats,
  Generator,
  histogramKL,
  integrate,
  mmdRbf,
  randn,
  sqrtmPsd,
  straightness,
  symmetricEigen,
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

// ---------------------------------------------------------------- Fréchet distance

/** Seeded host normals (mulberry32 + Box–Muller), independent of the library's RNG. */
function hostNormals(n: number, seed: number): Float64Array {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

/** A random orthogonal d×d matrix (Gram–Schmidt on Gaussian columns), row-major. */
function randomOrthogonal(d: number, seed: number): Float64Array {
  const g = hostNormals(d * d, seed), q = new Float64Array(d * d);
  for (let j = 0; j < d; j++) {
    const v = Array.from({ length: d }, (_, i) => g[i * d + j]!);
    for (let k = 0; k < j; k++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += v[i]! * q[i * d + k]!;
      for (let i = 0; i < d; i++) v[i]! -= dot * q[i * d + k]!;
    }
    const nrm = Math.hypot(...v);
    for (let i = 0; i < d; i++) q[i * d + j] = v[i]! / nrm;
  }
  return q;
}

/** Q diag(l) Qᵀ. */
function conj(q: Float64Array, l: readonly number[]): Float64Array {
  const d = l.length, out = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += q[i * d + k]! * l[k]! * q[j * d + k]!;
      out[i * d + j] = s;
    }
  }
  return out;
}

const stats = (mean: number[], cov: Float64Array) => ({
  dim: mean.length,
  n: 0,
  mean: Float64Array.from(mean),
  cov,
});

Deno.test("symmetricEigen / sqrtmPsd: A V = V Λ, and (√A)² = A on a random 12×12 SPD matrix", () => {
  const d = 12, q = randomOrthogonal(d, 7);
  const lam = Array.from({ length: d }, (_, i) => 0.1 + i * i);
  const A = conj(q, lam);
  const { values, vectors: V } = symmetricEigen(A, d);
  assertClose([...values].sort((a, b) => a - b), lam, { atol: 1e-9 });
  for (let k = 0; k < d; k++) {
    for (let i = 0; i < d; i++) {
      let av = 0;
      for (let j = 0; j < d; j++) av += A[i * d + j]! * V[j * d + k]!;
      assert.ok(Math.abs(av - values[k]! * V[i * d + k]!) < 1e-9, `column ${k} row ${i}`);
    }
  }
  const r = sqrtmPsd(A, d);
  const rr = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      for (let k = 0; k < d; k++) rr[i * d + j]! += r[i * d + k]! * r[k * d + j]!;
    }
  }
  assertClose([...rr], [...A], { atol: 1e-9 });
  // The root of Q diag(l) Qᵀ is Q diag(√l) Qᵀ.
  assertClose([...r], [...conj(q, lam.map(Math.sqrt))], { atol: 1e-9 });
});

Deno.test("frechetDistance: the 2×2 closed form for non-commuting covariances", () => {
  // For 2×2 PSD M, tr √M = √(tr M + 2√det M); with M = √Σa Σb √Σa:
  // tr M = tr(Σa Σb) and det M = det Σa · det Σb.
  const Sa = new Float64Array([2, 0.8, 0.8, 1]), Sb = new Float64Array([1, -0.5, -0.5, 3]);
  const trAB = Sa[0]! * Sb[0]! + Sa[1]! * Sb[2]! + Sa[2]! * Sb[1]! + Sa[3]! * Sb[3]!;
  const det = (m: Float64Array) => m[0]! * m[3]! - m[1]! * m[2]!;
  const trSqrt = Math.sqrt(trAB + 2 * Math.sqrt(det(Sa) * det(Sb)));
  const want = (1 - -1) ** 2 + (2 - 0.5) ** 2 + 2 + 1 + 1 + 3 - 2 * trSqrt;
  const a = stats([1, 2], Sa), b = stats([-1, 0.5], Sb);
  assertClose([frechetDistance(a, b)], [want], { atol: 1e-10 });
  assertClose([frechetDistance(b, a)], [want], { atol: 1e-10 });
  assert.ok(frechetDistance(a, a) < 1e-10);
});

Deno.test("frechetDistance: commuting 32-D covariances give ‖Δμ‖² + Σ(√a − √b)²; singular ones work", () => {
  const d = 32, q = randomOrthogonal(d, 11);
  const la = Array.from({ length: d }, (_, i) => 0.5 + (i % 5));
  const lb = Array.from({ length: d }, (_, i) => 2 + Math.sin(i));
  const ma = Array.from(hostNormals(d, 3)), mb = Array.from(hostNormals(d, 4));
  let want = 0;
  for (let i = 0; i < d; i++) {
    want += (ma[i]! - mb[i]!) ** 2 + (Math.sqrt(la[i]!) - Math.sqrt(lb[i]!)) ** 2;
  }
  assertClose([frechetDistance(stats(ma, conj(q, la)), stats(mb, conj(q, lb)))], [want], {
    atol: 1e-8,
  });
  // Rank-deficient Σa (half the eigenvalues 0): still the closed form.
  const lz = la.map((v, i) => (i < d / 2 ? 0 : v));
  let wz = 0;
  for (let i = 0; i < d; i++) wz += (Math.sqrt(lz[i]!) - Math.sqrt(lb[i]!)) ** 2;
  assertClose([frechetDistance(stats(ma, conj(q, lz)), stats(ma, conj(q, lb)))], [wz], {
    atol: 1e-6,
  });
});

Deno.test("frechetDistanceOf: 0 for the same set; samples of known Gaussians approach the closed form", () => {
  const d = 4, n = 20000;
  // x ~ N(0, I), y = L z + μ with L lower-triangular: Σy = L Lᵀ.
  const L = [1, 0, 0, 0, 0.5, 1.5, 0, 0, 0, 0.3, 0.7, 0, 0.2, 0, 0, 2];
  const mu = [1, -1, 0.5, 0];
  const zx = hostNormals(n * d, 21), zy = hostNormals(n * d, 22);
  const x = new Float32Array(zx), y = new Float32Array(n * d);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      let s = mu[i]!;
      for (let k = 0; k < d; k++) s += L[i * d + k]! * zy[r * d + k]!;
      y[r * d + i] = s;
    }
  }
  assert.ok(frechetDistanceOf(x, x, d) < 1e-9);
  // Closed form with Σx = I: ‖μ‖² + d + tr Σy − 2 tr √Σy, with tr √Σy from its eigenvalues.
  const Sy = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      for (let k = 0; k < d; k++) Sy[i * d + j]! += L[i * d + k]! * L[j * d + k]!;
    }
  }
  const ev = symmetricEigen(Sy, d).values;
  const want = mu.reduce((a, v) => a + v * v, 0) + d + ev.reduce((a, v) => a + v, 0) -
    2 * ev.reduce((a, v) => a + Math.sqrt(v), 0);
  const got = frechetDistanceOf(x, y, d);
  assert.ok(Math.abs(got - want) < 0.05 * want, `FD ${got} vs closed form ${want}`);
  // The sample statistics themselves are right.
  const s = gaussianStats(y, d);
  assertClose([...s.mean], mu, { atol: 0.05 });
  assertClose([...s.cov], [...Sy], { atol: 0.1 });
  assert.throws(() => frechetDistanceOf(x, y.subarray(0, 6), 4), /whole rows/);
  assert.throws(() => frechetDistanceOf(x, y, 3), /whole rows/);
});
