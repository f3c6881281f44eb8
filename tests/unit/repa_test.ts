/**
 * @file REPA: the five VA-REPA weight schedules against their closed forms (written here in
 * SV's time t_ref = 1 − t, independently of lib/flow's own rewriting), and the projection
 * loss and its gradient against StableVelocity's SILoss in PyTorch
 * (tests/testdata/torch_repa.safetensors, `tasks/gen_fixtures.py repa`), on every backend.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type BackendName,
  getBackend,
  PROJ_WEIGHT_SCHEDULES,
  projLoss,
  projWeight,
  projWeightScalar,
  setBackend,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose, BACKENDS_HERE } from "../_helpers.ts";

const BACKENDS: BackendName[] = BACKENDS_HERE;

async function onEachBackend(fn: (name: BackendName) => Promise<void>): Promise<void> {
  const prev = getBackend().name as BackendName;
  try {
    for (const b of BACKENDS) {
      setBackend(b);
      await fn(b);
    }
  } finally {
    setBackend(prev);
  }
}

/** SV loss.py's formulas in its own time u = t_ref (0 = data, 1 = noise). */
function closedForm(name: string, u: number, tau: number, k: number): number {
  switch (name) {
    case "hard":
      return u < tau ? 1 : 0;
    case "hard_high":
      return u >= tau ? 1 : 0;
    case "sigmoid":
      return 1 / (1 + Math.exp(-k * (tau - u)));
    case "cosine":
      return u < tau ? 0.5 * (1 + Math.cos(Math.PI * u / tau)) : 0;
    case "snr": {
      const snr = (v: number) => ((1 - v) / v) ** 2;
      return snr(u) / (snr(u) + snr(tau));
    }
  }
  throw new Error(name);
}

Deno.test("the five VA-REPA schedules equal their closed forms in SV's time 1 − t on a grid (scalar and tensor, every backend)", async () => {
  // Interior grid (SNR is 0/0-free there), avoiding t_ref = τ exactly for the step schedules.
  const ts = Array.from({ length: 39 }, (_, i) => 0.0125 + i * 0.025);
  const settings = [{ tau: 0.7, k: 20 }, { tau: 0.35, k: 5 }];
  assert.equal(PROJ_WEIGHT_SCHEDULES.length, 5);
  await onEachBackend(async (be) => {
    for (const name of PROJ_WEIGHT_SCHEDULES) {
      for (const { tau, k } of settings) {
        const want = ts.map((t) => closedForm(name, 1 - t, tau, k));
        const scalar = ts.map((t) => projWeightScalar(name, t, { tau, k }));
        assertClose(scalar, want, { atol: 1e-12, rtol: 1e-9, msg: `${name} scalar τ=${tau}` });
        const w = await projWeight(name, tensor(ts), { tau, k }).data();
        assertClose(w, want, { atol: 2e-6, rtol: 1e-5, msg: `${be} ${name} tensor τ=${tau}` });
      }
    }
    // The step schedules switch exactly at t_ref = τ (1[t_ref < τ] / 1[t_ref ≥ τ]).
    assert.deepEqual([...await projWeight("hard", tensor([0.5, 0.25]), { tau: 0.5 }).data()], [
      0,
      0,
    ]);
    assert.deepEqual(
      [...await projWeight("hard_high", tensor([0.5, 0.75]), { tau: 0.5 }).data()],
      [1, 0],
    );
  });
  assert.throws(() => projWeight("linear", tensor([0.5])), /linear/);
  assert.throws(() => projWeightScalar("snr", 0.5, { tau: 1 }), /tau to be a number in \(0, 1\)/);
});

type Arr = { shape: number[]; data: Float32Array };

function readSafetensors(path: string): Record<string, Arr> {
  const bytes = Deno.readFileSync(new URL(path, import.meta.url));
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out: Record<string, Arr> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") continue;
    const e = v as { shape: number[]; data_offsets: [number, number] };
    const raw = bytes.slice(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    out[k] = { shape: e.shape, data: new Float32Array(raw.buffer) };
  }
  return out;
}

Deno.test("projLoss and its gradient match StableVelocity's SILoss projection term (PyTorch fixture) for every schedule, uniform, and an all-zero-weight batch", async () => {
  const fx = readSafetensors("../testdata/torch_repa.safetensors");
  const up = (a: Arr) => tensor(a.data, a.shape);
  const cases = ["uniform", ...PROJ_WEIGHT_SCHEDULES, "hard_high.t_late"];
  await onEachBackend(async (be) => {
    for (const key of cases) {
      const [name, tk] = key.split(".") as [string, string | undefined];
      const z = up(fx.z!), t = up(fx[tk ?? "t"]!);
      const schedule = name === "uniform" ? undefined : name as typeof PROJ_WEIGHT_SCHEDULES[0];
      const [loss, [g]] = valueAndGrad((p: Tensor[]) =>
        projLoss(z, p[0]!, t, { schedule, tau: 0.6, k: 7 }).loss
      )([up(fx.z_tilde!)]);
      const msg = `${be} ${key}`;
      assertClose([await loss.item()], fx[`loss.${key}`]!.data, { atol: 1e-6, msg });
      assertClose(await g!.data(), fx[`grad.${key}`]!.data, { atol: 1e-6, rtol: 1e-4, msg });
      const w = projLoss(z, up(fx.z_tilde!), t, { schedule, tau: 0.6, k: 7 }).weights;
      assertClose(await w.data(), fx[`weights.${key}`]!.data, { atol: 1e-6, msg });
    }
    // The all-zero case really is zero (SV returns 0 when Σw ≤ 1e-8), not NaN.
    assert.equal(fx["loss.hard_high.t_late"]!.data[0], 0);
    // Token-free features [B, D] are one token per sample.
    const z2 = tensor([[1, 0], [0, 1]]), zt2 = tensor([[2, 0], [1, 1]]);
    const r = projLoss(z2, zt2, tensor([0.5, 0.5]));
    assertClose(await r.perSample.data(), [-1, -Math.SQRT1_2], { atol: 1e-6 });
  });
});

Deno.test("projLoss refuses features whose shapes do not align and times of the wrong length", () => {
  const z = tensor(new Float32Array(24), [2, 3, 4]);
  assert.throws(
    () => projLoss(z, tensor(new Float32Array(16), [2, 2, 4]), tensor([0.1, 0.2])),
    /Cannot align projected features of shape \[2, 2, 4\] to encoder features of shape \[2, 3, 4\]/,
  );
  assert.throws(() => projLoss(z, z, tensor([0.1])), /Expected times t \[2\]/);
  assert.throws(() => projLoss(tensor([1, 2]), tensor([1, 2]), tensor([0.1])), /\[B, N, D\]/);
});

Deno.test("projLoss with one global feature per sample [B, 1, D] equals the loss against it repeated over tokens", async () => {
  const z = tensor([[[1, 2, 0]], [[0, -1, 3]]]); // [2, 1, 3]
  const zt = tensor(Float32Array.from({ length: 12 }, (_, i) => Math.cos(i)), [2, 2, 3]);
  const rep = tensor([[[1, 2, 0], [1, 2, 0]], [[0, -1, 3], [0, -1, 3]]]);
  const t = tensor([0.2, 0.9]);
  const a = projLoss(z, zt, t, { schedule: "sigmoid" }),
    b = projLoss(rep, zt, t, { schedule: "sigmoid" });
  assertClose(await a.perSample.data(), await b.perSample.data(), { atol: 1e-6 });
  assertClose([await a.loss.item()], [await b.loss.item()], { atol: 1e-6 });
  assert.throws(
    () =>
      projLoss(tensor(new Float32Array(6), [2, 1, 3]), tensor(new Float32Array(8), [2, 2, 2]), t),
    /Cannot align/,
  );
});
