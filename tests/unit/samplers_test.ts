import { strict as assert } from "node:assert";
import {
  concat,
  cos,
  full,
  Generator,
  getBackend,
  integrate,
  mean,
  mul,
  otCouple,
  type SamplerMethod,
  setBackend,
  split,
  sub,
  type Tensor,
  tensor,
  tidy,
  variance,
} from "../../mod.ts";
import { dopri5Step } from "../../lib/flow/samplers.ts";
import { assertClose } from "../_helpers.ts";

const X0 = [1, -0.5, 2];
const x0 = () => tensor(X0, [3, 1]);
const tcol = (t: Tensor, x: Tensor) => t.reshape([x.shape[0]!, 1]);

Deno.test("integrate: constant field is exact for every method", async () => {
  const methods: SamplerMethod[] = ["euler", "midpoint", "heun", "rk4", "dopri5", "euler-maruyama"];
  for (const method of methods) {
    const r = await integrate((x) => full(x.shape, 0.75), x0(), {
      method,
      steps: 7,
      diffusion: () => 0,
    });
    assertClose(await r.x.data(), X0.map((v) => v + 0.75), { atol: 2e-6, msg: method });
  }
});

Deno.test("integrate: v = 3t² reaches x0 + 1; rk4 (Simpson) is exact, low orders converge", async () => {
  const v = (x: Tensor, t: Tensor) => tcol(t, x).square().mul(3).add(x.mul(0));
  const err = async (method: SamplerMethod, steps: number) => {
    const r = await integrate(v, x0(), { method, steps });
    const d = await r.x.data();
    return Math.max(...X0.map((a, i) => Math.abs(d[i]! - (a + 1))));
  };
  assert.ok((await err("rk4", 3)) < 2e-6, "rk4 integrates a quadratic exactly");
  for (const [m, p, n] of [["euler", 1, 32], ["midpoint", 2, 8], ["heun", 2, 8]] as const) {
    const order = Math.log2((await err(m, n)) / (await err(m, 2 * n)));
    assert.ok(Math.abs(order - p) < 0.3, `${m}: observed order ${order}, expected ${p}`);
  }
});

Deno.test("integrate: dx/dt = 2x matches each method's stability polynomial and order", async () => {
  const a = 2;
  const lin = (x: Tensor) => x.mul(a);
  // An explicit RK method on a linear ODE gives x_N = x0·R(a·h)^N exactly.
  const R: Record<string, (z: number) => number> = {
    euler: (z) => 1 + z,
    midpoint: (z) => 1 + z + z * z / 2,
    heun: (z) => 1 + z + z * z / 2,
    rk4: (z) => 1 + z + z * z / 2 + z ** 3 / 6 + z ** 4 / 24,
  };
  const cases = [["euler", 1, 32, 1], ["midpoint", 2, 16, 2], ["heun", 2, 16, 2], [
    "rk4",
    4,
    4,
    4,
  ]] as const;
  for (const [m, p, n, evals] of cases) {
    const errs: number[] = [];
    for (const steps of [n, 2 * n]) {
      const r = await integrate(lin, x0(), { method: m, steps });
      assert.equal(r.nfe, evals * steps, `${m} NFE`);
      const d = await r.x.data();
      const poly = R[m]!(a / steps) ** steps;
      assertClose(d, X0.map((v) => v * poly), { rtol: 2e-5, msg: `${m} stability polynomial` });
      errs.push(Math.abs(d[2]! - 2 * Math.exp(a)));
    }
    const order = Math.log2(errs[0]! / errs[1]!);
    assert.ok(Math.abs(order - p) < 0.3, `${m}: observed order ${order}, expected ${p}`);
  }
});

Deno.test("integrate: dopri5 meets its tolerance, counts NFE, and tighter tolerances cost more", async () => {
  const lin = (x: Tensor) => x.mul(1.5);
  const exact = X0.map((v) => v * Math.exp(1.5));
  let prevNfe = 0;
  for (const tol of [1e-3, 1e-6]) {
    const r = await integrate(lin, x0(), { method: "dopri5", atol: tol, rtol: tol });
    const d = await r.x.data();
    const errs = X0.map((_, i) => Math.abs(d[i]! - exact[i]!) / (tol + tol * Math.abs(exact[i]!)));
    assert.ok(Math.max(...errs) < 10, `dopri5 tol ${tol}: scaled error ${Math.max(...errs)}`);
    // FSAL: 1 initial evaluation + 1 for the initial step size + 6 per attempted step.
    assert.equal(r.nfe, 2 + 6 * (r.accepted! + r.rejected!));
    assert.equal(r.times[r.times.length - 1], 1);
    assert.ok(r.nfe > prevNfe, `NFE grows as the tolerance tightens (${prevNfe} -> ${r.nfe})`);
    prevNfe = r.nfe;
  }
  // A non-autonomous field: x(1) = x0 + sin(3)/3 for v = cos(3t).
  const r = await integrate((x, t) => cos(tcol(t, x).mul(3)).add(x.mul(0)), x0(), {
    method: "dopri5",
    atol: 1e-6,
    rtol: 1e-6,
  });
  assertClose(await r.x.data(), X0.map((v) => v + Math.sin(3) / 3), { atol: 2e-5 });
});

Deno.test("integrate: recorded trajectory has steps + 1 states on the grid, ending at x", async () => {
  const r = await integrate((x) => x.mul(0).add(1), x0(), {
    method: "heun",
    steps: 4,
    record: true,
  });
  assert.equal(r.trajectory!.length, 5);
  assertClose(r.times, [0, 0.25, 0.5, 0.75, 1], { atol: 1e-12 });
  for (let k = 0; k <= 4; k++) {
    assertClose(await r.trajectory![k]!.data(), X0.map((v) => v + k / 4), { atol: 1e-6 });
  }
  assertClose(await r.x.data(), await r.trajectory![4]!.data());
});

Deno.test("integrate: Euler–Maruyama with the derived score maps N(0,1) to N(m, s²)", async () => {
  // x1 ~ N(m, s²), x0 ~ N(0, 1): x_t ~ N(t·m, V_t), V_t = (1−t)² + t²s², and
  // v(x, t) = m + (t·s² − (1 − t))/V_t · (x − t·m) (Gaussian conditional expectation).
  const m = 2, s = 0.5;
  const v = (x: Tensor, t: Tensor) => {
    const tc = tcol(t, x);
    const omt = tc.neg().add(1);
    const V = omt.square().add(tc.square().mul(s * s));
    const k = tc.mul(s * s).sub(omt).div(V);
    return x.sub(tc.mul(m)).mul(k).add(m);
  };
  const n = 4000;
  const gen = new Generator(7);
  const z = gen.normal([n, 1]);
  const stats = async (x: Tensor) => [await mean(x).item(), Math.sqrt(await variance(x).item())];
  const sde = await integrate(v, z, { method: "euler-maruyama", steps: 100, generator: gen });
  const [mu, sd] = await stats(sde.x);
  assert.ok(Math.abs(mu! - m) < 0.04, `SDE mean ${mu}`);
  assert.ok(Math.abs(sd! - s) < 0.03, `SDE std ${sd}`);
  assert.equal(sde.nfe, 100);
  // The noise really enters: the SDE paths differ from the ODE paths from the same x0.
  // (Flipping the sign of the score term makes this test fail: the variance blows up.)
  const ode = await integrate(v, z, { method: "euler", steps: 100 });
  const diff = await mean(sde.x.sub(ode.x).abs()).item();
  assert.ok(diff > 0.05, `the SDE paths differ from the ODE paths (mean |Δ| ${diff})`);
  // With g = 0 Euler–Maruyama is Euler on the grid t_k = 0.96·k/99, plus a last Euler step.
  const em0 = await integrate(v, z, { method: "euler-maruyama", steps: 2, diffusion: () => 0 });
  const zd = await z.data();
  const vHost = (x: number, t: number) => {
    const V = (1 - t) ** 2 + t * t * s * s;
    return m + ((t * s * s - (1 - t)) / V) * (x - t * m);
  };
  const expect = Array.from(zd.slice(0, 5), (x) => {
    const x1 = x + 0.96 * vHost(x, 0);
    return x1 + 0.04 * vHost(x1, 0.96);
  });
  assertClose((await em0.x.data()).slice(0, 5), expect, { rtol: 1e-5, atol: 1e-5 });
});

Deno.test("integrate: bad inputs raise typed errors naming the input", async () => {
  await assert.rejects(() => integrate((x) => x, x0(), { steps: 0 }), RangeError);
  await assert.rejects(
    () => integrate((x) => x, x0(), { method: "rk45" as SamplerMethod }),
    /sampler method/,
  );
  await assert.rejects(() => integrate((x) => x.sum(), x0()), /velocity to return shape/);
});

Deno.test("integrate, sinkhorn and otCouple free every intermediate (live bytes return to the start)", async () => {
  // Exact accounting needs the CPU backend (WebGPU may release buffers after a submit).
  const prev = getBackend().name as "cpu" | "webgpu";
  const be = setBackend("cpu");
  try {
    const w = tensor([[0.5, -1], [1, 0.2]]);
    // A field with several intermediates per call.
    const v = (x: Tensor, t: Tensor) => x.matmul(w).tanh().mul(tcol(t, x).add(1)).sub(x.mul(0.1));
    const z = new Generator(3).normal([32, 2]);
    const before = be.liveBytes();
    for (
      const method of ["euler", "midpoint", "heun", "rk4", "dopri5", "euler-maruyama"] as const
    ) {
      const r = await integrate(v, z, { method, steps: 6, generator: new Generator(1) });
      r.x.dispose();
      assert.equal(be.liveBytes(), before, `${method} leaked ${be.liveBytes() - before} bytes`);
      const rec = await integrate(v, z, {
        method,
        steps: 3,
        record: true,
        generator: new Generator(1),
      });
      rec.x.dispose();
      rec.trajectory!.forEach((t) => t.dispose());
      assert.equal(
        be.liveBytes(),
        before,
        `${method} (record) leaked ${be.liveBytes() - before} bytes`,
      );
    }
    const x1 = new Generator(4).normal([32, 2]), labels = tensor(new Float32Array(32));
    const start = be.liveBytes();
    for (const method of ["argmax", "sample", "exact"] as const) {
      const c = await otCouple(z, x1, { method, labels, generator: new Generator(2) });
      [c.x0, c.x1, c.labels!].forEach((t) => t.dispose());
      assert.equal(be.liveBytes(), start, `otCouple ${method} leaked`);
    }
  } finally {
    setBackend(prev);
  }
});

Deno.test("dopri5Step: one step's solution and error estimate equal an f64 evaluation of the Dormand–Prince tableau", async () => {
  // The tableau typed from Dormand & Prince (1980) / Hairer–Nørsett–Wanner Table 5.2,
  // independently of lib/flow/samplers.ts: c, a, the 5th-order b and the 4th-order b̂.
  const c = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1];
  const a = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
  ];
  const b = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0];
  const bh = [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40];
  // A nonlinear, time-dependent field, so every stage and weight matters.
  const fHost = (
    x: number[],
    t: number,
  ) => [-x[1]! + 2 * t * x[0]! * x[0]!, x[0]! * Math.cos(5 * t)];
  const x0 = [0.8, -0.4], t0 = 0.1, h = 0.8;
  const k: number[][] = [];
  for (let s = 0; s < 7; s++) {
    const xs = x0.map((v, i) => v + h * a[s]!.reduce((acc, aj, j) => acc + aj * k[j]![i]!, 0));
    k.push(fHost(xs, t0 + c[s]! * h));
  }
  const x5 = x0.map((v, i) => v + h * b.reduce((acc, bj, j) => acc + bj * k[j]![i]!, 0));
  const err = x0.map((_, i) => h * b.reduce((acc, bj, j) => acc + (bj - bh[j]!) * k[j]![i]!, 0));
  assert.ok(Math.max(...err.map(Math.abs)) > 1e-3, "the step is large enough to test the error");
  const f = (x: Tensor, t: number) =>
    tidy(() => {
      const [p, q] = split(x, [1, 1], 1);
      return concat([sub(mul(mul(p!, p!), 2 * t), q!), mul(p!, Math.cos(5 * t))], 1);
    });
  const x = tensor([x0]);
  const { xn, errVec } = dopri5Step(f, x, f(x, t0), t0, h);
  assertClose(await xn.data(), x5, { rtol: 1e-5, atol: 1e-6 });
  assertClose(await errVec.data(), err, { rtol: 2e-3, atol: 1e-7 });
});
