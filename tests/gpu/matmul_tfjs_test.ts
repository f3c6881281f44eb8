/**
 * @file The WGSL matmul kernels (`kernels/matmul.ts`) checked against two independent oracles:
 * the CPU backend's `matmul` (f64 accumulation) and TensorFlow.js 4.22 — on its WebGPU backend
 * on the same adapter when it initialises under Deno, otherwise on its CPU backend (the test
 * names say which). Kernels run through a raw-WebGPU harness (`bench/harness.ts`), and through
 * `matmul()` on the library's WebGPU backend when that backend is available.
 */
import { strict as assert } from "node:assert";
import { matmul, setBackend, tensor } from "../../mod.ts";
import type { MatmulGeom } from "../../lib/ir.ts";
import { buildMatmul, type MatmulBuildOptions } from "../../kernels/matmul.ts";
import { openGpu, runMatmul } from "../../bench/harness.ts";
import { loadTfjs } from "../../bench/peers/tfjs.ts";
import { assertClose, CPU, HAS_WEBGPU } from "../_helpers.ts";

const gpu = await openGpu();
const tfjs = gpu ? await loadTfjs() : null;
const TF = tfjs ? `tfjs-${tfjs.backend}` : "tfjs";
const pipelines = new Map<string, GPUComputePipeline>();

// f32 accumulation order differs between kernels (and from the CPU backend's f64 sums): with
// entries in [-1, 1] the rounding error of a k-term dot product grows like √k·ε·|terms|, so the
// absolute tolerance scales with √k; k = 0 must give exact zeros.
const tol = (k: number) => ({ rtol: 1e-4, atol: 1e-4 * Math.sqrt(k) });

function rand(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

interface Case {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Batch of A and of B: equal, or one of them 1 (broadcast). */
  batchA: number;
  batchB: number;
}

function geomOf(c: Case): MatmulGeom {
  return {
    batch: Math.max(c.batchA, c.batchB),
    m: c.m,
    n: c.n,
    k: c.k,
    transA: c.transA,
    transB: c.transB,
    aBatchStride: c.batchA === 1 ? 0 : c.m * c.k,
    bBatchStride: c.batchB === 1 ? 0 : c.k * c.n,
  };
}

const shapeA = (c: Case) => [c.batchA, ...(c.transA ? [c.k, c.m] : [c.m, c.k])];
const shapeB = (c: Case) => [c.batchB, ...(c.transB ? [c.n, c.k] : [c.k, c.n])];
const label = (c: Case) =>
  `${c.batchA}x${c.batchB} m${c.m} n${c.n} k${c.k} ${c.transA ? "T" : "N"}${c.transB ? "T" : "N"}`;

async function cpuMatmul(c: Case, a: Float32Array, b: Float32Array): Promise<Float32Array> {
  using ta = tensor(a, shapeA(c), CPU);
  using tb = tensor(b, shapeB(c), CPU);
  using out = matmul(ta, tb, { transA: c.transA, transB: c.transB });
  return await out.data();
}

const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const EXTENTS: [number, number, number][] = [
  [1, 1, 1],
  [7, 33, 1],
  [33, 7, 257],
  [257, 33, 7],
  [1, 1000, 7],
  [1000, 1, 33],
  [257, 257, 33],
  [33, 1000, 257],
  [16, 32, 8], // every extent a multiple of 4: the vec4 paths
];
const EXTENT_CASES: Case[] = EXTENTS.flatMap(([m, n, k]) =>
  TRANS.map(([transA, transB]) => ({ m, n, k, transA, transB, batchA: 1, batchB: 1 }))
);
const BATCH_CASES: Case[] = TRANS.flatMap(([transA, transB]) => [
  { m: 7, n: 12, k: 33, transA, transB, batchA: 3, batchB: 1 },
  { m: 12, n: 7, k: 8, transA, transB, batchA: 1, batchB: 3 },
  { m: 20, n: 36, k: 17, transA, transB, batchA: 2, batchB: 2 },
]);
const CASES: Case[] = [...EXTENT_CASES, ...BATCH_CASES];
// tfjs compiles a pipeline per shape, so it sees a subset that still has every extent, every
// transpose pair and every broadcast pattern.
const TF_CASES: Case[] = [
  ...EXTENT_CASES.filter((_, i) => i % 3 === 0),
  ...BATCH_CASES.filter((_, i) => i % 2 === 0),
];

const refs = new Map<Case, Promise<[Float32Array, Float32Array, Float32Array]>>();
/** Inputs and the CPU backend's product for a case, computed once for all variants. */
function reference(c: Case): Promise<[Float32Array, Float32Array, Float32Array]> {
  let r = refs.get(c);
  if (!r) {
    const a = rand(c.batchA * c.m * c.k, 1 + c.m), b = rand(c.batchB * c.k * c.n, 2 + c.n);
    r = cpuMatmul(c, a, b).then((want) => [a, b, want]);
    refs.set(c, r);
  }
  return r;
}

// The direct family's default shapes already span its block sizes (1 to 16 rows, 4 to 16
// columns) and both lane mappings over these extents; each distinct shape is a pipeline that
// takes up to a second to compile on lavapipe, so forced shapes are not repeated here.
const VARIANTS: [string, MatmulBuildOptions][] = [
  ["direct", { variant: "direct" }],
  // The default FMA order is k-inner; the k-outer order must give the same products.
  ["direct k-outer", { variant: "direct", fmaOrder: "k-outer" }],
  ["tiled", { variant: "tiled" }],
];

for (const [name, opts] of VARIANTS) {
  Deno.test({
    name: `buildMatmul ${name} matches the CPU backend on tails, transposes and broadcasting`,
    ignore: !gpu,
    async fn() {
      for (const c of CASES) {
        const [a, b, want] = await reference(c);
        const got = await runMatmul(gpu!, a, b, geomOf(c), opts, pipelines);
        assertClose(got, want, { ...tol(c.k), msg: `${name} ${label(c)}` });
      }
    },
  });
}

Deno.test({
  name: `buildMatmul default kernel matches ${TF} on tails, transposes and broadcasting`,
  ignore: !gpu || !tfjs,
  async fn() {
    for (const c of TF_CASES) {
      const a = rand(c.batchA * c.m * c.k, 3 + c.k), b = rand(c.batchB * c.k * c.n, 4 + c.m);
      const got = await runMatmul(gpu!, a, b, geomOf(c), {}, pipelines);
      const want = await tfjs!.matmul(a, shapeA(c), b, shapeB(c), c.transA, c.transB);
      assertClose(got, want, { ...tol(c.k), msg: `${TF} ${label(c)}` });
    }
  },
});

Deno.test({
  name: `buildMatmul matches ${TF} on a 257x1000x1000 product with both operands transposed`,
  ignore: !gpu || !tfjs,
  async fn() {
    const c: Case = { m: 257, n: 1000, k: 1000, transA: true, transB: true, batchA: 1, batchB: 1 };
    const a = rand(c.m * c.k, 5), b = rand(c.k * c.n, 6);
    const got = await runMatmul(gpu!, a, b, geomOf(c), {}, pipelines);
    const want = await tfjs!.matmul(a, shapeA(c), b, shapeB(c), true, true);
    assertClose(got, want, { ...tol(c.k), msg: `${TF} ${label(c)}` });
  },
});

Deno.test({
  name: "buildMatmul gives exact zeros for k = 0 in every variant",
  ignore: !gpu,
  async fn() {
    for (const [name, opts] of VARIANTS) {
      for (const [transA, transB] of TRANS) {
        const g = geomOf({ m: 5, n: 9, k: 0, transA, transB, batchA: 2, batchB: 1 });
        // The harness starts the output as NaN, so the zeros must be written by the kernel.
        const z = new Float32Array(0);
        const got = await runMatmul(gpu!, z, z, g, opts, pipelines);
        assert.equal(got.length, 2 * 5 * 9);
        assert.ok(got.every((x) => x === 0), `${name} ${transA} ${transB}: ${got.slice(0, 4)}`);
      }
    }
  },
});

Deno.test({
  name: "buildMatmul folds more than 65535 workgroups per dimension and stays correct",
  ignore: !gpu,
  async fn() {
    // batch 70001 > 65535 workgroups in z; A broadcast along the batch.
    const g1: MatmulGeom = {
      batch: 70001,
      m: 2,
      n: 3,
      k: 2,
      transA: false,
      transB: false,
      aBatchStride: 0,
      bBatchStride: 6,
    };
    const a1 = rand(4, 7), b1 = rand(70001 * 6, 8);
    // Both lane mappings of the direct family; the tiled family is left out because 70001
    // workgroups of 256 invocations with barriers take tens of seconds on lavapipe (its
    // grid-stride loops mirror the direct family's).
    const laneMaps: [string, MatmulBuildOptions][] = [
      ["direct, lanes along columns", { variant: "direct", lanes: "cols" }],
      ["direct, lanes along rows", { variant: "direct", lanes: "rows" }],
    ];
    for (const [name, opts] of laneMaps) {
      const k1 = buildMatmul(g1, gpu!.info, opts);
      assert.ok(k1.workgroups.every((w) => w >= 1 && w <= 65535), `${name} ${k1.workgroups}`);
      const got = await runMatmul(gpu!, a1, b1, g1, opts, pipelines);
      const want = new Float32Array(70001 * 6);
      for (let z = 0; z < 70001; z++) {
        for (let i = 0; i < 2; i++) {
          for (let j = 0; j < 3; j++) {
            want[z * 6 + i * 3 + j] = a1[i * 2]! * b1[z * 6 + j]! +
              a1[i * 2 + 1]! * b1[z * 6 + 3 + j]!;
          }
        }
      }
      assertClose(got, want, { ...tol(2), msg: name });
    }
    // 524289 rows of one per invocation: more than 65535 workgroups of 8 row blocks in y.
    const m = 65535 * 8 + 9;
    const g2: MatmulGeom = { ...g1, batch: 1, m, n: 1, k: 1, aBatchStride: 0, bBatchStride: 0 };
    const opts2: MatmulBuildOptions = { variant: "direct", rows: 1, vecs: 1, lanes: "cols" };
    assert.equal(buildMatmul(g2, gpu!.info, opts2).workgroups[1], 65535);
    const a2 = rand(m, 9);
    const got2 = await runMatmul(gpu!, a2, new Float32Array([-2]), g2, opts2, pipelines);
    assertClose(got2, a2.map((x) => -2 * x), { rtol: 0, atol: 0 });
  },
});

Deno.test("buildMatmul keys identify the code and reject bad geometry and options", () => {
  const info = { isFallback: true, description: "llvmpipe (LLVM 15.0.6, 256 bits)" };
  const g: MatmulGeom = {
    batch: 2,
    m: 256,
    n: 256,
    k: 64,
    transA: false,
    transB: true,
    aBatchStride: 256 * 64,
    bBatchStride: 0,
  };
  // Another batch, k and n in the same alignment and size class: the same pipeline.
  const k1 = buildMatmul(g, info), k2 = buildMatmul({ ...g, batch: 5, n: 260, k: 128 }, info);
  assert.equal(k1.key, k2.key);
  assert.equal(k1.code, k2.code);
  const k3 = buildMatmul({ ...g, k: 63 }, info);
  assert.notEqual(k1.key, k3.key);
  assert.match(buildMatmul(g, { isFallback: false, description: "NVIDIA" }).key, /tiled/);
  assert.throws(() => buildMatmul({ ...g, m: -1 }, info), /Expected matmul geometry m to be/);
  assert.throws(() => buildMatmul({ ...g, k: 1.5 }, info), RangeError);
  assert.throws(() => buildMatmul(g, info, { rows: 0 }), /rows per invocation/);
  assert.throws(
    () => buildMatmul(g, info, { variant: "fast" as "tiled" }),
    /Unknown matmul variant "fast"/,
  );
});

Deno.test({
  name: "matmul on the webgpu backend matches the CPU backend (four transposes, broadcasting)",
  ignore: !HAS_WEBGPU,
  async fn() {
    const cases: Case[] = TRANS.flatMap(([transA, transB]) => [
      { m: 33, n: 257, k: 7, transA, transB, batchA: 1, batchB: 1 },
      { m: 9, n: 12, k: 33, transA, transB, batchA: 3, batchB: 1 },
    ]);
    for (const c of cases) {
      const a = rand(c.batchA * c.m * c.k, 10 + c.m), b = rand(c.batchB * c.k * c.n, 11 + c.n);
      const want = await cpuMatmul(c, a, b);
      const be = setBackend("webgpu");
      try {
        using ta = tensor(a, shapeA(c), be);
        using tb = tensor(b, shapeB(c), be);
        using out = matmul(ta, tb, { transA: c.transA, transB: c.transB });
        assertClose(await out.data(), want, { ...tol(c.k), msg: `webgpu ${label(c)}` });
      } finally {
        setBackend("cpu");
      }
    }
  },
});
