/**
 * Load a 2-D `deno task train:cfm` checkpoint from a path or URL and write samples as a
 * scatter PNG:
 *
 *   deno run --allow-read=runs --allow-write=. examples/sample_checkpoint.ts \
 *     runs/train-cfm-<time>/checkpoints/last.safetensors samples.png [steps]
 *
 * For a URL checkpoint, grant that host instead: `--allow-net=example.com`.
 */
import { init, integrate, loadCheckpoint, nn, randn, tidy } from "../mod.ts";
import { scatterPlot } from "../viz/mod.ts";

await init();
const [path, out = "samples.png", stepsArg = "50"] = Deno.args;
if (!path) {
  console.error("usage: sample_checkpoint.ts <checkpoint.safetensors | URL> [out.png] [steps]");
  Deno.exit(2);
}
const ckpt = await loadCheckpoint(path);
const cfg = ckpt.config as {
  model?: string;
  dataShape?: number[];
  hidden?: number;
  depth?: number;
  numClasses?: number;
};
if (cfg.model !== "velocity-mlp" || cfg.dataShape?.length !== 1 || cfg.dataShape[0] !== 2) {
  throw new RangeError(
    `${path}: expected a 2-D velocity-mlp checkpoint from train:cfm but its config says ` +
      `model ${cfg.model}, data shape [${cfg.dataShape}]`,
  );
}
const model = new nn.VelocityMLP({
  dim: 2,
  hidden: cfg.hidden!,
  depth: cfg.depth!,
  numClasses: cfg.numClasses || undefined,
});
// EMA weights when present (they sample better), else the raw model.
model.loadStateDict({ ...ckpt.model, ...(ckpt.ema ?? {}) });
model.eval();

const { x, nfe } = await integrate(
  (x, t) => tidy(() => model.forward(x, t)),
  randn([4000, 2], { seed: 0 }),
  { method: "euler", steps: Number(stepsArg) },
);
const png = await scatterPlot(await x.data(), { title: `step ${ckpt.step}, euler ${nfe}` });
await Deno.writeFile(out, png);
console.log(`wrote ${out} (${nfe} velocity evaluations, checkpoint step ${ckpt.step})`);
