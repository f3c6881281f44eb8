import { strict as assert } from "node:assert";
import {
  cfmLoss,
  checkerboard,
  classifierFreeGuidance,
  concat,
  Generator,
  guidanceIntervalFromReference,
  histogramKL,
  integrate,
  interpolate,
  interpolateLipman,
  keep,
  matmul,
  otCouple,
  randn,
  sampleTimes,
  silu,
  type Tensor,
  tensor,
  tidy,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose } from "../_helpers.ts";

const host = (t: Tensor) => t.data();

Deno.test("sampleTimes: uniform and logit-normal statistics, clipping, and reproducibility", async () => {
  const n = 20000;
  const u = await host(sampleTimes(n, { generator: new Generator(1) }));
  const mu = u.reduce((a, b) => a + b) / n;
  assert.ok(u.every((t) => t >= 0 && t < 1) && Math.abs(mu - 0.5) < 0.01, `uniform mean ${mu}`);
  const ln = await host(
    sampleTimes(n, { schedule: "logit-normal", mean: 1.2, std: 1.2, generator: new Generator(2) }),
  );
  const z = Array.from(ln, (t) => Math.log(t / (1 - t)));
  const zm = z.reduce((a, b) => a + b) / n;
  const zs = Math.sqrt(z.reduce((a, b) => a + (b - zm) ** 2, 0) / n);
  assert.ok(Math.abs(zm - 1.2) < 0.03 && Math.abs(zs - 1.2) < 0.03, `logit mean ${zm} std ${zs}`);
  const c = await host(
    sampleTimes(1000, { schedule: "logit-normal", std: 4, eps: 0.01, generator: new Generator(3) }),
  );
  assert.ok(
    c.every((t) => t >= 0.01 - 1e-7 && t <= 0.99 + 1e-7) &&
      c.some((t) => Math.abs(t - 0.01) < 1e-6),
  );
  assert.deepEqual(
    await host(sampleTimes(8, { generator: new Generator(5) })),
    await host(sampleTimes(8, { generator: new Generator(5) })),
  );
  assert.throws(() => sampleTimes(4, { schedule: "beta" as "uniform" }), /time schedule/);
  assert.throws(() => sampleTimes(0), /number of times/);
});

Deno.test("interpolate and interpolateLipman: match the I-CFM and TC TargetCFM formulas", async () => {
  const g = new Generator(7);
  const x0 = g.normal([4, 3]), x1 = g.normal([4, 3]), t = g.uniform([4]), eps = g.normal([4, 3]);
  const [a, b, tt, e] = await Promise.all([x0, x1, t, eps].map(host));
  const sig = 0.1;
  const { xt, target } = interpolate(x0, x1, t, { sigmaMin: sig, noise: eps });
  const wantXt = Array.from(
    a!,
    (v, k) => (1 - tt![Math.floor(k / 3)]!) * v + tt![Math.floor(k / 3)]! * b![k]! + sig * e![k]!,
  );
  assertClose(await host(xt), wantXt, { atol: 1e-6 });
  assertClose(await host(target), Array.from(a!, (v, k) => b![k]! - v), { atol: 1e-6 });

  const s = 0.01;
  const L = interpolateLipman(x0, x1, t, { sigmaMin: s });
  const lx = await host(L.xt), lu = await host(L.target);
  for (let k = 0; k < 12; k++) {
    const ti = tt![Math.floor(k / 3)]!;
    // TC: μ_t = t·x1, σ_t = 1 − (1 − σ)t, x_t = μ_t + σ_t·ε (ε = x0), u = (x1 − (1 − σ)x_t)/(1 − (1 − σ)t).
    const xtk = ti * b![k]! + (1 - (1 - s) * ti) * a![k]!;
    assertClose([lx[k]!], [xtk], { atol: 1e-6 });
    assertClose([lu[k]!], [(b![k]! - (1 - s) * xtk) / (1 - (1 - s) * ti)], { atol: 2e-5 });
  }
  assert.throws(() => interpolate(x0, g.normal([4, 2]), t), /same shape/);
  assert.throws(() => interpolate(x0, x1, g.uniform([3])), /one per row/);
});

Deno.test("cfmLoss: equals a plain-JS MSE, differentiates in valueAndGrad, and takes a coupling", async () => {
  const g = new Generator(11);
  const x0 = g.normal([6, 2]),
    x1 = g.normal([6, 2]),
    t = g.uniform([6]),
    y = tensor([0, 1, 2, 0, 1, 2]);
  const w = tensor([[0.5, -1], [2, 0.25]]);
  let seenY: Tensor | undefined;
  const vel = (p: Tensor) => (x: Tensor, tt: Tensor, cond?: Tensor) => {
    seenY = cond;
    return matmul(x, p).mul(tt.reshape([-1, 1]));
  };
  const [a, b, tt, W] = await Promise.all([x0, x1, t, w].map(host));
  // loss(W) = mean_k (t_i·(x_t W)_k − (x1 − x0)_k)²; gradient by hand.
  let want = 0;
  const gW = new Float64Array(4);
  for (let i = 0; i < 6; i++) {
    const ti = tt![i]!;
    const xt = [0, 1].map((j) => (1 - ti) * a![2 * i + j]! + ti * b![2 * i + j]!);
    for (let j = 0; j < 2; j++) {
      const v = ti * (xt[0]! * W![j]! + xt[1]! * W![2 + j]!);
      const r = v - (b![2 * i + j]! - a![2 * i + j]!);
      want += r * r / 12;
      for (let q = 0; q < 2; q++) gW[q * 2 + j] += (2 * r * ti * xt[q]!) / 12;
    }
  }
  const [loss, grad] = valueAndGrad((p: Tensor) => cfmLoss(vel(p), x1, { x0, t, y }).loss)(w);
  assertClose([await loss.item()], [want], { rtol: 1e-5 });
  assertClose(await host(grad), gW, { rtol: 1e-4, atol: 1e-6 });
  assert.equal(seenY, y, "the conditioning reaches the velocity");

  const coupled = await otCouple(x0, x1, { method: "exact", labels: y });
  const r = cfmLoss(vel(w), tensor(new Float32Array(12), [6, 2]), { coupling: coupled, t });
  assert.equal(seenY, coupled.labels, "the coupling's labels replace y");
  const direct = cfmLoss(vel(w), coupled.x1, { x0: coupled.x0, t });
  assertClose([await r.loss.item()], [await direct.loss.item()], { rtol: 1e-6 });
  const lip = cfmLoss(vel(w), x1, { x0, t, variant: "lipman", sigmaMin: 0 });
  assertClose(await host(lip.target), Array.from(a!, (v, k) => b![k]! - v), { atol: 1e-6 });
  assert.throws(() => cfmLoss(() => tensor([1]), x1, { x0, t }), /velocity to return shape/);
  assert.throws(() => cfmLoss(vel(w), x1, { variant: "sb" as "icfm" }), /CFM variant/);
});

Deno.test("classifierFreeGuidance: v_u + s(v_c − v_u) in one batched call, only inside [low, high]", async () => {
  const calls: number[] = [];
  // v(x, t, y) = x·(y + 1) + t: distinct for every label, so mixing is visible.
  const v = (x: Tensor, t: Tensor, y?: Tensor) => {
    calls.push(x.shape[0]!);
    return x.mul(y!.reshape([-1, 1]).add(1)).add(t.reshape([-1, 1]));
  };
  const x = tensor([[1, 2], [3, 4], [5, 6]]), y = tensor([2, 0, 1]);
  const s = 3, nullLabel = 9;
  const cfg = classifierFreeGuidance(v, { scale: s, nullLabel });
  const t = tensor([0.2, 0.2, 0.2]);
  const out = await host(cfg(x, t, y));
  assert.deepEqual(calls, [6], "one call on the doubled batch");
  const X = [1, 2, 3, 4, 5, 6], Y = [2, 0, 1];
  const want = X.map((xv, k) => {
    const vc = xv * (Y[Math.floor(k / 2)]! + 1) + 0.2, vu = xv * (nullLabel + 1) + 0.2;
    return vu + s * (vc - vu);
  });
  assertClose(out, want, { rtol: 1e-6 });
  // REPA's guidance-high 0.7 (t_ref ≤ 0.7) is our t ≥ 0.3: at t = 0.2 guidance is off.
  const iv = guidanceIntervalFromReference({ high: 0.7 });
  assertClose([iv.low, iv.high], [0.3, 1], { atol: 1e-12 });
  const cfgI = classifierFreeGuidance(v, { scale: s, nullLabel, ...iv });
  const tm = tensor([0.2, 0.5, 1]);
  const o2 = await host(cfgI(x, tm, y));
  const vcAt = (k: number, tv: number) => X[k]! * (Y[Math.floor(k / 2)]! + 1) + tv;
  assertClose(o2.slice(0, 2), [vcAt(0, 0.2), vcAt(1, 0.2)], { rtol: 1e-6 });
  const g = (k: number, tv: number) => {
    const vu = X[k]! * (nullLabel + 1) + tv;
    return vu + s * (vcAt(k, tv) - vu);
  };
  assertClose(o2.slice(2), [g(2, 0.5), g(3, 0.5), g(4, 1), g(5, 1)], { rtol: 1e-6 });
  assert.throws(() => cfg(x, t), /labels/);
  assert.throws(
    () => classifierFreeGuidance(v, { scale: 2, nullLabel: 0, low: 0.5, high: 0.2 }),
    /guidance high/,
  );
});

Deno.test("training smoke test: a hand-built MLP learns the checkerboard with CFM (loss falls, KL beats noise)", async () => {
  const gen = new Generator(2024);
  const H = 64;
  const init = (fanIn: number, shape: number[]) => gen.normal(shape).mul(1 / Math.sqrt(fanIn));
  let params: Record<string, Tensor> = {
    w1: init(3, [3, H]),
    b1: tensor(new Float32Array(H), [1, H]),
    w2: init(H, [H, H]),
    b2: tensor(new Float32Array(H), [1, H]),
    w3: init(H, [H, 2]).mul(0.1),
    b3: tensor([[0, 0]]),
  };
  const mlp = (p: Record<string, Tensor>) => (x: Tensor, t: Tensor) => {
    const h0 = concat([x, t.reshape([-1, 1])], 1);
    const h1 = silu(matmul(h0, p.w1!).add(p.b1!));
    const h2 = silu(matmul(h1, p.w2!).add(p.b2!));
    return matmul(h2, p.w3!).add(p.b3!);
  };
  // Adam by hand (β = 0.9, 0.999), lr 3e-3.
  const m: Record<string, Tensor> = {}, v: Record<string, Tensor> = {};
  for (const k in params) [m[k], v[k]] = [params[k]!.mul(0), params[k]!.mul(0)];
  const lr = 3e-3, b1 = 0.9, b2 = 0.999, steps = 500;
  const losses: number[] = [];
  for (let step = 1; step <= steps; step++) {
    const x1 = checkerboard(256, { generator: gen });
    const [loss, grads] = valueAndGrad((p: Record<string, Tensor>) =>
      cfmLoss(mlp(p), x1, { generator: gen }).loss
    )(
      params,
    );
    if (step <= 20 || step > steps - 50) losses.push(await loss.item());
    const next = tidy(() => {
      const out: Record<string, Tensor> = {};
      for (const k in params) {
        const g = grads[k]!;
        const mk = keep(m[k]!.mul(b1).add(g.mul(1 - b1)));
        const vk = keep(v[k]!.mul(b2).add(g.square().mul(1 - b2)));
        m[k]!.dispose();
        v[k]!.dispose();
        [m[k], v[k]] = [mk, vk];
        const mh = mk.div(1 - b1 ** step), vh = vk.div(1 - b2 ** step);
        out[k] = params[k]!.sub(mh.div(vh.sqrt().add(1e-8)).mul(lr));
      }
      return out;
    });
    for (const k in params) [params[k]!.dispose(), grads[k]!.dispose()];
    params = next;
    loss.dispose();
    x1.dispose();
  }
  const early = losses.slice(0, 20).reduce((a, b) => a + b) / 20;
  const late = losses.slice(20).reduce((a, b) => a + b) / losses.slice(20).length;
  assert.ok(late < 0.85 * early, `loss fell from ${early} to ${late}`);

  const n = 4000;
  const z = randn([n, 2], { seed: 99 });
  const { x } = await integrate(mlp(params), z, { method: "midpoint", steps: 20 });
  const target = await host(checkerboard(n, { generator: new Generator(7) }));
  const opts = { bins: 20, range: [-2.5, 2.5] as [number, number] };
  const klModel = histogramKL(target, await host(x), opts);
  const klNoise = histogramKL(target, await host(z), opts);
  console.log(
    `CFM smoke: loss ${early.toFixed(3)} -> ${late.toFixed(3)}, KL ${
      klNoise.toFixed(3)
    } (noise) -> ${klModel.toFixed(3)} (model)`,
  );
  assert.ok(klModel < 0.8 * klNoise, `KL(model) ${klModel} vs KL(noise) ${klNoise}`);
});
