/**
 * @file Where one DiT training step's time goes on a synchronous backend (`cpu`, `wasm`): every
 * method of the backend object is wrapped with a timer (on these backends a call returns when
 * its work is done, workers included, so its wall time is its cost), and the calls of `steps`
 * steps of bench/cases/dit.ts's network (hidden 128, depth 4, batch 64) are summed by kind —
 * matmul, elementwise (by the ops of its DAG), reductions, copies, attention, LayerNorm +
 * modulate, the optimizer's grouped update — and by phase (forward, backward, optimizer: the
 * first frame of the call's stack that says which). The time between backend calls (tensor
 * bookkeeping, the tape, JavaScript glue) is printed as `outside backend`.
 * Prints JSON lines sorted by cost, then the load average.
 *
 *   FLOWGPU_BACKEND=wasm deno run --allow-read=. --allow-env --allow-sys=loadavg \
 *     bench/backend_profile.ts [steps]
 * @module
 */
import { getBackend, init } from "../mod.ts";
import type { Expr } from "../lib/ir.ts";
import { DIT_BENCH, ditStep } from "./cases/dit.ts";
import { median } from "./cases/common.ts";

// The ops of an expression DAG, in order of first visit ("mul+add", "geluTanh'" …).
function opsOf(outputs: readonly Expr[]): string {
  const seen = new Set<Expr>(), ops: string[] = [];
  const walk = (e: Expr) => {
    if (seen.has(e)) return;
    seen.add(e);
    if (e.kind === "unary") {
      walk(e.x);
      ops.push(e.op);
    } else if (e.kind === "binary") {
      walk(e.a);
      walk(e.b);
      ops.push(e.op);
    } else if (e.kind === "where") {
      walk(e.c);
      walk(e.a);
      walk(e.b);
      ops.push("where");
    }
  };
  outputs.forEach(walk);
  const s = ops.join("+");
  return s.length > 50 ? `${ops.length} ops: ${s.slice(0, 40)}…` : s || "copy";
}

// The phase of a call, from its stack: the optimizer, a VJP (backward), or the forward.
function phaseOf(stack: string): string {
  if (/optim\/optimizers\.ts/.test(stack)) return "optim";
  if (/at backward \(|autodiff\/mod\.ts:\d+:\d+\)\n[^\n]*vjp/.test(stack)) return "bwd";
  return /\bvjp\b/.test(stack) ? "bwd" : "fwd";
}

// The first frame of the stack in a model file (lib/nn, lib/flow, lib/ops but ops.ts/tensor.ts).
function siteOf(stack: string): string {
  for (const line of stack.split("\n").slice(2)) {
    const m = line.match(
      /lib\/(nn|flow|ops\/(?:layernorm|attention|linear|fused)|optim)\/[\w.]+:\d+/,
    );
    if (m) return m[0];
  }
  return "?";
}

if (import.meta.main) {
  await init();
  const be = getBackend() as unknown as Record<string, unknown> & { name: string };
  if (be.name === "webgpu") {
    throw new Error("backend_profile times synchronous backends (cpu, wasm)");
  }
  const steps = Number(Deno.args[0] ?? 3);
  const { step, dispose } = await ditStep(DIT_BENCH);
  for (let i = 0; i < 2; i++) step().dispose(); // warm-up: compiles, fills the array pool
  const rows = new Map<string, { calls: number; ms: number; elems: number }>();
  const phases = new Map<string, number>();
  const sites = new Map<string, number>();
  // The profiler's own time (stack captures, bookkeeping), taken out of the step's total.
  let inBackend = 0, depth = 0, overhead = 0;
  const methods = [
    "upload",
    "alloc",
    "free",
    "fill",
    "iota",
    "elementwise",
    "elementwiseGroups",
    "reduce",
    "matmul",
    "matmulOutputs",
    "matmulBiasGrad",
    "logSumExpAdd",
    "attention",
    "attentionBackward",
    "layerNormModulate",
    "layerNormModulateBackward",
    "gatedResidualBackward",
    "copyInto",
    "gather",
    "scatterAdd",
    "random",
  ];
  const orig = new Map<string, (...a: unknown[]) => unknown>();
  for (const m of methods) {
    const f = be[m] as (...a: unknown[]) => unknown;
    orig.set(m, f);
    be[m] = (...a: unknown[]) => {
      if (depth > 0) return f.apply(be, a); // a method calling another: counted once
      depth++;
      const t0 = performance.now();
      try {
        return f.apply(be, a);
      } finally {
        const t1 = performance.now(), ms = t1 - t0;
        depth--;
        inBackend += ms;
        let key = m, elems = 0;
        if (m === "elementwise") {
          const shape = a[3] as number[];
          elems = shape.reduce((p, q) => p * q, 1);
          const strides = a[2] as number[][];
          const bc = strides.some((s) => s.some((v) => v === 0)) ? " (broadcast)" : "";
          key = `elementwise ${opsOf(a[0] as Expr[])}${bc}`;
        } else if (m === "reduce") {
          const shape = a[2] as number[];
          elems = shape.reduce((p, q) => p * q, 1);
          key = `reduce ${a[0]} [${shape}] over [${a[3]}]`;
        } else if (m === "matmul" || m === "matmulOutputs") {
          const g = a[2] as {
            m: number;
            n: number;
            k: number;
            batch: number;
            transA: boolean;
            transB: boolean;
          };
          elems = g.batch * g.m * g.n * g.k;
          // matmulOutputs: the product and its elementwise outputs (one call).
          const epi = m === "matmulOutputs"
            ? `→${opsOf((a[3] as { exprs: Expr[] }).exprs)}`
            : a[3]
            ? "+epilogue"
            : "";
          key = `matmul ${g.transA ? "T" : "N"}${g.transB ? "T" : "N"}${epi} ${
            g.batch > 1 ? `${g.batch}×` : ""
          }[${g.m},${g.n}] k=${g.k}`;
        } else if (m === "matmulBiasGrad") {
          // A weight gradient with its bias gradient summed in the same product.
          const [gm, gn, gk] = a.slice(2) as [number, number, number];
          elems = gm * gn * gk;
          key = `matmul TN+bias grad [${gm},${gn}] k=${gk}`;
        } else if (m === "copyInto") {
          const v = a[1] as { shape: number[] };
          elems = v.shape.reduce((p, q) => p * q, 1);
          key = `copyInto [${v.shape}]`;
        }
        const r = rows.get(key) ?? { calls: 0, ms: 0, elems: 0 };
        r.calls++;
        r.ms += ms;
        r.elems += elems;
        rows.set(key, r);
        const stack = new Error().stack ?? "";
        const ph = `${phaseOf(stack)} ${m}`;
        phases.set(ph, (phases.get(ph) ?? 0) + ms);
        const site = `${siteOf(stack)} ${m}`;
        sites.set(site, (sites.get(site) ?? 0) + ms);
        overhead += performance.now() - t1;
      }
    };
  }
  const walls: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    step().dispose();
    walls.push(performance.now() - t0);
  }
  for (const [m, f] of orig) be[m] = f;
  const total = (walls.reduce((a, b) => a + b, 0) - overhead) / steps;
  const per = (ms: number) => +(ms / steps).toFixed(2);
  const pct = (ms: number) => +((100 * ms / steps) / total).toFixed(1);
  // By kind: elementwise, reductions and copies summed; matmul by layout.
  const kinds = new Map<string, number>();
  for (const [k, r] of rows) {
    const kind = k.startsWith("copyInto") ? "copyInto" : k.split(" ")[0]!;
    kinds.set(kind, (kinds.get(kind) ?? 0) + r.ms);
  }
  console.log(JSON.stringify({
    stepMsMedian: +median(walls).toFixed(1),
    stepMsMeanLessProfiler: +total.toFixed(1),
    profilerMsPerStep: per(overhead),
  }));
  for (const [k, ms] of [...kinds].sort((a, b) => b[1] - a[1])) {
    console.log(JSON.stringify({ kind: k, msPerStep: per(ms), pct: pct(ms) }));
  }
  console.log(
    JSON.stringify({
      kind: "outside backend",
      msPerStep: per(total * steps - inBackend),
      pct: pct(total * steps - inBackend),
    }),
  );
  for (const [k, ms] of [...phases].sort((a, b) => b[1] - a[1])) {
    if (ms / steps > 0.5) console.log(JSON.stringify({ phase: k, msPerStep: per(ms) }));
  }
  for (const [k, r] of [...rows].sort((a, b) => b[1].ms - a[1].ms)) {
    if (r.ms / steps < 0.5) continue;
    console.log(
      JSON.stringify({
        call: k,
        callsPerStep: r.calls / steps,
        msPerStep: per(r.ms),
        pct: pct(r.ms),
        mElemsPerStep: +(r.elems / steps / 1e6).toFixed(2),
        // A matmul's rate (2·m·n·k flops a call).
        ...(k.startsWith("matmul") ? { gflops: +(2 * r.elems / r.ms / 1e6).toFixed(1) } : {}),
      }),
    );
  }
  for (const [k, ms] of [...sites].sort((a, b) => b[1] - a[1])) {
    if (ms / steps > 1) console.log(JSON.stringify({ site: k, msPerStep: per(ms) }));
  }
  console.log(JSON.stringify({ load: Deno.loadavg()[0] }));
  dispose();
  (be as { close?: () => void }).close?.();
}
