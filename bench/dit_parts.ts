/**
 * @file Where a DiT block's time goes, part by part, on the current backend: forward + backward
 * of each piece of one AdaLN-Zero block at the bench's size (tokens [64, 49, 128], 4 heads),
 * timed in process CPU time (lavapipe's workers run in this process) and wall time, with the
 * dispatch count per call. Alternates the pieces in rounds so load from other jobs hits all.
 *
 *   deno run --allow-read=. --allow-env=FLOWGPU_BACKEND --allow-sys=loadavg bench/dit_parts.ts [rounds]
 * @module
 */
import { getBackend, init, layerNormModulate, nn, randn, type Tensor, tidy, vjp } from "../mod.ts";
import { _fusedLayerNormModulate } from "../lib/ops/layernorm.ts";
import { alternate, summary } from "./_ab.ts";

type Part = { name: string; run: () => void };

if (import.meta.main) {
  await init();
  const be = getBackend() as unknown as {
    stats?: () => { dispatches: number };
    sync(): Promise<void>;
  };
  const rounds = Number(Deno.args[0] ?? 3), reps = 3;
  const B = 64, N = 49, D = 128, H = 4;
  const blk = new nn.AdaLNZeroBlock(D, H, { seed: 0 });
  // Non-zero modulation, so every branch carries gradient.
  const mod = blk.adaLNModulation.layers[1] as nn.Linear;
  mod.weight._assign(randn(mod.weight.shape, { seed: 3 }).mul(0.02));
  const x = randn([B, N, D], { seed: 1 }), c = randn([B, D], { seed: 2 });
  const gy = randn([B, N, D], { seed: 4 });
  const bwd = (f: (x: Tensor) => Tensor, inp: Tensor, g: Tensor) =>
    tidy(() => {
      const [, back] = vjp(f, inp);
      back(g);
    });
  const qkv = randn([B, N, 3 * D], { seed: 5 });
  // The block with LayerNorm + modulate as the composite (the switch off), for an A/B.
  const composite = (f: () => void) => () => {
    _fusedLayerNormModulate.enabled = false;
    try {
      f();
    } finally {
      _fusedLayerNormModulate.enabled = true;
    }
  };
  const parts: Part[] = [
    { name: "block fwd+bwd", run: () => bwd((h) => blk.forward(h, c), x, gy) },
    {
      name: "block fwd+bwd, composite norm+modulate",
      run: composite(() => bwd((h) => blk.forward(h, c), x, gy)),
    },
    { name: "attn (qkv, core, proj)", run: () => bwd((h) => blk.attn.forward(h), x, gy) },
    {
      name: "attn core only",
      run: () => bwd((t) => blk.attn.core(t), qkv, gy),
    },
    { name: "mlp", run: () => bwd((h) => blk.mlp.forward(h), x, gy) },
    {
      name: "norm+modulate (composite)",
      run: () => bwd((h) => nn.modulate(blk.norm1.forward(h), c.mul(0.1), c.mul(0.2)), x, gy),
    },
    {
      name: "layerNormModulate (fused)",
      run: () => bwd((h) => layerNormModulate(h, c.mul(0.1), c.mul(0.2), 1e-6), x, gy),
    },
  ];
  for (const p of parts) p.run(); // compile
  await be.sync();
  // Dispatches per call, of each part's last run.
  const disp = new Map<string, number>();
  const res = await alternate(parts, { rounds, reps }, async (p, n) => {
    const d0 = be.stats?.().dispatches ?? 0;
    for (let i = 0; i < n; i++) p.run();
    await be.sync();
    disp.set(p.name, ((be.stats?.().dispatches ?? 0) - d0) / n);
  });
  for (const [name, e] of res) {
    const s = summary(e);
    console.log(JSON.stringify({
      part: name,
      cpuMs: s.cpuMs,
      wallMs: s.wallMs,
      dispatches: disp.get(name),
    }));
  }
  console.log(JSON.stringify({ load: Deno.loadavg?.()[0] }));
}
