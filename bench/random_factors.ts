/**
 * @file The `wasm` backend's normals against JavaScript's, factor by factor, over every value
 * each factor can take: u1 = (m + 1)/2^24 and u2 = m/2^24 for every 24-bit m. For
 * sqrt(−2·log u1) and cos(fl(2π·u2)) as kernels/wasm_random.ts computes them, prints the
 * largest difference from `Math.sqrt(-2 * Math.log(u1))` and `Math.cos(2 * Math.PI * u2)` in
 * units of the last place (of the JavaScript value) and how many differ at all. The kernel's
 * margin (RANDOM_EPS, 2^-44) must stay far above the product's difference, which is at most
 * the two factors' relative differences plus one rounding.
 *
 *   deno run bench/random_factors.ts
 * @module
 */
import { RANDOM_EPS, randomFactorsModule } from "../kernels/wasm_random.ts";

const N = 1 << 24, BATCH = 1 << 16;
const mem = new WebAssembly.Memory({ initial: 64, maximum: 1024, shared: true });
const k = new WebAssembly.Instance(new WebAssembly.Module(randomFactorsModule() as BufferSource), {
  env: { mem },
}).exports.k as (...a: number[]) => void;
const A = 0, B = 4 * BATCH, OUT = 8 * BATCH;
const words = new Uint32Array(mem.buffer);
const out = new Float64Array(mem.buffer, OUT, 6 * (BATCH / 2));
const f64 = new Float64Array(1), u64 = new BigUint64Array(f64.buffer);
const ulp = (x: number) => {
  // The spacing of doubles at |x|.
  f64[0] = Math.abs(x);
  u64[0] = u64[0]! ^ 1n;
  return Math.abs(f64[0] - Math.abs(x)) || Number.MIN_VALUE;
};
let maxR = 0, maxC = 0, diffR = 0, diffC = 0, maxRel = 0;
const t0 = performance.now();
for (let m0 = 0; m0 < N; m0 += BATCH) {
  for (let i = 0; i < BATCH; i++) words[A / 4 + i] = words[B / 4 + i] = (m0 + i) << 8;
  k(A, B, OUT, BATCH);
  for (let i = 0; i < BATCH; i++) {
    const m = m0 + i, j = i >> 1, l = i & 1;
    const r = out[6 * j + l]!, c = out[6 * j + 2 + l]!;
    const rj = Math.sqrt(-2 * Math.log((m + 1) / 2 ** 24));
    const cj = Math.cos(2 * Math.PI * (m / 2 ** 24));
    if (!Object.is(r, rj)) {
      diffR++;
      maxR = Math.max(maxR, Math.abs(r - rj) / ulp(rj));
      maxRel = Math.max(maxRel, Math.abs(r - rj) / Math.abs(rj));
    }
    if (!Object.is(c, cj)) {
      diffC++;
      maxC = Math.max(maxC, Math.abs(c - cj) / ulp(cj));
      maxRel = Math.max(maxRel, Math.abs(c - cj) / Math.abs(cj));
    }
  }
}
console.log(JSON.stringify({
  values: N,
  sqrtLogDiffer: diffR,
  sqrtLogMaxUlp: maxR,
  cosDiffer: diffC,
  cosMaxUlp: maxC,
  maxRelative: maxRel,
  eps: RANDOM_EPS,
  epsOverMaxRelative: maxRel > 0 ? RANDOM_EPS / maxRel : null,
  ms: Math.round(performance.now() - t0),
}));
