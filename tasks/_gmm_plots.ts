/**
 * @file The figures of `deno task gmm`: target-variance curves (JSON + one PNG per
 * dimension), the Fisher divergence over training (JSON + PNG), and the GIF of the learned
 * against the exact field on the 2-D ring. Apart from the task so it stays short.
 * @module
 */
import {
  exactField,
  type FieldKind,
  type FisherPoint,
  type GaussianMixture,
  type Run,
  type Tensor,
  tensor,
  tidy,
  type VarianceCurvesForDim,
  type VarianceTarget,
} from "../mod.ts";
import { encodeGif, linePlot, quiverFrame } from "../viz/mod.ts";

/** Fisher divergence values at one evaluation step. */
export interface FisherAtStep {
  /** Training step. */
  step: number;
  /** One value per evaluation time. */
  values: FisherPoint[];
}

/**
 * The Fisher evaluations logged in metrics.jsonl (`eval/fisher_t<t>` keys of the records
 * with `eval/fisher_divergence`), in step order, times ascending.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fisherFromMetrics } from "./_gmm_plots.ts";
 * const recs = [
 *   { step: 2, "training/loss_flow": 1 },
 *   { step: 2, "eval/fisher_divergence": 0.3, "eval/fisher_t0.6": 0.4, "eval/fisher_t0.5": 0.2 },
 * ];
 * assert.deepEqual(fisherFromMetrics(recs), [
 *   { step: 2, values: [{ t: 0.5, value: 0.2 }, { t: 0.6, value: 0.4 }] },
 * ]);
 * ```
 */
export function fisherFromMetrics(records: readonly Record<string, unknown>[]): FisherAtStep[] {
  return records.filter((r) => typeof r["eval/fisher_divergence"] === "number").map((r) => ({
    step: r.step as number,
    values: Object.entries(r)
      .filter(([k]) => /^eval\/fisher_t[0-9.]+$/.test(k))
      .map(([k, v]) => ({ t: Number(k.slice("eval/fisher_t".length)), value: v as number }))
      .sort((a, b) => a.t - b.t),
  }));
}

/**
 * Write `plots/data/variance_<kind>.json` and `plots/variance_<kind>_d<dim>.png`; returns the
 * paths.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun } from "../mod.ts";
 * import { writeVarianceFigures } from "./_gmm_plots.ts";
 * const dir = await Deno.makeTempDir();
 * const run = await createRun("gmm", { outputDir: dir });
 * const curve = { mean: [1, 0.5], median: [1, 0.5], q15: [0.8, 0.4], q85: [1.2, 0.6] };
 * const files = await writeVarianceFigures(run, [{ dim: 3, t: [0.1, 0.5], curves: { cfm: curve } }], ["cfm"], "velocity");
 * assert.deepEqual(files.map((f) => f.slice(run.dir.length)), ["/plots/data/variance_velocity.json", "/plots/variance_velocity_d3.png"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeVarianceFigures(
  run: Run,
  curves: VarianceCurvesForDim[],
  targets: VarianceTarget[],
  kind: string,
): Promise<string[]> {
  const files = [
    await run.writeFile(
      `plots/data/variance_${kind}.json`,
      JSON.stringify(
        {
          vectorField: kind,
          metric: "|target - exact|^2 / sqrt(d); cfm-stf: |cfm target - stf target|^2 / sqrt(d)",
          curves,
        },
        null,
        1,
      ),
    ),
  ];
  for (const c of curves) {
    // Ours: the median against the exact field; SV's "cfm-stf" curve: the mean, as it plots.
    const series = targets.map((name) => ({
      name: name === "cfm-stf" ? "cfm-stf (SV, mean)" : `${name} (median vs exact)`,
      x: c.t,
      y: name === "cfm-stf" ? c.curves[name]!.mean : c.curves[name]!.median,
      lo: c.curves[name]!.q15,
      hi: c.curves[name]!.q85,
    }));
    const png = await linePlot(series, {
      title: `target error, d = ${c.dim}`,
      xlabel: "t (0 = noise, 1 = data)",
      ylabel: "squared error / sqrt(d)",
      logY: true,
    });
    files.push(await run.writeFile(`plots/variance_${kind}_d${c.dim}.png`, png));
  }
  return files;
}

/**
 * Write `plots/data/fisher_<tag>.json` and `plots/fisher_<tag>.png`; returns the paths.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun } from "../mod.ts";
 * import { writeFisherFigures } from "./_gmm_plots.ts";
 * const dir = await Deno.makeTempDir();
 * const run = await createRun("gmm", { outputDir: dir });
 * const fisher = [{ step: 2, values: [{ t: 0.5, value: 1 }] }, { step: 4, values: [{ t: 0.5, value: 0.5 }] }];
 * const [json] = await writeFisherFigures(run, fisher, { exp: "cfm", vectorField: "velocity" });
 * assert.deepEqual(JSON.parse(await Deno.readTextFile(json!)).values, { "0.5": [1, 0.5] });
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeFisherFigures(
  run: Run,
  fisher: FisherAtStep[],
  meta: { exp: string; vectorField: string },
): Promise<string[]> {
  const tag = `${meta.exp}_${meta.vectorField}`;
  const times = fisher[0]?.values.map((p) => p.t) ?? [];
  const steps = fisher.map((e) => e.step);
  const perT = (i: number) => fisher.map((e) => e.values[i]!.value);
  const json = {
    ...meta,
    times,
    steps,
    values: Object.fromEntries(times.map((t, i) => [String(t), perT(i)])),
  };
  const png = await linePlot(times.map((t, i) => ({ name: `t=${t}`, x: steps, y: perT(i) })), {
    title: `Fisher divergence (${meta.exp}, ${meta.vectorField})`,
    xlabel: "step",
    logY: true,
  });
  return [
    await run.writeFile(`plots/data/fisher_${tag}.json`, JSON.stringify(json, null, 1)),
    await run.writeFile(`plots/fisher_${tag}.png`, png),
  ];
}

/**
 * A GIF of `field` (the learned one) against the mixture's exact velocity or score on a
 * 13 × 13 grid over [−3, 3]², at t = 0.05 … 0.95.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GaussianMixture } from "../mod.ts";
 * import { fieldGif } from "./_gmm_plots.ts";
 * const gif = await fieldGif((x) => x.mul(0), GaussianMixture.ring({ numModes: 4 }), "velocity");
 * assert.equal(new TextDecoder().decode(gif.subarray(0, 6)), "GIF89a");
 * ```
 */
export async function fieldGif(
  field: (x: Tensor, t: Tensor) => Tensor,
  gmm: GaussianMixture,
  kind: FieldKind,
): Promise<Uint8Array> {
  const g = 13, r = 3;
  const pts = new Float32Array(g * g * 2);
  for (let i = 0; i < g; i++) {
    for (let j = 0; j < g; j++) {
      pts[2 * (i * g + j)] = -r + (2 * r * j) / (g - 1);
      pts[2 * (i * g + j) + 1] = -r + (2 * r * i) / (g - 1);
    }
  }
  const frames = [];
  for (let k = 0; k < 19; k++) {
    const t = 0.05 + 0.05 * k;
    const [learned, exact] = tidy(() => {
      const x = tensor(pts, [g * g, 2]);
      const tt = tensor(new Float32Array(g * g).fill(t));
      return [field(x, tt), exactField(gmm, x, t, kind)];
    });
    frames.push(quiverFrame([
      { points: pts, vectors: await exact.data(), name: "true" },
      { points: pts, vectors: await learned.data(), name: "learned" },
    ], { range: r, title: `${kind}, t = ${t.toFixed(2)}` }));
    learned.dispose();
    exact.dispose();
  }
  return encodeGif(frames, { delayMs: 200 });
}
