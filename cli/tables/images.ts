/**
 * @file The rows and markdown of `images:table` (apart from the task so both stay short): CFM
 * vs StableVM vs StableVM + VA-REPA on Fashion-MNIST at equal compute, scored by FD on the
 * shipped classifier's features and class agreement.
 * @module
 */
import { FASHION_MNIST_CLASSES as CLASSES } from "../../mod.ts";
import { fmtMeanStd, meanStd, separated } from "../results.ts";

/** The variants, in table order: `train:stablevm --loss-type si`, `stablevm`, `stablevm` + REPA. */
export const IMAGE_VARIANTS = ["cfm", "stablevm", "stablevm-repa"] as const;

/** A variant's name. */
export type ImageVariant = typeof IMAGE_VARIANTS[number];

const NAMES: Record<string, string> = {
  cfm: "CFM (`--loss-type si`)",
  stablevm: "StableVM",
  "stablevm-repa": "StableVM + VA-REPA",
};
const SHORT: Record<string, string> = {
  cfm: "CFM",
  stablevm: "StableVM",
  "stablevm-repa": "StableVM + VA-REPA",
};

/** What every image-model results row records of its run: scoring, scores, provenance. */
export interface ImageRunScores {
  /** Training seed. */
  seed: number;
  /** Training steps. */
  steps: number;
  /** Samples scored (and test/train images in the FD). */
  evalSamples: number;
  /** Midpoint steps of the scored samples. */
  evalSteps: number;
  /** Guidance scale of the scored samples and the grid. */
  cfgScale: number;
  /** FD of the samples against the test split (classifier features; not the Inception FID). */
  fd: number;
  /** FD of as many real training images: the floor. */
  fdRealTrainTest: number;
  /** Class agreement of the samples. */
  classAcc: number;
  /** Class agreement per class. */
  classAccPerClass: number[];
  /** Wall time of this invocation's part of the run, training and scoring (s). */
  seconds: number;
  /** Whether the run continued an interrupted one (then `seconds` is the last part only). */
  resumed: boolean;
  /** The backend the run used. */
  backend: string;
  /** The class grid copied beside the table (seed 0), when there is one. */
  grid?: string;
  /** The `deno task` command of the run. */
  command: string;
  /** The commit the run (or its last part) ran on. */
  commit: string;
}

/** One `train:stablevm` run of the table. */
export interface ImagesRow extends ImageRunScores {
  /** `cfm`, `stablevm` or `stablevm-repa`. */
  variant: string;
  /** Batch size. */
  batchSize: number;
  /** Adam learning rate. */
  learningRate: number;
  /** Steps of linear learning-rate warm-up (absent in rows that had none). */
  warmupSteps?: number;
  /** DiT width. */
  hidden: number;
  /** DiT blocks. */
  blocks: number;
  /** Mean wall time of a training step (ms; null when this session trained none). */
  stepMs: number | null;
}

/**
 * The setting a row was run at (budget, network, scoring): rows are only averaged together,
 * and compared, within one setting.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imageSetting } from "./images.ts";
 * const r = { steps: 1500, batchSize: 64, learningRate: 3e-4, hidden: 128, blocks: 4,
 *   evalSamples: 2000, evalSteps: 50, cfgScale: 3 };
 * assert.equal(imageSetting(r), "1500 steps × batch 64, lr 0.0003, DiT 128 × 4; 2000 samples, 50 midpoint steps, CFG 3");
 * ```
 */
export function imageSetting(
  r: Pick<
    ImagesRow,
    | "steps"
    | "batchSize"
    | "learningRate"
    | "warmupSteps"
    | "hidden"
    | "blocks"
    | "evalSamples"
    | "evalSteps"
    | "cfgScale"
  >,
): string {
  const warm = r.warmupSteps ? ` (${r.warmupSteps} warm-up)` : "";
  return `${r.steps} steps × batch ${r.batchSize}, lr ${r.learningRate}${warm}, DiT ${r.hidden} × ` +
    `${r.blocks}; ${r.evalSamples} samples, ${r.evalSteps} midpoint steps, CFG ${r.cfgScale}`;
}

/** Rows grouped by setting, in order of first appearance. */
function bySetting(rows: readonly ImagesRow[]): [string, ImagesRow[]][] {
  const m = new Map<string, ImagesRow[]>();
  for (const r of rows) m.set(imageSetting(r), [...(m.get(imageSetting(r)) ?? []), r]);
  return [...m];
}

const finite = (xs: (number | null)[]) => xs.filter((x): x is number => Number.isFinite(x));
const minutes = (rs: ImagesRow[]) => rs.map((r) => r.seconds / 60);

/**
 * The summary table: per setting and variant, mean ± sample std over seeds of FD, class
 * agreement, wall time and step time, with the FD floor.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imagesTable } from "./images.ts";
 * const row = (seed: number, fd: number) => ({ variant: "cfm", seed, steps: 10, batchSize: 4,
 *   learningRate: 1e-3, hidden: 16, blocks: 1, evalSamples: 20, evalSteps: 2, cfgScale: 3, fd,
 *   fdRealTrainTest: 5, classAcc: 0.5, classAccPerClass: [], seconds: 60, stepMs: 100,
 *   resumed: false, backend: "wasm", command: "", commit: "x" });
 * assert.match(imagesTable([row(0, 10), row(1, 20)]), /\| CFM \(`--loss-type si`\) \| 2 \| 15\.00 ± 7\.07 \| 5\.00 \| 0\.500 ± 0\.000 \| 1\.0 ± 0\.0 \| 100 ± 0 \|/);
 * assert.match(imagesTable([]), /no rows yet/);
 * ```
 */
export function imagesTable(rows: readonly ImagesRow[]): string {
  if (!rows.length) {
    return "The table has no rows yet: `deno task images:table` makes them (CFM, StableVM and " +
      "StableVM + VA-REPA × seeds 0, 1, 2; rows accumulate in `docs/images_table.json`).";
  }
  const out: string[] = [];
  for (const [setting, rs] of bySetting(rows)) {
    out.push(
      `Setting: ${setting}.`,
      "",
      "| variant | seeds | FD | FD floor (real train vs test) | class agreement | wall time (min) | ms/step |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    );
    for (const v of IMAGE_VARIANTS) {
      const vs = rs.filter((r) => r.variant === v);
      if (!vs.length) continue;
      out.push(
        `| ${NAMES[v]} | ${vs.length} | ${fmtMeanStd(vs.map((r) => r.fd), 2)} | ${
          meanStd(vs.map((r) => r.fdRealTrainTest)).mean.toFixed(2)
        } | ${fmtMeanStd(vs.map((r) => r.classAcc))} | ${fmtMeanStd(minutes(vs), 1)} | ${
          fmtMeanStd(finite(vs.map((r) => r.stepMs)), 0)
        } |`,
      );
    }
    out.push("");
  }
  return out.join("\n").trim();
}

/** One comparison of two variants' seeds, in words. */
function compare(a: ImagesRow[], b: ImagesRow[], an: string, bn: string): string {
  if (a.length < 2 || b.length < 2) {
    return `${an} vs ${bn}: fewer than 2 seeds on a side, no difference called.`;
  }
  const say = (
    what: string,
    xa: number[],
    xb: number[],
    digits: number,
    better: "lower" | "higher",
  ) => {
    const vals = `${fmtMeanStd(xa, digits)} vs ${fmtMeanStd(xb, digits)}`;
    if (!separated(xa, xb)) return `${what} not separated by the seed spread (${vals})`;
    const lower = meanStd(xa).mean < meanStd(xb).mean;
    const dir = lower ? "lower" : "higher";
    return `${what} ${dir} beyond the seed spread (${vals}; ${
      dir === better ? "better" : "worse"
    })`;
  };
  return `${an} vs ${bn}: ${say("FD", a.map((r) => r.fd), b.map((r) => r.fd), 2, "lower")}; ${
    say("class agreement", a.map((r) => r.classAcc), b.map((r) => r.classAcc), 3, "higher")
  }.`;
}

/**
 * The verdict under the table: each pair of variants compared on FD and class agreement,
 * claiming a difference only where the means are further apart than the two standard
 * deviations added (`separated`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imagesVerdict } from "./images.ts";
 * const row = (variant: string, seed: number, fd: number) => ({ variant, seed, steps: 10,
 *   batchSize: 4, learningRate: 1e-3, hidden: 16, blocks: 1, evalSamples: 20, evalSteps: 2,
 *   cfgScale: 3, fd, fdRealTrainTest: 5, classAcc: 0.5 + seed / 100, classAccPerClass: [],
 *   seconds: 60, stepMs: 100, resumed: false, backend: "wasm", command: "", commit: "x" });
 * const v = imagesVerdict([0, 1, 2].flatMap((s) => [row("cfm", s, 50 + s), row("stablevm", s, 40 + s)]));
 * assert.match(v, /StableVM vs CFM: FD lower beyond the seed spread \(41\.00 ± 1\.00 vs 51\.00 ± 1\.00; better\); class agreement not separated/);
 * assert.doesNotMatch(v, /^At /); // one setting: no need to name it
 * // Rows of a second setting (more steps) are compared among themselves, each verdict named.
 * const more = [0, 1].map((s) => ({ ...row("cfm", s, 30 + s), steps: 20 }));
 * const w = imagesVerdict([...more, ...[0, 1].map((s) => ({ ...row("stablevm", s, 31 + s), steps: 20 }))]
 *   .concat([0, 1, 2].flatMap((s) => [row("cfm", s, 50 + s), row("stablevm", s, 40 + s)])));
 * assert.match(w, /^At 20 steps × batch 4, .*: StableVM vs CFM: FD not separated/);
 * assert.match(w, /\n\nAt 10 steps × batch 4, .*: StableVM vs CFM: FD lower/);
 * ```
 */
export function imagesVerdict(rows: readonly ImagesRow[]): string {
  const out: string[] = [];
  const settings = bySetting(rows);
  for (const [setting, rs] of settings) {
    const of = (v: string) => rs.filter((r) => r.variant === v);
    const said: string[] = [];
    for (
      const [a, b] of [["stablevm", "cfm"], ["stablevm-repa", "cfm"], ["stablevm-repa", "stablevm"]]
    ) {
      if (of(a!).length && of(b!).length) {
        said.push(compare(of(a!), of(b!), SHORT[a!]!, SHORT[b!]!));
      }
    }
    // With several settings in the table, each verdict names its own.
    if (said.length) {
      out.push(settings.length > 1 ? `At ${setting}: ${said.join(" ")}` : said.join(" "));
    }
  }
  return out.join("\n\n");
}

/** A path as seen from directory `dir` (stripped of it when it lies inside). */
function from(dir: string, path: string): string {
  return dir && path.startsWith(`${dir}/`) ? path.slice(dir.length + 1) : path;
}

/**
 * The class grids of seed 0 (one row per class, T-shirt/top … ankle boot), linked from `dir`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imagesGrids } from "./images.ts";
 * const r = { variant: "stablevm", seed: 0, grid: "docs/img/g.png" };
 * // deno-lint-ignore no-explicit-any
 * assert.match(imagesGrids([r as any], "docs"), /\(img\/g\.png\)/);
 * ```
 */
export function imagesGrids(rows: readonly ImagesRow[], dir = ""): string {
  const out: string[] = [];
  for (const v of IMAGE_VARIANTS) {
    const r = rows.filter((x) => x.variant === v && x.seed === 0 && x.grid).at(-1);
    if (r) {
      out.push(
        `${SHORT[v]}, seed 0:`,
        "",
        `![${SHORT[v]} class grid, seed 0](${from(dir, r.grid!)})`,
        "",
      );
    }
  }
  return out.join("\n").trim();
}

/**
 * The markdown page of the table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderImagesMarkdown } from "./images.ts";
 * assert.match(renderImagesMarkdown([]), /^# CFM vs StableVM vs StableVM \+ VA-REPA/);
 * assert.match(renderImagesMarkdown([]), /no rows yet/);
 * ```
 */
export function renderImagesMarkdown(rows: readonly ImagesRow[], dir = "docs"): string {
  const commits = [...new Set(rows.map((r) => r.commit))].join(", ") || "–";
  const backends = [...new Set(rows.map((r) => r.backend))].join(", ") || "–";
  const L = [
    "# CFM vs StableVM vs StableVM + VA-REPA on Fashion-MNIST at equal compute",
    "",
    "Produced by `deno task images:table` (tasks/images_table.ts); rows from commit(s) " +
    `${commits}, backend(s) ${backends}. Each run is \`deno task train:stablevm --data-dir ` +
    "fashion-mnist --model dit-tiny` (the DiT at patch 4, 10% label drop, EMA 0.999) with the " +
    "same network, batch, steps, learning rate and data for every variant: plain CFM " +
    "(`--loss-type si`, SV's SILoss), StableVM (`--loss-type stablevm --prefill-bank-fully`, " +
    "256 bank entries per class), and StableVM + VA-REPA (seed 002's `--use-proj-loss " +
    "--proj-weight-schedule sigmoid --proj-tau 0.7 --proj-k 20`, the shipped classifier's " +
    "features as the encoder). After training, the EMA weights draw the scored samples with " +
    "balanced labels, classifier-free guidance and the midpoint sampler. FD is the Fréchet " +
    "distance between Gaussian fits of the shipped classifier's penultimate features " +
    "(`assets/classifier_fmnist.safetensors`) of the samples and of as many test images — " +
    "**not the Inception FID, not comparable to published FIDs** — beside the same FD for " +
    "real training images (the floor); class agreement is the fraction the classifier assigns " +
    "to the class a sample was drawn for. Mean ± sample std over seeds; a difference is called " +
    "only when the means are further apart than the two standard deviations added. Wall time " +
    "is training and scoring of one run; a resumed run's (†) covers its last session only.",
    "",
    imagesTable(rows),
    "",
  ];
  if (rows.length) {
    const verdict = imagesVerdict(rows);
    if (verdict) L.push(verdict, "");
    L.push("## Class agreement per class (mean over seeds)", "");
    for (const [setting, rs] of bySetting(rows)) {
      L.push(
        `Setting: ${setting}.`,
        "",
        `| variant | ${CLASSES.join(" | ")} |`,
        `| --- | ${CLASSES.map(() => "---:").join(" | ")} |`,
      );
      for (const v of IMAGE_VARIANTS) {
        const vs = rs.filter((r) => r.variant === v);
        if (!vs.length) continue;
        L.push(
          `| ${SHORT[v]} | ${
            CLASSES.map((_, k) =>
              meanStd(finite(vs.map((r) => r.classAccPerClass[k] ?? NaN))).mean.toFixed(3)
            ).join(" | ")
          } |`,
        );
      }
      L.push("");
    }
    const grids = imagesGrids(rows, dir);
    if (grids) L.push("## Class grids (rows: T-shirt/top … ankle boot)", "", grids, "");
    L.push(
      "## Per run",
      "",
      "| variant | seed | steps | FD | FD floor | class agreement | wall time (s) | ms/step | commit | command |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    );
    const order = (v: string) => IMAGE_VARIANTS.indexOf(v as ImageVariant);
    for (
      const r of [...rows].sort((a, b) => order(a.variant) - order(b.variant) || a.seed - b.seed)
    ) {
      L.push(
        `| ${SHORT[r.variant] ?? r.variant} | ${r.seed} | ${r.steps} | ${r.fd.toFixed(2)} | ${
          r.fdRealTrainTest.toFixed(2)
        } | ${r.classAcc.toFixed(3)} | ${r.seconds.toFixed(0)}${r.resumed ? " †" : ""} | ${
          Number.isFinite(r.stepMs) ? r.stepMs!.toFixed(0) : "n/a"
        } | ${r.commit} | \`${r.command}\` |`,
      );
    }
    L.push("");
  }
  return L.join("\n");
}
