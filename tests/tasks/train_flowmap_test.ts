/**
 * The flow-map tasks in shortened form: a seeded `train:flowmap` LSD run whose one-step KL
 * falls clearly below its initial value, `sample` and `eval` on its checkpoint (files and
 * values against a recomputation), and bad input exiting with status 2 and a message that
 * names the value.
 */
import { strict as assert } from "node:assert";
import {
  buildFlowMapModel,
  flowMapModelFromCheckpoint,
  flowMapOf,
  flowMapSamples,
  getBackend,
  loadNpz,
  nn,
  parseConfigFile,
  readFlowMapCheckpoint,
  readMetrics,
  saveCheckpoint,
  setBackend,
} from "../../mod.ts";
import { main as trainMain } from "../../tasks/train_flowmap.ts";
import { main as sampleMain } from "../../tasks/sample.ts";
import { evalAny } from "../../tasks/eval.ts";
import { flowMapKLReport } from "../../tasks/_flowmap.ts";
import { quiet } from "../_helpers.ts";

/** Run on the CPU backend (bit-exact), restoring the previous backend afterwards. */
async function onCpu<T>(fn: () => Promise<T>): Promise<T> {
  const prev = getBackend().name as "cpu" | "webgpu";
  setBackend("cpu");
  try {
    return await fn();
  } finally {
    setBackend(prev);
  }
}

const TASK = new URL("../../tasks/", import.meta.url);

/** Run a task file as `deno task` would; returns its exit status and stderr. */
async function runFile(file: string, args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command("deno", {
    args: [
      "run",
      "--allow-read=.,/tmp",
      "--allow-write=/tmp",
      "--allow-env=FLOWGPU_BACKEND",
      new URL(file, TASK).pathname,
      ...args,
    ],
    env: { FLOWGPU_BACKEND: "cpu" },
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

// The one-step map passes through a collapse phase (φ(0, 1, ·) ≈ b_0 = −x early on) before
// LSD has propagated the flow out to t − s = 1, and at this high learning rate it oscillates;
// sampled with EMA weights, 1250 steps of this small setup are past both (CPU: 0.69 → 0.41).
const RUN = [
  "--method",
  "lsd",
  "--max-train-steps",
  "1250",
  "--batch-size",
  "256",
  "--diagonal-fraction",
  "0.25",
  "--ema-decay",
  "0.99",
  "--hidden",
  "32",
  "--depth",
  "2",
  "--lr",
  "1e-2",
  "--log-every",
  "250",
  "--checkpoint-every",
  "625",
  "--eval-samples",
  "0",
  "--seed",
  "3",
];
const KL = { dataset: "checkerboard", numSamples: 20000, steps: [1, 4], bins: 15, seed: 7 };

Deno.test("train:flowmap LSD (seeded, 1250 small steps): the one-step KL falls clearly below its initial value; sample and eval read the run", async () => {
  const out = await Deno.makeTempDir({ prefix: "flowmap-task-" });
  try {
    const r = await onCpu(() =>
      quiet(() => trainMain([...RUN, "--output-dir", out, "--exp-name", "lsd"]))
    );
    assert.ok(r);
    assert.equal(r.steps, 1250);
    const run = `${out}/lsd`;
    const cfg = JSON.parse(await Deno.readTextFile(`${run}/config.json`));
    assert.equal(cfg.task, "train:flowmap");
    assert.equal(cfg.diagonal_rows, 64); // the seeds' snake_case spelling
    const m = await readMetrics(`${run}/metrics.jsonl`);
    assert.deepEqual(m.map((x) => x.step), [250, 500, 750, 1000, 1250]);
    for (const k of ["training/loss_flow", "training/loss_diagonal", "training/loss_lsd"]) {
      assert.ok(m.every((x) => Number.isFinite(x[k] as number)), k);
    }
    // The diagonal (flow-matching) loss decreases.
    assert.ok(
      (m[4]!["training/loss_diagonal"] as number) < (m[0]!["training/loss_diagonal"] as number),
    );

    // KL at initialisation (the same seed builds the same network) and after training.
    const [init, trained] = await onCpu(async () => {
      const fresh = buildFlowMapModel(
        parseConfigFile(JSON.stringify(cfg)) as Parameters<typeof buildFlowMapModel>[0],
      );
      const a = await flowMapKLReport(flowMapOf(fresh), KL);
      fresh.dispose();
      const ck = await readFlowMapCheckpoint(run);
      assert.equal(ck.checkpoint.step, 1250);
      assert.ok(ck.checkpoint.ema, "the run keeps an EMA");
      const net = flowMapModelFromCheckpoint(ck);
      const b = await flowMapKLReport(flowMapOf(net), KL);
      net.dispose();
      return [a.kl, b.kl];
    });
    assert.ok(init["1"]! > 0.5, `initial one-step KL ${init["1"]}`);
    assert.ok(
      trained["1"]! < 0.75 * init["1"]!,
      `one-step KL ${trained["1"]} vs initial ${init["1"]}`,
    );
    assert.ok(trained["4"]! < 0.75 * init["4"]!, `4-step KL ${trained["4"]} vs ${init["4"]}`);

    // sample: N map evaluations, NPZ equal to a recomputation from the checkpoint, PNG written.
    const npz = `${out}/x.npz`;
    const s = await onCpu(() =>
      quiet(() =>
        sampleMain(["--checkpoint", run, "--num-steps", "3", "--num-samples", "64", "--out", npz])
      )
    );
    assert.equal(s!.nfe, 3);
    const arr = (await loadNpz(npz)).x!;
    assert.deepEqual(arr.shape, [64, 2]);
    const want = await onCpu(async () => {
      const net = flowMapModelFromCheckpoint(await readFlowMapCheckpoint(run));
      const x = await flowMapSamples(flowMapOf(net), 64, { steps: 3, seed: 0 });
      net.dispose();
      return x;
    });
    assert.deepEqual([...(arr.data as Float32Array)], [...want]);
    await onCpu(() => quiet(() => sampleMain(["--checkpoint", run, "--out", `${out}/x.png`])));
    const png = await Deno.readFile(`${out}/x.png`);
    assert.deepEqual([...png.subarray(1, 4)], [80, 78, 71]); // "PNG"

    // eval --metrics kl: the table by N, in eval.jsonl and eval_kl.json, equal to the report.
    const rec = await onCpu(() =>
      quiet(() =>
        evalAny([
          "--checkpoint",
          run,
          "--metrics",
          "kl",
          "--num-samples",
          "20000",
          "--kl-bins",
          "15",
          "--num-steps",
          "1,4",
          "--seed",
          "7",
        ])
      )
    ) as { kl: Record<string, number> };
    assert.deepEqual(rec.kl, trained);
    const stored = JSON.parse(await Deno.readTextFile(`${run}/eval_kl.json`));
    assert.deepEqual(stored.kl, trained);
    const lines = (await Deno.readTextFile(`${run}/eval.jsonl`)).trim().split("\n");
    assert.equal(lines.length, 1);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("flow-map tasks: bad input exits with status 2 and names the value", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowmap-bad-" });
  try {
    // A train:cfm checkpoint is not a flow map.
    const cfm = `${dir}/cfm.safetensors`;
    const lin = new nn.Linear(2, 2, { seed: 0 });
    await saveCheckpoint(cfm, {
      model: lin.stateDict() as Record<string, never>,
      step: 5,
      config: { task: "train:cfm", model: "velocity-mlp", dataShape: [2] },
    });
    const cases: [string, string[], RegExp][] = [
      ["train_flowmap.ts", ["--method", "xsd"], /xsd/],
      ["train_flowmap.ts", ["--psd-mode", "cubic"], /cubic/],
      ["train_flowmap.ts", ["--diagonal-fraction", "1.5"], /diagonal-fraction.*1\.5/],
      ["train_flowmap.ts", ["--diagonal-rows", "9", "--batch-size", "8"], /diagonal-rows.*9/],
      ["sample_flowmap.ts", ["--checkpoint", cfm, "--num-steps", "1"], /not a flow-map.*train:cfm/],
      ["eval_flowmap.ts", ["--checkpoint", cfm], /not a flow-map.*train:cfm/],
      ["sample_flowmap.ts", ["--checkpoint", cfm, "--num-steps", "0"], /num-steps.*0/],
      ["eval_flowmap.ts", ["--checkpoint", cfm, "--num-steps", "1,0"], /"0"/],
      ["eval_flowmap.ts", ["--checkpoint", cfm, "--metrics", "w2"], /w2/],
    ];
    for (const [file, args, re] of cases) {
      const r = await runFile(file, args);
      assert.equal(r.code, 2, `${file} ${args.join(" ")}: exit ${r.code}, ${r.stderr}`);
      assert.match(r.stderr, re, `${file} ${args.join(" ")}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    }
    // --resume of a run of another task.
    const other = `${dir}/cfm-run`;
    await Deno.mkdir(`${other}/checkpoints`, { recursive: true });
    await Deno.writeTextFile(`${other}/config.json`, JSON.stringify({ task: "train:cfm" }));
    const r = await runFile("train_flowmap.ts", ["--resume", other]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /train:cfm run, not a train:flowmap run/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train:flowmap --resume continues bit-exactly on the CPU backend (PSD uniform, EMA)", async () => {
  const out = await Deno.makeTempDir({ prefix: "flowmap-resume-" });
  const tiny = [
    "--method",
    "psd",
    "--psd-mode",
    "uniform",
    "--batch-size",
    "32",
    "--hidden",
    "8",
    "--depth",
    "2",
    "--ema-decay",
    "0.9",
    "--log-every",
    "2",
    "--checkpoint-every",
    "2",
    "--eval-samples",
    "0",
    "--output-dir",
    out,
  ];
  try {
    await onCpu(() =>
      quiet(async () => {
        await trainMain([...tiny, "--max-train-steps", "4", "--exp-name", "straight"]);
        await trainMain([...tiny, "--max-train-steps", "2", "--exp-name", "split"]);
        await trainMain(["--resume", `${out}/split`, "--max-train-steps", "4"]);
      })
    );
    const a = await readFlowMapCheckpoint(`${out}/straight`);
    const b = await readFlowMapCheckpoint(`${out}/split`);
    assert.equal(b.checkpoint.step, 4);
    for (const sec of ["model", "ema"] as const) {
      for (const [k, v] of Object.entries(a.checkpoint[sec]!)) {
        assert.deepEqual(
          [...await v.data()],
          [...await b.checkpoint[sec]![k]!.data()],
          `${sec} ${k}`,
        );
      }
    }
    const ma = await readMetrics(`${out}/straight/metrics.jsonl`);
    const mb = await readMetrics(`${out}/split/metrics.jsonl`);
    assert.deepEqual(mb, ma);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
