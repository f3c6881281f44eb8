/**
 * @file `deno task bench --smoke` as a subprocess with the task's own flags: every line is a
 * JSON record with the keys its case promises (no timing assertions), and the tfjs peer's
 * hand-registered gradients agree with our autodiff on the toy network.
 */
import { strict as assert } from "node:assert";
import * as tf from "@tensorflow/tfjs-core";
import { concat, mse, silu, type Tensor, tensor, valueAndGrad } from "../../mod.ts";
import { CASES } from "../../bench/bench.ts";
import { loadTfjs } from "../../bench/peers/tfjs.ts";
import { registerTfjsGradients } from "../../bench/peers/tfjs_grads.ts";
import { assertClose } from "../_helpers.ts";

type Rec = Record<string, unknown>;

const isNum = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);

/** Peers each case reports, and how its ratio is formed from the peer figure. */
const PEERS: Record<string, { key: string; ratio: string; skip: string; inverse?: boolean }[]> = {
  "toy-cfm": [
    { key: "tfjs_webgpu", ratio: "ratio_vs_tfjs", skip: "tfjs_skipped" },
    { key: "torch_cpu", ratio: "ratio_vs_torch_cpu", skip: "torch_skipped" },
  ],
  sinkhorn: [
    { key: "torch_cpu", ratio: "speedup_vs_torch_cpu", skip: "torch_skipped", inverse: true },
  ],
  sample: [{ key: "torch_cpu", ratio: "ratio_vs_torch_cpu", skip: "torch_skipped" }],
  dit: [
    { key: "tfjs_webgpu", ratio: "ratio_vs_tfjs", skip: "tfjs_skipped" },
    { key: "torch_cpu", ratio: "ratio_vs_torch_cpu", skip: "torch_skipped" },
  ],
};

function checkRecord(r: Rec): void {
  const name = String(r.case);
  assert.ok(typeof r.case === "string", `record without a case: ${JSON.stringify(r)}`);
  assert.ok("adapter" in r, `${name}: no adapter key`);
  if (name === "env") {
    assert.equal(r.reps, 5, "env: repetitions per figure");
    const torch = r.torch as Rec | null;
    // With PyTorch present, the record names the BLAS its process really loaded.
    if (torch !== null && !("error" in torch)) {
      assert.ok(Array.isArray(torch.blas_loaded) && Array.isArray(torch.blas_config));
    }
    return;
  }
  if (r.adapter === null) {
    assert.equal(typeof r.skipped, "string", `${name}: no adapter but no skipped reason`);
    return;
  }
  assert.equal(r.error, undefined, `${name} failed: ${r.error}`);
  assert.equal(typeof r.adapter, "string");
  assert.equal(typeof r.unit, "string", `${name}: no unit`);
  assert.ok(isNum(r.ours) && r.ours > 0, `${name}: ours = ${r.ours}`);
  for (const p of PEERS[name] ?? []) {
    assert.ok(p.key in r, `${name}: no ${p.key} key`);
    const v = r[p.key];
    if (v === null) {
      assert.equal(typeof r[p.skip], "string", `${name}: ${p.key} is null without ${p.skip}`);
      assert.equal(r[p.ratio], null, `${name}: ${p.ratio} without a peer figure`);
    } else {
      assert.ok(isNum(v) && v > 0, `${name}: ${p.key} = ${v}`);
      const want = p.inverse ? v / (r.ours as number) : (r.ours as number) / v;
      assert.ok(isNum(r[p.ratio]), `${name}: ${p.ratio} = ${r[p.ratio]}`);
      assertClose([r[p.ratio] as number], [want], { rtol: 1e-3, msg: `${name} ${p.ratio}` });
    }
  }
  // Every figure comes with the spread of its repetitions: min ≤ median ≤ max.
  for (const f of ["ours", ...(PEERS[name] ?? []).map((p) => p.key)]) {
    if (name === "fma-peak" || r[f] === null) continue;
    const lo = r[`${f}_min`], hi = r[`${f}_max`];
    assert.ok(isNum(lo) && isNum(hi), `${name}: ${f}_min/${f}_max = ${lo}, ${hi}`);
    assert.ok(lo <= (r[f] as number) * (1 + 1e-4) && (r[f] as number) <= hi * (1 + 1e-4), name);
  }
  if (name === "toy-cfm") {
    assert.ok(isNum(r.batch), "toy-cfm: batch");
    const mem = r.memory as Rec | undefined;
    if (r.backend === "webgpu") {
      assert.ok(mem, "toy-cfm: memory on the WebGPU backend");
      // The lower bound (parameters, gradients, Adam moments, saved activations) is one.
      assert.ok((mem.peak_live_bytes as number) >= (mem.min_bytes as number), JSON.stringify(mem));
      // (No allocation after warm-up is tested on fit in tests/gpu/step_alloc_test.ts: the
      // smoke run's two warm-up steps are too few.)
      assert.ok(isNum(mem.buffers_created_after_warmup), JSON.stringify(mem));
    }
    const loss = r.loss as unknown[];
    assert.ok(Array.isArray(loss) && loss.length === 2 && loss.every(isNum), "toy-cfm: loss");
  }
  if (name === "sinkhorn") {
    assert.ok(isNum(r.n) && isNum(r.dim) && r.iters === 50, "sinkhorn: n, dim, iters");
    assert.ok(isNum((r.marginal_error as Rec).ours), "sinkhorn: our marginal error");
  }
  if (name === "sample") assert.ok(isNum(r.n) && isNum(r.steps), "sample: n, steps");
  if (name === "dit") {
    const loss = r.loss as unknown[];
    assert.ok(Array.isArray(loss) && loss.length === 2 && loss.every(isNum), "dit: loss");
    const cpu = r.cpu_ms_per_step as Rec;
    assert.ok(isNum(cpu.ours), "dit: our CPU ms per step");
    assert.ok(cpu.torch_cpu === null || isNum(cpu.torch_cpu), "dit: PyTorch CPU ms per step");
    // tfjs times fewer steps than we do: the record says how many, beside its losses.
    if (r.tfjs_webgpu !== null) {
      assert.ok(isNum(r.tfjs_steps_timed) && r.tfjs_steps_timed >= 1, "dit: tfjs_steps_timed");
      const tl = r.tfjs_loss as unknown[];
      assert.ok(Array.isArray(tl) && tl.length === 2 && tl.every(isNum), "dit: tfjs_loss");
    }
    // With PyTorch and wasm: the alternating measurement, its ratio that of its own medians'
    // rounds (one round in a smoke run: exactly their quotient).
    if (r.torch_cpu !== null && r.ours_wasm !== null && r.ours_wasm !== undefined) {
      assert.equal(r.paired_rounds, 1, "dit: paired_rounds");
      const pr = r.paired_wasm_vs_torch_cpu, po = r.paired_ours_wasm, pt = r.paired_torch_cpu;
      assert.ok(isNum(pr) && isNum(po) && isNum(pt) && po > 0 && pt > 0, "dit: paired fields");
      assertClose([pr], [po / pt], { rtol: 2e-3, msg: "dit: paired ratio" });
      // One round: its mean is its ratio, with no spread.
      assertClose([r.paired_wasm_vs_torch_cpu_mean as number], [po / pt], {
        rtol: 2e-3,
        msg: "dit: paired mean",
      });
      assert.equal(r.paired_wasm_vs_torch_cpu_std, 0, "dit: paired std of one round");
      assert.deepEqual(r.paired_ratios, [pr], "dit: the rounds' ratios");
      assert.deepEqual(r.paired_ours_rounds, [po], "dit: our rounds");
      assert.deepEqual(r.paired_torch_rounds, [pt], "dit: PyTorch's rounds");
      const cr = r.paired_cpu_ratios as unknown[];
      assert.ok(
        Array.isArray(cr) && cr.length === 1 && isNum(cr[0]) && cr[0] > 0,
        "dit: cpu ratio",
      );
    }
  }
}

Deno.test("bench --smoke prints a JSON record with the expected keys for every case", async () => {
  // The bench task's own command line, so the test runs under exactly its permissions.
  const task: string = JSON.parse(await Deno.readTextFile("deno.json")).tasks.bench;
  const words = task.split(/\s+/);
  assert.equal(words[0], "deno");
  const out = await new Deno.Command("deno", {
    args: [...words.slice(1), "--smoke"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const err = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `bench --smoke exited with ${out.code}:\n${text}\n${err}`);
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const records = lines.map((l) => {
    try {
      return JSON.parse(l) as Rec;
    } catch {
      throw new assert.AssertionError({ message: `not a JSON line: ${l}` });
    }
  });
  for (const r of records) checkRecord(r);
  const seen = new Set(records.map((r) => r.case));
  assert.deepEqual(
    [...seen],
    ["env", ...CASES.map((c) => c.name)],
    "the environment, then one or more records per case, in order",
  );
  if (records[0]!.adapter !== null) {
    assert.equal(records.filter((r) => r.case === "sinkhorn").length, 2, "sinkhorn: 2-D, 784-D");
  }
});

Deno.test("bench --compare with an unreadable baseline fails before benchmarking", async () => {
  const task: string = JSON.parse(await Deno.readTextFile("deno.json")).tasks.bench;
  const words = task.split(/\s+/);
  const out = await new Deno.Command("deno", {
    args: [...words.slice(1), "--smoke", "--compare", "/tmp/no-such-bench-baseline.jsonl"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  assert.equal(out.success, false);
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "", "no record was printed");
  assert.match(new TextDecoder().decode(out.stderr), /--compare \/tmp\/no-such-bench-baseline/);
});

Deno.test("registerTfjsGradients gives tfjs the toy MLP gradients our autodiff computes", async () => {
  await loadTfjs();
  registerTfjsGradients();
  const b = 5, widths = [3, 4, 4, 2];
  let s = 7;
  const rnd = (n: number) =>
    Float32Array.from({ length: n }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s / 2147483648 - 1;
    });
  const x = rnd(b * 2), t = rnd(b).map((v) => (v + 1) / 2), target = rnd(b * 2);
  const ws: Float32Array[] = [];
  for (let i = 0; i + 1 < widths.length; i++) {
    ws.push(rnd(widths[i]! * widths[i + 1]!), rnd(widths[i + 1]!));
  }
  const shapeOf = (i: number) =>
    i % 2 === 0 ? [widths[i / 2]!, widths[i / 2 + 1]!] : [widths[(i + 1) / 2]!];
  // tfjs: SiLU as x·sigmoid(x), as the bench peer writes it.
  const vars = ws.map((w, i) => tf.variable(tf.tensor(w, shapeOf(i))));
  const { value, grads } = tf.variableGrads(() => {
    let h: tf.Tensor = tf.concat([tf.tensor2d(x, [b, 2]), tf.tensor2d(t, [b, 1])], 1);
    for (let i = 0; i < vars.length; i += 2) {
      h = tf.add(tf.matMul(h, vars[i]!), vars[i + 1]!);
      if (i + 2 < vars.length) h = tf.mul(h, tf.sigmoid(h));
    }
    return tf.mean(tf.square(tf.sub(h, tf.tensor2d(target, [b, 2])))) as tf.Scalar;
  }, vars);
  // Ours, through the library's ops and reverse mode.
  const params = ws.map((w, i) => tensor(w, shapeOf(i)));
  const xin = concat([tensor(x, [b, 2]), tensor(t, [b, 1])], 1), tgt = tensor(target, [b, 2]);
  const [loss, ours] = valueAndGrad((p: Tensor[]) => {
    let h = xin;
    for (let i = 0; i < p.length; i += 2) {
      h = h.matmul(p[i]!).add(p[i + 1]!);
      if (i + 2 < p.length) h = silu(h);
    }
    return mse(h, tgt);
  })(params);
  assertClose([(await value.data())[0]!], [await loss.item()], { rtol: 1e-5, msg: "loss" });
  for (let i = 0; i < vars.length; i++) {
    const name = vars[i]!.name;
    assertClose(await grads[name]!.data(), await ours[i]!.data(), {
      rtol: 1e-4,
      atol: 1e-6,
      msg: `gradient of parameter ${i}`,
    });
  }
  tf.dispose([value, ...Object.values(grads), ...vars]);
  for (const tn of [...params, ...ours, xin, tgt, loss]) tn.dispose();
});
