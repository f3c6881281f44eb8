/**
 * @file GFLOP/s of the `wasm` backend's matmul at a DiT step's shapes (hidden 128, batch 64 × 49
 * tokens = 3136 rows): the weight-gradient products dW = dzᵀ·x (transA, k = 3136; m × n = the
 * layer's out × in) and forward products ([3136, 128]·[128, 512] row-major B; x·Wᵀ with W
 * [512, 128], transB), plus two general shapes. Each `--base DIR` (repeatable) is a plain copy of another commit's tree
 * (`git archive <rev> | tar -x -C DIR`) whose `mod.ts` is imported as a second module graph
 * with a `wasm` backend of its own (its own workers; each waits in `Atomics.wait` while another
 * runs); this checkout is the last variant. Variants alternate within every round (the order
 * flipping each round), so load changes hit them alike. Each timed call is the backend's
 * `matmul` (copies into and out of the WebAssembly memory included, as in a training step).
 * Prints one JSON line per shape and variant (median and best GFLOP/s over `--rounds` rounds of
 * `--reps` calls), then the load average.
 *
 *   git archive 22373c9 | tar -x -C /tmp/base
 *   deno run --allow-read --allow-sys=loadavg bench/gemm_tn_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { floats, median } from "./cases/common.ts";
import { alternate } from "./_ab.ts";

/** One product: C [m, n] = op(A)·op(B) with inner dimension k. */
interface Shape {
  name: string;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
}

const ROWS = 3136;
/** The DiT step's products (dW of each 3136-row linear layer, and two forward ones). */
const SHAPES: readonly Shape[] = [
  { name: "dW fc2 [128,512]", m: 128, n: 512, k: ROWS, transA: true, transB: false },
  { name: "dW fc1 [512,128]", m: 512, n: 128, k: ROWS, transA: true, transB: false },
  { name: "dW qkv [384,128]", m: 384, n: 128, k: ROWS, transA: true, transB: false },
  { name: "dW [128,384]", m: 128, n: 384, k: ROWS, transA: true, transB: false },
  { name: "dW [128,768]", m: 128, n: 768, k: ROWS, transA: true, transB: false },
  { name: "dW proj [128,128]", m: 128, n: 128, k: ROWS, transA: true, transB: false },
  { name: "fwd NN [3136,128]·[128,512]", m: ROWS, n: 512, k: 128, transA: false, transB: false },
  { name: "fwd NT x·Wᵀ W[512,128]", m: ROWS, n: 512, k: 128, transA: false, transB: true },
  { name: "fwd NT x·Wᵀ W[128,512]", m: ROWS, n: 128, k: 512, transA: false, transB: true },
  // The small ones: AdaLN's modulation MLP on [64, 128] conditionings (dx, forward, dW), the
  // final layer's dx (k = 16 outputs a token) and the timestep MLP's dx.
  { name: "small NN [64,128] k=768", m: 64, n: 128, k: 768, transA: false, transB: false },
  { name: "small NT [64,768] k=128", m: 64, n: 768, k: 128, transA: false, transB: true },
  { name: "small TN [768,128] k=64", m: 768, n: 128, k: 64, transA: true, transB: false },
  { name: "small NN [3136,128] k=16", m: ROWS, n: 128, k: 16, transA: false, transB: false },
  { name: "small NN [64,128] k=256", m: 64, n: 128, k: 256, transA: false, transB: false },
  // Not the DiT's: a long k with a row-major A (the k blocks' other case), and a transposed A
  // with a B whose rows are 4 kB apart (packed, not read in place).
  { name: "NN n=1024", m: 1024, n: 1024, k: 1024, transA: false, transB: false },
  { name: "TN [256,1024] k=3136", m: 256, n: 1024, k: ROWS, transA: true, transB: false },
];

interface Be {
  upload(x: Float32Array): unknown;
  matmul(a: unknown, b: unknown, g: object): unknown;
  free(s: unknown): void;
  close?(): void;
}

// One module graph's wasm backend (2 threads unless --threads says otherwise).
async function load(root: URL, threads: number): Promise<Be> {
  const lib = await import(new URL("lib/backend/wasm.ts", root).href);
  return await lib.createWasmBackend({ threads }) as Be;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string", multiple: true, default: [] },
      rounds: { type: "string", default: "5" },
      reps: { type: "string", default: "3" },
      threads: { type: "string", default: "2" },
      only: { type: "string" },
    },
  });
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const threads = Number(values.threads);
  const variants: { name: string; be: Be }[] = [];
  for (const dir of values.base) {
    const root = pathToFileURL(Deno.realPathSync(dir) + "/");
    variants.push({ name: dir, be: await load(root, threads) });
  }
  variants.push({ name: "this", be: await load(new URL("../", import.meta.url), threads) });
  const shapes = SHAPES.filter((s) => !values.only || s.name.includes(values.only));
  for (const s of shapes) {
    const g = { batch: 1, ...s, aBatchStride: 0, bBatchStride: 0 };
    const ins = variants.map(({ name, be }) => ({
      name,
      be,
      a: be.upload(floats(s.m * s.k, 1)),
      b: be.upload(floats(s.k * s.n, 2)),
    }));
    const call = ({ be, a, b }: (typeof ins)[number], n: number) => {
      for (let j = 0; j < n; j++) be.free(be.matmul(a, b, g));
    };
    for (const v of ins) call(v, 2); // warm-up
    const res = await alternate(ins, { rounds, reps, alternateOrder: true }, call);
    const flop = 2 * s.m * s.n * s.k;
    for (const { name, be, a, b } of ins) {
      const ms = res.get(name)!.wall;
      console.log(JSON.stringify({
        shape: s.name,
        variant: name,
        ms: +median(ms).toFixed(2),
        gflops: +(flop / median(ms) / 1e6).toFixed(1),
        bestGflops: +(flop / Math.min(...ms) / 1e6).toFixed(1),
      }));
      be.free(a);
      be.free(b);
    }
  }
  console.log(JSON.stringify({ rounds, reps, threads, load: Deno.loadavg() }));
  for (const { be } of variants) be.close?.();
}
