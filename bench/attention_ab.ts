/**
 * @file A/B of the fused self-attention against the composite (transposes, matmuls, softmax)
 * at the DiT bench's shape (qkv [64, 49, 3·128], 4 heads), forward + backward, alternating the
 * variants in one process; process CPU time (lavapipe's workers run in this process) and wall
 * time per call, with dispatches. `--rows F,Q,K` pins the WebGPU kernels' rows per invocation.
 *
 *   deno run --allow-read=. --allow-env=FLOWGPU_BACKEND --allow-sys=loadavg bench/attention_ab.ts
 * @module
 */
import { parseArgs } from "node:util";
import { getBackend, init, randn, selfAttention, type Tensor, tidy, vjp } from "../mod.ts";
import { _fusedAttention } from "../lib/ops/attention.ts";
import type { WebGPUBackend } from "../lib/backend/webgpu.ts";
import { alternate, summary } from "./_ab.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "5" },
      reps: { type: "string", default: "3" },
      rows: { type: "string", multiple: true },
      batch: { type: "string", default: "64" },
      tokens: { type: "string", default: "49" },
    },
  });
  await init();
  const be = getBackend() as unknown as WebGPUBackend;
  const B = Number(values.batch), N = Number(values.tokens), D = 128, H = 4;
  const qkv = randn([B, N, 3 * D], { seed: 1 }), gy = randn([B, N, D], { seed: 2 });
  const variants: { name: string; fused: boolean; rows?: [number, number, number] }[] = [
    { name: "composite", fused: false },
  ];
  for (const r of values.rows ?? ["default"]) {
    const rows = r === "default" ? undefined : r.split(",").map(Number) as [number, number, number];
    variants.push({ name: `fused rows=${r}`, fused: true, rows });
  }
  const run = (mode: "fwd" | "fwd+bwd") =>
    tidy(() => {
      if (mode === "fwd") selfAttention(qkv, H);
      else {
        const [, back] = vjp((x: Tensor) => selfAttention(x, H), qkv);
        back(gy);
      }
    });
  const rounds = Number(values.rounds), reps = Number(values.reps);
  const set = (v: (typeof variants)[number]) => {
    _fusedAttention.enabled = v.fused;
    if ("attentionRowsOverride" in be) be.attentionRowsOverride = v.rows;
  };
  for (const v of variants) {
    set(v);
    run("fwd+bwd"); // compile
  }
  await be.sync();
  // Dispatches per call, of each variant's last run.
  const disp = new Map<string, number>();
  const runs = variants.flatMap((v) =>
    (["fwd", "fwd+bwd"] as const).map((mode) => ({ name: `${v.name} ${mode}`, v, mode }))
  );
  const res = await alternate(runs, { rounds, reps }, async ({ name, v, mode }, n) => {
    set(v);
    const d0 = be.stats?.().dispatches ?? 0;
    for (let i = 0; i < n; i++) run(mode);
    await be.sync();
    disp.set(name, ((be.stats?.().dispatches ?? 0) - d0) / n);
  });
  for (const [k, e] of res) {
    const s = summary(e);
    console.log(JSON.stringify({
      variant: k,
      cpuMs: s.cpuMs,
      cpuMsMin: s.cpuMinMs,
      wallMs: s.wallMs,
      dispatches: disp.get(k),
    }));
  }
  console.log(JSON.stringify({ load: Deno.loadavg?.()[0], adapter: be.description }));
}
