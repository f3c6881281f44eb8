/**
 * @file The fused feed-forward (`feedForward`: fc1, activation, fc2 as one primitive under a
 * tape, whose first product stores act(z) and act′(z) and whose backward runs dz = act′(z)·(dy·w2)
 * as one `Backend.matmulOutputs` call; on the `wasm` backend GELU-tanh and that product in the
 * SGEMM's stores) on every backend here:
 * - loss and every gradient against the two `linear` ops it replaces (`_fusedFeedForward` off),
 *   bit for bit on `cpu` and `wasm` (the same f32 steps in the same order), close on WebGPU;
 * - gradients against f64 central finite differences of a plain-JS f64 model;
 * - forward mode and second order against the unfused ops' (their own rules);
 * - nn.FeedForward (and so a DiT block) through it, and its shape errors.
 *
 * Shapes: rows that are not a multiple of the SGEMM's 6-row block (21, 2·3·7 as [2, 3, 7, d]),
 * a hidden width that is a multiple of 8 (the in-kernel path) and one that is not (the product,
 * then one elementwise pass), with and without biases.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type BackendName,
  feedForward,
  getBackend,
  grad,
  jvp,
  linear,
  type LinearActivation,
  nn,
  randn,
  setBackend,
  type Tensor,
  valueAndGrad,
} from "../../mod.ts";
import { _fusedFeedForward } from "../../lib/ops/linear.ts";
import { assertDitStepUnchanged } from "../_dit_switch.ts";
import { assertClose, BACKENDS_HERE } from "../_helpers.ts";
import { fdGrad } from "../_fd.ts";

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, msg: string, frac: number) {
  assertClose(got, want, { rtol: 1e-5, atol: Math.max(frac * maxAbs(want), 1e-7), msg });
}

async function onEachBackend(fn: (name: BackendName) => Promise<void>): Promise<void> {
  const prev = getBackend().name as BackendName;
  try {
    for (const b of BACKENDS_HERE) {
      setBackend(b);
      await fn(b);
    }
  } finally {
    setBackend(prev);
  }
}

async function withFusion<T>(on: boolean, f: () => Promise<T>): Promise<T> {
  const prev = _fusedFeedForward.enabled;
  _fusedFeedForward.enabled = on;
  try {
    return await f();
  } finally {
    _fusedFeedForward.enabled = prev;
  }
}

interface Case {
  shape: number[]; // x's
  hidden: number;
  out: number;
  bias1: boolean;
  bias2: boolean;
  act: LinearActivation;
}

const CASES: Case[] = [
  { shape: [3, 7, 12], hidden: 40, out: 12, bias1: true, bias2: true, act: "geluTanh" },
  { shape: [2, 3, 7, 16], hidden: 24, out: 5, bias1: false, bias2: true, act: "geluTanh" },
  { shape: [21, 12], hidden: 20, out: 12, bias1: true, bias2: false, act: "geluTanh" },
  { shape: [5, 9], hidden: 16, out: 3, bias1: true, bias2: true, act: "silu" },
  { shape: [4, 6], hidden: 8, out: 2, bias1: true, bias2: true, act: "relu" },
];

function params(c: Case, seed: number) {
  const nIn = c.shape[c.shape.length - 1]!;
  const x = randn(c.shape, { seed });
  const w1 = randn([c.hidden, nIn], { seed: seed + 1 }).mul(0.6);
  const b1 = c.bias1 ? randn([c.hidden], { seed: seed + 2 }) : null;
  const w2 = randn([c.out, c.hidden], { seed: seed + 3 }).mul(0.4);
  const b2 = c.bias2 ? randn([c.out], { seed: seed + 4 }) : null;
  // A fixed random cotangent: the loss Σ y·r.
  const r = randn([...c.shape.slice(0, -1), c.out], { seed: seed + 5 });
  return { x, w1, b1, w2, b2, r };
}

const tag = (c: Case) =>
  `x [${c.shape}] hidden ${c.hidden} ${c.act}${c.bias1 ? " b1" : ""}${c.bias2 ? " b2" : ""}`;

Deno.test("feedForward: loss and gradients equal the two linear ops' (bit for bit on cpu and wasm)", async () => {
  await onEachBackend(async (be) => {
    for (const [i, c] of CASES.entries()) {
      const { x, w1, b1, w2, b2, r } = params(c, 10 * i);
      const ins = [x, w1, w2, ...(b1 ? [b1] : []), ...(b2 ? [b2] : [])];
      const loss = (ts: Tensor[]) => {
        const [xx, a, b, ...bs] = ts as [Tensor, Tensor, Tensor, ...Tensor[]];
        const bb1 = b1 ? bs[0]! : null, bb2 = b2 ? bs[b1 ? 1 : 0]! : null;
        return feedForward(xx, a, bb1, b, bb2, { activation: c.act }).mul(r).sum();
      };
      const run = (on: boolean) =>
        withFusion(on, async () => {
          const [l, gs] = valueAndGrad(loss)(ins);
          return [await l.data(), ...(await Promise.all(gs.map((g) => g.data())))];
        });
      const fused = await run(true), plain = await run(false);
      const names = ["loss", "dx", "dw1", "dw2", ...(b1 ? ["db1"] : []), ...(b2 ? ["db2"] : [])];
      fused.forEach((v, k) => {
        const what = `${be} ${tag(c)}: ${names[k]}`;
        if (be === "webgpu") close(v, plain[k]!, what, 1e-5);
        else assert.deepEqual(v, plain[k]!, what);
      });
      // Without a tape: the linear ops themselves.
      const y = await feedForward(x, w1, b1, w2, b2, { activation: c.act }).data();
      const ref = await linear(linear(x, w1, b1, { activation: c.act }), w2, b2).data();
      assert.deepEqual(y, ref, `${be} ${tag(c)}: forward outside a tape`);
    }
  });
});

// GELU-tanh in f64 and the f64 model of the layer pair.
const geluTanh = (v: number) =>
  0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));

function modelF64(
  [x, w1, b1, w2, b2, r]: Float64Array[],
  rows: number,
  nIn: number,
  hidden: number,
  out: number,
): number {
  let s = 0;
  const a = new Float64Array(hidden);
  for (let i = 0; i < rows; i++) {
    for (let h = 0; h < hidden; h++) {
      let z = b1![h]!;
      for (let p = 0; p < nIn; p++) z += x![i * nIn + p]! * w1![h * nIn + p]!;
      a[h] = geluTanh(z);
    }
    for (let o = 0; o < out; o++) {
      let y = b2![o]!;
      for (let h = 0; h < hidden; h++) y += a[h]! * w2![o * hidden + h]!;
      s += y * r![i * out + o]!;
    }
  }
  return s;
}

Deno.test("feedForward (GELU-tanh): gradients equal f64 central finite differences on every backend", async () => {
  const c: Case = {
    shape: [3, 5, 6],
    hidden: 16,
    out: 4,
    bias1: true,
    bias2: true,
    act: "geluTanh",
  };
  const rows = 15, nIn = 6;
  await onEachBackend(async (be) => {
    const { x, w1, b1, w2, b2, r } = params(c, 7);
    const ins = [x, w1, w2, b1!, b2!];
    const gs = grad((ts: Tensor[]) =>
      feedForward(ts[0]!, ts[1]!, ts[3]!, ts[2]!, ts[4]!, { activation: "geluTanh" }).mul(r).sum()
    )(ins);
    const vals = await Promise.all(
      [x, w1, b1!, w2, b2!, r].map(async (t) => Float64Array.from(await t.data())),
    );
    const fd = fdGrad(
      (xs) => modelF64([...xs, vals[5]!], rows, nIn, c.hidden, c.out),
      vals.slice(0, 5),
    );
    // grad's order: x, w1, w2, b1, b2; fd's: x, w1, b1, w2, b2.
    const order = [0, 1, 3, 2, 4];
    const names = ["x", "w1", "w2", "b1", "b2"];
    for (let k = 0; k < 5; k++) {
      const got = await gs[k]!.data(), want = fd[order[k]!]!;
      assertClose(got, want, {
        rtol: 1e-4,
        atol: 1e-4 * maxAbs(want),
        msg: `${be} d${names[k]} vs finite differences`,
      });
    }
  });
});

Deno.test("feedForward: forward mode and second order equal the two linear ops'", async () => {
  await onEachBackend(async (be) => {
    for (const c of [CASES[0]!, CASES[2]!, CASES[3]!]) {
      const { x, w1, b1, w2, b2, r } = params(c, 3);
      const tx = randn(x.shape, { seed: 91 }), tw1 = randn(w1.shape, { seed: 92 });
      // Forward mode through the primitive's jvp rule (under a tape, so the fused op runs).
      const f = (xx: Tensor, a: Tensor) =>
        feedForward(xx, a, b1, w2, b2, { activation: c.act }).mul(r).sum();
      const viaTape = (on: boolean) =>
        withFusion(on, async () => {
          const [, gs] = valueAndGrad((ts: Tensor[]) => {
            const [, t] = jvp(f, [ts[0]!, ts[1]!], [tx, tw1]);
            return t.square();
          })([x, w1]);
          return await Promise.all(gs.map((g) => g.data()));
        });
      const [ga, gb] = [await viaTape(true), await viaTape(false)];
      ga.forEach((v, k) => close(v, gb[k]!, `${be} ${tag(c)}: grad of a jvp [${k}]`, 1e-5));
      // Second order: the gradient of ‖∂L/∂x‖² with respect to w1 and w2.
      const second = (on: boolean) =>
        withFusion(on, async () => {
          const gs = grad((ts: Tensor[]) => {
            const gx = grad((xx: Tensor) =>
              feedForward(xx, ts[0]!, b1, ts[1]!, b2, { activation: c.act }).mul(r).sum()
            )(x);
            return gx.square().sum();
          })([w1, w2]);
          return await Promise.all(gs.map((g) => g.data()));
        });
      const [sa, sb] = [await second(true), await second(false)];
      sa.forEach((v, k) => close(v, sb[k]!, `${be} ${tag(c)}: second order [${k}]`, 1e-5));
      assert.ok(maxAbs(sb[0]!) > 1e-3, `${tag(c)}: the second-order gradient is not zero`);
    }
  });
});

Deno.test("a DiT training step has the same loss and gradients with the fused feed-forward", async () => {
  await onEachBackend((be) =>
    assertDitStepUnchanged(_fusedFeedForward, {
      backend: be,
      watch: "mlp.fc1.weight",
      lossFrac: 1e-6,
      close,
    })
  );
});

Deno.test("nn.FeedForward runs feedForward for activations linear fuses, and names a bad input", async () => {
  setBackend("cpu");
  const ff = new nn.FeedForward(6, 16, "gelu_tanh", { seed: 0 });
  const x = randn([2, 3, 6], { seed: 1 });
  const y = await ff.forward(x).data();
  const ref = await ff.fc2.forward(ff.act.forward(ff.fc1.forward(x))).data();
  assert.deepEqual(y, ref);
  assert.throws(() => ff.forward(randn([2, 5], { seed: 2 })), /Linear\(6, 16\).*\[2, 5\]/);
  const w1 = randn([16, 6], { seed: 3 });
  assert.throws(
    () => feedForward(x, w1, null, randn([4, 15], { seed: 4 }), null),
    (e: unknown) => e instanceof RangeError && /fc2 input to end in 15 features/.test(e.message),
  );
  assert.throws(
    () => feedForward(x, w1, randn([6], { seed: 5 }), randn([4, 16], { seed: 4 }), null),
    (e: unknown) => e instanceof RangeError && /fc1 bias to have shape \[16\]/.test(e.message),
  );
});

Deno.test("feedForward under a tape frees its saved activation and derivative with the graph", async () => {
  await onEachBackend(async (be) => {
    const c = CASES[0]!;
    const { x, w1, b1, w2, b2, r } = params(c, 5);
    const live = () => getBackend().liveBytes();
    const step = () => {
      const [l, gs] = valueAndGrad((ts: Tensor[]) =>
        feedForward(x, ts[0]!, b1, ts[1]!, b2, { activation: "geluTanh" }).mul(r).sum()
      )([w1, w2]);
      return [l, ...gs];
    };
    for (const t of step()) t.dispose(); // warm-up (pools, compiled kernels)
    await getBackend().sync();
    const base = live();
    const outs = step();
    // The loss and the two gradients are all that survive the call.
    assert.equal(live() - base, 4 * (1 + w1.size + w2.size), `${be}: live after the step`);
    for (const t of outs) t.dispose();
    assert.equal(live(), base, `${be}: live after disposing the results`);
  });
});
