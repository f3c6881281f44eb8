import { strict as assert } from "node:assert";
import {
  add,
  cos,
  diagonalRowCount,
  esdLoss,
  exp,
  flowMapApply,
  flowMapDiagonalLoss,
  flowMapKLTable,
  flowMapLoss,
  Generator,
  histogramKL,
  jvp,
  keep,
  less,
  lsdLoss,
  mse,
  mul,
  nn,
  onesLike,
  psdLoss,
  rand,
  randn,
  sampleFlowMap,
  sampleFlowMapTimes,
  sampleToy,
  setBackend,
  sin,
  stopGradient,
  sub,
  type Tensor,
  tensor,
  tidy,
  valueAndGrad,
  where,
} from "../../mod.ts";
import { assertClose, HAS_WASM, HAS_WEBGPU } from "../_helpers.ts";
import { fdJvp } from "../_fd.ts";

setBackend("cpu");

// ---------------------------------------------------------------- an f64 reference MLP

/** The FlowMapMLP's X_{s,t}(x) in f64 from its weights (rows of x; s, t per row). */
async function hostFlowMap(net: nn.FlowMapMLP) {
  const sd = net.stateDict();
  const layers: { w: Float64Array; b: Float64Array; out: number; inp: number }[] = [];
  for (let i = 0;; i += 2) {
    const w = sd[`net.${i}.weight`] as Tensor | undefined;
    if (!w) break;
    const b = sd[`net.${i}.bias`] as Tensor;
    layers.push({
      w: Float64Array.from(await w.data()),
      b: Float64Array.from(await b.data()),
      out: w.shape[0]!,
      inp: w.shape[1]!,
    });
  }
  const silu = (z: number) => z / (1 + Math.exp(-z));
  return (x: Float64Array, s: Float64Array, t: Float64Array): Float64Array => {
    const B = s.length, d = x.length / B;
    const out = new Float64Array(x.length);
    for (let r = 0; r < B; r++) {
      let h = Float64Array.from([...x.subarray(r * d, r * d + d), s[r]!, t[r]!]);
      layers.forEach((L, li) => {
        const o = new Float64Array(L.out);
        for (let j = 0; j < L.out; j++) {
          let z = L.b[j]!;
          for (let k = 0; k < L.inp; k++) z += L.w[j * L.inp + k]! * h[k]!;
          o[j] = li + 1 < layers.length ? silu(z) : z;
        }
        h = o;
      });
      for (let j = 0; j < d; j++) out[r * d + j] = x[r * d + j]! + (t[r]! - s[r]!) * h[j]!;
    }
    return out;
  };
}

Deno.test("LSD's ∂_t X from jvp matches central differences of an f64 reference map", async () => {
  const net = new nn.FlowMapMLP({ dim: 2, hidden: 16, depth: 3, seed: 3 });
  const B = 6;
  const x = randn([B, 2], { seed: 4 }), s = rand([B], { seed: 5 });
  const t = add(s, mul(rand([B], { seed: 6 }), 0.5));
  const phi = (a: Tensor, b: Tensor, c: Tensor) => net.forward(a, b, c);
  const [X, dX] = jvp((tt: Tensor) => flowMapApply(phi, x, s, tt), [t], [onesLike(t)]);
  const ref = await hostFlowMap(net);
  const xh = Float64Array.from(await x.data()), sh = Float64Array.from(await s.data());
  const th = Float64Array.from(await t.data());
  assertClose(await X.data(), ref(xh, sh, th), { rtol: 1e-5, atol: 1e-5, msg: "X" });
  const fd = fdJvp((v) => ref(xh, sh, v[0]!), [th], [new Float64Array(B).fill(1)]);
  assertClose(await dX.data(), fd, { rtol: 1e-4, atol: 1e-5, msg: "∂_t X" });
  // ∂_t X is not φ alone: the (t − s)·∂_t φ term matters for this map.
  const phiOnly = await net.forward(x, t, t).data();
  assert.ok(phiOnly.some((v, i) => Math.abs(v - fd[i]!) > 1e-3), "jvp of X differs from φ(t, t)");
});

// ---------------------------------------------------------------- a closed-form flow map

// dx/dt = A·x with A = [[a, −w], [w, a]]: X_{s,t}(x) = exp((t − s)·A)·x
// = e^{aτ}·(cos(wτ)·x + sin(wτ)·J·x), J·x = (−x₂, x₁), τ = t − s.
const A_RE = -0.5, A_IM = 2;

function hostExpA(tau: number, x: Float64Array | Float32Array): Float64Array {
  const out = new Float64Array(x.length);
  const e = Math.exp(A_RE * tau), c = Math.cos(A_IM * tau), sn = Math.sin(A_IM * tau);
  for (let i = 0; i < x.length; i += 2) {
    out[i] = e * (c * x[i]! - sn * x[i + 1]!);
    out[i + 1] = e * (sn * x[i]! + c * x[i + 1]!);
  }
  return out;
}

function rotJ(x: Tensor): Tensor {
  return mul(x.matmul(tensor([[0, 1], [-1, 0]])), 1); // rows (x1, x2) → (−x2, x1)
}

/** The exact φ of the linear field: (exp(τA) − I)·x/τ, and its series A + τA²/2 + τ²A³/6 near τ = 0. */
function exactPhi(x: Tensor, s: Tensor, t: Tensor): Tensor {
  const tau = sub(t, s).reshape([-1, 1]);
  const jx = rotJ(x);
  const X = mul(
    exp(mul(tau, A_RE)),
    add(mul(cos(mul(tau, A_IM)), x), mul(sin(mul(tau, A_IM)), jx)),
  );
  const small = less(tau.abs(), 1e-2);
  const safe = where(small, onesLike(tau), tau);
  const secant = sub(X, x).div(safe);
  const Ax = (v: Tensor) => add(mul(v, A_RE), mul(rotJ(v), A_IM));
  const a1 = Ax(x), a2 = Ax(a1), a3 = Ax(a2);
  const series = add(a1, add(mul(a2, mul(tau, 0.5)), mul(a3, mul(tau.square(), 1 / 6))));
  return where(small, series, secant);
}

Deno.test("the exact map of dx/dt = Ax: one step X_{0,1} and N composed steps reproduce exp(A)·x0", async () => {
  const x0 = randn([32, 2], { seed: 7 });
  const want = hostExpA(1, await x0.data());
  for (const N of [1, 2, 4, 8]) {
    const r = await sampleFlowMap(exactPhi, x0, { steps: N, record: true });
    assert.equal(r.nfe, N);
    assert.equal(r.trajectory!.length, N + 1);
    assertClose(await r.x.data(), want, { rtol: 1e-5, atol: 2e-6, msg: `N = ${N}` });
    // Every intermediate point is exp(t_k·A)·x0.
    const k = Math.floor(N / 2);
    assertClose(await r.trajectory![k]!.data(), hostExpA(k / N, await x0.data()), {
      rtol: 1e-5,
      atol: 2e-6,
    });
  }
  // The velocity used as a one-step map (Euler, φ = A·x) is not exact: the check can fail.
  const euler = (x: Tensor) => add(mul(x, A_RE), mul(rotJ(x), A_IM));
  const e4 = await (await sampleFlowMap(euler, x0, { steps: 4 })).x.data();
  assert.ok(e4.some((v, i) => Math.abs(v - want[i]!) > 0.05), "Euler composition is inexact");
});

Deno.test("the exact flow map zeroes the diagonal-free LSD, PSD and ESD residuals; a wrong map does not", async () => {
  const B = 64, g = new Generator(11);
  const x0 = randn([B, 2], { seed: 8 }), x1 = randn([B, 2], { seed: 9 });
  const { s, t } = sampleFlowMapTimes(B, { generator: g });
  const h = rand([B], { seed: 10 });
  const wrong = (x: Tensor, a: Tensor, b: Tensor) => mul(exactPhi(x, a, b), 1.1);
  for (const [name, phi, tol] of [["exact", exactPhi, 1e-8], ["wrong", wrong, 0]] as const) {
    const l = [
      await lsdLoss(phi, x0, x1, s, t).item(),
      await psdLoss(phi, x0, x1, s, t).item(),
      await psdLoss(phi, x0, x1, s, t, { mode: "uniform", h }).item(),
      await esdLoss(phi, x0, x1, s, t).item(),
    ];
    if (name === "exact") assert.ok(l.every((v) => v < tol), `exact residuals ${l}`);
    else assert.ok(l.every((v) => v > 1e-4), `wrong-map residuals ${l}`);
  }
});

// ---------------------------------------------------------------- teachers carry no gradient

async function gradsOf(net: nn.FlowMapMLP, loss: () => Tensor): Promise<Float32Array[]> {
  const [v, g] = valueAndGrad((_p: Tensor[]) => loss())(net.parameters());
  v.dispose();
  return await Promise.all(g.map((x) => x.data()));
}

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  a.forEach((x, i) => x.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i]![j]!)))));
  return m;
}

for (const backend of ["cpu", "wasm", "webgpu"] as const) {
  Deno.test({
    name:
      `teachers are detached (${backend}): LSD/PSD/ESD gradients equal those with a constant teacher`,
    ignore: (backend === "webgpu" && !HAS_WEBGPU) || (backend === "wasm" && !HAS_WASM),
    fn: async () => {
      setBackend(backend);
      try {
        const net = new nn.FlowMapMLP({ dim: 2, hidden: 16, depth: 2, seed: 1 });
        const phi = (x: Tensor, s: Tensor, t: Tensor) => net.forward(x, s, t);
        const B = 16;
        const x0 = randn([B, 2], { seed: 2 }), x1 = randn([B, 2], { seed: 3 });
        const { s, t } = sampleFlowMapTimes(B, { generator: new Generator(4) });
        const h = rand([B], { seed: 5 });
        const cases: [string, (teacher?: (x: Tensor, a: Tensor, b: Tensor) => Tensor) => Tensor][] =
          [
            ["lsd", (teacher) => lsdLoss(phi, x0, x1, s, t, { teacher })],
            ["psd-mid", (teacher) => psdLoss(phi, x0, x1, s, t, { teacher })],
            ["psd-uni", (teacher) => psdLoss(phi, x0, x1, s, t, { teacher, mode: "uniform", h })],
            ["esd", (teacher) => esdLoss(phi, x0, x1, s, t, { teacher })],
          ];
        for (const [name, loss] of cases) {
          // The teacher's values, computed outside any tape, replayed as constant tensors.
          const values: Tensor[] = [];
          const capture = (x: Tensor, a: Tensor, b: Tensor) => {
            const v = net.teacher(x, a, b);
            values.push(keep(v));
            return v;
          };
          tidy(() => loss(capture));
          const consts = await Promise.all(
            values.map(async (v) => tensor(await v.data(), v.shape)),
          );
          let k = 0;
          const constant = () => consts[k++]!;
          const gDefault = await gradsOf(net, () => loss());
          const gModel = await gradsOf(net, () => loss((x, a, b) => net.teacher(x, a, b)));
          const gConst = await gradsOf(net, () => loss(constant));
          assert.equal(k, consts.length, `${name}: every teacher call replayed`);
          const scale = Math.max(...gConst.map((g) => Math.max(...g.map(Math.abs))));
          assert.ok(scale > 1e-4, `${name}: gradients are not trivially zero`);
          assert.ok(maxDiff(gDefault, gConst) <= 1e-5 * scale + 1e-7, `${name}: default teacher`);
          assert.ok(maxDiff(gModel, gConst) <= 1e-5 * scale + 1e-7, `${name}: FlowMapMLP.teacher`);
        }
        // The check can fail: LSD with a teacher that keeps its gradient (the reproduction's
        // bug) gives different parameter gradients.
        const leaky = await gradsOf(net, () =>
          tidy(() => {
            const xs = add(x0, mul(s.reshape([-1, 1]), sub(x1, x0)));
            const [X, dX] = jvp((tt: Tensor) => flowMapApply(phi, xs, s, tt), [t], [onesLike(t)]);
            return mse(dX, phi(stopGradient(X), t, t));
          }));
        const clean = await gradsOf(net, () => lsdLoss(phi, x0, x1, s, t));
        assert.ok(maxDiff(leaky, clean) > 1e-3, "a non-detached teacher changes the gradient");
      } finally {
        setBackend("cpu");
      }
    },
  });
}

// ---------------------------------------------------------------- objective plumbing

Deno.test("flowMapLoss: diagonal + off-diagonal split by rows, the diagonal term alone, and row counts", async () => {
  const net = new nn.FlowMapMLP({ dim: 2, hidden: 8, depth: 2, seed: 0 });
  const phi = (x: Tensor, s: Tensor, t: Tensor) => net.forward(x, s, t);
  const x1 = randn([10, 2], { seed: 1 }), x0 = randn([10, 2], { seed: 2 });
  const r = flowMapLoss(phi, x1, { x0, diagonalRows: 10, generator: new Generator(3) });
  assert.equal(r.offDiagonal, null);
  const t = new Generator(3).uniform([10]);
  assertClose([await r.loss.item()], [await flowMapDiagonalLoss(phi, x0, x1, t).item()], {
    rtol: 1e-6,
  });
  const r2 = flowMapLoss(phi, x1, {
    x0,
    diagonalRows: 6,
    method: "psd",
    generator: new Generator(3),
  });
  assertClose([await r2.loss.item()], [
    (await r2.diagonal!.item()) + (await r2.offDiagonal!.item()),
  ], {
    rtol: 1e-6,
  });
  assert.equal(diagonalRowCount(2048, {}), 1536);
  assert.equal(diagonalRowCount(2048, { diagonalRows: 100 }), 100);
  assert.equal(diagonalRowCount(4, { diagonalFraction: 0 }), 0);
});

Deno.test("bad input: method, PSD mode, diagonal fraction, N < 1 are RangeErrors naming the value", async () => {
  const phi = (x: Tensor) => x.mul(0);
  const x1 = randn([4, 2], { seed: 0 });
  assert.throws(() => flowMapLoss(phi, x1, { method: "xsd" as "lsd" }), /flow-map method "xsd"/);
  assert.throws(() => flowMapLoss(phi, x1, { psdMode: "cubic" as "midpoint" }), /PSD mode "cubic"/);
  assert.throws(() => flowMapLoss(phi, x1, { diagonalFraction: 1.2 }), /diagonal fraction.*1\.2/);
  assert.throws(() => flowMapLoss(phi, x1, { diagonalFraction: -0.1 }), /-0\.1/);
  assert.throws(() => flowMapLoss(phi, x1, { diagonalRows: 5 }), /diagonal rows.*5/);
  await assert.rejects(
    sampleFlowMap(phi, x1, { steps: 0 }),
    (e: Error) => e instanceof RangeError && /steps N.*0/.test(e.message),
  );
  await assert.rejects(flowMapKLTable(phi, new Float32Array(4), { steps: [1, 0] }), /steps N.*0/);
  assert.throws(() => flowMapApply("no" as unknown as typeof phi, x1, x1, x1), TypeError);
});

// ---------------------------------------------------------------- histogram KL

Deno.test("histogram KL against the closed form on a 2×2 histogram, and the bin area cancels", async () => {
  // 2 bins per axis on [0, 2]²: target 3 points in bin (0,0) and 1 in (1,1); model 2 and 2.
  const target = new Float32Array([0.5, 0.5, 0.2, 0.7, 0.9, 0.1, 1.5, 1.5]);
  const model = new Float32Array([0.5, 0.5, 0.3, 0.3, 1.2, 1.8, 1.9, 1.1]);
  const kl = histogramKL(target, model, { bins: 2, range: [0, 2], eps: 0 });
  const closed = 0.75 * Math.log(0.75 / 0.5) + 0.25 * Math.log(0.25 / 0.5);
  assertClose([kl], [closed], { rtol: 1e-12, atol: 1e-15 });
  // As densities p/A, q/A (bin area A = 1 here, so use a [0, 4]² grid with A = 4): the KL of
  // the densities weighted by A is the same number; without the A it is 4× too large.
  const kl4 = histogramKL(target.map((v) => 2 * v), model.map((v) => 2 * v), {
    bins: 2,
    range: [0, 4],
    eps: 0,
  });
  const A = 4, pd = [0.75 / A, 0.25 / A], qd = [0.5 / A, 0.5 / A];
  const withArea = A * (pd[0]! * Math.log(pd[0]! / qd[0]!) + pd[1]! * Math.log(pd[1]! / qd[1]!));
  assertClose([kl4], [withArea], { rtol: 1e-12 });
  assert.ok(Math.abs(withArea / A - kl4) > 0.01, "the density sum without the area differs");
  // flowMapKLTable bins N-step samples the same way: N = 1 of a constant map x ↦ x + c.
  const c = tensor([[1, 1]]);
  const shift = (x: Tensor) => x.mul(0).add(c);
  const rows = await flowMapKLTable(shift, target, {
    steps: [1, 3],
    numSamples: 500,
    bins: 2,
    range: [0, 2],
    seed: 5,
    keepSamples: true,
  });
  const x0 = await new Generator(5).normal([500, 2]).data();
  const shifted = x0.map((v) => v + 1);
  assertClose(rows[0]!.samples!, shifted, { rtol: 1e-6, atol: 1e-6 });
  assertClose([rows[0]!.kl], [histogramKL(target, shifted, { bins: 2, range: [0, 2] })], {
    rtol: 1e-9,
  });
  assertClose(rows[1]!.samples!, shifted, { rtol: 1e-5, atol: 1e-5 });
});

Deno.test("checkerboard matches seed 004's: 8 cells (i + j even) of a 4×4 board on [−2, 2]², uniform", async () => {
  const n = 80000;
  const x = await sampleToy("checkerboard", n, new Generator(2)).data();
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const a = x[2 * i]!, b = x[2 * i + 1]!;
    assert.ok(a >= -2 && a < 2 && b >= -2 && b < 2, `point ${a}, ${b} outside [−2, 2)²`);
    const ci = Math.floor(a) + 2, cj = Math.floor(b) + 2;
    assert.equal((ci + cj) % 2, 0, `point ${a}, ${b} in an odd cell`);
    counts.set(`${ci},${cj}`, (counts.get(`${ci},${cj}`) ?? 0) + 1);
  }
  assert.equal(counts.size, 8);
  for (const [cell, c] of counts) {
    assert.ok(Math.abs(c / n - 1 / 8) < 0.006, `cell ${cell}: ${c / n}`);
  }
  // Uniform within a cell: the mean offset from the cell corner is ≈ (½, ½).
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[2 * i]! - Math.floor(x[2 * i]!);
    my += x[2 * i + 1]! - Math.floor(x[2 * i + 1]!);
  }
  assertClose([mx / n, my / n], [0.5, 0.5], { atol: 0.005 });
});
