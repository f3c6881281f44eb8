/**
 * @file Finding 6 of issue 15 (sizes): `--hidden 1000000000` reached 12–23 GB RSS and
 * `--batch-size 1000000000` / a huge reference batch hung. Tasks now compare a step's memory
 * estimate with the backend's limits before allocating and say which values fit.
 */
import { strict as assert } from "node:assert";
import { checkCfmModelFits, checkStepFits, mlpStepSize, sizeLimits, stepBytes } from "../../mod.ts";
import { main as cfmMain } from "../../tasks/train_cfm.ts";
import { main as gmmMain } from "../../tasks/gmm.ts";

const MLP = { model: "velocity-mlp" as const, depth: 3, dataShape: [2], numClasses: 0 };
const base = { ...MLP, cfgDropout: 0, seed: 0 };

Deno.test("size check: the suggested --hidden/--batch-size fit the limits and one more does not", () => {
  // A WebGPU-like device: 128 MiB per storage binding, 1 GiB in all.
  const limits = { maxBufferBytes: 2 ** 27, maxTotalBytes: 2 ** 30, source: "test device" };
  const size = (k: Record<string, number>) =>
    mlpStepSize({ hidden: k["--hidden"]!, depth: 3, width: 2, batch: k["--batch-size"]! });
  const fits = (h: number, b: number) => {
    const [one, all] = stepBytes(size({ "--hidden": h, "--batch-size": b }));
    return one <= limits.maxBufferBytes && all <= limits.maxTotalBytes;
  };
  let msg = "";
  try {
    checkStepFits(size, { "--hidden": 100_000, "--batch-size": 256 }, limits);
  } catch (e) {
    assert.ok(e instanceof RangeError);
    msg = e.message;
  }
  assert.match(
    msg,
    /^--hidden 100000 with --batch-size 256 needs about 3.28 TiB for a training step \(largest tensor 112 GiB\)/,
  );
  assert.match(msg, /allows 128 MiB per tensor and 1.00 GiB in all \(test device\)/);
  const h = Number(/--hidden <= (\d+) fits/.exec(msg)![1]);
  assert.ok(fits(h, 256) && !fits(h + 1, 256), `hint --hidden <= ${h}`);
  assert.doesNotMatch(msg, /--batch-size <=/, "no batch size fits at --hidden 100000");

  msg = "";
  try {
    checkStepFits(size, { "--hidden": 128, "--batch-size": 1e9 }, limits);
  } catch (e) {
    msg = (e as Error).message;
  }
  const b = Number(/--batch-size <= (\d+) fits/.exec(msg)![1]);
  assert.ok(fits(128, b) && !fits(128, b + 1), `hint --batch-size <= ${b}`);
  checkStepFits(size, { "--hidden": 128, "--batch-size": 256 }, limits); // the defaults fit
});

Deno.test("size check: the backend's limits, and a DiT checked by tokens and heads", () => {
  const l = sizeLimits();
  assert.ok(l.maxBufferBytes >= 2 ** 27 && l.maxTotalBytes >= l.maxBufferBytes, l.source);
  const dit = { ...base, model: "dit-tiny" as const, dataShape: [1, 28, 28], hidden: 64, depth: 4 };
  checkCfmModelFits(dit, 64);
  assert.throws(() => checkCfmModelFits(dit, 1e9), /--batch-size <= \d+ fits/);
  assert.throws(() => checkCfmModelFits({ ...base, hidden: 1e9 }, 256), /--hidden <= \d+ fits/);
});

Deno.test("train:cfm --hidden 1e9 / --batch-size 1e9 and gmm --ref-batch-size 1e8 are refused before allocating", async () => {
  const dir = await Deno.makeTempDir({ prefix: "limits-" });
  try {
    const t0 = performance.now();
    await assert.rejects(
      cfmMain(["--hidden", "1000000000", `--output-dir=${dir}`]),
      /^RangeError: --hidden 1000000000 with --batch-size 256 needs about .*--hidden <= \d+ fits$/,
    );
    await assert.rejects(
      cfmMain(["--batch-size", "1000000000", `--output-dir=${dir}`]),
      /--batch-size <= \d+ fits/,
    );
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), [], "no run directory left");
    await assert.rejects(
      gmmMain(["--ref-batch-size", "100000000", "--no-plot-variance", `--output-dir=${dir}`]),
      /--ref-batch-size <= \d+ fits/,
    );
    assert.ok(performance.now() - t0 < 5000, "refused before allocating");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
