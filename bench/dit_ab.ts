/**
 * @file A/B of whole DiT training steps between this checkout and another commit, alternating in
 * one process: `--base DIR` (or `DIR,DIR…`: several) is a plain copy of the other commit's tree (e.g.
 * `git archive <rev> | tar -x -C DIR`), whose `mod.ts` and bench/cases/dit.ts are imported as a
 * second module graph with a backend of its own (its own workers; each waits in `Atomics.wait`
 * while the other runs). Both run bench/cases/dit.ts's step (hidden 128, depth 4, batch 64) on
 * the backend `FLOWGPU_BACKEND` names. Median (and min) wall and process CPU ms per step over
 * `--rounds` rounds of `--reps` steps per variant, the two losses of the last step (the same
 * data and seeds: they differ only by rounding), each variant's median per-round ratio to the
 * first (base), then the load average. Unlike a switch inside
 * one graph, this measures every change between the commits at once.
 *
 *   git archive 3bb5259 | tar -x -C /tmp/base
 *   FLOWGPU_BACKEND=wasm deno run --allow-read --allow-env --allow-sys=loadavg \
 *     bench/dit_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { abRoots, alternate, summary } from "./_ab.ts";
import { median } from "./cases/common.ts";

interface Variant {
  name: string;
  step: () => { item(): Promise<number>; dispose(): void };
  sync: () => Promise<void>;
  close: () => void;
}

// One module graph's step: its mod.ts (init, getBackend) and its bench case.
async function load(name: string, root: URL): Promise<Variant> {
  const lib = await import(new URL("mod.ts", root).href);
  const dit = await import(new URL("bench/cases/dit.ts", root).href);
  await lib.init();
  const be = lib.getBackend();
  const s = await dit.ditStep(dit.DIT_BENCH);
  return {
    name,
    step: s.step,
    sync: () => be.sync(),
    close: () => {
      s.dispose();
      be.close?.();
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "5" },
      reps: { type: "string", default: "2" },
    },
  });
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const variants: Variant[] = [];
  for (const { name, root } of abRoots(values.base, new URL("../", import.meta.url))) {
    variants.push(await load(name, root));
  }
  const last = new Map<string, number>();
  const run = async (v: Variant, n: number) => {
    for (let i = 0; i < n; i++) {
      const l = v.step();
      if (i === n - 1) last.set(v.name, await l.item());
      l.dispose();
    }
    await v.sync();
  };
  for (const v of variants) await run(v, 2); // warm-up: compiles, fills the array pools
  const res = await alternate(variants, { rounds, reps, alternateOrder: true }, run);
  for (const [name, e] of res) {
    const s = summary(e);
    console.log(JSON.stringify({
      variant: name,
      stepWallMs: s.wallMs,
      stepWallMinMs: s.wallMinMs,
      stepCpuMs: s.cpuMs,
      lastLoss: last.get(name),
    }));
  }
  // Each round's ratio to the first variant's run of the same round (the two ran back to back,
  // under the same load): its median moves less with the other jobs than the medians above.
  const first = res.get(variants[0]!.name)!;
  for (const [name, e] of [...res].slice(1)) {
    const ratio = (a: number[], b: number[]) => +median(a.map((x, i) => x / b[i]!)).toFixed(4);
    console.log(JSON.stringify({
      variant: name,
      against: variants[0]!.name,
      pairedWallRatio: ratio(e.wall, first.wall),
      pairedCpuRatio: ratio(e.cpu, first.cpu),
    }));
  }
  console.log(JSON.stringify({ rounds, reps, load: Deno.loadavg() }));
  for (const v of variants) v.close();
}
