/**
 * @file Every row of the elementwise op table (lib/ir.ts) against its own CPU function: the
 * derivative the row declares, as used by reverse mode (one fused kernel), forward mode and
 * second order (op by op), equals central differences of the row's `cpu` function in f64, on
 * every available backend; broadcast operands get their cotangents summed back. A new row is
 * covered by adding it to the table (give it a domain below if it needs one).
 *
 * Tolerances: first derivatives rtol 2e-3, atol 2e-4 (f32 evaluation against f64 differences
 * with h = 1e-3·max(1, |x|)); second derivatives rtol 1e-2, atol 1e-2 (differences of f32
 * first derivatives with h = 1e-2).
 *
 * `geluTanh` (DiT's activation, one row standing for eight ops) also gets its own tests on every
 * backend here (cpu, wasm, webgpu), from 0 to |x| = 1e4: its value, reverse- and forward-mode
 * derivative against the CPU backend, a closed form written out in f64, and central differences
 * of that closed form; and `nn.geluTanh` as one kernel each way. Tolerances there are stated
 * beside them.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type Backend,
  backendByName,
  binary,
  type BinaryOp,
  getBackend,
  grad,
  jvp,
  nn,
  setBackend,
  type Tensor,
  tensor,
  unary,
  type UnaryOp,
  valueAndGrad,
  vjp,
} from "../../mod.ts";
import { BINARY, UNARY } from "../../lib/ir.ts";
import { assertClose, BACKENDS_HERE, CPU, HAS_WEBGPU } from "../_helpers.ts";

const BACKENDS: Backend[] = [CPU, ...(HAS_WEBGPU ? [backendByName("webgpu")!] : [])];

// Without an adapter the WebGPU half of every test here is skipped: report it as ignored.
Deno.test({
  name: "op-table tests run on the WebGPU backend too (ignored: no WebGPU adapter)",
  ignore: !HAS_WEBGPU,
  fn: () => {
    if (!BACKENDS.some((b) => b.name === "webgpu")) {
      throw new Error("WebGPU adapter present but not in BACKENDS");
    }
  },
});

/** Inputs away from kinks and singularities, and scalar parameters, per unary op. */
const UNARY_CASES: Partial<Record<UnaryOp, { xs: number[]; p0?: number; p1?: number }>> = {
  log: { xs: [0.3, 0.9, 1.7, 4] },
  sqrt: { xs: [0.3, 0.9, 1.7, 4] },
  rsqrt: { xs: [0.3, 0.9, 1.7, 4] },
  reciprocal: { xs: [-2.5, -0.6, 0.7, 3] },
  affine: { xs: [-1.5, 0.2, 2], p0: 1.5, p1: -0.5 },
  powScalar: { xs: [-1.5, 0.4, 2], p0: 3 },
  clamp: { xs: [-2, -0.5, 0.3, 1.8], p0: -1, p1: 1 },
  relu: { xs: [-1.5, -0.2, 0.3, 2] },
  abs: { xs: [-1.5, -0.2, 0.3, 2] },
};
const DEFAULT_XS = [-2.2, -0.7, 0.15, 0.8, 2.1];

/** Operand pairs per binary op (a, b), away from ties and singularities. */
const BINARY_CASES: Partial<Record<BinaryOp, [number[], number[]]>> = {
  div: [[-1.5, 0.5, 2, 3], [0.7, -1.2, 2.5, 1.1]],
  pow: [[0.5, 1.3, 2, 0.8], [1.5, -0.7, 2.2, 3]],
};
const DEFAULT_AB: [number[], number[]] = [[-1.5, 0.5, 2, -0.3], [0.7, -1.2, 1.4, 1.1]];

function onBackend<T>(be: Backend, f: () => T): T {
  const prev = getBackend().name;
  setBackend(be.name);
  try {
    return f();
  } finally {
    setBackend(prev);
  }
}

const step = (x: number) => 1e-3 * Math.max(1, Math.abs(x));
const f32 = Math.fround;

for (const be of BACKENDS) {
  Deno.test(`op table (${be.name}): every unary row's derivative in reverse, forward and second order`, async () => {
    for (const op of Object.keys(UNARY) as UnaryOp[]) {
      const row = UNARY[op];
      const c = UNARY_CASES[op] ?? { xs: DEFAULT_XS };
      const p0 = c.p0 ?? 0, p1 = c.p1 ?? 0;
      const xs = c.xs;
      const w = xs.map((_, i) => 0.5 + 0.25 * i);
      const f = (x: number) => row.cpu(x, f32(p0), f32(p1));
      // d f(x)/dx by central differences of the row's own CPU function, in f64.
      const want = xs.map((x, i) => {
        if (row.d === null) return 0;
        const h = step(x);
        return w[i]! * (f(x + h) - f(x - h)) / (2 * h);
      });
      const [gRev, gFwd] = await onBackend(be, async () => {
        const x = tensor(xs), wt = tensor(w);
        const g = grad((x: Tensor) => unary(op, x, p0, p1).mul(wt).sum())(x);
        const [y, t] = jvp((x: Tensor) => unary(op, x, p0, p1), [x], [wt]);
        const r = [await g.data(), await t.data()];
        for (const z of [x, wt, g, y, t]) z.dispose();
        return r;
      });
      const tol = { rtol: 2e-3, atol: 2e-4 };
      assertClose(gRev!, want, { ...tol, msg: `${be.name} vjp ${op}` });
      assertClose(gFwd!, want, { ...tol, msg: `${be.name} jvp ${op}` });
      if (row.d === null) continue;
      // Second order: d/dx of the first derivative (its rule runs op by op under the outer
      // tape) against differences of the first derivative.
      const d1 = (x: Tensor) => grad((x: Tensor) => unary(op, x, p0, p1).sum())(x);
      const [got2, fd2] = await onBackend(be, async () => {
        const x = tensor(xs);
        const h = 1e-2;
        const g2 = grad((x: Tensor) => d1(x).sum())(x);
        const xp = tensor(xs.map((v) => v + h)), xm = tensor(xs.map((v) => v - h));
        const [gp, gm] = [await d1(xp).data(), await d1(xm).data()];
        const r = [await g2.data(), gp.map((v, i) => (v - gm[i]!) / (2 * h))];
        for (const z of [x, g2, xp, xm]) z.dispose();
        return r;
      });
      assertClose(got2!, fd2!, { rtol: 1e-2, atol: 1e-2, msg: `${be.name} second order ${op}` });
    }
  });

  Deno.test(`op table (${be.name}): every binary row's partials, with broadcasting`, async () => {
    for (const op of Object.keys(BINARY) as BinaryOp[]) {
      const row = BINARY[op];
      const [as, bs] = BINARY_CASES[op] ?? DEFAULT_AB;
      // a [2, 4] and b [4] broadcast along rows: b's cotangent sums the two rows.
      const a2 = [...as, ...as.map((v) => v * 0.9)], w = a2.map((_, i) => 0.3 + 0.1 * i);
      const da = a2.map((a, i) => {
        if (row.d === null) return 0;
        const b = bs[i % 4]!, h = step(a);
        return w[i]! * (row.cpu(a + h, b) - row.cpu(a - h, b)) / (2 * h);
      });
      const db = bs.map((b, j) => {
        if (row.d === null) return 0;
        const h = step(b);
        let s = 0;
        for (let r = 0; r < 2; r++) {
          const a = a2[r * 4 + j]!;
          s += w[r * 4 + j]! * (row.cpu(a, b + h) - row.cpu(a, b - h)) / (2 * h);
        }
        return s;
      });
      const [ga, gb, tan] = await onBackend(be, async () => {
        const a = tensor(a2, [2, 4]), b = tensor(bs), wt = tensor(w, [2, 4]);
        const [v, g] = valueAndGrad((p: Tensor[]) => binary(op, p[0]!, p[1]!).mul(wt).sum())([
          a,
          b,
        ]);
        // Forward mode with both tangents: Σ w·(∂a·ta + ∂b·tb) with ta = 1, tb = 1.
        const [y, t] = jvp((a: Tensor, b: Tensor) => binary(op, a, b).mul(wt).sum(), [a, b], [
          tensor(a2.map(() => 1), [2, 4]),
          tensor(bs.map(() => 1)),
        ]);
        const r = [await g[0]!.data(), await g[1]!.data(), await t.data()];
        for (const z of [a, b, wt, v, ...g, y, t]) z.dispose();
        return r;
      });
      const tol = { rtol: 2e-3, atol: 2e-4 };
      assertClose(ga!, da, { ...tol, msg: `${be.name} ∂a ${op}` });
      assertClose(gb!, db, { ...tol, msg: `${be.name} ∂b ${op}` });
      const sum = da.reduce((p, q) => p + q, 0) + db.reduce((p, q) => p + q, 0);
      assertClose(tan!, [sum], { rtol: 2e-3, atol: 1e-3, msg: `${be.name} jvp ${op}` });
    }
  });
}

// ---- geluTanh: the fused op on every backend

const BETA = Math.sqrt(2 / Math.PI), KAPPA = 0.044715;
/** torch.nn.GELU(approximate="tanh") in f64. */
const geluTanh64 = (x: number) => 0.5 * x * (1 + Math.tanh(BETA * (x + KAPPA * x ** 3)));
/** Its derivative written out by hand (independent of the row's expression). */
const dGeluTanh64 = (x: number) => {
  const t = Math.tanh(BETA * (x + KAPPA * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * BETA * (1 + 3 * KAPPA * x * x);
};
/** Central difference of the f64 closed form (h = 1e-6·max(1, |x|), see tests/_fd.ts). */
const fdGeluTanh = (x: number) => {
  const h = 1e-6 * Math.max(1, Math.abs(x));
  return (geluTanh64(x + h) - geluTanh64(x - h)) / (2 * h);
};

// 0, both tails (saturated in f32 from |x| ≈ 4.5 on) and the curved middle, as f32 values.
const GELU_XS = [-1e4, -30, -4, -2.5, -1.2, -0.7, -0.1, 0, 0.1, 0.7, 1.2, 2.5, 4, 30, 1e4].map(f32);
// Weights of the cotangent and tangents of the tangent: distinct, so a swapped element shows.
const GELU_W = GELU_XS.map((_, i) => 0.5 + 0.125 * i);

/**
 * Check `got` against `want` elementwise: within rtol 1e-6 (an f32 rounding, and the central
 * difference's own error), plus, where |x| < 10, the error of t = tanh(u) in f32 carried
 * through: a kernel rounds t to a few ulp of 1 (≤ 2.4e-7) and 1 ± t cancels in the tails, so
 * the allowance is that error times what t is multiplied by: ½|x| in the value,
 * ½ + |x|·√(2/π)(1 + 3·0.044715x²) in the derivative (0.3 % of it at x = 4). Where |x| ≥ 10,
 * t is exactly ±1 in f32 and in f64, so the value (x or 0) and derivative (1 or 0) get no more.
 */
function assertGelu(
  got: ArrayLike<number>,
  want: readonly number[],
  deriv: boolean,
  msg: string,
): void {
  assert.equal(got.length, want.length, msg);
  GELU_XS.forEach((x, i) => {
    const g = got[i]!, w = want[i]!;
    const a = Math.abs(x);
    const sens = deriv ? 0.5 + a * BETA * (1 + 3 * KAPPA * x * x) : 0.5 * a;
    const tol = 1e-6 * Math.abs(w) + (a >= 10 ? 0 : 2.4e-7 * sens * (deriv ? GELU_W[i]! : 1));
    assert.ok(
      Number.isFinite(g) && Math.abs(g - w) <= tol,
      `${msg} at x = ${x}: got ${g}, want ${w} (tol ${tol})`,
    );
  });
}

/** Value, reverse-mode gradient (cotangent w) and forward-mode tangent (tangent w) on `be`. */
async function geluTanhOn(be: Backend): Promise<[Float32Array, Float32Array, Float32Array]> {
  return await onBackend(be, async () => {
    const x = tensor(GELU_XS), wt = tensor(GELU_W);
    const y = unary("geluTanh", x);
    const g = grad((x: Tensor) => unary("geluTanh", x).mul(wt).sum())(x);
    const [yj, t] = jvp((x: Tensor) => unary("geluTanh", x), [x], [wt]);
    const r: [Float32Array, Float32Array, Float32Array] = [
      await y.data(),
      await g.data(),
      await t.data(),
    ];
    for (const z of [x, wt, y, g, yj, t]) z.dispose();
    return r;
  });
}

Deno.test("geluTanh: the f64 closed form's derivative is its central difference", () => {
  // The references below must agree with each other before they can judge the engine.
  for (const x of GELU_XS) {
    assertClose([dGeluTanh64(x)], [fdGeluTanh(x)], { rtol: 1e-6, atol: 1e-8, msg: `x = ${x}` });
  }
});

for (const name of BACKENDS_HERE) {
  Deno.test(`geluTanh (${name}): value, vjp and jvp against the CPU backend, the closed form and central differences, |x| up to 1e4`, async () => {
    const be = backendByName(name)!;
    const [y, g, t] = await geluTanhOn(be);
    const [cy, cg, ct] = await geluTanhOn(CPU);
    const wantY = GELU_XS.map(geluTanh64);
    const wantD = GELU_XS.map((x, i) => GELU_W[i]! * dGeluTanh64(x));
    const fdD = GELU_XS.map((x, i) => GELU_W[i]! * fdGeluTanh(x));
    assertGelu(y, wantY, false, `${name} value vs closed form`);
    assertGelu(y, [...cy], false, `${name} value vs cpu`);
    for (const [got, what] of [[g, "vjp"], [t, "jvp"]] as const) {
      assertGelu(got, wantD, true, `${name} ${what} vs closed-form derivative`);
      assertGelu(got, fdD, true, `${name} ${what} vs central differences`);
    }
    assertGelu(g, [...cg], true, `${name} vjp vs cpu`);
    assertGelu(t, [...ct], true, `${name} jvp vs cpu`);
  });

  Deno.test(`geluTanh (${name}): nn.geluTanh is one elementwise kernel forward and one backward`, async () => {
    const be = backendByName(name)!;
    let calls = 0;
    const own = Object.hasOwn(be, "elementwise");
    const orig = be.elementwise;
    be.elementwise = (...args: Parameters<Backend["elementwise"]>) => {
      calls++;
      return orig.apply(be, args);
    };
    try {
      await onBackend(be, async () => {
        const x = tensor(GELU_XS);
        const [y, back] = vjp(nn.geluTanh, x);
        assert.equal(calls, 1, "forward kernels");
        const g = back(tensor(GELU_W));
        assert.equal(calls, 2, "forward + backward kernels");
        // The composed op is the op: same values as unary("geluTanh").
        const u = unary("geluTanh", x);
        assert.deepEqual([...await y.data()], [...await u.data()]);
        for (const z of [x, y, g, u]) z.dispose();
      });
    } finally {
      if (own) be.elementwise = orig;
      else delete (be as { elementwise?: unknown }).elementwise;
    }
  });
}
