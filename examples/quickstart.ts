/**
 * Quickstart: train a 2-D conditional flow-matching model on 8 Gaussians, sample it with
 * Euler, and print W2 and histogram KL against fresh data. Needs no permissions:
 *
 *   deno run https://<host>/examples/quickstart.ts [steps]
 *
 * Runs on the WebGPU adapter when there is one (a CPU adapter such as lavapipe is fine),
 * else on the CPU backend.
 */
import {
  cfmLoss,
  Generator,
  getBackend,
  histogramKL,
  init,
  integrate,
  nn,
  optim,
  randn,
  sampleToy,
  tidy,
  valueAndGrad,
  w2,
} from "../mod.ts";

await init();
const steps = Number(Deno.args[0] ?? 1500);
const gen = new Generator(0);
const model = new nn.VelocityMLP({ dim: 2, hidden: 128, depth: 3, seed: 1 });
const params = model.parameters();
const opt = new optim.Adam({ lr: 1e-3 });
const lossOf = (_p: typeof params, x1: ReturnType<typeof randn>) =>
  cfmLoss((x, t) => model.forward(x, t), x1, { generator: gen }).loss;

console.log(`backend: ${getBackend().description}`);
const t0 = performance.now();
for (let step = 1; step <= steps; step++) {
  const x1 = sampleToy("8gaussians", 256, gen);
  const [loss, grads] = valueAndGrad(lossOf)(params, x1);
  opt.step(params, grads);
  if (step % 250 === 0 || step === steps) {
    const it = step / ((performance.now() - t0) / 1000);
    console.log(
      `step ${step}/${steps}  loss ${(await loss.item()).toFixed(4)}  ${it.toFixed(1)} it/s`,
    );
  }
  loss.dispose();
  grads.forEach((g) => g.dispose());
  x1.dispose();
}

// KL over a 40×40 histogram needs many samples; the exact W2 (an O(n³) assignment) uses 1000.
const n = 20000, nW2 = 1000;
const noise = randn([n, 2], { seed: 7 });
const { x, nfe } = await integrate((x, t) => tidy(() => model.forward(x, t)), noise, {
  method: "euler",
  steps: 50,
});
const data = sampleToy("8gaussians", n, new Generator(8));
const [xs, ds, zs] = [await x.data(), await data.data(), await noise.data()];
const head = (a: Float32Array) => a.subarray(0, 2 * nW2);
const report = {
  w2: await w2(head(xs), head(ds)),
  kl: histogramKL(ds, xs, { bins: 40, range: [-8, 8] }),
  w2Noise: await w2(head(zs), head(ds)),
  nfe,
};
console.log(JSON.stringify(report));
