/**
 * @file lib/optim: optimizer steps against hand-written plain-JS updates, clipping, EMA,
 * schedules, state round-trips, and a small regression trained to a justified loss.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  getBackend,
  nn,
  optim,
  rand,
  setBackend,
  type Tensor,
  tensor,
  tidy,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

setBackend("cpu");

const P0 = [0.5, -1.25, 2, 0.03];
const GRADS = [[0.1, -0.4, 1.5, 0.0], [-0.3, 0.2, 0.7, 1e-3], [0.05, 0.05, -2, -0.5]];

/** Run `opt` on P0 with GRADS, returning the parameter after each step. */
async function trajectory(opt: optim.Optimizer, steps = GRADS.length): Promise<Float32Array[]> {
  const p = tensor(P0);
  const out: Float32Array[] = [];
  for (let i = 0; i < steps; i++) {
    const g = tensor(GRADS[i % GRADS.length]!);
    opt.step([p], [g]);
    g.dispose();
    out.push(await p.data());
  }
  p.dispose();
  opt.dispose();
  return out;
}

/** Plain-JS Adam/AdamW/RAdam in float64, written from the PyTorch docs' pseudo-code. */
function refAdam(
  kind: "adam" | "adamw" | "radam",
  lr: number,
  wd: number,
  steps: number,
  b1 = 0.9,
  b2 = 0.999,
  eps = 1e-8,
): number[][] {
  const p = [...P0], m = P0.map(() => 0), v = P0.map(() => 0);
  const out: number[][] = [];
  for (let t = 1; t <= steps; t++) {
    const g0 = GRADS[(t - 1) % GRADS.length]!;
    for (let i = 0; i < p.length; i++) {
      let g = g0[i]!;
      if (kind === "adamw") p[i] = p[i]! * (1 - lr * wd);
      else g += wd * p[i]!;
      m[i] = b1 * m[i]! + (1 - b1) * g;
      v[i] = b2 * v[i]! + (1 - b2) * g * g;
      const mh = m[i]! / (1 - b1 ** t);
      if (kind !== "radam") {
        const vh = v[i]! / (1 - b2 ** t);
        p[i] = p[i]! - lr * mh / (Math.sqrt(vh) + eps);
      } else {
        const rhoInf = 2 / (1 - b2) - 1;
        const rho = rhoInf - 2 * t * b2 ** t / (1 - b2 ** t);
        if (rho > 5) {
          const r = Math.sqrt((rho - 4) * (rho - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rho));
          const l = Math.sqrt(1 - b2 ** t) / (Math.sqrt(v[i]!) + eps);
          p[i] = p[i]! - lr * mh * r * l;
        } else {
          p[i] = p[i]! - lr * mh;
        }
      }
    }
    out.push([...p]);
  }
  return out;
}

Deno.test("optim.Adam (L2 weight decay) matches the hand-computed update over 3 steps", async () => {
  const got = await trajectory(new optim.Adam({ lr: 0.05, weightDecay: 0.1 }));
  refAdam("adam", 0.05, 0.1, 3).forEach((w, i) =>
    assertClose(got[i]!, w, { msg: `step ${i + 1}` })
  );
  // First step of Adam without decay moves every coordinate with g ≠ 0 by exactly lr.
  const [first] = await trajectory(new optim.Adam({ lr: 0.05 }), 1);
  assertClose(first!, [0.45, -1.2, 1.95, 0.03], { atol: 1e-6 });
});

Deno.test("optim.AdamW decays decoupled (p·(1 − lr·λ), default λ = 0.01) then steps like Adam", async () => {
  const got = await trajectory(new optim.AdamW({ lr: 0.05, weightDecay: 0.2 }));
  refAdam("adamw", 0.05, 0.2, 3).forEach((w, i) =>
    assertClose(got[i]!, w, { msg: `step ${i + 1}` })
  );
  assert.equal(new optim.AdamW().weightDecay, 0.01);
});

Deno.test("optim.RAdam matches PyTorch's formula through the un-rectified and rectified phases", async () => {
  // ρ_t > 5 first at t = 6 for β₂ = 0.999, so 9 steps cover both branches.
  const got = await trajectory(new optim.RAdam({ lr: 0.01, weightDecay: 0.05 }), 9);
  refAdam("radam", 0.01, 0.05, 9).forEach((w, i) =>
    assertClose(got[i]!, w, { rtol: 2e-5, atol: 1e-6, msg: `step ${i + 1}` })
  );
});

Deno.test("optim.SGD with momentum, Nesterov and weight decay matches the hand-computed update", async () => {
  for (const nesterov of [false, true]) {
    const got = await trajectory(
      new optim.SGD({ lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov }),
    );
    const p = [...P0], b = P0.map(() => 0);
    GRADS.forEach((g0, t) => {
      for (let i = 0; i < p.length; i++) {
        const g = g0[i]! + 0.01 * p[i]!;
        b[i] = t === 0 ? g : 0.9 * b[i]! + g;
        p[i] = p[i]! - 0.1 * (nesterov ? g + 0.9 * b[i]! : b[i]!);
      }
      assertClose(got[t]!, p, { msg: `nesterov=${nesterov} step ${t + 1}` });
    });
  }
  const [plain] = await trajectory(new optim.SGD({ lr: 0.5 }), 1);
  assertClose(plain!, P0.map((p, i) => p - 0.5 * GRADS[0]![i]!));
});

Deno.test("optimizer state round-trips: resuming from stateDict equals an uninterrupted run", async () => {
  const full = await trajectory(new optim.Adam({ lr: 0.05 }), 3);
  const a = new optim.Adam({ lr: 0.05 });
  const p = tensor(P0);
  for (let i = 0; i < 2; i++) a.step([p], [tensor(GRADS[i]!)]);
  const b = new optim.Adam({ lr: 0.05 });
  // Through the host, as a decoded checkpoint would provide it.
  const host = Object.fromEntries(
    await Promise.all(
      Object.entries(a.stateDict().tensors).map(async ([k, t]) =>
        [k, { shape: [...(t as Tensor).shape], data: await (t as Tensor).data() }] as const
      ),
    ),
  );
  b.loadStateDict({ step: a.stepCount, tensors: host }, [p]);
  assert.equal(b.stepCount, 2);
  a.dispose(); // b holds copies
  b.step([p], [tensor(GRADS[2]!)]);
  assertClose(await p.data(), full[2]!, { rtol: 1e-6, atol: 0 });
  assert.throws(
    () => b.loadStateDict({ step: 1, tensors: { "bogus.0": p } }),
    /Unexpected optimizer state "bogus.0"/,
  );
  assert.throws(() => b.step([p], []), /as many gradients as parameters/);
  assert.throws(() => b.step([p], [tensor([1, 2])]), /Gradient 0 has shape \[2\]/);
  assert.throws(() => new optim.Adam({ lr: -1 }), RangeError);
});

Deno.test("optim.clipGradNorm scales by maxNorm/(‖g‖ + 1e-6) only above maxNorm, on the device", async () => {
  const g = [tensor([3, 0]), tensor([[4]])];
  const { grads, norm } = optim.clipGradNorm(g, 1);
  assert.ok(Math.abs(await norm.item() - 5) < 1e-6);
  const c = 1 / (5 + 1e-6);
  assertClose(await grads[0]!.data(), [3 * c, 0]);
  assertClose(await grads[1]!.data(), [4 * c]);
  assert.deepEqual([...grads[1]!.shape], [1, 1]);
  const { grads: same } = optim.clipGradNorm(g, 10);
  assert.deepEqual([...await same[0]!.data()], [3, 0]);
  assert.throws(() => optim.clipGradNorm(g, -1), RangeError);
});

Deno.test("optim.EMA follows s ← d·s + (1 − d)·p with warm-up d = min(D, (1 + n)/(10 + n))", async () => {
  const p = tensor([1, -2]);
  const ema = new optim.EMA([p], { decay: 0.5 });
  assert.ok(Math.abs(ema.currentDecay() - 2 / 11) < 1e-12);
  const s = [1, -2];
  const vals = [[3, 0], [0, 4], [1, 1], [2, 2], [5, -1]];
  vals.forEach((v, k) => {
    const n = k + 1;
    const d = Math.min(0.5, (1 + n) / (10 + n)); // n = updates including this one
    p._assign(tensor(v));
    ema.update([p]);
    for (let i = 0; i < 2; i++) s[i] = d * s[i]! + (1 - d) * v[i]!;
  });
  assertClose(await ema.shadow[0]!.data(), s);
  assert.equal(ema.numUpdates, 5);
  // No warm-up: fixed d.
  const q = tensor([0, 0]);
  const fixed = new optim.EMA([q], { decay: 0.9, warmup: false });
  q._assign(tensor([1, 10]));
  fixed.update([q]);
  assertClose(await fixed.shadow[0]!.data(), [0.1, 1]);
  assert.equal(new optim.EMA([]).decay, 0.9999);
  p.dispose();
  q.dispose();
  ema.dispose();
  fixed.dispose();
});

Deno.test("optim.EMA swapInto twice restores, copyTo copies, and state round-trips into a module", async () => {
  const net = new nn.Linear(2, 2, { seed: 0 });
  const w0 = await net.weight.data();
  const ema = new optim.EMA(net, { decay: 0.9, warmup: false });
  net.weight._assign(net.weight.add(1));
  ema.update(net); // shadow = 0.9·w0 + 0.1·(w0 + 1) = w0 + 0.1
  const w1 = await net.weight.data();
  ema.swapInto(net);
  assertClose(await net.weight.data(), w0.map((v) => v + 0.1));
  assertClose(await ema.shadow[0]!.data(), w1);
  ema.swapInto(net);
  assertClose(await net.weight.data(), w1);
  const other = new optim.EMA(net);
  assert.deepEqual(Object.keys(ema.stateDict().tensors), ["shadow.0", "shadow.1"]);
  assert.deepEqual(Object.keys(ema.namedShadows()), ["weight", "bias"]); // model names
  other.loadStateDict({ numUpdates: ema.numUpdates, tensors: ema.namedShadows() });
  assert.equal(other.numUpdates, 1);
  other.copyTo(net);
  assertClose(await net.weight.data(), w0.map((v) => v + 0.1));
  assert.throws(() => other.update([net.weight]), /tracks 2 parameters but was given 1/);
  const w = { shape: [2, 2], data: new Float32Array(4) };
  assert.throws(
    () => other.loadStateDict({ numUpdates: 1, tensors: { weight: w, bias: w } }),
    /State "bias" has shape \[2, 2\] but expected \[2\]/,
  );
  assert.throws(
    () => other.loadStateDict({ numUpdates: 1, tensors: { weight: w } }),
    /Missing EMA state "bias"/,
  );
  assertClose(await other.shadow[0]!.data(), w0.map((v) => v + 0.1)); // untouched by failures
  net.dispose();
  ema.dispose();
  other.dispose();
});

Deno.test("optim schedules: constant, linearWarmup, cosine, inverseSqrt at known points", () => {
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
  close(optim.constant()(123, 3e-4), 3e-4);
  const w = optim.linearWarmup(4);
  close(w(0), 0.25);
  close(w(3), 1);
  close(w(100, 2), 2);
  const c = optim.cosine(110, { warmup: 10, minLr: 0.1 });
  close(c(4), 0.5); // warm-up: (4 + 1)/10
  close(c(10), 1);
  close(c(60), 0.1 + 0.9 * 0.5); // halfway through the decay
  close(c(110), 0.1);
  close(c(500), 0.1);
  close(optim.cosine(100)(25, 2), 2 * 0.5 * (1 + Math.cos(Math.PI / 4)));
  const s = optim.inverseSqrt(35000);
  close(s(0, 1e-3), 1e-3);
  close(s(35000, 1e-3), 1e-3);
  close(s(140000, 1e-3), 5e-4);
  assert.throws(() => optim.cosine(0), RangeError);
  assert.throws(() => w(-1), RangeError);
});

Deno.test("Adam trains a 2-D regression MLP to < 5% of the target variance, without leaking", async () => {
  // y = sin(3·x₁)·x₂ on 256 points of U(−1, 1)². Predicting the mean scores Var(y) (the
  // baseline, ≈ 0.19 here); a smooth 2-32-32-1 SiLU network fits this surface well, so requiring
  // MSE < 5% of Var(y) separates learning from a constant fit by a wide margin.
  const be = getBackend();
  const n = 256;
  const xd = await rand([n, 2], { seed: 10 }).data();
  const X = new Float32Array(n * 2), Y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    X[2 * i] = 2 * xd[2 * i]! - 1;
    X[2 * i + 1] = 2 * xd[2 * i + 1]! - 1;
    Y[i] = Math.sin(3 * X[2 * i]!) * X[2 * i + 1]!;
  }
  const mean = Y.reduce((a, b) => a + b, 0) / n;
  const baseline = Y.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  const x = tensor(X, [n, 2]), y = tensor(Y, [n, 1]);
  const net = new nn.MLP([2, 32, 32, 1], "silu", { seed: 11 });
  const opt = new optim.Adam({ lr: 1e-2 });
  const params = net.parameters();
  const lossFn = () => net.forward(x).sub(y).square().mean();
  const step = () => {
    const [loss, grads] = valueAndGrad((_p: Tensor[]) => lossFn())(params);
    opt.step(params, grads);
    grads.forEach((g) => g.dispose());
    return loss;
  };
  step().dispose(); // the first step allocates Adam's state
  const live = be.liveBytes();
  for (let i = 1; i < 200; i++) step().dispose();
  assert.equal(be.liveBytes(), live, "a training step must free everything it allocates");
  const final = await tidy(() => lossFn()).item();
  assert.ok(final < 0.05 * baseline, `loss ${final} vs baseline variance ${baseline}`);
  net.dispose();
  opt.dispose();
  x.dispose();
  y.dispose();
});

Deno.test("optim.Muon: newtonSchulz matches its per-singular-value closed form; bad masks, shapes and states are refused by name", async () => {
  // G = Q·diag(3, 2, 1) with orthonormal columns Q: the iteration acts on each singular value
  // alone, so X = Q·diag(φ⁵(σᵢ/‖G‖_F)) with φ(x) = ax + bx³ + cx⁵ — a closed form per value.
  const r = Math.SQRT1_2, s3 = [3, 2, 1];
  const q = [[r, r, 0], [r, -r, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]]; // rows of Q [5, 3]
  const phi5 = (v: number) => {
    for (let i = 0; i < 5; i++) v = 3.4445 * v - 4.775 * v ** 3 + 2.0315 * v ** 5;
    return v;
  };
  const fro = Math.hypot(...s3);
  const g = tensor(q.flatMap((row) => row.map((v, j) => v * s3[j]!)), [5, 3]);
  const x = optim.newtonSchulz(g);
  assert.deepEqual(x.shape, [5, 3]);
  const want = q.flatMap((row) => row.map((v, j) => v * phi5(s3[j]! / fro)));
  assertClose(await x.data(), want, { atol: 1e-5 });
  // The wide layout (Gᵀ) gives the transpose.
  assertClose(await optim.newtonSchulz(g.transpose()).data(), await x.transpose().data(), {
    atol: 1e-6,
  });
  assert.throws(() => optim.newtonSchulz(tensor([1, 2, 3])), /Expected a matrix \[m, n\]/);
  const w = tensor([1, 2, 3, 4], [2, 2]), b = tensor([1, 2]);
  const gw = tensor([1, 0, 0, 1], [2, 2]), gb = tensor([1, 1]);
  assert.throws(
    () => new optim.Muon({ muon: [true] }).step([w, b], [gw, gb]),
    /muon mask to have one entry per parameter \(2\) but found 1/,
  );
  assert.throws(() => new optim.Muon({ momentum: 1.5 }), /momentum/);
  assert.throws(() => new optim.Muon({ nsSteps: 0 }), /nsSteps/);
  const opt = new optim.Muon();
  opt.step([w, b], [gw, gb]);
  const saved = opt.stateDict();
  // The bias's AdamW moments offered for the matrix: refused, naming the mismatch.
  assert.throws(
    () =>
      new optim.Muon().loadStateDict({
        step: 1,
        tensors: { "exp_avg.0": saved.tensors["exp_avg.1"]!, "exp_avg_sq.0": b },
      }, [w, b]),
    /does not fit parameter 0 \(\[2, 2\]\), which takes the Muon update/,
  );
  assert.throws(
    () => new optim.Muon().loadStateDict({ step: 1, tensors: { "momentum_buffer.0": gw } }, [w, b]),
    /Missing optimizer state "exp_avg.1"/,
  );
  assert.throws(() => new optim.Muon().loadStateDict(saved), /needs the parameters/);
  opt.dispose();
});
