/**
 * @file A/B of the `wasm` backend's random streams between this checkout and another commit,
 * alternating in one process (as bench/dit_ab.ts: `--base DIR` a plain copy of the other tree,
 * imported as a second module graph with a backend of its own): a DiT step's x0 noise (50,176
 * normals: `randn(x1.shape)` in lib/flow/paths.ts on [64, 1, 28, 28]) and a small draw (64
 * uniforms, a batch's times), each `backend.random` and `free`, on `--threads` threads (default
 * the backend's own). Median and min wall and process CPU µs a call over `--rounds` rounds of
 * `--reps` calls, and whether both checkouts gave the same bits.
 *
 *   git archive 01bd9dd | tar -x -C /tmp/base
 *   deno run --allow-read --allow-env --allow-sys=loadavg bench/random_ab.ts --base /tmp/base
 * @module
 */
import { parseArgs } from "node:util";
import { abRoots, alternate, summary } from "./_ab.ts";

interface Backend {
  random(kind: string, size: number, st: unknown): unknown;
  readSync(s: unknown): Float32Array;
  free(s: unknown): void;
  close(): void;
}

const CASES = [
  { kind: "normal", size: 50176 },
  { kind: "uniform", size: 64 },
] as const;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      base: { type: "string" },
      rounds: { type: "string", default: "15" },
      reps: { type: "string", default: "50" },
      threads: { type: "string" },
    },
  });
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const threads = values.threads === undefined ? undefined : Number(values.threads);
  const variants: { name: string; be: Backend }[] = [];
  for (const { name, root } of abRoots(values.base, new URL("../", import.meta.url))) {
    const { createWasmBackend } = await import(new URL("lib/backend/wasm.ts", root).href);
    variants.push({ name, be: await createWasmBackend({ threads }) });
  }
  for (const { kind, size } of CASES) {
    let counter = 0;
    const run = (v: { be: Backend }, n: number) => {
      for (let i = 0; i < n; i++) {
        v.be.free(v.be.random(kind, size, { key: [7, 3], counter: [counter++ >>> 0, 0] }));
      }
    };
    for (const v of variants) run(v, 20); // warm-up: compiles, tier-up
    // The same bits from both checkouts (one draw, a counter whose low word wraps).
    const st = { key: [1, 2], counter: [0xffffffff - 100, 5] };
    const bits = variants.map(({ be }) => {
      const s = be.random(kind, size, st);
      const w = new Uint32Array(be.readSync(s).slice().buffer);
      be.free(s);
      return w;
    });
    const same = bits.every((b) => b.every((x, i) => x === bits[0]![i]));
    const res = await alternate(variants, { rounds, reps, alternateOrder: true }, run);
    for (const [name, e] of res) {
      const s = summary({ wall: e.wall.map((x) => x * 1000), cpu: e.cpu.map((x) => x * 1000) });
      console.log(JSON.stringify({
        variant: name,
        kind,
        size,
        callWallUs: s.wallMs,
        callWallMinUs: s.wallMinMs,
        callCpuUs: s.cpuMs,
        sameBits: same,
      }));
    }
  }
  console.log(JSON.stringify({ rounds, reps, load: Deno.loadavg() }));
  for (const { be } of variants) be.close();
}
