import { strict as assert } from "node:assert";
import { exp, Generator, linearSumAssignment, otCouple, sinkhorn, sum, tensor } from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

function randomCost(n: number, m: number, seed: number): Float32Array {
  const u = new Generator(seed).uniformHost(n * m);
  return Float32Array.from(u, (x) => x * 2);
}

/** Plain f64 log-domain Sinkhorn with uniform marginals (the independent reference). */
function sinkhornRef(c: Float32Array, n: number, m: number, reg: number, iters: number) {
  const f = new Float64Array(n), g = new Float64Array(m);
  const lse = (xs: number[]) => {
    const mx = Math.max(...xs);
    return mx + Math.log(xs.reduce((s, x) => s + Math.exp(x - mx), 0));
  };
  for (let it = 0; it < iters; it++) {
    for (let i = 0; i < n; i++) {
      f[i] = -Math.log(n) - lse(Array.from({ length: m }, (_, j) => -c[i * m + j]! / reg + g[j]!));
    }
    for (let j = 0; j < m; j++) {
      g[j] = -Math.log(m) - lse(Array.from({ length: n }, (_, i) => -c[i * m + j]! / reg + f[i]!));
    }
  }
  return Array.from({ length: n * m }, (_, k) => {
    const i = Math.floor(k / m), j = k % m;
    return -c[k]! / reg + f[i]! + g[j]!;
  });
}

function permutations(n: number): number[][] {
  if (n === 0) return [[]];
  const out: number[][] = [];
  for (const p of permutations(n - 1)) {
    for (let k = 0; k <= p.length; k++) out.push([...p.slice(0, k), n - 1, ...p.slice(k)]);
  }
  return out;
}

Deno.test("sinkhorn: log plan matches a plain f64 Sinkhorn and its marginals converge", async () => {
  const n = 9, m = 7, c = randomCost(n, m, 3);
  const r = await sinkhorn(tensor(c, [n, m]), { reg: 0.2, maxIters: 30, tol: 0 });
  assert.equal(r.iters, 30);
  assertClose(await r.logPlan.data(), sinkhornRef(c, n, m, 0.2, 30), { atol: 2e-4, rtol: 1e-4 });

  const conv = await sinkhorn(tensor(c, [n, m]), {
    reg: 0.1,
    maxIters: 1000,
    tol: 1e-5,
    checkEvery: 5,
  });
  assert.ok(conv.marginalError <= 1e-5, `marginal error ${conv.marginalError}`);
  assert.ok(conv.iters < 1000 && conv.iters % 5 === 0, `stopped at a check (iters ${conv.iters})`);
  const p = await exp(conv.logPlan).data();
  const rows = Array.from(
    { length: n },
    (_, i) => p.slice(i * m, (i + 1) * m).reduce((a, b) => a + b),
  );
  const cols = Array.from({ length: m }, (_, j) => rows.reduce((s, _, i) => s + p[i * m + j]!, 0));
  assertClose(rows, new Array(n).fill(1 / n), { atol: 1e-5 });
  assertClose(cols, new Array(m).fill(1 / m), { atol: 1e-5 });
  // A huge tolerance stops at the first check.
  const early = await sinkhorn(tensor(c, [n, m]), { tol: 10, checkEvery: 4 });
  assert.equal(early.iters, 4);
});

Deno.test("linearSumAssignment: equals brute force on square and rectangular costs", () => {
  for (const seed of [1, 2, 3, 4]) {
    const n = 6, c = randomCost(n, n, seed);
    const sigma = linearSumAssignment(c, n);
    const costOf = (p: ArrayLike<number>) =>
      Array.from(p).reduce((s, j, i) => s + c[i * n + j]!, 0);
    const best = Math.min(...permutations(n).map(costOf));
    assert.ok(Math.abs(costOf(sigma) - best) < 1e-9, `seed ${seed}: ${costOf(sigma)} vs ${best}`);
    assert.equal(new Set(sigma).size, n);
  }
  const n = 3, m = 5, c = randomCost(n, m, 9);
  const sigma = linearSumAssignment(c, n, m);
  let best = Infinity;
  for (const p of permutations(m)) {
    best = Math.min(best, c[p[0]!]! + c[m + p[1]!]! + c[2 * m + p[2]!]!);
  }
  assert.ok(Math.abs(c[sigma[0]!]! + c[m + sigma[1]!]! + c[2 * m + sigma[2]!]! - best) < 1e-9);
  assert.throws(() => linearSumAssignment(c, 5, 3), /assignment columns/);
  assert.throws(() => linearSumAssignment([1, 2, 3], 2), /2×2 = 4 values/);
});

Deno.test("otCouple: recovers the hidden permutation on well-separated batches; labels follow", async () => {
  const n = 8;
  const centers = Array.from({ length: n }, (_, i) => [10 * (i % 3), 10 * Math.floor(i / 3)]);
  const perm = Array.from(new Generator(5).permutationHost(n));
  const x0 = tensor(centers.flat(), [n, 2]);
  const x1 = tensor(perm.flatMap((i) => [centers[i]![0]! + 0.05, centers[i]![1]! - 0.05]), [n, 2]);
  const labels = tensor(perm.map((i) => i % 3), [n]);
  for (const method of ["argmax", "exact", "sample"] as const) {
    const c = await otCouple(x0, x1, {
      method,
      labels,
      reg: 0.01,
      normalize: "max",
      maxIters: 300,
      generator: new Generator(1),
    });
    // Each pair must join a data row with the noise row it was built from.
    for (let k = 0; k < n; k++) {
      assert.equal(c.sourceIndex[k], perm[c.targetIndex[k]!], `${method} pair ${k}`);
    }
    const x0d = await c.x0.data(), x1d = await c.x1.data(), ld = await c.labels!.data();
    for (let k = 0; k < n; k++) {
      const j = c.targetIndex[k]!;
      assertClose(x1d.slice(2 * k, 2 * k + 2), [
        centers[perm[j]!]![0]! + 0.05,
        centers[perm[j]!]![1]! - 0.05,
      ], {
        atol: 1e-5,
      });
      assertClose(x0d.slice(2 * k, 2 * k + 2), centers[perm[j]!]!, { atol: 1e-5 });
      assert.equal(ld[k], perm[j]! % 3, `${method}: label follows its sample`);
    }
    if (method !== "exact") {
      assert.ok(c.marginalError < 1e-3 && c.iters > 0, `${method} error ${c.marginalError}`);
    }
  }
});

Deno.test("otCouple: random batches give valid pairs, and OT shortens the pairing", async () => {
  const g = new Generator(11);
  const n = 48;
  const x0 = g.normal([n, 3]), x1 = g.normal([n, 3]).add(1);
  const d0 = await x0.data(), d1 = await x1.data();
  const pairCost = (src: ArrayLike<number>, dst: ArrayLike<number>) => {
    let s = 0;
    for (let k = 0; k < src.length; k++) {
      for (let q = 0; q < 3; q++) s += (d0[3 * src[k]! + q]! - d1[3 * dst[k]! + q]!) ** 2;
    }
    return s / src.length;
  };
  const ident = Array.from({ length: n }, (_, i) => i);
  const indep = pairCost(ident, ident);
  const exact = await otCouple(x0, x1, { method: "exact" });
  assert.deepEqual([...exact.sourceIndex].sort((a, b) => a - b), ident, "exact is a permutation");
  const exactCost = pairCost(exact.sourceIndex, exact.targetIndex);
  assert.ok(exactCost < 0.7 * indep, `exact ${exactCost} vs independent ${indep}`);
  for (const method of ["argmax", "sample"] as const) {
    const c = await otCouple(x0, x1, {
      method,
      maxIters: 200,
      reg: 0.01,
      normalize: "max",
      generator: g,
    });
    assert.equal(c.sourceIndex.length, n);
    assert.ok(
      [...c.sourceIndex, ...c.targetIndex].every((i) => Number.isInteger(i) && i >= 0 && i < n),
    );
    if (method === "argmax") assert.deepEqual([...c.targetIndex], ident);
    const cost = pairCost(c.sourceIndex, c.targetIndex);
    assert.ok(
      cost >= exactCost - 1e-4 || method === "argmax",
      `${method} cannot beat the exact plan`,
    );
    assert.ok(cost < 0.8 * indep, `${method} ${cost} vs independent ${indep}`);
    assert.equal(c.x0.shape[0], n);
  }
  // The plan sums to one (uniform marginals 1/n).
  const sk = await sinkhorn(tensor(randomCost(5, 5, 2), [5, 5]));
  assertClose([await sum(exp(sk.logPlan)).item()], [1], { atol: 1e-4 });
});

Deno.test("otCouple and sinkhorn: bad inputs raise typed errors", async () => {
  await assert.rejects(() => sinkhorn(tensor([1, 2, 3])), /2-D tensor/);
  await assert.rejects(() => sinkhorn(tensor([[1]]), { reg: 0 }), /Sinkhorn reg/);
  await assert.rejects(() => otCouple(tensor([[1, 2]]), tensor([[1, 2, 3]])), /same row size/);
  await assert.rejects(
    () => otCouple(tensor([[1], [2]]), tensor([[1], [2], [3]]), { method: "exact" }),
    /equal batch sizes/,
  );
  await assert.rejects(
    () => otCouple(tensor([[1]]), tensor([[1]]), { method: "hungarian" as "exact" }),
    /coupling method/,
  );
  await assert.rejects(
    () => otCouple(tensor([[1]]), tensor([[1]]), { labels: tensor([1, 2]) }),
    /labels/,
  );
});

Deno.test("otCouple: the default is seed 003's raw cost (an f64 Sinkhorn on the unscaled cost agrees)", async () => {
  // Points spread over ~[-6, 6]: the maximum cost is far from 1, so a normalised cost would
  // give a different plan, and the f64 reference below would not match it.
  const g = new Generator(21);
  const n = 7, reg = 0.5;
  const x0 = g.normal([n, 2]).mul(3), x1 = g.normal([n, 2]).mul(3).add(1);
  const a = await x0.data(), b = await x1.data();
  const C = Array.from({ length: n * n }, (_, k) => {
    const i = Math.floor(k / n), j = k % n;
    return (a[2 * i]! - b[2 * j]!) ** 2 + (a[2 * i + 1]! - b[2 * j + 1]!) ** 2;
  });
  // Plain-loop Sinkhorn in f64 with uniform marginals: π = diag(u) K diag(v), K = exp(−C/reg).
  const K = C.map((c) => Math.exp(-c / reg));
  let u = new Array(n).fill(1), v = new Array(n).fill(1);
  for (let it = 0; it < 5000; it++) {
    u = u.map((_, i) => 1 / n / v.reduce((s, vj, j) => s + K[i * n + j]! * vj, 0));
    v = v.map((_, j) => 1 / n / u.reduce((s, ui, i) => s + K[i * n + j]! * ui, 0));
  }
  const plan = K.map((k, idx) => u[Math.floor(idx / n)]! * k * v[idx % n]!);
  const refArgmax = Array.from({ length: n }, (_, j) => {
    let best = 0;
    for (let i = 1; i < n; i++) if (plan[i * n + j]! > plan[best * n + j]!) best = i;
    return best;
  });
  const c = await otCouple(x0, x1, { method: "argmax", reg, maxIters: 2000 });
  assert.deepEqual([...c.sourceIndex], refArgmax);
  const sk = await sinkhorn(tensor(C, [n, n]), { reg, maxIters: 2000 });
  assertClose(await exp(sk.logPlan).data(), plan, { atol: 2e-4 });
  // And max-normalisation really is a different plan here (so the test can tell them apart).
  const scaled = await otCouple(x0, x1, {
    method: "argmax",
    reg,
    normalize: "max",
    maxIters: 2000,
  });
  assert.notDeepEqual([...scaled.sourceIndex], refArgmax);
});
