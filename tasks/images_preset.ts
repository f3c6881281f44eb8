/**
 * @file `deno task images:preset` — `deno task train:images` at its defaults over seeds, one
 * row a run, against issue 14's bar for the preset (done within 30 minutes end to end on the
 * 2-core CPU, ≥ 80% class agreement): `train:images --model M --seed N` for the DiT preset
 * (`dit-tiny`, the default network) and the MLP preset (`velocity-mlp`), and
 * `train:images --latents AE --seed N` (`latents`: the MLP preset on the codes of the
 * `train:autoencoder` run `--autoencoder`, which is trained at its defaults into
 * `<output-dir>/autoencoder` first when not given; its time is not in the rows). Each row records the
 * end-to-end wall time, FD and class agreement, the commit and the command; rows accumulate in
 * `<output-dir>/results.jsonl` (seeded from the committed JSON beside `--out`), and the markdown
 * and JSON are rewritten after every run. An interrupted run resumes from its last checkpoint
 * (its row is marked: its wall time covers the last part only). `--render-only` rewrites the
 * files from the rows.
 *
 *   deno task images:preset                          # every preset, seeds 0, 1, 2 (~1.5 h)
 *   deno task images:preset --models dit-tiny --seeds 0
 *   deno task images:preset --max-train-steps 20 --eval-samples 40 --out /tmp/p/t.md \
 *     --output-dir /tmp/p/runs                       # a quick look (not the preset's budget)
 * @module
 */
import {
  type FlagSpec,
  gitCommit,
  parseList,
  parseSeeds,
  parseTaskFlags,
  resumableRun,
  runTask,
  TableRows,
} from "../cli/mod.ts";
import { dirname } from "../lib/formats/fs.ts";
import { getBackend } from "../mod.ts";
import { main as imagesMain, presetFor, TRAIN_IMAGES_FLAGS } from "./train_images.ts";
import { main as aeMain } from "./train_autoencoder.ts";
import {
  PRESET_MODELS,
  type PresetRow,
  renderPresetMarkdown,
} from "../cli/tables/images_preset.ts";

/**
 * The flags. `--max-train-steps`, `--eval-samples` and `--eval-steps` override the preset for
 * a quick look; rows made so are a different setting and never replace the preset's.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { IMAGES_PRESET_FLAGS } from "./images_preset.ts";
 * assert.equal(
 *   IMAGES_PRESET_FLAGS.find((f) => f.name === "models")?.default,
 *   "dit-tiny,velocity-mlp,latents",
 * );
 * ```
 */
export const IMAGES_PRESET_FLAGS = [
  {
    name: "models",
    type: "string",
    default: "dit-tiny,velocity-mlp,latents",
    help: "presets to run: dit-tiny (the default network), velocity-mlp, latents",
  },
  {
    name: "autoencoder",
    type: "string",
    help: "the train:autoencoder run of `latents` (default: trained into <output-dir>/autoencoder)",
  },
  { name: "seeds", type: "string", default: "0,1,2", help: "training seeds" },
  { name: "max-train-steps", type: "int", min: 1, help: "override the preset's steps" },
  { name: "eval-samples", type: "int", min: 10, help: "override the preset's scored samples" },
  { name: "eval-steps", type: "int", min: 1, help: "override the preset's midpoint steps" },
  { name: "output-dir", type: "string", default: "runs/images-preset", help: "where runs go" },
  { name: "out", type: "string", default: "docs/images_preset.md", help: "the markdown table" },
  { name: "render-only", type: "bool", help: "re-render --out from the rows, no training" },
] as const satisfies readonly FlagSpec[];

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

/**
 * Train the `latents` preset's own autoencoder into `dir` (`<output-dir>/autoencoder`) at
 * `train:autoencoder`'s defaults, unless its eval.json says it finished; an interrupted one
 * resumes. Called only when a row still needs it, so a table with every row does not retrain it.
 */
async function ensureAutoencoder(dir: string, outputDir: string): Promise<void> {
  if (await exists(`${dir}/eval.json`)) return;
  const resume = await exists(`${dir}/checkpoints/last.safetensors`);
  await aeMain(
    resume ? ["--resume", dir] : ["--output-dir", outputDir, "--exp-name", "autoencoder"],
  );
}

const flagValue = (preset: readonly string[], name: string) =>
  Number(preset[preset.indexOf(name) + 1]);

/**
 * Run the table; returns every row now in it (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./images_preset.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<PresetRow[] | null> {
  const f = parseTaskFlags(argv, IMAGES_PRESET_FLAGS, {
    task: "images:preset",
    usage: "deno task train:images at its defaults over seeds, against issue 14's bar.",
  });
  if (!f) return null;
  const models = parseList("--models", f.models, PRESET_MODELS);
  const seeds = parseSeeds("--seeds", f.seeds);
  if (f.autoencoder !== undefined && !models.includes("latents")) {
    throw new RangeError(
      `--autoencoder serves the latents preset, but --models is ${f.models}: add latents`,
    );
  }
  const mdDir = dirname(f.out);
  const table = await TableRows.open<PresetRow>({
    table: "images-preset",
    outputDir: f.outputDir,
    out: f.out,
    render: (rows) => renderPresetMarkdown(rows, mdDir),
    indent: 2,
  });
  if (f.renderOnly) return await table.rewrite();
  const commit = await gitCommit();
  for (const model of models) {
    const ae = model === "latents" ? f.autoencoder ?? `${f.outputDir}/autoencoder` : undefined;
    const which = ae ? ["--latents", ae] : ["--model", model];
    const preset = presetFor(which);
    const steps = f.maxTrainSteps ?? flagValue(preset.train, "--max-train-steps");
    const evalSamples = f.evalSamples ?? preset.eval.evalSamples;
    const evalSteps = f.evalSteps ?? preset.eval.evalSteps;
    const same = (r: PresetRow, seed: number) =>
      r.model === model && r.seed === seed && r.steps === steps && r.autoencoder === ae &&
      r.evalSamples === evalSamples && r.evalSteps === evalSteps;
    for (const seed of seeds) {
      if ((await table.rows()).some((r) => same(r, seed))) continue;
      if (ae && f.autoencoder === undefined) await ensureAutoencoder(ae, f.outputDir);
      const name = `${model}-s${seed}-${steps}`;
      const dir = `${f.outputDir}/${name}`;
      const overrides = [
        ...(f.maxTrainSteps ? ["--max-train-steps", String(steps)] : []),
        ...(f.evalSamples ? ["--eval-samples", String(evalSamples)] : []),
        ...(f.evalSteps ? ["--eval-steps", String(evalSteps)] : []),
      ];
      const args = [
        ...[...which, "--seed", String(seed), ...overrides],
        ...["--output-dir", f.outputDir, "--exp-name", name],
      ];
      const resume = await resumableRun(dir);
      const r = (await imagesMain(
        resume ? [...which, "--resume", dir, ...overrides] : args,
      ))!;
      let grid: string | undefined;
      if (seed === 0) {
        grid = `${mdDir}/img/images_preset_${model}_seed0.png`;
        await Deno.mkdir(`${mdDir}/img`, { recursive: true });
        // train:images's grid is already upscaled with its rows named by class.
        await Deno.copyFile(r.grid, grid);
      }
      const cfgScale = TRAIN_IMAGES_FLAGS.find((x) => x.name === "cfg-scale")!.default;
      await table.put({
        model,
        ...(ae ? { autoencoder: ae } : {}),
        seed,
        steps,
        evalSamples,
        evalSteps,
        cfgScale: Number(cfgScale),
        fd: r.fd,
        fdRealTrainTest: r.fdRealTrainTest,
        classAcc: r.classAcc,
        classAccPerClass: r.classAccPerClass,
        seconds: r.seconds,
        resumed: resume,
        backend: getBackend().name,
        ...(grid ? { grid } : {}),
        command: `deno task train:images ${args.slice(0, -4).join(" ")}`,
        commit,
      }, (x) => same(x, seed));
    }
  }
  return await table.rows();
}

if (import.meta.main) await runTask("images:preset", main);
