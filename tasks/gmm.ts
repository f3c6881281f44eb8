/**
 * @file `deno task gmm` — SV's toy experiments (gmm_exp.py) on a Gaussian mixture with an
 * exact field: train the AdaLN-Zero MLP on the CFM, STF or StableVM target, track the
 * Fisher divergence of the EMA model against the EXACT velocity/score on held-out samples,
 * and plot the target-variance curves (median and 15–85 % band of ‖target − exact‖²/√d).
 *
 * Reference setup: 100 modes in 10-D (means U(−1,1), variances U(.01,.1), weights
 * U(.1,1)), batch 256, reference batch 2048, Adam lr 1e-4, EMA 0.999, Fisher divergence at
 * SV's t ∈ {0.2, …, 0.5} = our t ∈ {0.5, …, 0.8}. Defaults are shortened so a run takes a
 * few minutes on a CPU adapter: 1000 steps at lr 1e-3 (1e-4 barely moves in 1000 steps);
 * SV's run is `--max-train-steps 20000 --lr 1e-4 --eval-every 500 --fisher-samples 10000
 * --variance-num-t 50 --variance-samples 10000`.
 *
 * Differences from gmm_exp.py, on purpose: `--exp stf` does not read the unassigned
 * `x_batch`, `stable_vm_efficient` runs (and equals stable_vm within 1e-5), small weights
 * are not zeroed without renormalising, and every objective gets the same gradient clipping.
 * In this unconditional toy, StableVM's bank is one FIFO of `--ref-batch-size` entries
 * refilled by each data batch (the regressed samples are drawn from it); its stable target
 * is used for t ≤ 0.5 and x1 − x0 above. STF uses a fresh reference batch (the minibatch
 * plus new samples) at every t.
 *
 *   deno task gmm --exp stable_vm --vector-field velocity
 *   deno task gmm --only-plot
 *   deno task gmm --exp cfm --enable-visualization
 * @module
 */
import {
  add,
  concat,
  createRun,
  encodeGif,
  fisherDivergence,
  type FisherPoint,
  type FlagSpec,
  GaussianMixture,
  Generator,
  linePlot,
  mean,
  MemoryBank,
  mul,
  nn,
  optim,
  parseFlags,
  Progress,
  quiverFrame,
  reshape,
  type Run,
  square,
  stableVmTarget,
  stfTarget,
  sub,
  type Tensor,
  tensor,
  tidy,
  valueAndGrad,
  varianceCurves,
  type VarianceCurvesForDim,
  type VarianceTarget,
} from "../mod.ts";
import { init } from "../mod.ts";

/** `--exp` values. */
export const GMM_EXPERIMENTS = ["cfm", "stf", "stable_vm", "stable_vm_efficient"] as const;

/** The flags (SV spellings such as `--vector_field`, `--no_plot_variance` work too). */
export const GMM_FLAGS = [
  {
    name: "exp",
    type: "choice",
    choices: GMM_EXPERIMENTS,
    default: "stable_vm",
    aliases: ["e"],
    help: "target",
  },
  {
    name: "vector-field",
    type: "choice",
    choices: ["velocity", "score"],
    default: "velocity",
    help: "field to learn",
  },
  { name: "only-plot", type: "bool", help: "only plot the variance curves (no training)" },
  {
    name: "plot-variance",
    type: "bool",
    default: true,
    help: "plot variance curves (--no-plot-variance to skip)",
  },
  {
    name: "enable-visualization",
    type: "bool",
    help: "GIF of learned vs true field (trains on the 2-D 8-mode ring)",
  },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  {
    name: "max-train-steps",
    type: "int",
    default: 1000,
    min: 1,
    help: "optimizer steps (SV: 20000)",
  },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  {
    name: "ref-batch-size",
    type: "int",
    default: 2048,
    min: 1,
    help: "STF reference batch / StableVM bank size",
  },
  {
    name: "learning-rate",
    type: "number",
    default: 1e-4,
    min: 0,
    aliases: ["lr"],
    help: "Adam learning rate",
  },
  { name: "ema-decay", type: "number", default: 0.999, min: 0, max: 1, help: "EMA decay" },
  {
    name: "max-grad-norm",
    type: "number",
    default: 1,
    min: 0,
    help: "gradient clipping (all objectives)",
  },
  { name: "dim", type: "int", default: 10, min: 1, help: "mixture dimension" },
  { name: "num-modes", type: "int", default: 100, min: 1, help: "mixture modes" },
  {
    name: "eval-every",
    type: "int",
    default: 250,
    min: 1,
    help: "steps between Fisher evaluations (SV: 500)",
  },
  {
    name: "fisher-samples",
    type: "int",
    default: 2000,
    min: 1,
    help: "held-out samples per t (SV: 10000)",
  },
  {
    name: "variance-dims",
    type: "string",
    default: "10,100,500",
    help: "comma-separated dims for the curves",
  },
  {
    name: "variance-num-t",
    type: "int",
    default: 12,
    min: 1,
    help: "time values per curve (SV: 50)",
  },
  {
    name: "variance-samples",
    type: "int",
    default: 1000,
    min: 2,
    help: "samples per time (SV: 10000)",
  },
  {
    name: "bank-size",
    type: "int",
    default: 256,
    min: 1,
    help: "per-class bank size for the StableVM curve",
  },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default gmm-<time>)" },
  { name: "use-wandb", type: "bool", help: "ignored (metrics go to metrics.jsonl)" },
  { name: "imagenet-data-path", type: "string", help: "not supported (needs image latents)" },
] as const satisfies readonly FlagSpec[];

const ABOUT = "SV's GMM toy experiments: CFM vs STF vs StableVM targets, trained and compared " +
  "with the exact mixture field (Fisher divergence), plus target-variance curves.";

/** What `main` returns. */
export interface GmmResult {
  runDir: string;
  /** Fisher divergence per evaluation step and time (empty with --only-plot). */
  fisher: { step: number; values: FisherPoint[] }[];
  /** Variance curves (empty with --no-plot-variance). */
  variance: VarianceCurvesForDim[];
  /** Files written (plots, JSON, GIF). */
  files: string[];
}

/**
 * Run the task; returns the run directory, the numbers and the files written (or `null`
 * for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./gmm.ts";
 * await main(["--help"]); // a real run: main(["--exp", "stable_vm", "--vector-field", "velocity"])
 * ```
 */
export async function main(argv: readonly string[]): Promise<GmmResult | null> {
  await init();
  let help = false;
  const f = parseFlags(argv, GMM_FLAGS, {
    task: "gmm",
    usage: ABOUT,
    onHelp: (text) => {
      console.log(text);
      help = true;
    },
  });
  if (help) return null;
  if (f.imagenetDataPath) {
    throw new RangeError(
      "--imagenet-data-path: variance curves on image latents need the image stack; only the GMM curves are available",
    );
  }
  const vdims = f.varianceDims.split(",").map((s) => {
    const v = Number(s.trim());
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(
        `Expected --variance-dims to be comma-separated integers >= 1 but found "${f.varianceDims}"`,
      );
    }
    return v;
  });
  const kind = f.vectorField;
  const run = await createRun("gmm", {
    outputDir: f.outputDir,
    expName: f.expName,
    config: { ...f, _: undefined },
  });
  const files: string[] = [];
  const tag = `${f.exp}_${kind}`;
  const result: GmmResult = { runDir: run.dir, fisher: [], variance: [], files };

  if (f.plotVariance || f.onlyPlot) {
    const targets: VarianceTarget[] = f.exp === "stf" ? ["cfm", "stf"] : ["cfm", "stablevm"];
    console.error(`gmm: variance curves (dims ${vdims.join(", ")}, ${f.varianceNumT} t values)…`);
    result.variance = await varianceCurves({
      dims: vdims,
      numT: f.varianceNumT,
      n: f.varianceSamples,
      targets,
      bankSize: f.bankSize,
      refSize: f.refBatchSize,
      numModes: f.numModes,
      seed: f.seed,
      kind,
    });
    files.push(
      await run.writeFile(
        `plots/data/variance_${kind}.json`,
        JSON.stringify(
          { vectorField: kind, metric: "|target - exact|^2 / sqrt(d)", curves: result.variance },
          null,
          1,
        ),
      ),
    );
    for (const c of result.variance) {
      const series = targets.map((name) => ({
        name,
        x: c.t,
        y: c.curves[name]!.median,
        lo: c.curves[name]!.q15,
        hi: c.curves[name]!.q85,
      }));
      files.push(
        await run.writeFile(
          `plots/variance_${kind}_d${c.dim}.png`,
          await linePlot(series, {
            title: `target error, d = ${c.dim}`,
            xlabel: "t (0 = noise, 1 = data)",
            ylabel: "|target - exact|^2 / sqrt(d)",
            logY: true,
          }),
        ),
      );
    }
  }
  if (f.onlyPlot) return finish(run, result);

  const viz = f.enableVisualization;
  const gmm = viz
    ? GaussianMixture.ring({ numModes: 8 })
    : GaussianMixture.reference({ dim: f.dim, numModes: f.numModes, seed: f.seed });
  if (viz) {
    console.error(
      "gmm: --enable-visualization trains on the 2-D 8-mode ring so the field can be drawn",
    );
  }
  const d = gmm.dim;
  const gen = new Generator(f.seed + 1);
  const model = new nn.AdaLNMLP({ dim: d, hidden: 32, blocks: 4, dropout: 0.1, seed: f.seed + 2 });
  model.train();
  const params = model.parameters();
  const opt = new optim.Adam({ lr: f.learningRate });
  const ema = new optim.EMA(model, { decay: f.emaDecay });
  const efficient = f.exp === "stable_vm_efficient";
  const bank = f.exp.startsWith("stable_vm")
    ? new MemoryBank({ numClasses: 1, capacityPerClass: f.refBatchSize, globalCapacity: 1, dim: d })
    : null;
  const B = f.batchSize, tEps = 1e-4;

  const lossOf = () => {
    const data = gmm.sampleHost(B, gen);
    let x1: Tensor;
    const zeros = new Int32Array(B);
    if (bank) {
      bank.add(data.x, zeros); // the data batch refills the bank; samples come from it
      x1 = bank.sample(zeros, gen);
    } else x1 = tensor(data.x, [B, d]);
    const t = gen.uniform([B], tEps, 1 - tEps);
    const tc = reshape(t, [B, 1]);
    const x0 = gen.normal([B, d]);
    const xt = add(mul(x0, sub(1, tc)), mul(x1, tc));
    let target: Tensor;
    if (f.exp === "cfm") target = kind === "velocity" ? sub(x1, x0) : mul(x0, -1).div(sub(1, tc));
    else if (f.exp === "stf") {
      const extra = gmm.sample(Math.max(1, f.refBatchSize - B), gen).x;
      target = stfTarget(xt, t, concat([x1, extra], 0), kind);
    } else target = stableVmTarget(bank!, zeros, { x: x1, eps: x0, xt, t }, { efficient, kind });
    const err = square(sub(model.forward(xt, t), target));
    // The score target −x0/(1−t) has variance 1/(1−t)²: weight by (1−t)² (ε-prediction
    // weighting) so the loss stays bounded; the velocity loss is unweighted (SV).
    return kind === "score" ? mean(mul(err, square(sub(1, tc)))) : mean(err);
  };
  const vg = valueAndGrad((_p: Tensor[]) => lossOf());
  const field = (x: Tensor, t: Tensor) => model.forward(x, t);
  const evaluate = async (step: number) => {
    model.eval();
    ema.swapInto(model);
    const values = await fisherDivergence(field, gmm, {
      generator: new Generator(f.seed + 777),
      n: f.fisherSamples,
      kind,
    });
    ema.swapInto(model);
    model.train();
    result.fisher.push({ step, values });
    await run.logMetrics(
      step,
      Object.fromEntries(values.map((p) => [`eval/fisher_t${p.t}`, p.value])),
    );
    return values;
  };

  const progress = new Progress(f.maxTrainSteps, { label: `gmm ${tag}` });
  let acc: Tensor | null = null, accN = 0;
  for (let step = 1; step <= f.maxTrainSteps; step++) {
    const [loss, grads] = vg(params);
    const clipped = optim.clipGradNorm(grads, f.maxGradNorm);
    grads.forEach((g) => g.dispose());
    opt.step(params, clipped.grads);
    clipped.grads.forEach((g) => g.dispose());
    clipped.norm.dispose();
    ema.update(model);
    const next: Tensor = acc === null ? loss.add(0) : acc.add(loss);
    acc?.dispose();
    acc = next;
    loss.dispose();
    accN++;
    if (step % 50 === 0 || step === f.maxTrainSteps) {
      const l = (await next.item()) / accN;
      next.dispose();
      acc = null;
      accN = 0;
      await run.logMetrics(step, { "training/loss": l });
      progress.update(step, { loss: l });
    }
    if (step % f.evalEvery === 0 || step === f.maxTrainSteps) await evaluate(step);
  }
  progress.done();

  const times = result.fisher[0]?.values.map((p) => p.t) ?? [];
  const steps = result.fisher.map((e) => e.step);
  files.push(
    await run.writeFile(
      `plots/data/fisher_${tag}.json`,
      JSON.stringify(
        {
          exp: f.exp,
          vectorField: kind,
          times,
          steps,
          values: Object.fromEntries(
            times.map((t, i) => [String(t), result.fisher.map((e) => e.values[i]!.value)]),
          ),
        },
        null,
        1,
      ),
    ),
  );
  files.push(
    await run.writeFile(
      `plots/fisher_${tag}.png`,
      await linePlot(
        times.map((t, i) => ({
          name: `t=${t}`,
          x: steps,
          y: result.fisher.map((e) => e.values[i]!.value),
        })),
        { title: `Fisher divergence (${f.exp}, ${kind})`, xlabel: "step", logY: true },
      ),
    ),
  );
  await run.checkpoints.save(f.maxTrainSteps, {
    model: model.stateDict(),
    config: run.config,
  });

  if (viz) {
    model.eval();
    ema.swapInto(model);
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
        return [
          model.forward(x, tt),
          kind === "velocity" ? gmm.velocity(x, t) : gmm.score(x, t),
        ];
      });
      frames.push(quiverFrame([
        { points: pts, vectors: await exact.data(), name: "true" },
        { points: pts, vectors: await learned.data(), name: "learned" },
      ], { range: r, title: `${kind}, t = ${t.toFixed(2)}` }));
      learned.dispose();
      exact.dispose();
    }
    ema.swapInto(model);
    files.push(await run.writeFile(`plots/field_${tag}.gif`, encodeGif(frames, { delayMs: 200 })));
  }
  model.dispose();
  opt.dispose();
  ema.dispose();
  const last = result.fisher[result.fisher.length - 1];
  if (last) {
    console.log(
      `fisher divergence (${f.exp}, ${kind}, EMA model vs exact field) at step ${last.step}: ` +
        last.values.map((p) => `t=${p.t}: ${p.value.toFixed(4)}`).join(", "),
    );
  }
  return finish(run, result);
}

function finish(run: Run, result: GmmResult): GmmResult {
  console.log(`run:   ${run.dir}`);
  for (const p of result.files) console.log(`wrote: ${p}`);
  return result;
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`gmm: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
