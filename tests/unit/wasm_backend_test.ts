/**
 * The `wasm` backend against the CPU backend (the living spec): matmul (every layout, edges of
 * the register block, batches with broadcast operands, epilogues; one and two threads) within
 * f32 accumulation error of an f64 product; elementwise expressions and sums bit for bit; a
 * whole training step (loss and gradients) close; fused attention forward and backward against
 * the CPU backend (NaN rows, the fallback for odd head widths, the plain-SIMD build); selection
 * by name; the SGEMM's GELU-tanh (with its derivative) and times-dense epilogues against the
 * product then the elementwise pass (1–3 threads); the committed kernel bytes current; and a
 * process using it exits (its workers do not keep it alive).
 */
import { strict as assert } from "node:assert";
import { CpuBackend, type CpuStorage } from "../../lib/backend/cpu.ts";
import { createWasmBackend, type WasmBackend } from "../../lib/backend/wasm.ts";
import { simdCost, simdSupports } from "../../lib/backend/wasm_jit.ts";
import { chain, type Expr, type MatmulGeom, unaryDerivative } from "../../lib/ir.ts";
import type { Storage } from "../../lib/backend/backend.ts";
import { rng as mulberry } from "../_ref.ts";

class Rand {
  #r: () => number;
  constructor(seed: number) {
    this.#r = mulberry(seed);
  }
  floats(n: number, lo: number, hi: number): Float32Array {
    return Float32Array.from({ length: n }, () => lo + (hi - lo) * this.#r());
  }
}

const cpu = new CpuBackend();

function f64Product(a: Float32Array, b: Float32Array, g: MatmulGeom): Float64Array {
  const { batch, m, n, k } = g;
  const o = new Float64Array(batch * m * n);
  for (let bi = 0; bi < batch; bi++) {
    const ao = bi * g.aBatchStride, bo = bi * g.bBatchStride;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const av = g.transA ? a[ao + p * m + i]! : a[ao + i * k + p]!;
          const bv = g.transB ? b[bo + j * k + p]! : b[bo + p * n + j]!;
          s += av * bv;
        }
        o[(bi * m + i) * n + j] = s;
      }
    }
  }
  return o;
}

/** Units in the last place of f32 x (the spacing of f32 values at |x|). */
function ulp(x: number): number {
  const a = Math.abs(x);
  if (a < 1.1754943508222875e-38) return 1.4e-45;
  return 2 ** (Math.floor(Math.log2(a)) - 23);
}

/** got ≈ want within `ulps` (NaN where NaN, infinities equal; below the normal range ≤ 1.2e-38). */
function assertUlps(got: Float32Array, want: Float32Array, ulps: number, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!, w = want[i]!;
    if (Number.isNaN(w) || !Number.isFinite(w)) {
      assert.ok(
        Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)),
        `${what} [${i}]: ${g} vs ${w}`,
      );
      continue;
    }
    const ok = Math.abs(g - w) <= ulps * ulp(w) || Math.abs(g - w) <= 1.2e-38;
    assert.ok(ok, `${what} [${i}]: ${g} vs ${w} (${(Math.abs(g - w) / ulp(w)).toFixed(1)} ulp)`);
  }
}

async function withWasm(
  threads: number,
  f: (be: WasmBackend) => Promise<void> | void,
  elementwiseSplitWork?: number,
) {
  const be = await createWasmBackend({ threads, elementwiseSplitWork });
  try {
    await f(be);
  } finally {
    be.close();
  }
}

for (const threads of [1, 2]) {
  Deno.test(`wasm backend (${threads} thread(s)): matmul in every layout matches an f64 product`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(threads);
      const shapes: [number, number, number][] = [
        [1, 1, 1],
        [5, 7, 3], // below one register block and one panel
        [6, 8, 2], // exactly one block
        [13, 17, 9], // ragged edges, odd k (the remainder step)
        [7, 9, 0], // k = 0: zeros
        [130, 520, 70], // wide enough to pack a row-major B, several threads' shares
        [257, 64, 300],
      ];
      for (const [m, n, k] of shapes) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (
              const [batch, aStride, bStride] of [[1, m * k, k * n], [3, m * k, 0], [2, 0, k * n]]
            ) {
              const aLen = Math.max(1, batch * m * k), bLen = Math.max(1, batch * k * n);
              const a = rng.floats(aLen, -1, 1), b = rng.floats(bLen, -1, 1);
              const g = {
                batch: batch!,
                m,
                n,
                k,
                transA,
                transB,
                aBatchStride: aStride!,
                bBatchStride: bStride!,
              };
              const got = be.readSync(be.matmul(be.upload(a), be.upload(b), g));
              const want = f64Product(a, b, g);
              assert.equal(got.length, want.length);
              for (let i = 0; i < want.length; i++) {
                // f32 accumulation of k products of magnitude ≤ 1.
                const tol = 1e-6 * (k + 1) * 4;
                assert.ok(
                  Math.abs(got[i]! - want[i]!) <= tol,
                  `${m}x${k}x${n} tA=${transA} tB=${transB} batch=${batch} [${i}]: ${got[i]} vs ${
                    want[i]
                  }`,
                );
              }
            }
          }
        }
      }
    });
  });
}

/** A stored [rows, cols] as [cols, rows]. */
function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

// A transposed A runs its sum in k blocks (128 rows of B at a time, partial sums kept in C):
// k below, at and past a block, not a multiple of it, 1, and the DiT's weight-gradient length
// plus one; ragged m and n; B read in place (narrow, and wide but not 4 kB-strided) and packed
// (transposed, or 1024 wide). Each product is checked against an f64 product, and against the
// same product with A row-major (one pass): the blocks keep each output's chain of f32
// multiply-adds in order, so the bits must be equal — on one thread and on two.
Deno.test("wasm backend: k-blocked products (transposed A) at the block boundaries", async () => {
  const shapes: [number, number, number][] = [
    [13, 17, 1],
    [13, 17, 5],
    [7, 9, 127],
    [7, 9, 128],
    [7, 9, 129],
    [19, 23, 255],
    [19, 23, 256],
    [19, 23, 257],
    [25, 31, 3137],
    [37, 520, 300], // wide B read in place
    [11, 1024, 200], // B rows 4 kB apart: packed
  ];
  const bits = new Map<string, Float32Array>();
  for (const threads of [1, 2]) {
    await withWasm(threads, (be) => {
      for (const [m, n, k] of shapes) {
        const rng = new Rand(m * 7919 + n * 31 + k); // the same operands on both thread counts
        const a = rng.floats(m * k, -1, 1), aT = transposed(a, m, k);
        for (const transB of [false, true]) {
          const b = rng.floats(k * n, -1, 1);
          const g = { batch: 1, m, n, k, transA: true, transB, aBatchStride: 0, bBatchStride: 0 };
          const what = `${m}x${k}x${n} tB=${transB} threads=${threads}`;
          const got = be.readSync(be.matmul(be.upload(aT), be.upload(b), g));
          const want = f64Product(aT, b, g);
          const tol = 1e-6 * (k + 1) * 4;
          for (let i = 0; i < want.length; i++) {
            assert.ok(
              Math.abs(got[i]! - want[i]!) <= tol,
              `${what} [${i}]: ${got[i]} vs ${want[i]}`,
            );
          }
          const onePass = be.readSync(
            be.matmul(be.upload(a), be.upload(b), { ...g, transA: false }),
          );
          assert.deepEqual(got, onePass, `${what}: blocked vs one pass`);
          const key = `${m}x${k}x${n} ${transB}`;
          if (bits.has(key)) assert.deepEqual(got, bits.get(key), `${what}: vs one thread`);
          else bits.set(key, got);
        }
      }
    });
  }
});

// A split product's row blocks are claimed in shares (guided: a 1/(2·threads) of what is left,
// this thread from the back, the workers from the front), so which thread computes a row depends
// on timing. Every row must still be computed exactly once with its block's whole k loop: the
// same bits on 1, 2 and 3 threads, in both kernels (row-major A; transposed A in k blocks), with
// a bias, with m not a multiple of the block, and for a batch (one split per matrix).
Deno.test("wasm backend: products split in claimed shares have one thread's bits", async () => {
  const shapes: [number, number, number, number, boolean][] = [
    [601, 40, 50, 1, false], // 101 row blocks, ragged last one
    [1000, 64, 24, 1, false], // many shares of the smallest size
    [301, 24, 700, 1, true], // transposed A, k blocks of 128
    [97, 48, 80, 3, false], // a batch of three splits
  ];
  const bits = new Map<string, Float32Array>();
  for (const threads of [1, 2, 3]) {
    await withWasm(threads, (be) => {
      for (const [m, n, k, batch, transA] of shapes) {
        const rng = new Rand(m + n + k);
        const a = rng.floats(batch * m * k, -1, 1), b = rng.floats(batch * k * n, -1, 1);
        const bias = rng.floats(n, -1, 1);
        const g = {
          batch,
          m,
          n,
          k,
          transA,
          transB: false,
          aBatchStride: m * k,
          bBatchStride: k * n,
        };
        const what = `${batch}×${m}x${k}x${n} tA=${transA} threads=${threads}`;
        const got = be.readSync(be.matmul(be.upload(a), be.upload(b), g));
        const want = f64Product(a, b, g);
        for (let i = 0; i < want.length; i++) {
          assert.ok(Math.abs(got[i]! - want[i]!) <= 4e-6 * (k + 1), `${what} [${i}]`);
        }
        const biased = batch === 1
          ? be.readSync(be.matmul(be.upload(a), be.upload(b), g, {
            expr: {
              kind: "binary",
              op: "add",
              a: { kind: "input", index: 0 },
              b: { kind: "input", index: 1 },
            },
            rows: [be.upload(bias)],
          }))
          : got;
        const key = `${batch}x${m}x${k}x${n}`;
        if (!bits.has(key)) bits.set(key, got), bits.set(`${key} bias`, biased);
        else {
          assert.deepEqual(got, bits.get(key), `${what}: vs one thread`);
          assert.deepEqual(biased, bits.get(`${key} bias`), `${what} + bias: vs one thread`);
        }
      }
    });
  }
});

Deno.test("wasm backend (1, 2, 3 threads): matmulBiasGrad has the bits of the transposed-A product and of reduce's column sums", async () => {
  // [m, n, k]: a's columns summed by their row blocks' owners (ragged last row block, k blocks
  // of 128 and one short block, one pass); and the swapped orientation (n ≥ 2m, k ≥ 1024,
  // m a multiple of 8), where a is the kernel's B and row block 0's owner sums it.
  const shapes: [number, number, number][] = [
    [301, 24, 700], // 51 row blocks, ragged; k = 5·128 + 60
    [20, 64, 9], // one pass, one thread
    [384, 128, 3136], // the DiT's qkv
    [128, 512, 1100], // swapped, k blocks
    [8, 40, 1030], // swapped, one panel of B
  ];
  const bits = new Map<string, [Float32Array, Float32Array]>();
  for (const threads of [1, 2, 3]) {
    await withWasm(threads, (be) => {
      for (const [m, n, k] of shapes) {
        const rng = new Rand(m * 7 + n + k);
        const a = rng.floats(k * m, -1, 1), b = rng.floats(k * n, -1, 1);
        const g = {
          batch: 1,
          m,
          n,
          k,
          transA: true,
          transB: false,
          aBatchStride: 0,
          bBatchStride: 0,
        };
        const what = `${m}x${n} k=${k} threads=${threads}`;
        const [w, s] = be.matmulBiasGrad(be.upload(a), be.upload(b), m, n, k).map((x) =>
          be.readSync(x)
        ) as [Float32Array, Float32Array];
        // The two calls it replaces, on the same backend: the same bits.
        assert.deepEqual(w, be.readSync(be.matmul(be.upload(a), be.upload(b), g)), `${what}: dW`);
        assert.deepEqual(
          s,
          be.readSync(be.reduce("sum", be.upload(a), [k, m], [0])),
          `${what}: db`,
        );
        // And an f64 model of both.
        const want = f64Product(a, b, g);
        for (let i = 0; i < want.length; i++) {
          assert.ok(Math.abs(w[i]! - want[i]!) <= 4e-6 * (k + 1), `${what}: dW [${i}]`);
        }
        for (let j = 0; j < m; j++) {
          let t = 0;
          for (let p = 0; p < k; p++) t += a[p * m + j]!;
          assert.equal(s[j], Math.fround(t), `${what}: db [${j}] (f64 sum, rounded once)`);
        }
        const key = `${m}x${n}x${k}`;
        if (!bits.has(key)) bits.set(key, [w, s]);
        else assert.deepEqual([w, s], bits.get(key), `${what}: vs one thread`);
      }
    });
  }
});

Deno.test("wasm backend (1, 2, 3 threads): GELU-tanh with its derivative, and a product times a dense array, in the SGEMM's stores have the bits of the product then the elementwise pass", async () => {
  // [m, n, k, batch, transA, bias]: ragged row blocks (m not a multiple of 6), one product
  // big enough to split, a batch of three, k blocks (transposed A), and n not a multiple of 8
  // (not in place: the product, then the elementwise pass).
  const shapes: [number, number, number, number, boolean, boolean][] = [
    [601, 64, 33, 1, false, true],
    [97, 48, 80, 3, false, false],
    [301, 24, 700, 1, true, true],
    [150, 20, 100, 1, false, true],
  ];
  const I = (index: number): Expr => ({ kind: "input", index });
  const bits = new Map<string, Float32Array[]>();
  for (const threads of [1, 2, 3]) {
    await withWasm(threads, (be) => {
      for (const [m, n, k, batch, transA, withBias] of shapes) {
        const rng = new Rand(m + 7 * n + k);
        const a = rng.floats(batch * m * k, -1, 1), b = rng.floats(batch * k * n, -1, 1);
        const bias = rng.floats(n, -1, 1), dense = rng.floats(batch * m * n, -2, 2);
        const g: MatmulGeom = {
          batch,
          m,
          n,
          k,
          transA,
          transB: false,
          aBatchStride: m * k,
          bBatchStride: k * n,
        };
        const z = withBias ? bin("add", X, Y) : X;
        const fwd = {
          exprs: [un("geluTanh", z), un("geluTanhGrad", z)],
          rows: withBias ? [be.upload(bias)] : [],
          dense: [],
        };
        const bwd = { exprs: [bin("mul", X, I(1))], rows: [], dense: [be.upload(dense)] };
        const [A, B] = [be.upload(a), be.upload(b)];
        const what = `${batch}×${m}x${k}x${n} tA=${transA} bias=${withBias} threads=${threads}`;
        const got = [
          ...be.matmulOutputs(A, B, g, fwd),
          ...be.matmulOutputs(A, B, g, bwd),
          // GELU alone: a linear layer's epilogue outside a tape.
          be.matmul(A, B, g, { expr: fwd.exprs[0]!, rows: fwd.rows }),
        ].map((x) => be.readSync(x));
        // The product, then the elementwise kernels (the generic path of every backend).
        const want = [
          ...CpuBackend.prototype.matmulOutputs.call(be, A, B, g, fwd),
          ...CpuBackend.prototype.matmulOutputs.call(be, A, B, g, bwd),
        ].map((x) => be.readSync(x));
        want.push(want[0]!);
        // The first differing element (a deepEqual of these arrays prints for minutes).
        const sameBits = (p: Float32Array, q: Float32Array, msg: string) => {
          assert.equal(p.length, q.length, msg);
          const i = p.findIndex((v, j) => !Object.is(v, q[j]));
          assert.ok(i < 0, `${msg} [${i}]: ${p[i]} vs ${q[i]}`);
        };
        ["gelu", "gelu'", "times dense", "gelu epilogue"].forEach((o, i) =>
          sameBits(got[i]!, want[i]!, `${what}: ${o} vs the product then the pass`)
        );
        const key = `${batch}x${m}x${k}x${n}`;
        if (!bits.has(key)) bits.set(key, got);
        else got.forEach((x, i) => sameBits(x, bits.get(key)![i]!, `${what}: vs one thread`));
        if (threads > 1) continue;
        // The CPU backend's elementwise ops on this product: GELU-tanh within the tolerances
        // of the vector-op test above, the derivative times 1 and times the dense array to a
        // few ulp of the result plus the derivative's own error.
        const prod = cpu.upload(be.readSync(be.matmul(A, B, g)));
        const cpuOut = (e: Expr, ins: Storage[], strides: number[][]) =>
          cpu.readSync(
            cpu.elementwise([e], [prod, ...ins], [[n, 1], ...strides], [batch * m, n])[0]!,
          );
        const zs = cpu.readSync(
          withBias
            ? cpu.elementwise([z], [prod, cpu.upload(bias)], [[n, 1], [0, 1]], [batch * m, n])[0]!
            : prod,
        );
        const rowIns = withBias ? [cpu.upload(bias)] : [];
        const rowStr = withBias ? [[0, 1]] : [];
        const wy = cpuOut(fwd.exprs[0]!, rowIns, rowStr),
          wd = cpuOut(fwd.exprs[1]!, rowIns, rowStr);
        const wm = cpuOut(bin("mul", X, Y), [cpu.upload(dense)], [[n, 1]]);
        for (let i = 0; i < wy.length; i++) {
          const x = Math.abs(zs[i]!), term = 0.25 * x * 0.798 * (1 + 0.134 * x * x);
          assert.ok(
            Math.abs(got[0]![i]! - wy[i]!) <= 3 * ulp(wy[i]!) + 0.9e-7 * x,
            `${what} gelu [${i}]: ${got[0]![i]} vs ${wy[i]}`,
          );
          assert.ok(
            Math.abs(got[1]![i]! - wd[i]!) <= 3 * ulp(wd[i]!) + 1e-6 * term + 3e-8,
            `${what} gelu' [${i}]: ${got[1]![i]} vs ${wd[i]}`,
          );
        }
        assertUlps(got[2]!, wm, 0, `${what}: times dense`);
      }
    });
  }
});

Deno.test("wasm backend: a matmul epilogue (bias + silu) is the CPU backend's on the same product", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(3);
    const m = 50, n = 20, k = 33;
    const a = rng.floats(m * k, -1, 1), b = rng.floats(n * k, -1, 1), bias = rng.floats(n, -1, 1);
    const g = { batch: 1, m, n, k, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0 };
    const silu: Expr = {
      kind: "unary",
      op: "silu",
      x: {
        kind: "binary",
        op: "add",
        a: { kind: "input", index: 0 },
        b: { kind: "input", index: 1 },
      },
      p0: 0,
      p1: 0,
    };
    const got = be.readSync(
      be.matmul(be.upload(a), be.upload(b), g, { expr: silu, rows: [be.upload(bias)] }),
    );
    // The epilogue applied by the CPU backend to the wasm product: equal to a few ulp (SiLU's
    // exp is a polynomial here).
    const prod = be.matmul(be.upload(a), be.upload(b), g);
    const [want] = cpu.elementwise([silu], [cpu.upload(be.readSync(prod)), cpu.upload(bias)], [[
      n,
      1,
    ], [0, 1]], [m, n]);
    assertUlps(got, cpu.readSync(want!), 4, "bias + silu");
  });
});

// Elementwise tests run on one thread, on two with the default split (these sizes stay on one),
// and on two with every call split (shares of a few vectors or rows each).
const EW_CONFIGS: [number, number | undefined, string][] = [
  [1, undefined, "1 thread"],
  [2, undefined, "2 threads"],
  [2, 0, "2 threads, every call split"],
];

for (const [threads, split, label] of EW_CONFIGS) {
  Deno.test(`wasm backend (${label}): elementwise expressions match the CPU backend through every view`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(5);
      const x: Expr = { kind: "input", index: 0 }, y: Expr = { kind: "input", index: 1 };
      const sig: Expr = { kind: "unary", op: "sigmoid", x, p0: 0, p1: 0 };
      const exprs: Expr[] = [
        { kind: "binary", op: "mul", a: x, b: sig }, // shares the input node
        {
          kind: "where",
          c: { kind: "binary", op: "gt", a: x, b: y },
          a: sig,
          b: { kind: "const", value: 0.1 },
        },
        {
          kind: "unary",
          op: "affine",
          x: { kind: "binary", op: "div", a: x, b: y },
          p0: 1.5,
          p1: -0.25,
        },
        y, // an output that is an input
      ];
      const shape = [7, 5];
      // Input 1 through each view: dense, a row (bias), a column, a scalar, a transposed matrix.
      const views: [number, number[]][] = [[35, [5, 1]], [5, [0, 1]], [7, [1, 0]], [1, [0, 0]], [
        35,
        [
          1,
          7,
        ],
      ]];
      for (const [len, strides] of views) {
        const xs = rng.floats(35, -3, 3), ys = rng.floats(len, -3, 3);
        const ins = [[5, 1], strides];
        const got = be.elementwise(exprs, [be.upload(xs), be.upload(ys)], ins, shape).map((s) =>
          be.readSync(s)
        );
        const want = cpu.elementwise(exprs, [cpu.upload(xs), cpu.upload(ys)], ins, shape).map((s) =>
          cpu.readSync(s)
        );
        for (let o = 0; o < exprs.length; o++) {
          assertUlps(got[o]!, want[o]!, 4, `view ${strides} output ${o}`);
        }
      }
    }, split);
  });
}

const sig64 = (x: number) => 1 / (1 + Math.exp(-x));
const TRUTH: Record<string, (x: number) => number> = {
  exp: Math.exp,
  rsqrt: (x) => 1 / Math.sqrt(x),
  sigmoid: sig64,
  silu: (x) => x * sig64(x),
  tanh: Math.tanh,
};

const SPECIAL = [
  NaN,
  Infinity,
  -Infinity,
  0,
  -0,
  1e-30,
  -1e-30,
  88,
  88.7,
  89,
  -87,
  -87.5,
  -100,
  1e30,
  -1e30,
  0.5,
  -0.5,
];

for (const [threads, split, label] of EW_CONFIGS) {
  Deno.test(`wasm backend (${label}): every vector op matches the CPU backend (exact ops bit for bit, transcendentals ≤ 3 ulp)`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(21);
      const grid = [...rng.floats(3000, -20, 20), ...rng.floats(500, -1, 1), ...SPECIAL];
      const xs = Float32Array.from(grid);
      const x: Expr = { kind: "input", index: 0 }, y: Expr = { kind: "input", index: 1 };
      // Ops whose result is one f32 rounding of the exact value, or a selection: the same bits.
      const exact = new Set([
        "neg",
        "copy",
        "abs",
        "sqrt",
        "square",
        "reciprocal",
        "floor",
        "relu",
        "sign",
        "gtScalar",
        "geScalar",
        "ltScalar",
        "leScalar",
        "eqScalar",
      ]);
      const unary: [string, number, number][] = [
        ["neg", 0, 0],
        ["copy", 0, 0],
        ["abs", 0, 0],
        ["sqrt", 0, 0],
        ["rsqrt", 0, 0],
        ["square", 0, 0],
        ["reciprocal", 0, 0],
        ["floor", 0, 0],
        ["relu", 0, 0],
        ["sign", 0, 0],
        ["affine", 1.5, -0.25],
        ["exp", 0, 0],
        ["sigmoid", 0, 0],
        ["silu", 0, 0],
        ["tanh", 0, 0],
        ["erf", 0, 0],
        ["gelu", 0, 0],
        ["geluTanh", 0, 0],
        ["geluTanhGrad", 0, 0],
        ["gtScalar", 0.5, 0],
        ["geScalar", 0.5, 0],
        ["ltScalar", 0.5, 0],
        ["leScalar", 0.5, 0],
        ["eqScalar", 0.5, 0],
      ];
      for (const [op, p0, p1] of unary) {
        const e = { kind: "unary", op, x, p0, p1 } as Expr;
        const [g] = be.elementwise([e], [be.upload(xs)], [[1]], [xs.length]);
        const [w] = cpu.elementwise([e], [cpu.upload(xs)], [[1]], [xs.length]);
        if (exact.has(op)) assert.deepEqual([...be.readSync(g!)], [...cpu.readSync(w!)], op);
        else if (op === "affine") {
          // Two f32 roundings (x·p0, then + p1) against the CPU's one: within an ulp of each term.
          const gv = be.readSync(g!), wv = cpu.readSync(w!);
          for (let i = 0; i < xs.length; i++) {
            if (!Number.isFinite(wv[i]!)) continue;
            const tol = ulp(xs[i]! * p0) + ulp(wv[i]!);
            assert.ok(Math.abs(gv[i]! - wv[i]!) <= tol, `affine(${xs[i]}): ${gv[i]} vs ${wv[i]}`);
          }
        } else if (op in TRUTH) {
          // Against the f64 function rounded once (an independent reference: the CPU backend's
          // own tanh is 0 below ~1e-8, where the quotient cancels).
          const truth = Float32Array.from(xs, TRUTH[op]!);
          assertUlps(be.readSync(g!), truth, 3, op);
        } else if (op === "geluTanh") {
          // Against the CPU backend (f64, rounded once): the kernel's tanh is ≤ 3 ulp of 1 off in
          // f32 and 1 + tanh cancels for x < 0, so up to ½|x|·1.8e-7 on top of 3 ulp.
          // Its forward and its backward (g·d, both DiT hot paths) must take the vector path: a
          // fallback to the JavaScript loop would give the same values several times slower.
          const back = chain(y, unaryDerivative("geluTanh", x, e, 0, 0)!);
          assert.ok(simdSupports([e, back]), "geluTanh forward and backward have a vector form");
          const gv = be.readSync(g!), wv = cpu.readSync(w!);
          for (let i = 0; i < xs.length; i++) {
            const ok = Object.is(gv[i], wv[i]) ||
              Math.abs(gv[i]! - wv[i]!) <= 3 * ulp(wv[i]!) + 0.9e-7 * Math.abs(xs[i]!);
            assert.ok(ok, `geluTanh(${xs[i]}): ${gv[i]} vs ${wv[i]}`);
          }
        } else if (op === "geluTanhGrad") {
          // Against the CPU backend (f64, rounded once): s = σ(2u) within a few ulp, plus the
          // rounding of the second term ½x(1 − t²)·u' (≤ |x|·u'/4) at a few ulp of its size.
          // Every finite input must give a finite derivative (1 or 0 in the tails), as there.
          const gv = be.readSync(g!), wv = cpu.readSync(w!);
          for (let i = 0; i < xs.length; i++) {
            const a = Math.abs(xs[i]!);
            const term = a < 10 ? 0.25 * a * 0.798 * (1 + 0.134 * a * a) : 0;
            const ok = Object.is(gv[i], wv[i]) ||
              Math.abs(gv[i]! - wv[i]!) <= 3 * ulp(wv[i]!) + 1e-6 * term + 3e-8;
            assert.ok(ok, `geluTanhGrad(${xs[i]}): ${gv[i]} vs ${wv[i]}`);
            if (Number.isFinite(xs[i]!)) assert.ok(Number.isFinite(gv[i]!), `finite at ${xs[i]}`);
          }
        } else {
          // erf/GELU: the A&S 7.1.26 approximation both backends implement (|error| ≤ 1.5e-7),
          // evaluated in f32 here and f64 there: equal to a few 1e-7 absolute.
          const gv = be.readSync(g!), wv = cpu.readSync(w!);
          for (let i = 0; i < xs.length; i++) {
            if (Number.isNaN(wv[i]!)) {
              assert.ok(Number.isNaN(gv[i]!), `${op}(${xs[i]})`);
              continue;
            }
            const tol = 3 * ulp(wv[i]!) + 4e-7 * (op === "gelu" ? Math.abs(xs[i]!) : 1);
            assert.ok(
              Math.abs(gv[i]! - wv[i]!) <= tol || gv[i] === wv[i],
              `${op}(${xs[i]}): ${gv[i]} vs ${wv[i]}`,
            );
          }
        }
      }
      const ys = Float32Array.from(grid.map((_, i) => grid[(i * 7 + 3) % grid.length]!));
      for (
        const op of [
          "add",
          "sub",
          "mul",
          "div",
          "maximum",
          "minimum",
          "eq",
          "ne",
          "lt",
          "le",
          "gt",
          "ge",
        ]
      ) {
        const e = { kind: "binary", op, a: x, b: y } as Expr;
        const [g] = be.elementwise([e], [be.upload(xs), be.upload(ys)], [[1], [1]], [xs.length]);
        const [w] = cpu.elementwise([e], [cpu.upload(xs), cpu.upload(ys)], [[1], [1]], [xs.length]);
        const gv = [...be.readSync(g!)], wv = [...cpu.readSync(w!)];
        for (let i = 0; i < wv.length; i++) {
          assert.ok(
            Object.is(gv[i], wv[i]) || (Number.isNaN(gv[i]) && Number.isNaN(wv[i])),
            `${op}(${xs[i]}, ${ys[i]}): ${gv[i]} vs ${wv[i]}`,
          );
        }
      }
    }, split);
  });
}

/** The same f32 values, bit for bit (any NaN matches any NaN, as elsewhere in these tests). */
function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!, w = want[i]!;
    if (!(Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)))) {
      assert.fail(`${what} [${i}]: ${g} vs ${w}`);
    }
  }
}

/** Seeded floats with NaN, ±∞ and ±0 around every place a share of `parts` could start. */
function specialFloats(rng: Rand, n: number, lo: number, hi: number): Float32Array {
  const xs = rng.floats(n, lo, hi);
  const special = [NaN, Infinity, -Infinity, -0, 0, 1e-40];
  for (const parts of [2, 3]) {
    for (let p = 1; p < parts; p++) {
      const at = Math.floor((n * p) / parts);
      for (let d = -6; d < 6; d++) {
        if (at + d >= 0 && at + d < n) xs[at + d] = special[(at + d) % special.length]!;
      }
    }
  }
  xs[n - 1] = NaN;
  xs[0] = -Infinity;
  return xs;
}

const X: Expr = { kind: "input", index: 0 }, Y: Expr = { kind: "input", index: 1 };
const Z: Expr = { kind: "input", index: 2 };
const un = (op: string, x: Expr, p0 = 0, p1 = 0) => ({ kind: "unary", op, x, p0, p1 }) as Expr;
const bin = (op: string, a: Expr, b: Expr) => ({ kind: "binary", op, a, b }) as Expr;

// Calls big enough to be split with the default threshold (elements × (simdCost − 8) ≥ 2^20,
// checked by `run`: ~600k elements of a dozen ops, or fewer and a transcendental) on 2 and 3
// threads, and with every call split. The ops listed bit for bit are exact in both backends
// (one f32 rounding or a selection).
for (const threads of [2, 3]) {
  for (const split of [undefined, 0]) {
    Deno.test(`wasm backend (${threads} threads${split === 0 ? ", every call split" : ""}): big elementwise calls split across the threads equal the CPU backend's`, async () => {
      await withWasm(threads, (be) => {
        const rng = new Rand(60 + threads);
        const run = (
          exprs: Expr[],
          ins: [Float32Array, number[]][],
          shape: number[],
        ): [Float32Array[], Float32Array[]] => {
          const n = shape.reduce((a, b) => a * b, 1);
          assert.ok(n * (simdCost(exprs) - 8) >= 2 ** 20, "a call the default splits");
          const strides = ins.map(([, st]) => st);
          const got = be.elementwise(exprs, ins.map(([x]) => be.upload(x)), strides, shape);
          const want = cpu.elementwise(exprs, ins.map(([x]) => cpu.upload(x)), strides, shape);
          return [got.map((s) => be.readSync(s)), want.map((s) => cpu.readSync(s))];
        };
        // Flat (dense and scalar inputs) over a length that is not a multiple of 4, nor of 3.
        const n = 600_001;
        const xs = specialFloats(rng, n, -5, 5), ys = specialFloats(rng, n, -5, 5);
        const flat: Expr[] = [
          bin("add", X, Y),
          bin("mul", X, Z),
          { kind: "where", c: bin("gt", X, Y), a: X, b: Y },
          bin("maximum", X, Y),
          un("relu", X),
          bin("div", X, Y),
          Y, // an output that is an input
        ];
        let [got, want] = run(flat, [[xs, [1]], [ys, [1]], [Float32Array.of(-1.5), [0]]], [n]);
        flat.forEach((_, o) => assertSameBits(got[o]!, want[o]!, `flat output ${o}`));
        // A transcendental (a few ulp of the CPU backend's Math.exp form).
        [got, want] = run([un("sigmoid", X), un("tanh", X)], [[xs, [1]]], [n]);
        assertUlps(got[0]!, want[0]!, 4, "sigmoid");
        assertUlps(got[1]!, Float32Array.from(xs, Math.tanh), 3, "tanh");
        // Rows: a bias along the columns ("row"), a per-row value ("col"), an odd row count;
        // then the same with a width that is not a multiple of 4 (the JavaScript loop).
        for (const [rows, cols] of [[1001, 604], [1001, 603]]) {
          const m = specialFloats(rng, rows * cols, -3, 3);
          const bias = specialFloats(rng, cols, -1, 1), col = specialFloats(rng, rows, -2, 2);
          const exprs = [bin("mul", bin("add", X, Y), Z), bin("sub", Z, Y), un("neg", X)];
          [got, want] = run(
            exprs,
            [[m, [cols, 1]], [bias, [0, 1]], [col, [1, 0]]],
            [rows, cols],
          );
          exprs.forEach((_, o) => assertSameBits(got[o]!, want[o]!, `${rows}x${cols} output ${o}`));
        }
        // A transposed input (copied contiguous first) in a split call.
        const t = rng.floats(700 * 900, -2, 2), u = rng.floats(700 * 900, -2, 2);
        [got, want] = run(
          [bin("mul", X, Y), un("sigmoid", bin("sub", X, Y))],
          [[t, [1, 700]], [u, [900, 1]]],
          [700, 900],
        );
        assertSameBits(got[0]!, want[0]!, "transposed: mul");
        assertUlps(got[1]!, want[1]!, 4, "transposed: sigmoid");
      }, split);
    });
  }
}

Deno.test("wasm backend: a call reads the last call's outputs in place only while they are unchanged", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(75);
    // The same calls on both backends, step by step; every result compared bit for bit.
    const n = 200_003, xs = rng.floats(n, -3, 3), ys = rng.floats(n, -3, 3);
    const ms = rng.floats(600 * 400, -3, 3), xys = new Float32Array(2 * n);
    xys.set(xs);
    xys.set(ys, n);
    type B = WasmBackend | CpuBackend;
    const ew = (b: B, e: Expr[], ins: Storage[]) => {
      const len = b.readSync(ins[0]!).length;
      return b.elementwise(e, ins, ins.map(() => [1]), [len]);
    };
    const script = (b: B): Float32Array[] => {
      const got: Float32Array[] = [];
      const x = b.upload(xs), y = b.upload(ys), xy = b.upload(xys);
      // A chain: each call's input is the last one's output (read in place on wasm).
      const [a, a2] = ew(b, [bin("mul", X, Y), bin("sub", X, Y)], [x, y]);
      const [c] = ew(b, [bin("add", X, Y)], [a!, a2!]);
      got.push(b.readSync(c!));
      // The last output written by copyInto, then read: the written values.
      const [e] = ew(b, [un("neg", X)], [c!]);
      b.copyInto(e!, { shape: [1000], strides: [1], offset: 500 }, x, {
        shape: [1000],
        strides: [1],
        offset: 0,
      });
      got.push(b.readSync(ew(b, [bin("mul", X, X)], [e!])[0]!));
      // Another kernel (a matmul, whose operand overwrites that memory) between an output and
      // its use.
      const [g] = ew(b, [un("abs", X)], [y]);
      const geom = { batch: 1, m: 2, n: 1, k: n, transA: false, transB: false };
      b.free(b.matmul(xy, y, { ...geom, aBatchStride: 0, bBatchStride: 0 }));
      got.push(b.readSync(ew(b, [bin("add", X, X)], [g!])[0]!));
      // A freed output whose array comes back as an op without a vector form's result (log):
      // the next call must read the new values.
      const [h] = ew(b, [un("abs", X)], [x]);
      b.free(h!);
      const [l] = ew(b, [un("log", X)], [y]);
      got.push(b.readSync(ew(b, [bin("mul", X, Y)], [l!, x])[0]!));
      // Per-column and per-row reads of a last output (a column of 600, then a row of 400).
      const m = b.upload(ms);
      const [r] = ew(b, [un("neg", X)], [b.upload(ys.subarray(0, 600))]);
      const [q] = b.elementwise([bin("mul", X, Y)], [m, r!], [[400, 1], [1, 0]], [600, 400]);
      got.push(b.readSync(q!));
      const [r2] = ew(b, [un("neg", X)], [b.upload(ys.subarray(0, 400))]);
      const [q2] = b.elementwise([bin("sub", X, Y)], [m, r2!], [[400, 1], [0, 1]], [600, 400]);
      got.push(b.readSync(q2!));
      // Last outputs updated in place by elementwiseGroups, by a SIMD kernel and by the
      // JavaScript loop (log: no vector form), then read.
      for (const op of ["sub", "pow"]) {
        const [p] = ew(b, [un("square", X)], [x]);
        b.elementwiseGroups([bin(op, X, Y)], [{ inputs: [p!, y], size: n }], [], [0]);
        got.push(b.readSync(ew(b, [bin("add", X, Y)], [p!, y])[0]!));
      }
      return got;
    };
    const want = script(cpu);
    const got = script(be);
    want.forEach((w, i) => assertSameBits(got[i]!, w, `step ${i}`));
  });
});

Deno.test("wasm backend (2 threads): outputs stay intact while freed arrays are reused", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(70);
    const n = 300_003, xs = rng.floats(n, -4, 4), ys = rng.floats(n, -4, 4);
    const x = be.upload(xs), y = be.upload(ys);
    const [a] = be.elementwise([bin("add", X, Y)], [x, y], [[1], [1]], [n]);
    const keep = be.readSync(a!);
    // Outputs of the same length, freed and reused, while `a` stays live.
    for (let i = 0; i < 4; i++) {
      const [b, c] = be.elementwise([bin("mul", X, Y), bin("sub", X, Y)], [x, y], [[1], [1]], [n]);
      const [wb, wc] = cpu.elementwise(
        [bin("mul", X, Y), bin("sub", X, Y)],
        [cpu.upload(xs), cpu.upload(ys)],
        [[1], [1]],
        [n],
      );
      assertSameBits(be.readSync(b!), cpu.readSync(wb!), `mul, round ${i}`);
      assertSameBits(be.readSync(c!), cpu.readSync(wc!), `sub, round ${i}`);
      be.free(b!);
      be.free(c!);
      be.free(b!); // a second free must not hand the array out twice
    }
    assertSameBits(be.readSync(a!), keep, "the live output");
    const [d, e] = be.elementwise([bin("mul", X, Y), bin("add", X, X)], [x, y], [[1], [1]], [n]);
    assert.notEqual(be.readSync(d!)[1], be.readSync(e!)[1]);
    const [wd] = cpu.elementwise([bin("mul", X, Y)], [cpu.upload(xs), cpu.upload(ys)], [[1], [
      1,
    ]], [n]);
    assertSameBits(be.readSync(d!), cpu.readSync(wd!), "after a double free");
  });
});

for (const threads of [1, 2]) {
  Deno.test(`wasm backend (${threads} thread(s)): a big matmul's epilogue, run where the product lies, is the CPU backend's on the same product`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(80 + threads);
      // n a multiple of the 8-column panel: the epilogue reads the product in place.
      const m = 1001, n = 512, k = 24;
      const a = rng.floats(m * k, -1, 1), b = rng.floats(k * n, -1, 1);
      const bias = specialFloats(rng, n, -1, 1);
      const g = {
        batch: 1,
        m,
        n,
        k,
        transA: false,
        transB: false,
        aBatchStride: 0,
        bBatchStride: 0,
      };
      const prod = be.readSync(be.matmul(be.upload(a), be.upload(b), g));
      const epilogues: [Expr, Storage[], number[][], boolean][] = [
        [bin("add", X, Y), [be.upload(bias)], [[0, 1]], true],
        [un("relu", X), [], [], true], // no row inputs: a flat kernel
        [un("silu", bin("add", X, Y)), [be.upload(bias)], [[0, 1]], false],
      ];
      for (const [expr, rows, rowStrides, exact] of epilogues) {
        const got = be.readSync(be.matmul(be.upload(a), be.upload(b), g, { expr, rows }));
        const [want] = cpu.elementwise(
          [expr],
          [cpu.upload(prod), ...rows.map((r) => cpu.upload(be.readSync(r)))],
          [[n, 1], ...rowStrides],
          [m, n],
        );
        if (exact) assertSameBits(got, cpu.readSync(want!), `epilogue ${JSON.stringify(expr)}`);
        else assertUlps(got, cpu.readSync(want!), 4, "bias + silu");
      }
    });
  });
}

Deno.test("wasm backend: sums equal the CPU backend bit for bit; other reductions are the CPU backend's", async () => {
  await withWasm(1, (be) => {
    const rng = new Rand(9);
    const shape = [4, 6, 5];
    const xs = rng.floats(120, -10, 10);
    for (const axes of [[0], [1], [2], [0, 1], [1, 2], [0, 1, 2], [0, 2]]) {
      for (const op of ["sum", "max", "argmin"] as const) {
        const got = be.readSync(be.reduce(op, be.upload(xs), shape, axes));
        const want = cpu.readSync(cpu.reduce(op, cpu.upload(xs), shape, axes));
        assert.deepEqual([...got], [...want], `${op} over ${axes}`);
      }
    }
  });
});

for (const threads of [1, 2]) {
  Deno.test(`wasm backend (${threads} thread(s)): big sums over a middle axis (the SIMD f64 column sums) equal the CPU backend bit for bit`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(90 + threads);
      // inner: blocks of 8 columns, a pair and a single one left; the DiT's bias gradients.
      const cases: [number[], number[]][] = [
        [[3136, 24], [0]],
        [[2, 700, 13], [1]],
        [[5, 500, 2], [1]],
        [[64, 49, 128], [1]],
        [[40, 33, 7, 9], [1, 2]],
        [[1, 5000, 3], [0, 1]],
        [[2, 2100, 1000], [1]], // past COL_SUM_SPLIT: the columns split across the threads
      ];
      for (const [shape, axes] of cases) {
        const n = shape.reduce((a, b) => a * b, 1);
        for (const xs of [rng.floats(n, -10, 10), specialFloats(rng, n, -1e30, 1e30)]) {
          const got = be.readSync(be.reduce("sum", be.upload(xs), shape, axes));
          const want = cpu.readSync(cpu.reduce("sum", cpu.upload(xs), shape, axes));
          assertSameBits(got, want, `sum of [${shape}] over [${axes}]`);
        }
      }
    });
  });
}

Deno.test("wasm backend: the committed kernel bytes are what `deno task gen:wasm` assembles", async () => {
  const { wasmBinSource } = await import("../../tasks/gen_wasm.ts");
  const committed = await Deno.readTextFile(
    new URL("../../kernels/wasm_gemm_bin.ts", import.meta.url),
  );
  assert.equal(
    committed,
    await wasmBinSource(),
    "run `deno task gen:wasm` after editing kernels/wasm_gemm.ts",
  );
});

Deno.test("wasm backend: a program using it exits by itself (its workers do not keep it alive)", async () => {
  const src = `import { init, tensor } from ${
    JSON.stringify(new URL("../../mod.ts", import.meta.url).href)
  };
const be = await init({ backend: "wasm" });
const a = tensor(new Float32Array(300 * 300).fill(1), [300, 300]);
const v = await a.matmul(a).sum().item();
console.log(be.name, v);`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, src);
    const p = new Deno.Command("deno", {
      args: ["run", "--quiet", "--allow-read", file],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => p.kill(), 60_000);
    const out = await p.output();
    clearTimeout(timer);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stdout).trim(), `wasm ${300 * 300 * 300}`);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("wasm backend: strided copies (slices, transposes, broadcasts) equal the CPU backend's", async () => {
  await withWasm(1, (be) => {
    const rng = new Rand(11);
    const cases: { shape: number[]; src: [number, number[]]; dst: [number, number[]] }[] = [
      { shape: [3, 4, 5], src: [0, [20, 5, 1]], dst: [0, [20, 5, 1]] }, // contiguous
      { shape: [3, 4, 5], src: [0, [1, 3, 12]], dst: [0, [20, 5, 1]] }, // transposed source
      { shape: [2, 3, 40], src: [7, [200, 40, 1]], dst: [3, [120, 40, 1]] }, // runs with offsets
      { shape: [2, 3, 4], src: [0, [0, 4, 1]], dst: [0, [12, 4, 1]] }, // broadcast axis
      {
        shape: [2, 1, 3, 2, 2, 2],
        src: [1, [48, 48, 16, 8, 4, 1]],
        dst: [0, [24, 24, 8, 4, 2, 1]],
      },
      {
        shape: [2, 2, 2, 2, 2, 3],
        src: [0, [1, 2, 4, 8, 16, 32]],
        dst: [0, [48, 24, 12, 6, 3, 1]],
      },
    ];
    for (const { shape, src, dst } of cases) {
      const xs = rng.floats(400, -1, 1);
      const run = (b: typeof be | CpuBackend) => {
        const out = b.upload(new Float32Array(400).fill(9));
        b.copyInto(out, { shape, strides: dst[1], offset: dst[0] }, b.upload(xs), {
          shape,
          strides: src[1],
          offset: src[0],
        });
        return [...b.readSync(out)];
      };
      assert.deepEqual(run(be), run(cpu), `shape ${shape}`);
    }
  });
});

Deno.test("wasm backend: logSumExpAdd (Sinkhorn's half-iteration) matches the CPU backend on both axes", async () => {
  await withWasm(1, (be) => {
    const rng = new Rand(13);
    for (const [rows, cols] of [[1, 1], [5, 7], [33, 20], [64, 130]]) {
      const xs = rng.floats(rows * cols, -30, 5);
      // Special lines: a NaN term, an all −∞ row, a +∞ term (when there are enough rows).
      if (rows > 3 && cols > 3) {
        xs[1] = NaN;
        for (let j = 0; j < cols; j++) xs[2 * cols + j] = -Infinity;
        xs[3 * cols + 2] = Infinity;
      }
      // A NaN beside a +∞ in one line, and a NaN among −∞ in another: NaN either way.
      if (rows > 5 && cols > 5) {
        xs[4 * cols] = NaN;
        xs[4 * cols + 1] = Infinity;
        for (let j = 0; j < cols; j++) xs[5 * cols + j] = -Infinity;
        xs[5 * cols + 3] = NaN;
      }
      for (const axis of [0, 1] as const) {
        const vs = rng.floats(axis === 1 ? cols : rows, -2, 2);
        const got = be.readSync(
          be.logSumExpAdd(be.upload(xs), be.upload(vs), rows, cols, axis, -0.5, 0.25),
        );
        const want = cpu.readSync(
          cpu.logSumExpAdd(cpu.upload(xs), cpu.upload(vs), rows, cols, axis, -0.5, 0.25),
        );
        assert.equal(got.length, want.length);
        for (let k = 0; k < want.length; k++) {
          const g = got[k]!, w = want[k]!;
          if (!Number.isFinite(w)) {
            assert.ok(
              Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)),
              `${rows}x${cols} axis ${axis} [${k}]: ${g} vs ${w}`,
            );
          } else {
            assert.ok(
              Math.abs(g - w) <= 2e-6 * (1 + Math.abs(w)),
              `${rows}x${cols} axis ${axis} [${k}]: ${g} vs ${w}`,
            );
          }
        }
      }
    }
  });
});

// Fused self-attention. Tolerance: |got − want| ≤ ATTN_TOL · (|want| + max |want|) (the largest
// |value| of the tensor, as tests/gpu/attention_test.ts, which allows 1e-5). The kernels sum in
// f32 where the CPU backend sums in f64: scores of ≤ 32 products of size ≤ 4 (their rounding,
// amplified by exp, is largest at scale 0.5, where scores reach ~15) and sums over ≤ 130 keys.
// Measured here: ≤ 1.3e-6 of max |want| (≤ 6e-7 at scale 1/√d); an error of the kind a wrong
// index or a missed term makes is ≳ 1e-3.
const ATTN_TOL = 4e-6;

function assertAttnClose(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, what);
  let big = 0;
  for (const w of want) if (Math.abs(w) > big) big = Math.abs(w);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!, w = want[i]!;
    if (Number.isNaN(w) || Number.isNaN(g)) {
      assert.ok(Number.isNaN(g) && Number.isNaN(w), `${what} [${i}]: ${g} vs ${w}`);
      continue;
    }
    assert.ok(
      Math.abs(g - w) <= ATTN_TOL * (Math.abs(w) + big),
      `${what} [${i}]: ${g} vs ${w} (max |want| ${big})`,
    );
  }
}

/** wasm's attention forward and backward against the CPU backend's on the same inputs. */
function checkAttention(
  be: WasmBackend,
  x: Float32Array,
  dO: Float32Array,
  [b, n, heads, hd]: readonly number[],
  scale: number,
  what: string,
): { o: Float32Array; lse: Float32Array; dx: Float32Array } {
  const [wo, wl] = cpu.attention(cpu.upload(x), b!, n!, heads!, hd!, scale);
  const [go, gl] = be.attention(be.upload(x), b!, n!, heads!, hd!, scale);
  const o = be.readSync(go), lse = be.readSync(gl);
  assertAttnClose(o, cpu.readSync(wo), `${what} o`);
  assertAttnClose(lse, cpu.readSync(wl), `${what} lse`);
  // The backward from the same (reference) o and lse, so only its own error is measured.
  const want = cpu.readSync(
    cpu.attentionBackward(cpu.upload(x), wo, wl, cpu.upload(dO), b!, n!, heads!, hd!, scale),
  );
  const dx = be.readSync(
    be.attentionBackward(
      be.upload(x),
      be.upload(cpu.readSync(wo)),
      be.upload(cpu.readSync(wl)),
      be.upload(dO),
      b!,
      n!,
      heads!,
      hd!,
      scale,
    ),
  );
  assertAttnClose(dx, want, `${what} dqkv`);
  return { o, lse, dx };
}

for (const threads of [1, 2]) {
  Deno.test(`wasm backend (${threads} thread(s)): fused attention forward (o, lse) and backward (dqkv) match the CPU backend`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(40 + threads);
      // [b, n, heads, d]: n not a multiple of 4 (and 1), every remainder of the kernels' groups
      // of 5 rows (and keys); d covering blocks of 2 vectors (16, 32, 64), single vectors (4,
      // 12) and both (20); n > 64 runs the backward in several row blocks; the larger shapes
      // are split across threads, the small ones not.
      const shapes: [number, number, number, number][] = [
        [1, 7, 1, 4],
        [5, 7, 3, 8],
        [1, 49, 2, 8],
        [5, 49, 4, 32],
        [2, 49, 1, 20],
        [1, 1, 2, 4],
        [2, 70, 2, 12],
        [1, 130, 1, 32],
        [3, 3, 2, 16],
        [2, 53, 3, 64],
      ];
      for (const [b, n, heads, hd] of shapes) {
        for (const scale of [1 / Math.sqrt(hd), 0.5]) {
          const x = rng.floats(b * n * 3 * heads * hd, -2, 2);
          const dO = rng.floats(b * n * heads * hd, -1, 1);
          checkAttention(
            be,
            x,
            dO,
            [b, n, heads, hd],
            scale,
            `[${b}, ${n}, ${heads}, ${hd}] ×${scale}`,
          );
        }
      }
    });
  });
}

Deno.test("wasm backend: a NaN in qkv makes the same attention outputs NaN as the CPU backend", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(47);
    const [b, n, heads, hd] = [3, 49, 4, 8];
    const x = rng.floats(b * n * 3 * heads * hd, -2, 2), dO = rng.floats(b * n * heads * hd, -1, 1);
    const at = (bi: number, tok: number, slot: number, h: number, c: number) =>
      (((bi * n + tok) * 3 + slot) * heads + h) * hd + c;
    x[at(1, 3, 0, 1, 2)] = NaN; // a query: row 3 of pair (1, 1)
    x[at(0, 5, 1, 0, 0)] = NaN; // a key: every row of pair (0, 0)
    x[at(2, 2, 2, 3, 1)] = NaN; // a value: column 1 of pair (2, 3)'s o, lse finite
    const { o, lse } = checkAttention(be, x, dO, [b, n, heads, hd], 1 / Math.sqrt(hd), "NaN");
    // The reference's NaN pattern, spelt out (checkAttention compared the rest).
    const lseNaN = (bi: number, h: number, i: number) =>
      Number.isNaN(lse[(bi * heads + h) * n + i]!);
    assert.ok(lseNaN(1, 1, 3) && !lseNaN(1, 1, 4) && !lseNaN(1, 0, 3));
    for (let i = 0; i < n; i++) assert.ok(lseNaN(0, 0, i) && !lseNaN(2, 3, i));
    const oAt = (bi: number, i: number, h: number, c: number) =>
      o[((bi * n + i) * heads + h) * hd + c]!;
    assert.ok(Number.isNaN(oAt(1, 3, 1, 0)) && Number.isNaN(oAt(0, 20, 0, 7)));
    assert.ok(Number.isNaN(oAt(2, 10, 3, 1)) && !Number.isNaN(oAt(2, 10, 3, 0)));
  });
});

Deno.test("wasm backend: attention with a head width that is not a multiple of 4 runs the CPU backend's loops", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(48);
    for (const [b, n, heads, hd] of [[2, 9, 2, 6], [1, 49, 3, 5]] as const) {
      const x = rng.floats(b * n * 3 * heads * hd, -2, 2),
        dO = rng.floats(b * n * heads * hd, -1, 1);
      const [wo, wl] = cpu.attention(cpu.upload(x), b, n, heads, hd, 0.4);
      const [go, gl] = be.attention(be.upload(x), b, n, heads, hd, 0.4);
      // The same loops: the same bits.
      assert.deepEqual([...be.readSync(go)], [...cpu.readSync(wo)]);
      assert.deepEqual([...be.readSync(gl)], [...cpu.readSync(wl)]);
      const want = cpu.attentionBackward(
        cpu.upload(x),
        wo,
        wl,
        cpu.upload(dO),
        b,
        n,
        heads,
        hd,
        0.4,
      );
      const got = be.attentionBackward(be.upload(x), go, gl, be.upload(dO), b, n, heads, hd, 0.4);
      assert.deepEqual([...be.readSync(got)], [...cpu.readSync(want)]);
    }
  });
});

Deno.test("wasm backend: the plain-SIMD module (no relaxed SIMD) has attention kernels that agree too", async () => {
  const { GEMM_PLAIN_WASM } = await import("../../kernels/wasm_gemm_bin.ts");
  const bytes = Uint8Array.from(atob(GEMM_PLAIN_WASM.base64), (ch) => ch.charCodeAt(0));
  const module = await WebAssembly.compile(bytes);
  const names = WebAssembly.Module.exports(module).map((e) => e.name);
  assert.ok(names.includes("attn_fwd") && names.includes("attn_bwd"), `exports: ${names}`);
  // The host side's call, by hand on one thread: qkv at byte 1024, then o, m, l, scratch.
  const mem = new WebAssembly.Memory({ initial: 16, maximum: 64, shared: true });
  const inst = new WebAssembly.Instance(module, { env: { mem } });
  const fwd = inst.exports.attn_fwd as (...a: number[]) => void;
  const [b, n, heads, hd] = [2, 11, 2, 8], rows = b * heads * n;
  const x = new Rand(49).floats(b * n * 3 * heads * hd, -2, 2);
  const Q = 256, O = Q + x.length, M = O + b * n * heads * hd, L = M + rows, S = L + rows;
  const f = new Float32Array(mem.buffer);
  f.set(x, Q);
  const scale = 0.3;
  const bits = new Int32Array(Float32Array.of(scale).buffer)[0]!;
  fwd(Q * 4, O * 4, M * 4, L * 4, n, heads, hd, bits, 0, b * heads, S * 4);
  const [wo, wl] = cpu.attention(cpu.upload(x), b, n, heads, hd, scale);
  assertAttnClose(f.slice(O, M), cpu.readSync(wo), "plain o");
  const lse = Float32Array.from({ length: rows }, (_, k) => f[M + k]! + Math.log(f[L + k]!));
  assertAttnClose(lse, cpu.readSync(wl), "plain lse");
});

Deno.test("wasm backend: the plain-SIMD module's GELU-tanh and times-aux stores have the bits of the plain elementwise kernels, in k blocks too", async () => {
  // The module an engine without relaxed SIMD loads (MR = 4, a multiply then an add), driven by
  // hand as Gemm.product drives it: gemm_t's last argument is the address of the epilogue block
  // (mode, bias, aux). Its outputs against the product stored plainly, then wasm_jit's kernels
  // compiled without relaxed multiply-add.
  const { GEMM_PLAIN_WASM } = await import("../../kernels/wasm_gemm_bin.ts");
  const { GEMM_EPILOGUE } = await import("../../kernels/wasm_gemm.ts");
  const { compileSimd } = await import("../../lib/backend/wasm_jit.ts");
  const bytes = Uint8Array.from(atob(GEMM_PLAIN_WASM.base64), (ch) => ch.charCodeAt(0));
  const mem = new WebAssembly.Memory({ initial: 16, maximum: 64, shared: true });
  const inst = new WebAssembly.Instance(await WebAssembly.compile(bytes), { env: { mem } });
  const gemmT = inst.exports.gemm_t as (...a: number[]) => void;
  const [m, n, k, mr] = [9, 16, 37, GEMM_PLAIN_WASM.mr], mb = Math.ceil(m / mr), mp = mb * mr;
  const rng = new Rand(61);
  const a = rng.floats(k * m, -1, 1), b = rng.floats(k * n, -1, 1);
  const bias = rng.floats(n, -1, 1), dense = rng.floats(mp * n, -2, 2);
  // Float offsets: A [k, m], B [k, n], bias, dense, the epilogue block, zeros for the kernels'
  // constants, then outputs of mp × n.
  const A = 256, B = A + k * m + 16, BIAS = B + k * n + 16, DENSE = BIAS + n + 16;
  const EPI = DENSE + mp * n + 16, ZERO = EPI + 16, OUT = ZERO + 64, size = mp * n;
  const [P, JY, JD, JM, C, AUX] = [0, 1, 2, 3, 4, 5].map((i) => OUT + i * (size + 16));
  const f = new Float32Array(mem.buffer), words = new Int32Array(mem.buffer);
  f.set(a, A);
  f.set(b, B);
  f.set(bias, BIAS);
  f.set(dense, DENSE);
  const rows = (at: number) => f.slice(at, at + m * n);
  const gemm = (out: number, kc: number, epi: number) =>
    gemmT(A * 4, m, B * 4, n, 8, out * 4, n, 0, mb, n / 8, k, kc, epi);
  gemm(P, k, 0);
  const z = bin("add", X, Y);
  compileSimd([un("geluTanh", z), un("geluTanhGrad", z)], ["dense", "row"], 2, mem, false)
    .run(P * 4, BIAS * 4, JY * 4, JD * 4, ZERO * 4, m, n);
  compileSimd([bin("mul", X, Y)], ["dense", "dense"], 2, mem, false)
    .run(P * 4, DENSE * 4, JM * 4, ZERO * 4, m, n);
  for (const kc of [k, 8]) {
    words.set([GEMM_EPILOGUE.gelu, BIAS * 4, AUX * 4], EPI);
    gemm(C, kc, EPI * 4);
    assert.deepEqual(rows(C), rows(JY), `gelu, kc = ${kc}`);
    assert.deepEqual(rows(AUX), rows(JD), `gelu', kc = ${kc}`);
    words.set([GEMM_EPILOGUE.geluValue, BIAS * 4, 0], EPI);
    gemm(C, kc, EPI * 4);
    assert.deepEqual(rows(C), rows(JY), `gelu value, kc = ${kc}`);
    words.set([GEMM_EPILOGUE.mulAux, 0, DENSE * 4], EPI);
    gemm(C, kc, EPI * 4);
    assert.deepEqual(rows(C), rows(JM), `times aux, kc = ${kc}`);
  }
  // Not the identity: GELU changed the product.
  assert.ok(rows(JY).some((v, i) => Math.abs(v - f[P + i]!) > 0.1));
});

Deno.test("wasm backend: the plain-SIMD module's transposed-A SGEMM gives the same bits in k blocks", async () => {
  const { GEMM_PLAIN_WASM } = await import("../../kernels/wasm_gemm_bin.ts");
  const bytes = Uint8Array.from(atob(GEMM_PLAIN_WASM.base64), (ch) => ch.charCodeAt(0));
  const mem = new WebAssembly.Memory({ initial: 16, maximum: 64, shared: true });
  const inst = new WebAssembly.Instance(await WebAssembly.compile(bytes), { env: { mem } });
  const gemmT = inst.exports.gemm_t as (...a: number[]) => void;
  // A [k, m] (transposed), B [k, n] read in place, C [mp, np]: the host's layout, by hand.
  const [m, n, k, mr] = [9, 12, 37, GEMM_PLAIN_WASM.mr], mb = Math.ceil(m / mr), np = 16;
  const rng = new Rand(53);
  const a = rng.floats(k * m, -1, 1), b = rng.floats(k * n, -1, 1);
  const A = 256, B = A + k * m + 16, C = B + k * n + 16;
  const f = new Float32Array(mem.buffer);
  f.set(a, A);
  f.set(b, B);
  const run = (kc: number) => {
    f.fill(NaN, C, C + mb * mr * np); // later blocks must add to this call's own partial sums
    gemmT(A * 4, m, B * 4, n, 8, C * 4, np, 0, mb, np / 8, k, kc);
    return Float32Array.from({ length: m * n }, (_, i) => f[C + Math.floor(i / n) * np + (i % n)]!);
  };
  const onePass = run(k);
  const want = f64Product(a, b, {
    batch: 1,
    m,
    n,
    k,
    transA: true,
    transB: false,
    aBatchStride: 0,
    bBatchStride: 0,
  });
  onePass.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= 1e-4, `one pass [${i}]`));
  for (const kc of [1, 3, 8, 36]) assert.deepEqual(run(kc), onePass, `kc = ${kc}`);
});

Deno.test("wasm backend: arrays in its memory (the arena), in plain arrays past arenaBytes, or mixed give the same bits; freed regions are reused", async () => {
  // A DiT block's kinds of calls in a chain, each reading the last one's results: a linear
  // layer with its bias epilogue, LayerNorm + modulate, attention forward and backward, an
  // elementwise chain, a transposed weight-gradient product and a bias-gradient sum.
  const rng = new Rand(123);
  const b = 6, t = 9, w = 32, heads = 2, hd = 16, rows = b * t;
  const x = rng.floats(rows * w, -1, 1), wq = rng.floats(3 * w * w, -0.3, 0.3);
  const bias = rng.floats(3 * w, -0.1, 0.1), sh = rng.floats(b * w, -1, 1);
  const sc = rng.floats(b * w, -1, 1), dO = rng.floats(rows * w, -1, 1);
  // Whether a result's array is a view of the backend's shared memory (the arena's).
  const inMemory: boolean[][] = [];
  const run = (be: WasmBackend): Float32Array[] => {
    const ups: Storage[] = [];
    const up = (a: Float32Array) => {
      ups.push(be.upload(a));
      return ups[ups.length - 1]!;
    };
    const [y, st] = be.layerNormModulate(up(x), up(sh), up(sc), b, t, w, 1e-6);
    const qkv = be.matmul(y, up(wq), {
      batch: 1,
      m: rows,
      n: 3 * w,
      k: w,
      transA: false,
      transB: true,
      aBatchStride: 0,
      bBatchStride: 0,
    }, { expr: bin("add", X, Y), rows: [up(bias)] });
    const [o, lse] = be.attention(qkv, b, t, heads, hd, 0.25);
    const [g] = be.elementwise([un("tanh", bin("mul", X, Y))], [o, up(dO)], [[w, 1], [w, 1]], [
      rows,
      w,
    ]);
    const dq = be.attentionBackward(qkv, o, lse, g!, b, t, heads, hd, 0.25);
    const dW = be.matmul(dq, y, {
      batch: 1,
      m: 3 * w,
      n: w,
      k: rows,
      transA: true,
      transB: false,
      aBatchStride: 0,
      bBatchStride: 0,
    });
    const db = be.reduce("sum", dq, [rows, 3 * w], [0]);
    const [dx, dsh, dsc] = be.layerNormModulateBackward(up(x), up(sc), st, g!, b, t, w);
    const res = [qkv, o, lse, g!, dq, dW, db, dx, dsh, dsc];
    inMemory.push(res.map((s) => (s as CpuStorage).data.buffer instanceof SharedArrayBuffer));
    const out = res.map((s) => be.readSync(s));
    for (const s of [y, st, qkv, o, lse, g!, dq, dW, db, dx, dsh, dsc, ...ups]) be.free(s);
    return out;
  };
  const variants: WasmBackend[] = [];
  try {
    for (const arenaBytes of [undefined, 0, 20_000]) {
      variants.push(await createWasmBackend({ threads: 2, elementwiseSplitWork: 0, arenaBytes }));
    }
    const [want, ...others] = variants.map((be) => run(be));
    assert.ok(inMemory[0]!.every((m) => m), "by default every result is in the memory");
    assert.ok(inMemory[1]!.every((m) => !m), "with arenaBytes 0 none is");
    assert.ok(inMemory[2]!.some((m) => m) && inMemory[2]!.some((m) => !m), "20 kB: some are");
    const names = ["qkv", "o", "lse", "g", "dq", "dW", "db", "dx", "dsh", "dsc"];
    others.forEach((got, v) =>
      got.forEach((a, i) => assertSameBits(a, want![i]!, `arena variant ${v + 1}: ${names[i]}`))
    );
    // The CPU backend agrees to rounding (the products accumulate in another order).
    const dbCpu = cpu.readSync(cpu.reduce("sum", cpu.upload(want![4]!), [rows, 3 * w], [0]));
    assertSameBits(want![6]!, dbCpu, "db against the CPU backend");
    // A second run reuses the freed regions and leaves nothing live.
    const be = variants[0]!, live = be.liveBytes();
    const again = run(be);
    again.forEach((a, i) => assertSameBits(a, want![i]!, `second run: ${names[i]}`));
    assert.equal(be.liveBytes(), live);
  } finally {
    for (const be of variants) be.close();
  }
});

Deno.test("wasm backend: arenaBytes outside [0, 2^32] is refused with a RangeError naming it", async () => {
  await assert.rejects(() => createWasmBackend({ arenaBytes: -1 }), /arenaBytes/);
  await assert.rejects(() => createWasmBackend({ arenaBytes: 2 ** 33 }), /arenaBytes/);
});

Deno.test("wasm backend: a per-sample row broadcast over the tokens (grouped rows) equals the CPU backend bit for bit", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(321);
    // out shape, then each input's shape (broadcast to out): a gate [b, 1, d] against [b, t, d],
    // with a bias row [d], a per-row value [b, t, 1] and a scalar; and two grouped axes.
    const cases: [number[], number[][]][] = [
      [[6, 7, 8], [[6, 7, 8], [6, 1, 8]]],
      [[6, 7, 8], [[6, 1, 8], [6, 7, 8], [8], [6, 7, 1], [1]]],
      [[3, 2, 5, 12], [[3, 1, 1, 12], [3, 2, 5, 12]]],
      [[4, 9, 16], [[4, 1, 16], [4, 1, 16]]],
    ];
    const expr = bin("add", bin("mul", X, Y), bin("mul", Y, Y));
    for (const [out, shapes] of cases) {
      const arrays = shapes.map((s) => specialFloats(rng, s.reduce((a, b) => a * b, 1), -3, 3));
      // Strides of each input broadcast to `out` (0 on its size-1 or missing axes).
      const strides = shapes.map((s) => {
        const full = [...Array(out.length - s.length).fill(1), ...s];
        let acc = 1;
        const st = full.map(() => 0);
        for (let ax = out.length - 1; ax >= 0; ax--) {
          st[ax] = full[ax] === 1 ? 0 : acc;
          acc *= full[ax]!;
        }
        return st;
      });
      // X·Y + Y·Y over the first two inputs, then X times each other input.
      const exprs = [
        expr,
        ...shapes.slice(2).map((_, j) => bin("mul", X, { kind: "input", index: j + 2 } as Expr)),
      ];
      for (const e of exprs) {
        const got = be.elementwise([e], arrays.map((a) => be.upload(a)), strides, out);
        const want = cpu.elementwise([e], arrays.map((a) => cpu.upload(a)), strides, out);
        const what = `${JSON.stringify(shapes)} → [${out}]`;
        assertSameBits(be.readSync(got[0]!), cpu.readSync(want[0]!), what);
      }
    }
  });
});

Deno.test("wasm_jit: exp's polynomial with and without relaxed multiply-add is within 3 ulp of f64 exp rounded once", async () => {
  const { compileSimd } = await import("../../lib/backend/wasm_jit.ts");
  const mem = new WebAssembly.Memory({ initial: 2, maximum: 16, shared: true });
  const rng = new Rand(55);
  const n = 4096;
  const xs = rng.floats(n, -100, 90);
  xs.set([0, -0, 1e-30, -87.3, 88.7, -103.9, 88.73, NaN, Infinity, -Infinity], 0);
  const f = new Float32Array(mem.buffer);
  f.set(xs, 1024);
  for (const fma of [false, true]) {
    const k = compileSimd([un("exp", X)], ["dense"], 1, mem, fma);
    k.run(1024 * 4, 8192 * 4, 0, 1, n);
    const got = f.slice(8192, 8192 + n);
    const truth = Float32Array.from(xs, (x) => Math.exp(x));
    assertUlps(got, truth, 3, `exp (fma ${fma})`);
  }
});

Deno.test("wasm_jit: geluTanh and g·geluTanhGrad with and without relaxed multiply-add match the CPU backend over every magnitude, the derivative finite for every finite x", async () => {
  // The kernels build exp(−v) as 2^t from an exponent-field add over a clamped t, and rely on it
  // being exactly 0 or +∞ in the tails: sweep both tails finely, every power of two of either
  // sign, and the non-finite values, in both multiply-add modes (the backend test above runs
  // only the engine's).
  const { compileSimd } = await import("../../lib/backend/wasm_jit.ts");
  const mem = new WebAssembly.Memory({ initial: 4, maximum: 16, shared: true });
  const rng = new Rand(57);
  const tails = Array.from({ length: 1600 }, (_, i) => 9.8 + i / 2000);
  const pow2 = Array.from({ length: 277 }, (_, i) => 2 ** (i - 149));
  const grid = [
    ...rng.floats(2000, -12, 12),
    ...tails,
    ...tails.map((v) => -v),
    ...pow2,
    ...pow2.map((v) => -v),
    3.4e38,
    -3.4e38,
    NaN,
    Infinity,
    -Infinity,
    0,
    -0,
  ];
  const n = grid.length, xs = Float32Array.from(grid);
  const gs = Float32Array.from({ length: n }, (_, i) => 0.5 + (i % 7) / 4);
  const f = new Float32Array(mem.buffer);
  f.set(xs, 0);
  f.set(gs, n);
  const [wy] = cpu.elementwise([un("geluTanh", X)], [cpu.upload(xs)], [[1]], [n]);
  const back = bin("mul", Y, un("geluTanhGrad", X));
  const [wd] = cpu.elementwise([back], [cpu.upload(xs), cpu.upload(gs)], [[1], [1]], [n]);
  const wantY = cpu.readSync(wy!), wantD = cpu.readSync(wd!);
  for (const fma of [false, true]) {
    compileSimd([un("geluTanh", X)], ["dense"], 1, mem, fma).run(0, 8 * n, 16 * n, 1, n);
    const kb = compileSimd([back], ["dense", "dense"], 2, mem, fma);
    kb.run(0, 4 * n, 12 * n, 16 * n, 1, n);
    const y = f.slice(2 * n, 3 * n), d = f.slice(3 * n, 4 * n);
    for (let i = 0; i < n; i++) {
      const x = xs[i]!, a = Math.abs(x), what = `(fma ${fma}) at ${x}`;
      // The tolerances of the backend test above (value; derivative, scaled by g).
      const okY = Object.is(y[i], wantY[i]) ||
        Math.abs(y[i]! - wantY[i]!) <= 3 * ulp(wantY[i]!) + 0.9e-7 * a;
      assert.ok(okY, `geluTanh ${what}: ${y[i]} vs ${wantY[i]}`);
      const term = a < 10 ? 0.25 * a * 0.798 * (1 + 0.134 * a * a) : 0;
      const okD = Object.is(d[i], wantD[i]) ||
        Math.abs(d[i]! - wantD[i]!) <= 3 * ulp(wantD[i]!) + gs[i]! * (1e-6 * term + 3e-8);
      assert.ok(okD, `g·geluTanhGrad ${what}: ${d[i]} vs ${wantD[i]}`);
      if (Number.isFinite(x)) assert.ok(Number.isFinite(d[i]!), `finite derivative ${what}`);
    }
  }
});

for (const threads of [1, 2]) {
  Deno.test(`wasm backend (${threads} thread(s)): a wide weight gradient computed as (xᵀ·dz)ᵀ has the bits of the direct product`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(700 + threads);
      for (const [m, n, k] of [[16, 64, 1100], [128, 512, 1030], [8, 40, 2049]]) {
        const a = specialFloats(rng, k * m, -1, 1), b = rng.floats(k * n, -1, 1);
        const g = {
          batch: 1,
          m,
          n,
          k,
          transA: true,
          transB: false,
          aBatchStride: 0,
          bBatchStride: 0,
        };
        const got = be.readSync(be.matmul(be.upload(a), be.upload(b), g));
        // batch 2 of the same pair takes the direct kernel (the swap is for one matrix only).
        const direct = be.readSync(be.matmul(be.upload(a), be.upload(b), { ...g, batch: 2 }));
        assertSameBits(got, direct.subarray(0, m * n), `[${m}, ${n}], k ${k}`);
        // And against f64 sums: within f32 accumulation error.
        const want = f64Product(a, b, g);
        for (let i = 0; i < m * n; i++) {
          if (!Number.isFinite(want[i]!)) continue;
          assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-4 * k, `[${i}] ${got[i]} vs ${want[i]}`);
        }
      }
    });
  });
}

Deno.test("wasm backend (2 threads, every call split): in-place groups (an optimizer's p, m, v) equal the CPU backend bit for bit and update their inputs", async () => {
  await withWasm(2, (be) => {
    const rng = new Rand(808);
    // p' = p − 0.01·m', m' = 0.9·m + 0.1·g, v' = v + g·g, and a fresh output p'·g.
    const P = X,
      G = Y,
      M: Expr = { kind: "input", index: 2 },
      V: Expr = { kind: "input", index: 3 };
    const S: Expr = { kind: "input", index: 4 };
    const m2 = bin("add", bin("mul", M, S), bin("mul", G, un("affine", S, -1, 1)));
    const outs = [
      bin("sub", P, bin("mul", m2, { kind: "const", value: 0.01 })),
      m2,
      bin("add", V, bin("mul", G, G)),
      bin("mul", P, G),
    ];
    const sizes = [5, 1000, 1030, 70_001, 262_147];
    const data = sizes.map((n) => [0, 1, 2, 3].map(() => specialFloats(rng, n, -2, 2)));
    const run = (b: CpuBackend | WasmBackend) => {
      const groups = data.map((arrs, i) => ({
        inputs: arrs.map((a) => b.upload(a)),
        size: sizes[i]!,
      }));
      const res = b.elementwiseGroups(outs, groups, [b.upload(new Float32Array([0.9]))], [
        0,
        2,
        3,
        -1,
      ]);
      res.forEach((r, i) => {
        assert.equal(r[0], groups[i]!.inputs[0], "output 0 is the group's input 0");
        assert.equal(r[1], groups[i]!.inputs[2], "output 1 is the group's input 2");
      });
      return res.map((r) => r.map((s) => b.readSync(s)));
    };
    const want = run(cpu), got = run(be);
    want.forEach((w, i) =>
      w.forEach((a, t) => assertSameBits(got[i]![t]!, a, `size ${sizes[i]} output ${t}`))
    );
  }, 0);
});

for (const threads of [2, 3]) {
  Deno.test(`wasm backend (${threads} threads, every call split): one multi-group in-place call (chunks claimed across ragged groups, plain small ones copied in and back) equals the CPU backend bit for bit`, async () => {
    await withWasm(threads, (be) => {
      const rng = new Rand(909 + threads);
      const P = X,
        G = Y,
        M: Expr = { kind: "input", index: 2 },
        V: Expr = { kind: "input", index: 3 };
      const S: Expr = { kind: "input", index: 4 }, T: Expr = { kind: "input", index: 5 };
      // Adam-like: m' = s·m + (1 − s)·g, v' = t·v + g², p' = p − 0.01·m'/(√v' + 1e-3), and a
      // fresh output p'·g.
      const m2 = bin("add", bin("mul", M, S), bin("mul", G, un("affine", S, -1, 1)));
      const v2 = bin("add", bin("mul", V, T), bin("mul", G, G));
      const step = bin("div", m2, bin("add", un("sqrt", v2), { kind: "const", value: 1e-3 }));
      const p2 = bin("sub", P, bin("mul", step, { kind: "const", value: 0.01 }));
      const outs = [p2, m2, v2, bin("mul", p2, G)];
      // Several chunks each, none a whole number of chunks or of vectors; 3 and 128 are plain
      // arrays (under ARENA_MIN), 1030 barely in the memory.
      const sizes = [70_001, 3, 131_075, 1030, 128, 9_999, 262_147];
      const data = sizes.map((n) => [0, 1, 2, 3].map(() => specialFloats(rng, n, -2, 2)));
      data.forEach((arrs) => arrs[3]!.forEach((x, j, a) => (a[j] = Math.abs(x))));
      const run = (b: CpuBackend | WasmBackend) => {
        const groups = data.map((arrs, i) => ({
          inputs: arrs.map((a) => b.upload(a)),
          size: sizes[i]!,
        }));
        const sc = [new Float32Array([0.9]), new Float32Array([0.999])].map((a) => b.upload(a));
        const res = b.elementwiseGroups(outs, groups, sc, [0, 2, 3, -1]);
        res.forEach((r, i) => {
          assert.equal(r[0], groups[i]!.inputs[0], "output 0 is the group's input 0");
          assert.equal(r[1], groups[i]!.inputs[2], "output 1 is the group's input 2");
          assert.equal(r[2], groups[i]!.inputs[3], "output 2 is the group's input 3");
          assert.notEqual(r[3], groups[i]!.inputs[0], "output 3 is new");
        });
        return res.map((r) => r.map((s) => b.readSync(s)));
      };
      const want = run(cpu), got = run(be);
      want.forEach((w, i) =>
        w.forEach((a, t) => assertSameBits(got[i]![t]!, a, `size ${sizes[i]} output ${t}`))
      );
    }, 0);
  });
}

Deno.test("wasm backend: logSumExpAdd split across threads (rows, or 4-column shares) has the bits of one thread", async () => {
  const rng = new Rand(14);
  const rows = 301, cols = 401; // neither a multiple of 4
  const xs = rng.floats(rows * cols, -30, 5);
  xs[7] = NaN;
  xs[cols * 9 + 3] = Infinity;
  for (const axis of [0, 1] as const) {
    const vs = rng.floats(axis === 1 ? cols : rows, -2, 2);
    const run = async (threads: number) => {
      let out: Float32Array = new Float32Array(0);
      await withWasm(threads, (be) => {
        out = be.readSync(
          be.logSumExpAdd(be.upload(xs), be.upload(vs), rows, cols, axis, -0.5, 0.25),
        );
      });
      return out;
    };
    const one = await run(1), two = await run(2);
    assertSameBits(two, one, `axis ${axis}: 2 threads vs 1`);
    // The NaN term's line is NaN, the +∞ term's −∞ (scaled by −0.5).
    const [nanAt, infAt] = axis === 1 ? [0, 9] : [7, 3];
    assert.ok(Number.isNaN(one[nanAt]!) && one[infAt] === -Infinity, `axis ${axis}`);
  }
});

// The wasm kernels' LayerNorm + modulate (kernels/wasm_gemm.ts `ln_mod_fwd`, `ln_mod_bwd`) in
// scalar f32 steps, one row at a time: sums per lane of f32x4 over the row's vectors in order,
// lanes summed as (l0 + l1) + (l2 + l3), then the same products and sums as the kernels'.
// (A double op on f32 operands rounded to f32 is the f32 op: the kernel's bits.)
function lnModScalar(
  x: Float32Array,
  sh: Float32Array,
  sc: Float32Array,
  dy: Float32Array,
  b: number,
  t: number,
  d: number,
  eps: number,
): Float32Array[] {
  const f = Math.fround, inv = f(1 / d), e32 = f(eps);
  const y = new Float32Array(b * t * d), st = new Float32Array(2 * b * t);
  const dx = new Float32Array(b * t * d), dsh = new Float32Array(b * d);
  const dsc = new Float32Array(b * d);
  const hsum = (a: number[]) => f(f(a[0]! + a[1]!) + f(a[2]! + a[3]!));
  // Σ over the row's elements of `term(i)` in the kernel's order.
  const sum = (r: number, term: (i: number) => number) => {
    const a = [0, 0, 0, 0];
    for (let i = 0; i < d; i++) a[i % 4] = f(a[i % 4]! + term(r * d + i));
    return hsum(a);
  };
  for (let bi = 0; bi < b; bi++) {
    for (let j = 0; j < t; j++) {
      const r = bi * t + j;
      const m = f(sum(r, (i) => x[i]!) * inv);
      const v = sum(r, (i) => f(f(x[i]! - m) * f(x[i]! - m)));
      const rs = f(1 / f(Math.sqrt(f(f(v * inv) + e32))));
      st[2 * r] = m, st[2 * r + 1] = rs;
      const xh = (i: number) => f(f(x[i]! - m) * rs), s = (i: number) => f(1 + sc[bi * d + i % d]!);
      for (let i = r * d; i < (r + 1) * d; i++) y[i] = f(f(xh(i) * s(i)) + sh[bi * d + i % d]!);
      const g = (i: number) => f(dy[i]! * s(i));
      const ga = f(sum(r, g) * inv), gb = f(sum(r, (i) => f(g(i) * xh(i))) * inv);
      for (let i = r * d; i < (r + 1) * d; i++) {
        dx[i] = f(rs * f(f(g(i) - ga) - f(xh(i) * gb)));
        const p = bi * d + i % d;
        dsh[p] = f(dsh[p]! + dy[i]!), dsc[p] = f(dsc[p]! + f(dy[i]! * xh(i)));
      }
    }
  }
  return [y, st, dx, dsh, dsc];
}

Deno.test("wasm backend: layerNormModulate forward and backward have the bits of a scalar f32 model of the kernels' order (any t, d/4 odd or even)", async () => {
  const rng = new Rand(77);
  const be = await createWasmBackend({ threads: 2 });
  try {
    // Tokens t by fours, twos and ones (the kernels interleave a few rows and then go a row at
    // a time), vectors a row d/4 odd and even; [64, 49, 128] is split across the threads.
    for (
      const [b, t, d] of [
        [3, 1, 4],
        [3, 2, 12],
        [2, 3, 132],
        [2, 5, 8],
        [2, 6, 12],
        [1, 7, 4],
        [2, 49, 132],
        [64, 49, 128],
      ] as const
    ) {
      const n = b * t * d, eps = 1e-5;
      const x = rng.floats(n, -2, 3), sh = rng.floats(b * d, -1, 1);
      const sc = rng.floats(b * d, -1, 1), dy = rng.floats(n, -1, 1);
      const want = lnModScalar(x, sh, sc, dy, b, t, d, eps);
      const [X, SH, SC, DY] = [x, sh, sc, dy].map((a) => be.upload(a)) as Storage[];
      const [y, st] = be.layerNormModulate(X!, SH!, SC!, b, t, d, eps);
      const grads = be.layerNormModulateBackward(X!, SC!, st, DY!, b, t, d);
      const got = [y, st, ...grads].map((s) => be.readSync(s));
      ["y", "stats", "dx", "dshift", "dscale"].forEach((what, k) =>
        assertSameBits(got[k]!, want[k]!, `[${b}, ${t}, ${d}] ${what}`)
      );
      for (const s of [X!, SH!, SC!, DY!, y, st, ...grads]) be.free(s);
    }
  } finally {
    be.close();
  }
});
