/**
 * @file A fused op's end-to-end check inside the DiT: one training step of a small DiT with the
 * op's switch on and off gives the same loss and gradients (the attention and the LayerNorm +
 * modulate tests use it).
 */
import { strict as assert } from "node:assert";
import { nn, randn, type Tensor, tensor, valueAndGrad } from "../mod.ts";

/**
 * One step of a 2-block DiT (8×8 images, patch 2, width 16, 3 classes) with `flag` on and off,
 * on the current backend. The adaLN and final layers get non-zero weights so every branch
 * carries gradient. `close(got, want, msg, frac)` compares with a tolerance relative to the
 * largest |want|; the parameters whose name contains `watch` must get gradient above 1e-4.
 */
export async function assertDitStepUnchanged(
  flag: { enabled: boolean },
  o: {
    backend: string;
    watch: string;
    lossFrac: number;
    close: (got: Float32Array, want: ArrayLike<number>, msg: string, frac: number) => void;
  },
): Promise<void> {
  const net = new nn.DiT({
    inputSize: 8,
    patchSize: 2,
    inChannels: 1,
    hiddenSize: 16,
    depth: 2,
    numHeads: 2,
    numClasses: 3,
    classDropoutProb: 0,
    seed: 0,
  });
  for (const [k, p] of net.namedParameters()) {
    if (k.includes("adaLN_modulation") || k.startsWith("final_layer.linear")) {
      const r = randn(p.shape, { seed: k.length }).mul(0.1);
      p._assign(r);
      r.dispose();
    }
  }
  const x = randn([3, 1, 8, 8], { seed: 1 }), t = tensor([0.2, 0.5, 0.9]);
  const y = tensor([0, 2, 1]), target = randn([3, 1, 8, 8], { seed: 2 });
  const params = net.parameters();
  const step = () =>
    valueAndGrad((_p: Tensor[]) => net.forward(x, t, y).sub(target).square().mean())(params);
  const prev = flag.enabled;
  let fused, plain;
  try {
    flag.enabled = true;
    fused = step();
    flag.enabled = false;
    plain = step();
  } finally {
    flag.enabled = prev;
  }
  const [lf, gf] = fused, [lp, gp] = plain;
  o.close(await lf.data(), await lp.data(), `${o.backend} loss`, o.lossFrac);
  const names = [...net.namedParameters().keys()];
  let watched = 0;
  for (let i = 0; i < gf.length; i++) {
    const a = await gf[i]!.data(), b = await gp[i]!.data();
    o.close(a, b, `${o.backend} grad ${names[i]}`, 1e-4);
    if (names[i]!.includes(o.watch)) {
      for (const v of b) watched = Math.max(watched, Math.abs(v));
    }
  }
  assert.ok(watched > 1e-4, `the ${o.watch} weights get gradient (${watched})`);
  net.dispose();
}
