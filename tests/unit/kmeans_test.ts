/**
 * k-means: agreement with a plain-JS Lloyd from the same initial centers and with the
 * exhaustive optimum of small cases, recovery of separated blobs, empty-cluster re-seeding,
 * k-means++ D² sampling frequencies, row blocks, CPU vs WebGPU, and the typed errors.
 */
import { strict as assert } from "node:assert";
import { type Backend, backendByName, kmeans, type KMeansResult, tensor } from "../../mod.ts";
import { assertClose, CPU, HAS_WASM, HAS_WEBGPU } from "../_helpers.ts";

/** A small seeded PRNG for test data (mulberry32) and Box–Muller normals. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function normal(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** `per` points around each of `m` random centers in [-spread, spread]^d, shuffled. */
function blobs(m: number, per: number, d: number, std: number, spread: number, seed: number) {
  const r = rng(seed);
  const mus = Array.from(
    { length: m },
    () => Array.from({ length: d }, () => (2 * r() - 1) * spread),
  );
  const n = m * per;
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const x = new Float32Array(n * d), labels = new Int32Array(n);
  order.forEach((src, i) => {
    const c = Math.floor(src / per);
    labels[i] = c;
    for (let j = 0; j < d; j++) x[i * d + j] = mus[c]![j]! + std * normal(r);
  });
  return { x, labels, n, d };
}

/** Plain-JS Lloyd in f64 with kmeans()'s rules (ties to the lowest index, same re-seeding). */
function lloydRef(
  x: Float32Array,
  n: number,
  d: number,
  init: Float32Array,
  k: number,
  maxIters: number,
  tol: number,
) {
  const c = Float64Array.from(init);
  const a = new Int32Array(n), dist = new Float64Array(n);
  let prev = Infinity, it = 0, inertia = 0;
  for (;;) {
    inertia = 0;
    const counts = new Int32Array(k);
    for (let i = 0; i < n; i++) {
      let best = Infinity, arg = 0;
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let q = 0; q < d; q++) s += (x[i * d + q]! - c[j * d + q]!) ** 2;
        if (s < best) best = s, arg = j;
      }
      a[i] = arg, dist[i] = best, inertia += best;
      counts[arg]!++;
    }
    const empty = [...counts.keys()].filter((j) => counts[j] === 0);
    const maxD = Math.max(...dist);
    const rel = Number.isFinite(prev) ? Math.abs(prev - inertia) / prev : Infinity;
    if ((rel <= tol && (empty.length === 0 || maxD === 0)) || it >= maxIters) break;
    c.fill(0);
    for (let i = 0; i < n; i++) for (let q = 0; q < d; q++) c[a[i]! * d + q]! += x[i * d + q]!;
    for (let j = 0; j < k; j++) {
      for (let q = 0; q < d; q++) c[j * d + q]! /= Math.max(1, counts[j]!);
    }
    for (const j of empty) {
      let far = 0;
      for (let i = 1; i < n; i++) if (dist[i]! > dist[far]!) far = i;
      for (let q = 0; q < d; q++) c[j * d + q] = x[far * d + q]!;
      dist[far] = 0;
    }
    prev = inertia;
    it++;
  }
  return { centers: c, assignments: a, inertia, iterations: it };
}

/** Host inertia of an assignment with given centers. */
function inertiaOf(x: Float32Array, d: number, c: ArrayLike<number>, a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    for (let q = 0; q < d; q++) s += (x[i * d + q]! - c[a[i]! * d + q]!) ** 2;
  }
  return s;
}

async function run(x: Float32Array, n: number, d: number, k: number, be: Backend, opts = {}) {
  const t = tensor(x, [n, d], be);
  try {
    const r = await kmeans(t, k, opts);
    const centers = await r.centers.data();
    r.centers.dispose();
    return { ...r, centersHost: centers };
  } finally {
    t.dispose();
  }
}

/** Assert that `a` equals `labels` up to a relabelling of clusters (a bijection). */
function assertSamePartition(a: Int32Array, labels: Int32Array, k: number): void {
  const map = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    const m = map.get(a[i]!);
    if (m === undefined) map.set(a[i]!, labels[i]!);
    else assert.equal(m, labels[i], `row ${i}: cluster ${a[i]} holds labels ${m} and ${labels[i]}`);
  }
  assert.equal(map.size, k, "every cluster is used");
  assert.equal(new Set(map.values()).size, k, "clusters map one-to-one onto labels");
}

Deno.test("kmeans: same centers, assignments and inertia as a plain-JS Lloyd from the same init", async () => {
  // Overlapping blobs, so Lloyd needs several updates.
  const { x, n, d } = blobs(6, 40, 4, 1.0, 2.5, 11);
  for (const init of ["first-rows", "k-means++"] as const) {
    const k = 6;
    const start = init === "first-rows"
      ? x.slice(0, k * d)
      : (await run(x, n, d, k, CPU, { seed: 5, maxIters: 0 })).centersHost;
    const ref = lloydRef(x, n, d, start, k, 100, 1e-4);
    const r = await run(x, n, d, k, CPU, { init: tensor(start, [k, d], CPU), tol: 1e-4 });
    assert.ok(ref.iterations >= 3, `reference took ${ref.iterations} iterations (want a real run)`);
    assert.ok(
      Math.abs(r.inertia - ref.inertia) <= 0.01 * ref.inertia,
      `${init}: inertia ${r.inertia} vs reference ${ref.inertia}`,
    );
    assertClose([r.inertia], [ref.inertia], { rtol: 1e-5, msg: `${init} inertia (tight)` });
    assert.deepEqual(Array.from(r.assignments), Array.from(ref.assignments));
    assert.equal(r.iterations, ref.iterations);
    assertClose(r.centersHost, ref.centers, { rtol: 1e-5, atol: 1e-5, msg: `${init} centers` });
    // The k-means++ run from the seed is the same as from its own initial centers.
    if (init === "k-means++") {
      const s = await run(x, n, d, k, CPU, { seed: 5 });
      assert.deepEqual(Array.from(s.assignments), Array.from(r.assignments));
      assert.equal(s.inertia, r.inertia);
    }
    // The reported inertia is that of the returned centers and assignments.
    assertClose([inertiaOf(x, d, r.centersHost, r.assignments)], [r.inertia], { rtol: 1e-5 });
    const counts = new Int32Array(k);
    r.assignments.forEach((j) => counts[j]!++);
    assert.deepEqual(Array.from(r.counts), Array.from(counts));
  }
});

Deno.test("kmeans: best of 5 seeds is within 1% of the exhaustive optimum (9 points, k = 3)", async () => {
  const r = rng(3);
  const n = 9, d = 2, k = 3;
  const x = Float32Array.from({ length: n * d }, () => 4 * r());
  // All 3^9 labelings; the inertia of a partition is Σ over clusters of Σ‖x − mean‖².
  let best = Infinity;
  const lab = new Int32Array(n);
  for (let code = 0; code < 3 ** n; code++) {
    for (let i = 0, c = code; i < n; i++, c = Math.floor(c / 3)) lab[i] = c % 3;
    const mu = new Float64Array(k * d), cnt = new Int32Array(k);
    for (let i = 0; i < n; i++) {
      cnt[lab[i]!]!++;
      for (let q = 0; q < d; q++) mu[lab[i]! * d + q]! += x[i * d + q]!;
    }
    if (cnt.some((c) => c === 0)) continue;
    for (let j = 0; j < k; j++) for (let q = 0; q < d; q++) mu[j * d + q]! /= cnt[j]!;
    best = Math.min(best, inertiaOf(x, d, mu, lab));
  }
  let got = Infinity;
  for (let seed = 0; seed < 5; seed++) {
    const res = await run(x, n, d, k, CPU, { seed, tol: 0 });
    assert.ok(res.inertia >= best * (1 - 1e-5), `seed ${seed}: ${res.inertia} < optimum ${best}`);
    got = Math.min(got, res.inertia);
  }
  assert.ok(got <= best * 1.01, `best k-means inertia ${got}, optimum ${best}`);
});

for (const name of ["cpu", "wasm", "webgpu"] as const) {
  Deno.test({
    name: `kmeans (${name}): recovers 5 tight, well-separated blobs exactly`,
    ignore: (name === "webgpu" && !HAS_WEBGPU) || (name === "wasm" && !HAS_WASM),
    fn: async () => {
      const be = backendByName(name)!;
      const { x, labels, n, d } = blobs(5, 40, 8, 0.05, 5, 7);
      const r = await run(x, n, d, 5, be, { seed: 1 });
      assertSamePartition(r.assignments, labels, 5);
      assert.ok(r.converged);
      assert.deepEqual(Array.from(r.counts), [40, 40, 40, 40, 40]);
      // Each center is the mean of its blob.
      const mu = new Float64Array(5 * d);
      for (let i = 0; i < n; i++) {
        for (let q = 0; q < d; q++) mu[r.assignments[i]! * d + q]! += x[i * d + q]! / 40;
      }
      assertClose(r.centersHost, mu, { rtol: 1e-4, atol: 1e-5 });
      assertClose([r.inertia], [inertiaOf(x, d, mu, r.assignments)], { rtol: 1e-3 });
    },
  });
}

Deno.test("kmeans: an empty cluster is re-seeded with the point farthest from its center", async () => {
  // Blobs A at (0, 0) and B at (10, 0), one outlier O at (0, 8); the third initial center is
  // far from everything, so the first assignment leaves it empty. O (distance 64 to A's
  // center) is the farthest point from its center, and must become a cluster of its own.
  const r = rng(1);
  const pts: number[] = [];
  for (let i = 0; i < 10; i++) pts.push(0.1 * normal(r), 0.1 * normal(r));
  for (let i = 0; i < 10; i++) pts.push(10 + 0.1 * normal(r), 0.1 * normal(r));
  pts.push(0, 8);
  const x = Float32Array.from(pts), n = 21, d = 2;
  const init = new Float32Array([0, 0, 10, 0, 1000, 1000]);
  const seen: number[] = [];
  const res = await run(x, n, d, 3, CPU, {
    init: tensor(init, [3, 2], CPU),
    onIteration: (it: { emptyClusters: number }) => seen.push(it.emptyClusters),
  });
  assert.equal(seen[0], 1, "the first assignment leaves cluster 2 empty");
  assert.equal(res.reseeded, 1);
  assert.equal(res.assignments[20], 2, "the outlier takes the empty cluster");
  assert.deepEqual(Array.from(res.counts), [10, 10, 1]);
  assertClose(res.centersHost.subarray(4, 6), [0, 8]);
  const ref = lloydRef(x, n, d, init, 3, 100, 1e-4);
  assertClose([res.inertia], [ref.inertia], { rtol: 1e-5 });

  // Two empty clusters take the two farthest points, farthest first, never the same one.
  pts.push(20, -9); // O2: 9² + 10² = 181 from B's center, farther than O (64)
  const x2 = Float32Array.from(pts);
  const init2 = new Float32Array([0, 0, 10, 0, 1000, 1000, -1000, 1000]);
  const res2 = await run(x2, 22, 2, 4, CPU, { init: tensor(init2, [4, 2], CPU) });
  assert.equal(res2.reseeded, 2);
  assert.equal(res2.assignments[21], 2, "the farthest point re-seeds the first empty cluster");
  assert.equal(res2.assignments[20], 3, "the next-farthest point re-seeds the second");
  assert.deepEqual(Array.from(res2.counts), [10, 10, 1, 1]);
  assert.ok(res2.converged);
});

Deno.test("kmeans: k-means++ picks the next center with probability ∝ D² (300 seeds)", async () => {
  // x = 0, 1, 3 and k = 2: P{0,1} = (0.1 + 0.2)/3, P{0,3} = (0.9 + 9/13)/3, P{1,3} = (0.8 + 4/13)/3.
  // Uniform choice would give 1/3 each.
  const x = new Float32Array([0, 1, 3]);
  const freq = new Map<string, number>();
  const trials = 300;
  for (let seed = 0; seed < trials; seed++) {
    const r = await run(x, 3, 1, 2, CPU, { seed, maxIters: 0 });
    const key = Array.from(r.centersHost).sort().join(",");
    freq.set(key, (freq.get(key) ?? 0) + 1 / trials);
  }
  const want: Record<string, number> = {
    "0,1": 0.3 / 3,
    "0,3": (0.9 + 9 / 13) / 3,
    "1,3": (0.8 + 4 / 13) / 3,
  };
  assert.deepEqual([...freq.keys()].sort(), Object.keys(want));
  for (const [key, p] of Object.entries(want)) {
    assert.ok(Math.abs(freq.get(key)! - p) < 0.08, `P{${key}} = ${freq.get(key)}, want ${p}`);
  }
});

Deno.test("kmeans: maxIters 0 returns the initial assignment; tol 0 ends at a fixed point", async () => {
  const { x, n, d } = blobs(4, 30, 3, 1.5, 2, 5);
  const k = 4;
  const r0 = await run(x, n, d, k, CPU, { seed: 2, maxIters: 0 });
  assert.equal(r0.iterations, 0);
  assert.equal(r0.converged, false);
  const nearest = (c: ArrayLike<number>, i: number) => {
    let best = Infinity, arg = -1;
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let q = 0; q < d; q++) s += (x[i * d + q]! - c[j * d + q]!) ** 2;
      if (s < best - 1e-6) best = s, arg = j;
    }
    return arg;
  };
  for (let i = 0; i < n; i++) assert.equal(r0.assignments[i], nearest(r0.centersHost, i));
  const r = await run(x, n, d, k, CPU, { seed: 2, tol: 0 });
  assert.ok(r.converged && r.iterations > 0);
  for (let i = 0; i < n; i++) assert.equal(r.assignments[i], nearest(r.centersHost, i));
  const mu = new Float64Array(k * d);
  for (let i = 0; i < n; i++) {
    for (let q = 0; q < d; q++) {
      mu[r.assignments[i]! * d + q]! += x[i * d + q]! / r.counts[r.assignments[i]!]!;
    }
  }
  assertClose(r.centersHost, mu, { rtol: 1e-5, atol: 1e-5 });
  assert.ok(r.inertia < r0.inertia, "Lloyd lowers the inertia");
});

Deno.test("kmeans: row blocks and small distance batches give the same result as one tensor", async () => {
  const { x, n, d } = blobs(5, 50, 4, 1, 3, 9);
  const k = 5;
  const one = await run(x, n, d, k, CPU, { seed: 4 });
  const parts = [0, 70, 71, 180, n];
  const blocks = parts.slice(1).map((e, i) =>
    tensor(x.subarray(parts[i]! * d, e * d), [e - parts[i]!, d], CPU)
  );
  let r: KMeansResult | undefined;
  try {
    r = await kmeans(blocks, k, { seed: 4, batch: 33 });
    assert.deepEqual(Array.from(r.assignments), Array.from(one.assignments));
    assert.equal(r.iterations, one.iterations);
    assertClose([r.inertia], [one.inertia], { rtol: 1e-6 });
    assertClose(await r.centers.data(), one.centersHost, { rtol: 1e-6, atol: 1e-6 });
  } finally {
    r?.centers.dispose();
    for (const b of blocks) b.dispose();
  }
});

Deno.test({
  name: "kmeans: the WebGPU and CPU backends agree (assignments, iterations, centers, inertia)",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const { x, n, d } = blobs(8, 50, 6, 0.5, 4, 21);
    const gpu = backendByName("webgpu")!;
    const a = await run(x, n, d, 8, CPU, { seed: 3 });
    const b = await run(x, n, d, 8, gpu, { seed: 3 });
    assert.ok(a.iterations >= 1);
    assert.deepEqual(Array.from(b.assignments), Array.from(a.assignments));
    assert.equal(b.iterations, a.iterations);
    assert.deepEqual(Array.from(b.counts), Array.from(a.counts));
    assertClose(b.centersHost, a.centersHost, { rtol: 1e-4, atol: 1e-4 });
    assertClose([b.inertia], [a.inertia], { rtol: 1e-4 });
  },
});

Deno.test("kmeans: typed errors name the input and what was expected", async () => {
  const x = tensor(new Float32Array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]), [5, 2], CPU);
  await assert.rejects(() => kmeans(x, 6), (e: Error) => {
    assert.ok(e instanceof RangeError);
    assert.match(e.message, /k \(the number of clusters\).*\[1, 5\].*found 6/);
    return true;
  });
  await assert.rejects(() => kmeans(x, 0), RangeError);
  await assert.rejects(() => kmeans(x, 1.5), RangeError);
  for (const bad of [NaN, Infinity, -Infinity]) {
    const y = tensor(new Float32Array([0, 0, 1, bad, 2, 2]), [3, 2], CPU);
    await assert.rejects(() => kmeans(y, 2), /kmeans input x to hold finite values.*1 NaN/);
    y.dispose();
  }
  const flat = tensor(new Float32Array([1, 2, 3]), [3], CPU);
  await assert.rejects(() => kmeans(flat, 2), (e: Error) => {
    assert.ok(e instanceof RangeError);
    assert.match(e.message, /2-D Tensor \[n, d\] but found shape \[3\]/);
    return true;
  });
  // deno-lint-ignore no-explicit-any
  await assert.rejects(() => kmeans([[1, 2]] as any, 1), TypeError);
  await assert.rejects(
    () => kmeans(x, 2, { init: tensor(new Float32Array(6), [3, 2], CPU) }),
    /init to be centers of shape \[2, 2\] but found \[3, 2\]/,
  );
  // deno-lint-ignore no-explicit-any
  await assert.rejects(() => kmeans(x, 2, { init: "kmeans||" as any }), /kmeans init/);
  await assert.rejects(() => kmeans(x, 2, { maxIters: -1 }), /maxIters/);
  await assert.rejects(() => kmeans(x, 2, { tol: -1 }), /tol/);
  const wide = tensor(new Float32Array(3), [1, 3], CPU);
  await assert.rejects(() => kmeans([x, wide], 2), /x\[1\] to have rows and 2 columns/);
  x.dispose(), flat.dispose(), wide.dispose();
});
