/**
 * `train:classifier --resume`: a run stopped after 12 steps and resumed to 24 ends with the
 * same weights and test accuracy as one run of 24 steps (fit's resume restores weights,
 * optimizer state and every random stream; the images come from the run's config).
 */
import { strict as assert } from "node:assert";
import { main } from "../../tasks/train_classifier.ts";
import { loadCheckpoint } from "../../mod.ts";

const base = [
  "--train-limit=600",
  "--hidden=32",
  "--batch-size=32",
  "--lr-schedule=constant",
  "--log-every=6",
];

Deno.test("train:classifier --resume continues a stopped run to the same weights as one run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clf-resume-" });
  try {
    const whole = await main([
      ...base,
      "--max-train-steps=24",
      `--output-dir=${dir}`,
      "--exp-name=a",
    ]);
    await main([...base, "--max-train-steps=12", `--output-dir=${dir}`, "--exp-name=b"]);
    // The resumed run takes its data and settings from config.json, not from these flags.
    const resumed = await main([`--resume=${dir}/b`, "--max-train-steps=24"]);
    assert.equal(resumed!.steps, 24);
    assert.equal(resumed!.testAccuracy, whole!.testAccuracy);
    const wa = (await loadCheckpoint(`${dir}/a/checkpoints/last.safetensors`)).model;
    const wb = (await loadCheckpoint(`${dir}/b/checkpoints/last.safetensors`)).model;
    assert.deepEqual(Object.keys(wb).sort(), Object.keys(wa).sort());
    for (const k of Object.keys(wa)) {
      assert.deepEqual([...(await wb[k]!.data())], [...(await wa[k]!.data())], k);
    }
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/b/config.json`));
    assert.equal(cfg.train_limit, 600);
    assert.equal(cfg.max_train_steps, 24);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
