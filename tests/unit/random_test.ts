/**
 * The Philox 4x32-10 generator: known-answer vectors, stream layout, determinism, state
 * round-trips, and distribution tests (moments with 5σ bounds, Kolmogorov–Smirnov at
 * α = 0.001, chi-square for randint). Every statistical test uses a fixed seed, so it is
 * deterministic; the bounds say how unlikely a failure would be for a correct generator.
 */
import { strict as assert } from "node:assert";
import * as fg from "../../mod.ts";
import { philox4x32, randomElement, randomStream } from "../../lib/philox.ts";
import { normalCdf } from "../_ref.ts";

fg.setBackend("cpu");

Deno.test("philox4x32: Random123 known-answer vectors (zeros, ones, pi digits)", () => {
  // From Random123's examples/kat_vectors (D. E. Shaw Research,
  // https://github.com/DEShawResearch/random123), the three "philox4x32 10" lines:
  //   philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000  6627e8d5 e169c58d bc57ac4c 9b00dbd8
  //   philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff  408f276d 41c83b0e a20bc7c6 6d5451fd
  //   philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0  d16cfe09 94fdcceb 5001e420 24126ea1
  // Columns: counter (4 words), key (2 words), expected output (4 words).
  const kat: [[number, number, number, number], [number, number], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [
      [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
      [0xffffffff, 0xffffffff],
      [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ],
    [
      [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
      [0xa4093822, 0x299f31d0],
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ],
  ];
  for (const [ctr, key, want] of kat) assert.deepEqual(philox4x32(ctr, key), want);
});

function wordsOf(f: Float32Array): number[] {
  return [...new Uint32Array(f.buffer, f.byteOffset, f.length)];
}

Deno.test("randomStream: every element is randomElement's, bit for bit, across the counter carry", () => {
  // randomStream computes four blocks at a time with its own multiply; randomElement is the
  // one-element definition on philox4x32. Counters near 2^32 make the low word wrap (and carry
  // into the high word, which itself wraps for the last state) inside the stream; the sizes
  // cover tails of every length against the four-block step and the two-or-four-word block.
  const states = [
    { key: [0, 0], counter: [0, 0] },
    { key: [1, 2], counter: [3, 0] },
    { key: [0xdeadbeef, 0xffffffff], counter: [0xfffffffd, 7] },
    { key: [0x9e3779b9, 5], counter: [0xffffffff, 0xffffffff] },
  ] as const;
  for (const st of states) {
    for (const size of [1, 2, 3, 5, 8, 9, 16, 17, 4097]) {
      for (const kind of ["uniform", "normal", "bits"] as const) {
        const s = randomStream(kind, size, st);
        assert.equal(s.length, size);
        const words = new Uint32Array(s.buffer);
        for (let i = 0; i < size; i++) {
          const e = randomElement(kind, i, st);
          const where = () => `${kind} size ${size} element ${i} of ${JSON.stringify(st)}`;
          if (!Object.is(s[i], e)) assert.fail(`${where()}: ${s[i]} vs ${e}`);
          if (kind === "bits") {
            // A NaN pattern compares equal to any NaN above, so check the word itself.
            const lo = st.counter[0] + Math.floor(i / 4);
            const hi = (st.counter[1] + (lo > 0xffffffff ? 1 : 0)) >>> 0;
            const w = philox4x32([lo >>> 0, hi, 0, 0], st.key);
            if (words[i] !== w[i % 4]) assert.fail(`${where()}: word ${words[i]} vs ${w[i % 4]}`);
          }
        }
      }
    }
  }
});

Deno.test("Generator streams: bits are Philox blocks (key = seed, counter = block index)", async () => {
  const g = new fg.Generator(0);
  const w = wordsOf(await g.bits([10]).data());
  const want = [
    ...philox4x32([0, 0, 0, 0], [0, 0]),
    ...philox4x32([1, 0, 0, 0], [0, 0]),
    ...philox4x32([2, 0, 0, 0], [0, 0]).slice(0, 2),
  ];
  assert.deepEqual(w, want);
  assert.equal(g.counter, 3);
  // A seed above 2^32 fills the high key word.
  const big = 5 * 2 ** 32 + 7;
  const wb = wordsOf(await new fg.Generator(big).bits([4]).data());
  assert.deepEqual(wb, philox4x32([0, 0, 0, 0], [7, 5]));
  // The 64-bit block counter carries into its high word.
  const wc = wordsOf(await new fg.Generator(9, 2 ** 32 - 1).bits([8]).data());
  assert.deepEqual(wc, [
    ...philox4x32([0xffffffff, 0, 0, 0], [9, 0]),
    ...philox4x32([0, 1, 0, 0], [9, 0]),
  ]);
  // uniform uses the top 24 bits of the same words.
  const u = await new fg.Generator(0).uniform([4]).data();
  assert.deepEqual([...u], want.slice(0, 4).map((x) => (x >>> 8) / 2 ** 24));
});

Deno.test("Generator: determinism per seed, different seeds differ, counter advances", async () => {
  const a = await new fg.Generator(42).normal([64]).data();
  const b = await new fg.Generator(42).normal([64]).data();
  const c = await new fg.Generator(43).normal([64]).data();
  assert.deepEqual(a, b);
  assert.ok(a.some((v, i) => v !== c[i]), "seeds 42 and 43 gave the same stream");
  const g = new fg.Generator(7);
  const d1 = await g.uniform([16]).data();
  const d2 = await g.uniform([16]).data();
  assert.ok(d1.some((v, i) => v !== d2[i]), "two draws from one generator were equal");
  // Two draws of 5 and 3 use ceil(5/4) + ceil(3/4) = 3 blocks; normal uses ceil(n/2).
  const h = new fg.Generator(1);
  h.uniform([5]);
  h.uniform([3]);
  assert.equal(h.counter, 3);
  h.normal([5]);
  assert.equal(h.counter, 6);
  // randn with the same seed is the same tensor; with a generator it advances.
  assert.deepEqual(
    await fg.randn([9], { seed: 3 }).data(),
    await fg.randn([9], { seed: 3 }).data(),
  );
  fg.manualSeed(11);
  const m1 = await fg.rand([8]).data();
  fg.manualSeed(11);
  assert.deepEqual(await fg.rand([8]).data(), m1);
});

Deno.test("Generator.fromState resumes the stream exactly", async () => {
  const g = new fg.Generator(1234);
  g.normal([7]);
  g.uniform([3]);
  const st = JSON.parse(JSON.stringify(g.state()));
  const next = [await g.normal([11]).data(), await g.uniform([6]).data(), g.uniformHost(5)];
  const r = fg.Generator.fromState(st);
  assert.deepEqual(await r.normal([11]).data(), next[0]);
  assert.deepEqual(await r.uniform([6]).data(), next[1]);
  assert.deepEqual(r.uniformHost(5), next[2]);
  assert.deepEqual(r.state(), g.state());
});

Deno.test("Generator.fork gives an independent stream and advances the parent", async () => {
  const g = new fg.Generator(5);
  const f1 = g.fork();
  const f2 = g.fork();
  assert.notEqual(f1.seed, f2.seed);
  const a = await f1.uniform([32]).data(), b = await f2.uniform([32]).data();
  const p = await new fg.Generator(5).uniform([32]).data();
  assert.ok(a.some((v, i) => v !== b[i]) && a.some((v, i) => v !== p[i]));
  // Forking is deterministic too.
  const h = new fg.Generator(5);
  assert.equal(h.fork().seed, f1.seed);
});

const N = 100_000;

function ks(sorted: Float64Array | number[], cdf: (x: number) => number): number {
  const n = sorted.length;
  let d = 0;
  for (let i = 0; i < n; i++) {
    const f = cdf(sorted[i]!);
    d = Math.max(d, (i + 1) / n - f, f - i / n);
  }
  return d;
}

function moments(x: ArrayLike<number>): [number, number] {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]!;
  const m = s / x.length;
  let v = 0;
  for (let i = 0; i < x.length; i++) v += (x[i]! - m) ** 2;
  return [m, v / (x.length - 1)];
}

Deno.test("uniform: in [0, 1), mean/variance within 5σ, KS test passes at α = 0.001", async () => {
  const u = await new fg.Generator(2024).uniform([N]).data();
  let lo = Infinity, hi = -Infinity;
  for (const v of u) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  assert.ok(lo >= 0 && hi < 1, `range [${lo}, ${hi}]`);
  const [m, v] = moments(u);
  // U(0,1): mean 1/2 with σ = √(1/12/n); variance 1/12 with σ ≈ √((μ₄ − σ⁴)/n), μ₄ = 1/80.
  assert.ok(Math.abs(m - 0.5) < 5 * Math.sqrt(1 / 12 / N), `mean ${m}`);
  assert.ok(Math.abs(v - 1 / 12) < 5 * Math.sqrt((1 / 80 - 1 / 144) / N), `variance ${v}`);
  const sorted = Float64Array.from(u).sort();
  const d = ks(sorted, (x) => Math.min(Math.max(x, 0), 1));
  // Asymptotic KS critical value at α = 0.001 is 1.95/√n.
  assert.ok(d < 1.95 / Math.sqrt(N), `KS D = ${d}`);
  // uniform(shape, low, high)
  const w = await new fg.Generator(1).uniform([1000], -3, 5).data();
  assert.ok(w.every((x) => x >= -3 && x < 5));
});

Deno.test("normal: mean/variance within 5σ, KS test against Φ passes at α = 0.001", async () => {
  const z = await new fg.Generator(99).normal([N]).data();
  assert.ok(z.every((x) => Number.isFinite(x)));
  const [m, v] = moments(z);
  // N(0,1): σ(mean) = 1/√n, σ(sample variance) ≈ √(2/n).
  assert.ok(Math.abs(m) < 5 / Math.sqrt(N), `mean ${m}`);
  assert.ok(Math.abs(v - 1) < 5 * Math.sqrt(2 / N), `variance ${v}`);
  const d = ks(Float64Array.from(z).sort(), normalCdf);
  assert.ok(d < 1.95 / Math.sqrt(N), `KS D = ${d}`);
  // Odd sizes and N(mean, std²).
  const s = await new fg.Generator(3).normal([20001], 2, 0.5).data();
  const [ms, vs] = moments(s);
  assert.ok(Math.abs(ms - 2) < 5 * 0.5 / Math.sqrt(20001), `mean ${ms}`);
  assert.ok(Math.abs(vs - 0.25) < 5 * 0.25 * Math.sqrt(2 / 20001), `variance ${vs}`);
});

Deno.test("randint: values are integers in [low, high) and uniform (chi-square, α = 0.001)", async () => {
  const k = await fg.randint(-3, 7, [N], { seed: 5 }).data();
  const counts = new Array<number>(10).fill(0);
  for (const v of k) {
    assert.ok(Number.isInteger(v) && v >= -3 && v < 7, `value ${v}`);
    counts[v + 3]!++;
  }
  const e = N / 10;
  const chi2 = counts.reduce((s, c) => s + (c - e) ** 2 / e, 0);
  // χ²(9 degrees of freedom) critical value at α = 0.001 is 27.877.
  assert.ok(chi2 < 27.877, `chi-square ${chi2}, counts ${counts}`);
  assert.ok(counts.every((c) => c > 0));
  // A narrow range far from 0: floor(u·n + low) would round up to `high` for u near 1.
  const far = await fg.randint(1_000_000, 1_000_010, [20_000], { seed: 6 }).data();
  assert.ok(far.every((v) => v >= 1_000_000 && v < 1_000_010), "randint reached high");
  assert.ok(far.some((v) => v === 1_000_009));
});

Deno.test("permutation/permutationHost: a permutation of [0, n), deterministic, not the identity", async () => {
  for (const n of [0, 1, 7, 1000]) {
    const p = await fg.permutation(n, { seed: n }).data();
    assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  }
  const g = new fg.Generator(8);
  const h = g.permutationHost(1000);
  assert.deepEqual([...h].sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i));
  assert.ok(h.some((v, i) => v !== i));
  assert.deepEqual(new fg.Generator(8).permutationHost(1000), h);
  // Fisher–Yates with uniform draws: each position is uniform. Position 0 over 4000 perms of
  // 4 elements: chi-square with 3 degrees of freedom, critical value 16.266 at α = 0.001.
  const gg = new fg.Generator(21);
  const c = [0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) c[gg.permutationHost(4)[0]!]!++;
  const chi2 = c.reduce((s, x) => s + (x - 1000) ** 2 / 1000, 0);
  assert.ok(chi2 < 16.266, `chi-square ${chi2}, counts ${c}`);
});
