/**
 * Issue 11 item 2: `deno task gmm --exp stable_vm` trains as SV's gmm_exp.py does — a fresh
 * reference batch every step, regressed rows drawn from it, and the stable target at EVERY t
 * (no plain-target split at t > 0.5, no FIFO bank) — checked against a brute-force f64
 * evaluation of the stable target over the step's own reference batch.
 */
import { strict as assert } from "node:assert";
import {
  GaussianMixture,
  Generator,
  getBackend,
  gmmToyTrainer,
  setBackend,
  type Tensor,
  zeros,
} from "../../mod.ts";

const D = 3, B = 16, REF = 64;

/** The trainer's loss at one step with a model that outputs 0, and the (x_t, t) it was fed. */
async function zeroModelLoss(
  extra: { splitT?: number; reference?: "fresh" | "bank" },
  seed: number,
) {
  const gmm = GaussianMixture.reference({ dim: D, numModes: 4, seed: 3 });
  const tr = gmmToyTrainer({
    exp: "stable_vm",
    vectorField: "velocity",
    batchSize: B,
    refBatchSize: REF,
    learningRate: 1e-3,
    emaDecay: 0.999,
    seed: 0,
    ...extra,
  }, gmm);
  let seen: { xt: Float32Array; t: Float32Array } | null = null;
  // The loss of a zero model is mean ‖target‖²; capture what the model is asked about.
  const fwd = (xt: Tensor, t: Tensor) => {
    seen = { xt: xt.dataSync(), t: t.dataSync() };
    return zeros([B, D]);
  };
  (tr.model as unknown as { forward: typeof fwd }).forward = fwd;
  const gen = new Generator(seed);
  // deno-lint-ignore no-explicit-any
  const { loss } = tr.loss({ generator: gen, model: tr.model } as any);
  const value = (await loss.data())[0]!;
  loss.dispose();
  const bank = tr.bank;
  tr.model.dispose();
  tr.optimizer.dispose();
  tr.ema!.dispose();
  return { value, seen: seen!, gmm, bank };
}

Deno.test("gmm toy StableVM (defaults): fresh references each step, stable target at every t", async () => {
  const prev = getBackend();
  setBackend("cpu");
  try {
    const seed = 11;
    const { value, seen, gmm, bank } = await zeroModelLoss({}, seed);
    assert.equal(bank, null); // no FIFO bank by default
    // The step's references are the first draw of its stream: REF fresh mixture samples.
    const refs = gmm.sampleHost(REF, new Generator(seed)).x;
    let sum = 0, late = 0;
    for (let r = 0; r < B; r++) {
      const t = seen.t[r]!;
      if (t > 0.5) late++;
      const xt = Array.from(seen.xt.subarray(r * D, (r + 1) * D));
      // Posterior weights over the references under x_t ~ N(t·x_i, (1 − t)² I) (S2), in f64.
      const logw: number[] = [];
      for (let i = 0; i < REF; i++) {
        let q = 0;
        for (let j = 0; j < D; j++) q += (xt[j]! - t * refs[i * D + j]!) ** 2;
        logw.push(-q / (2 * (1 - t) ** 2));
      }
      const m = Math.max(...logw);
      const w = logw.map((l) => Math.exp(l - m));
      const z = w.reduce((a, b) => a + b, 0);
      for (let j = 0; j < D; j++) {
        let v = 0;
        for (let i = 0; i < REF; i++) v += (w[i]! / z) * (refs[i * D + j]! - xt[j]!) / (1 - t);
        sum += v * v;
      }
    }
    assert.ok(late >= 4, `the batch has rows with t > 0.5 (${late})`);
    const host = sum / (B * D);
    assert.ok(Math.abs(value - host) <= 1e-4 * host, `loss ${value} vs brute force ${host}`);
    // The image recipe's split (plain x1 − x0 above t = 0.5) is a different objective.
    const split = await zeroModelLoss({ splitT: 0.5 }, seed);
    assert.ok(Math.abs(split.value - value) > 1e-3 * value, `${split.value} vs ${value}`);
    // …and the bank is an option, not the default.
    const fifo = await zeroModelLoss({ reference: "bank" }, seed);
    assert.ok(fifo.bank !== null);
  } finally {
    setBackend(prev.name as "cpu" | "webgpu");
  }
});
