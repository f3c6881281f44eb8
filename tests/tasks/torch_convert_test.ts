/**
 * @file `deno task convert` and the PyTorch package (tasks/torch): round trips between flowgpu
 * checkpoints and PyTorch state dicts (both time conventions), the errors that name keys
 * (another architecture, a dtype not taken, a config that does not fit, unknown and missing
 * keys; exit 2), and a 2-process `torchrun` DDP run on CPU whose checkpoint `deno task sample`
 * loads directly and, through `.pt` → safetensors → `convert`, gives the same samples.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  buildCfmModel as buildModel,
  type CfmModelConfig as ModelConfig,
  decodeSafetensorsWithMetadata,
  encodeSafetensors,
  loadCheckpoint,
  saveCheckpoint,
} from "../../mod.ts";
import { main as convert } from "../../tasks/convert.ts";
import { parseTrainCfmFlags } from "../../tasks/train_cfm.ts";
import { quiet } from "../_helpers.ts";

const PY = "/usr/bin/python3";
const DIT: ModelConfig & { task: string; dataset: string } = {
  task: "train:cfm",
  dataset: "fashion-mnist",
  model: "dit-tiny",
  hidden: 8,
  depth: 1,
  dataShape: [1, 8, 8],
  numClasses: 3,
  cfgDropout: 0.1,
  seed: 0,
};

async function tmp(): Promise<string> {
  return await Deno.makeTempDir({ dir: "/tmp", prefix: "flowgpu-convert-" });
}

async function rejects(p: Promise<unknown>, ...parts: string[]): Promise<string> {
  const msg = await p.then(() => "", (e: Error) => {
    assert.ok(e instanceof RangeError, `expected a RangeError, got ${e}`);
    return e.message;
  });
  for (const s of parts) assert.ok(msg.includes(s), `"${s}" not in: ${msg}`);
  return msg;
}

async function dit(dir: string): Promise<string> {
  const net = buildModel(DIT);
  const path = `${dir}/ck.safetensors`;
  await saveCheckpoint(path, {
    model: net.stateDict(),
    ema: Object.fromEntries(net.namedParameters()),
    step: 7,
    config: DIT,
  });
  net.dispose();
  return path;
}

Deno.test("convert: flowgpu → PyTorch → flowgpu gives the same weights, in either time convention", async () => {
  const dir = await tmp();
  try {
    const ck = await dit(dir);
    for (const tc of ["flowgpu", "repa"]) {
      await quiet(() => convert([ck, `${dir}/sd.safetensors`, "--time-convention", tc]));
      const { tensors, metadata } = decodeSafetensorsWithMetadata(
        await Deno.readFile(`${dir}/sd.safetensors`),
      );
      assert.equal(metadata.weights, "ema");
      assert.ok(tensors["blocks.0.adaLN_modulation.1.weight"] && tensors["pos_embed"]);
      const r = await quiet(() =>
        convert([`${dir}/sd.safetensors`, `${dir}/back.safetensors`, "--time-convention", tc])
      );
      assert.equal(r!.to, "flowgpu");
      const [a, b] = [await loadCheckpoint(ck), await loadCheckpoint(`${dir}/back.safetensors`)];
      assert.equal(b.step, 7);
      assert.deepEqual(Object.keys(b.model).sort(), Object.keys(a.model).sort());
      for (const [k, t] of Object.entries(a.model)) {
        const x = await t.data(), y = await b.model[k]!.data();
        for (let i = 0; i < x.length; i++) {
          assert.ok(Math.abs(x[i]! - y[i]!) <= 1e-6, `${tc} ${k}[${i}]`);
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("convert: another architecture, dtypes not taken, a mismatched config and unknown or missing keys are named", async () => {
  const dir = await tmp();
  try {
    const ck = await dit(dir);
    await quiet(() => convert([ck, `${dir}/sd.safetensors`]));
    const sd = decodeSafetensorsWithMetadata(await Deno.readFile(`${dir}/sd.safetensors`)).tensors;
    const write = async (name: string, t: typeof sd, meta?: Record<string, string>) => {
      await Deno.writeFile(`${dir}/${name}`, encodeSafetensors(t, meta));
      return `${dir}/${name}`;
    };
    await Deno.writeTextFile(
      `${dir}/mlp.json`,
      JSON.stringify({ ...DIT, model: "velocity-mlp", dataShape: [2] }),
    );
    const plain = await write("plain.safetensors", sd);
    // Another architecture than the config's.
    await rejects(
      convert([plain, `${dir}/o.safetensors`, "--config", `${dir}/mlp.json`]),
      `"x_embedder.proj.weight"`,
      "velocity-mlp",
    );
    // A config that does not fit: 16×16 images need another pos_embed and patch.
    await Deno.writeTextFile(`${dir}/big.json`, JSON.stringify({ ...DIT, dataShape: [1, 16, 16] }));
    await rejects(
      convert([plain, `${dir}/o.safetensors`, "--config", `${dir}/big.json`]),
      `"pos_embed" is [1, 4, 8] in the state dict but [1, 16, 8]`,
    );
    // Unknown and missing keys, by name; --ignore-prefix drops the unknown ones.
    const { ["final_layer.linear.bias"]: _gone, ...rest } = sd;
    const odd = await write("odd.safetensors", {
      ...rest,
      "projectors.0.0.weight": sd["final_layer.linear.bias"]!,
    });
    await rejects(
      convert([odd, `${dir}/o.safetensors`]),
      `missing keys "final_layer.linear.bias"`,
      `unexpected keys "projectors.0.0.weight"`,
    );
    const dropped = await write("dropped.safetensors", {
      ...sd,
      "projectors.0.0.weight": sd["final_layer.linear.bias"]!,
    });
    await quiet(() => convert([dropped, `${dir}/o.safetensors`, "--ignore-prefix", "projectors."]));
    // A dtype not taken (F64): patch the header of an F32 file.
    const bytes = await Deno.readFile(plain);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const head = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const e = head["final_layer.linear.bias"];
    head["final_layer.linear.bias"] = { ...e, dtype: "F64", shape: [e.shape[0] / 2] };
    const hb = new TextEncoder().encode(JSON.stringify(head).padEnd(n, " "));
    assert.equal(hb.length, n);
    const f64 = new Uint8Array(bytes);
    f64.set(hb, 8);
    await Deno.writeFile(`${dir}/f64.safetensors`, f64);
    await rejects(
      convert([`${dir}/f64.safetensors`, `${dir}/o.safetensors`]),
      `"final_layer.linear.bias" is F64`,
      "F32, F16, BF16",
    );
    // A state dict of no known architecture.
    await rejects(
      convert([
        await write("x.safetensors", { "conv1.weight": sd["pos_embed"]! }),
        `${dir}/o.safetensors`,
      ]),
      `"x_embedder.proj.weight"`,
      `"conv1.weight"`,
    );
    // From the command line: exit code 2 and the message on stderr.
    const out = await new Deno.Command("deno", {
      args: [
        "run",
        "--allow-read=/tmp",
        "--allow-write=/tmp",
        "--allow-env=FLOWGPU_BACKEND",
        "tasks/convert.ts",
        odd,
        `${dir}/o.safetensors`,
      ],
      env: { FLOWGPU_BACKEND: "cpu", NO_COLOR: "1" },
    }).output();
    assert.equal(out.code, 2);
    assert.match(
      new TextDecoder().decode(out.stderr),
      /^convert: .*missing keys "final_layer.linear.bias"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

let NPROC = "--nproc_per_node";
async function hasTorch(): Promise<string> {
  try {
    const r = await new Deno.Command(PY, {
      args: ["-c", "import torch, torch.distributed as d; assert d.is_gloo_available()"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!r.success) {
      return "python3-torch is not installed (apt-get install python3-torch libopenblas0-pthread)";
    }
    const help = await new Deno.Command("/usr/bin/torchrun", {
      args: ["--help"],
      stdout: "piped",
      stderr: "null",
    }).output();
    // torch >= 2 spells it --nproc-per-node (and keeps --nproc_per_node); Debian's 1.13 only
    // knows --nproc_per_node.
    if (new TextDecoder().decode(help.stdout).includes("--nproc-per-node")) {
      NPROC = "--nproc-per-node";
    }
    return "";
  } catch (e) {
    return `${PY} or /usr/bin/torchrun cannot run (${
      (e as Error).name
    }; apt-get install python3-torch libopenblas0-pthread)`;
  }
}
const noTorch = await hasTorch();

async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await new Deno.Command(cmd, {
    args,
    env: { NO_COLOR: "1", FLOWGPU_BACKEND: "cpu", ...env },
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.ok(r.success, `${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test({
  name:
    `torchrun ${NPROC} 2 trains a flowgpu config; sample loads its checkpoint and the .pt converted${
      noTorch ? ` (SKIPPED: ${noTorch})` : ""
    }`,
  ignore: noTorch !== "",
  async fn() {
    const dir = await tmp();
    try {
      const cfg = parseTrainCfmFlags([
        "--dataset=fashion-mnist",
        "--hidden=16",
        "--depth=1",
        "--batch-size=8",
        "--max-train-steps=4",
        "--log-every=2",
        "--checkpoint-every=4",
      ])!;
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(cfg));
      const t0 = performance.now();
      // Debian's torchrun 1.13 under Python 3.11 needs --redirects/--tee set: its default "0"
      // hits an IntFlag bug (Std.NONE is skipped when iterating the flag).
      const log = await run("/usr/bin/torchrun", [
        `${NPROC}=2`,
        "--redirects=1",
        "--tee=1",
        "--monitor_interval=0.2",
        `--master_port=${freePort()}`,
        "tasks/torch/train.py",
        `--config=${dir}/config.json`,
        `--output-dir=${dir}`,
        "--exp-name=ddp",
      ]);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      console.log(`torchrun (2 CPU processes, 4 steps of dit-tiny on Fashion-MNIST): ${secs} s`);
      const runDir = `${dir}/ddp`;
      assert.match(log, /step 4\/4 loss/);
      const stored = JSON.parse(await Deno.readTextFile(`${runDir}/config.json`));
      assert.equal(stored.trainer.worldSize, 2);
      assert.equal(stored.trainer.backend, "gloo");
      const metrics = (await Deno.readTextFile(`${runDir}/metrics.jsonl`)).trim().split("\n").map((
        l,
      ) => JSON.parse(l));
      assert.deepEqual(metrics.map((m) => m.step), [2, 4]);
      assert.ok(metrics.every((m) => Number.isFinite(m["training/loss_flow"])));
      const ck = await loadCheckpoint(`${runDir}/checkpoints/last.safetensors`);
      assert.equal(ck.step, 4);
      assert.ok(ck.ema && ck.optimizer?.["exp_avg.0"]);

      const sample = (ckpt: string, out: string) =>
        run("deno", [
          "run",
          "--allow-read=.,/tmp",
          "--allow-write=/tmp",
          "--allow-env=FLOWGPU_BACKEND",
          "tasks/sample.ts",
          `--checkpoint=${ckpt}`,
          "--num-samples=4",
          "--num-steps=3",
          "--class-label=2",
          `--out=${out}`,
        ]);
      await sample(runDir, `${dir}/direct.npz`);
      // The PyTorch user's path: torch.save'd .pt → safetensors → convert → sample.
      await run(PY, [
        "tasks/torch/export.py",
        "to-safetensors",
        `${runDir}/torch/last.pt`,
        `${dir}/ema.safetensors`,
      ]);
      const r = await quiet(() =>
        convert([`${dir}/ema.safetensors`, `${dir}/converted.safetensors`])
      );
      assert.equal(r!.config.model, "dit-tiny"); // the config travelled in the .pt's args
      await sample(`${dir}/converted.safetensors`, `${dir}/converted.npz`);
      assert.deepEqual(
        await Deno.readFile(`${dir}/converted.npz`),
        await Deno.readFile(`${dir}/direct.npz`),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
