/**
 * @file A/B of the optimizer update alone (Adam over the bench DiT's parameters, hidden 128,
 * depth 4: ~51 groups, 8 of 65,536 floats, 4 of 98,304, 4 of 49,152, 11 biases of 128) between
 * this checkout and other commits' trees (`--base DIR[,DIR…]`, loaded as a second module graph with
 * a backend of its own, as bench/dit_ab.ts does), alternating in one process. Gradients are
 * fixed random tensors; each variant's parameters and slots change every step, so the two
 * variants' parameters are compared at the end (bit-identical updates expected).
 *
 *   git archive HEAD | tar -x -C /tmp/base
 *   FLOWGPU_BACKEND=wasm deno run --allow-read --allow-env --allow-sys=loadavg \
 *     bench/adam_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { abRoots, alternate, summary } from "./_ab.ts";

interface Variant {
  name: string;
  step: () => void;
  sync: () => Promise<void>;
  params: () => Promise<Float32Array[]>;
}

async function load(name: string, root: URL): Promise<Variant> {
  const lib = await import(new URL("mod.ts", root).href);
  const dit = await import(new URL("bench/cases/dit.ts", root).href);
  await lib.init();
  const be = lib.getBackend();
  // The bench DiT's network (ditStep's; its step and data are not used).
  const { net } = await dit.ditStep(dit.DIT_BENCH);
  const params = net.parameters() as { shape: number[]; data(): Promise<Float32Array> }[];
  let seed = 1;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 1e-2;
  const grads = params.map((p) => {
    const n = p.shape.reduce((a, b) => a * b, 1);
    return lib.tensor(Float32Array.from({ length: n }, rnd), p.shape);
  });
  const opt = new lib.optim.Adam({ lr: 1e-4 });
  return {
    name,
    step: () => opt.step(params, grads),
    sync: () => be.sync(),
    params: () => Promise.all(params.map((p) => p.data())),
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "15" },
      reps: { type: "string", default: "20" },
    },
  });
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const variants: Variant[] = [];
  for (const { name, root } of abRoots(values.base, new URL("../", import.meta.url))) {
    variants.push(await load(name, root));
  }
  const run = async (v: Variant, n: number) => {
    for (let i = 0; i < n; i++) v.step();
    await v.sync();
  };
  for (const v of variants) await run(v, 3);
  const res = await alternate(variants, { rounds, reps, alternateOrder: true }, run);
  for (const [name, e] of res) {
    const s = summary(e);
    console.log(
      JSON.stringify({
        variant: name,
        stepWallMs: s.wallMs,
        stepWallMinMs: s.wallMinMs,
        stepCpuMs: s.cpuMs,
      }),
    );
  }
  const [a, ...others] = await Promise.all(variants.map((v) => v.params()));
  const same = others.every((b) =>
    a!.every((x, i) => {
      const y = b[i]!;
      return x.length === y.length && x.every((v, j) => Object.is(v, y[j]));
    })
  );
  console.log(JSON.stringify({ paramsBitIdentical: same, loadavg: Deno.loadavg() }));
}
