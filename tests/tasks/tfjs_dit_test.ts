/**
 * @file The tfjs DiT bench peer (`bench/peers/tfjs_dit.ts`): its hand-registered gradients
 * against central finite differences of its own loss on a tiny network (tfjs's CPU backend,
 * else its WebGPU one), and training on tfjs-webgpu: the loss of a fixed batch falls, and the
 * timed run stops at its time cap. Tests that cannot run here are ignored, with the reason in
 * their names, rather than passing.
 */
import { strict as assert } from "node:assert";
import * as tf from "@tensorflow/tfjs-core";
import { loadTfjs, type TfjsPeer } from "../../bench/peers/tfjs.ts";
import { registerTfjsGradients } from "../../bench/peers/tfjs_grads.ts";
import { tfjsDit, tfjsDitNet, type TfjsDitNetConfig } from "../../bench/peers/tfjs_dit.ts";

let peer: TfjsPeer | null = null, loadError = "";
try {
  peer = await loadTfjs();
} catch (e) {
  loadError = e instanceof Error ? e.message : String(e);
}
// The gradient check prefers tfjs's CPU backend: plain f32 loops, no adapter in the way.
let cpu = false;
if (peer) {
  try {
    await import("@tensorflow/tfjs-backend-cpu");
    cpu = true;
  } catch {
    cpu = false;
  }
}
const gradBackend = cpu ? "cpu" : peer?.backend ?? "none";
const webgpu = peer?.backend === "webgpu";

const TINY: TfjsDitNetConfig = { hidden: 8, depth: 1, heads: 2, patch: 4, size: 8, classes: 10 };

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
}

Deno.test({
  name: peer
    ? `tfjs DiT peer: registered gradients match central differences of its loss (tfjs-${gradBackend})`
    : `tfjs DiT peer: gradient check (ignored: tfjs failed to load: ${loadError})`,
  ignore: !peer,
  fn: async () => {
    await tf.setBackend(gradBackend);
    registerTfjsGradients();
    const b = 2, s = TINY.size;
    const net = tfjsDitNet(TINY);
    // Random values everywhere: the reference init zeroes the modulations and the final layer,
    // which would leave most gradients exactly zero and the check blind to them.
    const u = lcg(3);
    for (const v of net.vars) {
      const a = v.rank === 2 ? 1.5 / Math.sqrt(v.shape[0]!) : 0.3;
      v.assign(tf.tensor(Float32Array.from({ length: v.size }, () => a * (2 * u() - 1)), v.shape));
    }
    const x1 = tf.tensor(Float32Array.from({ length: b * s * s }, () => 2 * u() - 1), [b, 1, s, s]);
    const x0 = tf.randomNormal([b, 1, s, s], 0, 1, "float32", 5);
    const t = tf.tensor1d([0.3, 0.8]);
    const labels = tf.tensor1d([3, TINY.classes], "int32"); // one real class, one null
    const lossOf = () => tf.tidy(() => net.loss(x1, x0, t, labels).dataSync()[0]!);
    const { value, grads } = tf.variableGrads(() => net.loss(x1, x0, t, labels), net.vars);
    const l0 = (await value.data())[0]!;
    assert.ok(Number.isFinite(l0) && l0 > 0, `loss ${l0}`);
    // A loss of about 2 in f32: each difference quotient carries ~1e-5 of rounding
    // (ulp(2)/eps) and eps²/6·|f'''| of truncation; seen here, at most 8e-6 in all.
    const eps = 1e-2, ATOL = 3e-5;
    let checked = 0, large = 0;
    const bad: string[] = [];
    for (let i = 0; i < net.vars.length; i++) {
      const v = net.vars[i]!, name = net.names[i]!;
      const g = await grads[v.name]!.data();
      const host = Float32Array.from(await v.data());
      // Three entries per variable; in the label table, the rows the batch reads and one it
      // does not (whose gradient is exactly zero).
      const idx = name.startsWith("y_embedder")
        ? [3 * TINY.hidden + 1, TINY.classes * TINY.hidden + 5, 0]
        : [...new Set([0, 1, 2, 3, 4].map(() => Math.floor(u() * v.size)))].slice(0, 3);
      for (const j of idx) {
        const at = (d: number) => {
          const h = host.slice();
          h[j] = host[j]! + d;
          v.assign(tf.tensor(h, v.shape));
          return lossOf();
        };
        const fd = (at(eps) - at(-eps)) / (2 * eps);
        v.assign(tf.tensor(host, v.shape));
        const an = g[j]!;
        checked++;
        if (Math.abs(an) > 10 * ATOL) large++;
        if (!(Math.abs(an - fd) <= ATOL + 1e-2 * Math.abs(fd))) {
          bad.push(`${name}[${j}]: registered ${an}, central difference ${fd}`);
        }
      }
    }
    assert.deepEqual(bad, [], `gradients off:\n${bad.join("\n")}`);
    // Most checked gradients must stand well clear of the tolerance, or the check says little.
    assert.ok(large >= 0.75 * checked, `only ${large} of ${checked} gradients exceed ${10 * ATOL}`);
    tf.dispose([value, ...Object.values(grads), x1, x0, t, labels]);
    net.dispose();
  },
});

Deno.test({
  name: webgpu
    ? "tfjs DiT peer on tfjs-webgpu: a fixed batch's loss falls over 5 Adam steps; the time cap stops timing"
    : `tfjs DiT peer training (ignored: ${
      peer ? "tfjs could not open WebGPU (CPU fallback)" : `tfjs failed to load: ${loadError}`
    })`,
  ignore: !webgpu,
  fn: async () => {
    await tf.setBackend("webgpu");
    registerTfjsGradients();
    const b = 4, s = TINY.size;
    const net = tfjsDitNet({ ...TINY, hidden: 16 });
    const u = lcg(11);
    const x1 = tf.tensor(Float32Array.from({ length: b * s * s }, () => 2 * u() - 1), [b, 1, s, s]);
    const x0 = tf.randomNormal([b, 1, s, s], 0, 1, "float32", 7);
    const t = tf.tensor1d([0.1, 0.4, 0.6, 0.9]);
    const labels = tf.tensor1d([0, 4, 9, TINY.classes], "int32");
    // A larger step than the bench's 1e-4, so that 5 steps move a fixed batch's loss clearly.
    const opt = tf.train.adam(1e-2);
    const ls: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = opt.minimize(() => net.loss(x1, x0, t, labels), true, net.vars)!;
      ls.push((await c.data())[0]!);
      c.dispose();
    }
    for (let i = 1; i < ls.length; i++) assert.ok(ls[i]! < ls[i - 1]!, `losses ${ls}`);
    opt.dispose();
    tf.dispose([x1, x0, t, labels]);
    net.dispose();
    // The timed run: with no time left after the first repetition, it times that one only.
    const r = await tfjsDit({
      ...TINY,
      batch: 2,
      warmup: 1,
      steps: 1,
      reps: 3,
      maxSeconds: 0,
    });
    assert.equal(r.repsTimed, 1);
    assert.equal(r.stepsTimed, 1);
    assert.ok(r.stepsPerSec > 0 && Number.isFinite(r.lossFirst) && Number.isFinite(r.lossLast));
  },
});
