/**
 * @file The matmul paths of engine round 2, each against the CPU backend (the living spec):
 * - `transB` products reading B through a uniform binding, one dispatch per 64 KiB chunk of
 *   output columns (`uniformChunk`, CPU adapters only): the flow-map MLP's shapes, a chunk
 *   narrower than n, one chunk, a bias + silu epilogue, batches sharing one B, and the
 *   geometries that must not take the path;
 * - the same products with the path switched off (`matmulOverrides`), and with the k-outer
 *   FMA order, which must give bitwise the same result as the default k-inner order (both add
 *   each accumulator's products in ascending k).
 *
 * Tolerance: |gpu − cpu| <= 1e-5·√k·max|cpu| (f32 sums of k products in a different order on
 * the CPU backend); the on/off and k-inner/k-outer comparisons are exact.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  backendByName,
  linear,
  matmul,
  randn,
  setBackend,
  type Tensor,
  toBackend,
} from "../../mod.ts";
import { assertClose, HAS_WEBGPU } from "../_helpers.ts";
import { uniformChunk } from "../../kernels/matmul.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";

const GPU = backendByName("webgpu") as WebGPUBackend | undefined;

Deno.test("uniformChunk picks 64 KiB chunks of output columns, or 0 where it does not apply", () => {
  const g = {
    batch: 1,
    m: 2048,
    n: 256,
    k: 256,
    transA: false,
    transB: true,
    aBatchStride: 0,
    bBatchStride: 0,
  };
  assert.equal(uniformChunk(g), 64);
  assert.equal(uniformChunk({ ...g, k: 4 }), 256); // the first layer: all of B in one chunk
  assert.equal(uniformChunk({ ...g, n: 96, k: 36 }), 96);
  assert.equal(uniformChunk({ ...g, transB: false }), 0);
  assert.equal(uniformChunk({ ...g, k: 6 }), 0); // rows of B not 16-byte aligned
  assert.equal(uniformChunk({ ...g, n: 2 }), 0); // fewer than 16 columns
  assert.equal(uniformChunk({ ...g, m: 64 }), 0); // lanes would run along columns
  assert.equal(uniformChunk({ ...g, batch: 3, bBatchStride: 65536 }), 0); // a B per batch
  assert.equal(uniformChunk({ ...g, batch: 3 }), 64); // one B for every batch
});

async function onGpu<T>(
  overrides: WebGPUBackend["matmulOverrides"],
  f: () => Promise<T>,
): Promise<T> {
  const prev = GPU!.matmulOverrides;
  GPU!.matmulOverrides = overrides;
  setBackend("webgpu");
  try {
    return await f();
  } finally {
    GPU!.matmulOverrides = prev;
    setBackend("cpu");
  }
}

const CASES: { name: string; a: number[]; b: number[]; epi?: boolean; nn?: boolean }[] = [
  { name: "flow-map hidden layer [2048,256]·[256,256]ᵀ (4 chunks)", a: [2048, 256], b: [256, 256] },
  { name: "first layer [512,4]·[256,4]ᵀ (1 chunk)", a: [512, 4], b: [256, 4] },
  { name: "chunk of 32 columns, m not a multiple of the row block", a: [37, 8], b: [32, 8] },
  { name: "96 columns of k = 36 (one chunk)", a: [201, 36], b: [96, 36] },
  { name: "batched A, one B", a: [3, 70, 20], b: [48, 20] },
  { name: "bias + silu epilogue (linear)", a: [300, 64], b: [128, 64], epi: true },
  // A·B (dz·W in a linear layer's backward pass): B transposed by one copy, then as above.
  { name: "A·B via a transposed B [2048,256]·[256,256]", a: [2048, 256], b: [256, 256], nn: true },
  { name: "A·B via a transposed B [37,8]·[8,32]", a: [37, 8], b: [8, 32], nn: true },
];

for (const c of CASES) {
  Deno.test({
    name: `matmul with B in a uniform buffer matches the CPU backend: ${c.name}`,
    ignore: !HAS_WEBGPU,
    fn: async () => {
      setBackend("cpu");
      const a = randn(c.a, { seed: 1 }), b = randn(c.b, { seed: 2 });
      const nOut = c.nn ? c.b[1]! : c.b[0]!;
      const bias = randn([nOut], { seed: 3 });
      const run = (x: Tensor, w: Tensor, bb: Tensor) =>
        c.epi ? linear(x, w, bb, { activation: "silu" }) : matmul(x, w, { transB: !c.nn });
      const want = await run(a, b, bias).data();
      const on = async (o: WebGPUBackend["matmulOverrides"]) =>
        await onGpu(o, async () => {
          const [x, w, bb] = await Promise.all([a, b, bias].map((t) => toBackend(t, GPU!)));
          const d0 = GPU!.stats().dispatches;
          const y = run(x!, w!, bb!);
          const n = GPU!.stats().dispatches - d0;
          const r = await y.data();
          [x!, w!, bb!, y].forEach((t) => t.dispose());
          return { r, n };
        });
      const ubo = await on({}), plain = await on({ uniformB: 0 });
      const outer = await on({ fmaOrder: "k-outer" });
      const k = c.a[c.a.length - 1]!;
      const scale = want.reduce((s, v) => Math.max(s, Math.abs(v)), 0);
      assertClose(ubo.r, want, { rtol: 0, atol: 1e-5 * Math.sqrt(k) * scale, msg: "uniform B" });
      assert.deepEqual(ubo.r, plain.r, "uniform B and storage B give the same bits");
      assert.deepEqual(outer.r, ubo.r, "k-outer and k-inner FMA orders give the same bits");
      const chunk = uniformChunk({
        batch: 1,
        m: c.a.slice(0, -1).reduce((p, q) => p * q, 1),
        n: nOut,
        k,
        transA: false,
        transB: true,
        aBatchStride: 0,
        bBatchStride: 0,
      });
      assert.ok(chunk > 0, "the case takes the uniform-B path");
      assert.equal(ubo.n, nOut / chunk + (c.nn ? 1 : 0), "one dispatch per chunk (+ the copy)");
      assert.equal(plain.n, 1);
    },
  });
}
