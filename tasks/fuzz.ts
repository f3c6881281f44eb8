/**
 * @file `deno task fuzz` — mutation fuzzing of the file parsers (safetensors, npy, npz, PNG,
 * IDX, checkpoints) and the flag parser. Each target mutates valid seed files (bit flips,
 * byte insert/delete, truncation, header field edits with lengths and CRCs fixed up,
 * size-field extremes, decompression bombs) with a seeded generator, and checks that every
 * case is either accepted with consistent contents or refused with a typed error (a named
 * class carrying the file name), within a per-case time budget and an RSS growth cap.
 *
 * Each target runs in a worker watched by this thread: a case that runs past `--hang-ms`
 * (e.g. a synchronous infinite loop) is reported with its index, and `--case N` reruns it.
 *
 *   deno task fuzz                          # 10000 cases per target, seed 1
 *   deno task fuzz --cases 300 --target png
 *   deno task fuzz --seed 7 --target npz --case 1234   # rerun one case
 * @module
 */
import { formatUsage, parseTaskFlags } from "../cli/mod.ts";

/**
 * What a worker reports for one target (the shape of `FuzzReport` in tests/fuzz/lib.ts,
 * restated so this task's module graph stays out of tests/).
 */
export interface FuzzReport {
  /** Target name. */
  target: string;
  /** Cases run. */
  cases: number;
  /** Cases accepted with consistent contents. */
  accepted: number;
  /** Typed rejections by error class name. */
  errors: Record<string, number>;
  /** Untyped errors, broken invariants, slow cases, hangs, memory over the cap. */
  failures: { index: number; kind: string; message: string }[];
  /** Wall time in ms. */
  ms: number;
  /** Slowest case in ms. */
  maxCaseMs: number;
  /** Largest RSS growth in MiB. */
  rssGrowthMiB: number;
}

/**
 * Target names, in run order.
 *
 * @example
 * ```ts
 * import { FUZZ_TARGETS } from "./fuzz.ts";
 * if (!FUZZ_TARGETS.includes("checkpoint")) throw new Error("bad");
 * ```
 */
export const FUZZ_TARGETS = ["safetensors", "npy", "npz", "png", "idx", "checkpoint", "flags"];

const FLAGS = [
  { name: "cases", type: "int", default: 10000, min: 1, help: "Cases per target" },
  { name: "seed", type: "int", default: 1, min: 0, help: "Seed of the run" },
  {
    name: "target",
    type: "string",
    default: "all",
    help: `Comma-separated targets (${FUZZ_TARGETS.join(", ")}) or "all"`,
  },
  { name: "case", type: "int", min: 0, help: "Run only this case index (reproduce a failure)" },
  { name: "budget-ms", type: "int", default: 5000, min: 1, help: "Per-case time budget" },
  { name: "hang-ms", type: "int", default: 30000, min: 100, help: "Terminate a case after" },
  { name: "rss-cap-mib", type: "int", default: 512, min: 1, help: "RSS growth cap per target" },
  { name: "json", type: "bool", help: "Print the reports as one JSON line" },
] as const;

/** Run one target in a worker with a watchdog; a hang becomes a failure in the report. */
function runInWorker(
  target: string,
  opts: { cases: number; seed: number; from: number; budgetMs: number; rssCapMiB: number },
  hangMs: number,
): Promise<FuzzReport> {
  const worker = new Worker(new URL("../tests/fuzz/worker.ts", import.meta.url), {
    type: "module",
  });
  return new Promise((resolve, reject) => {
    let current = opts.from, last = performance.now();
    const t0 = performance.now();
    const timer = setInterval(() => {
      if (performance.now() - last < hangMs) return;
      clearInterval(timer);
      worker.terminate();
      resolve({
        target,
        cases: current - opts.from,
        accepted: 0,
        errors: {},
        failures: [{ index: current, kind: "hang", message: `no progress for ${hangMs} ms` }],
        ms: performance.now() - t0,
        maxCaseMs: hangMs,
        rssGrowthMiB: 0,
      });
    }, Math.min(1000, hangMs / 4));
    worker.onmessage = (e: MessageEvent) => {
      last = performance.now();
      if (e.data.type === "case") current = e.data.index;
      else {
        clearInterval(timer);
        worker.terminate();
        resolve(e.data.report as FuzzReport);
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      clearInterval(timer);
      worker.terminate();
      reject(new Error(`fuzz worker for ${target} crashed at case ${current}: ${e.message}`));
    };
    worker.postMessage({ target, ...opts });
  });
}

/**
 * One line per report: cases, accepted, error classes, time, RSS, then up to 10 failures.
 *
 * @example
 * ```ts
 * import { formatReport } from "./fuzz.ts";
 * const line = formatReport({
 *   target: "npy", cases: 2, accepted: 1, errors: { FileFormatError: 1 }, failures: [],
 *   ms: 5, maxCaseMs: 1, rssGrowthMiB: 0,
 * });
 * if (!line.includes("FileFormatError 1") || !line.includes("0 failures")) throw new Error(line);
 * ```
 */
export function formatReport(r: FuzzReport): string {
  const errs = Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const lines = [
    `${r.target.padEnd(11)} ${r.cases} cases in ${(r.ms / 1000).toFixed(1)} s: ` +
    `${r.accepted} accepted, rejected with ${errs}; slowest case ${r.maxCaseMs.toFixed(0)} ms, ` +
    `RSS +${r.rssGrowthMiB} MiB; ${r.failures.length} failures`,
  ];
  for (const f of r.failures.slice(0, 10)) lines.push(`  case ${f.index} ${f.kind}: ${f.message}`);
  if (r.failures.length > 10) lines.push(`  … ${r.failures.length - 10} more`);
  return lines.join("\n");
}

/**
 * Run the fuzzer; returns the reports (null after --help).
 *
 * @example
 * ```ts
 * import { main } from "./fuzz.ts";
 * // `deno task fuzz --cases 300 --target npy` runs 300 cases; --help prints the flags.
 * const out = await main(["--help"]);
 * if (out !== null) throw new Error("bad");
 * ```
 */
export async function main(argv: readonly string[]): Promise<FuzzReport[] | null> {
  const f = parseTaskFlags(argv, FLAGS, {
    task: "fuzz",
    usage: "Mutation-fuzz the file and flag parsers; exit 1 on any failure.",
  });
  if (!f) return null;
  const targets = f.target === "all" ? FUZZ_TARGETS : f.target.split(",").map((s) => s.trim());
  for (const t of targets) {
    if (!FUZZ_TARGETS.includes(t)) {
      throw new RangeError(
        `Expected --target to be "all" or among ${FUZZ_TARGETS.join(", ")} but found "${t}"`,
      );
    }
  }
  const reports: FuzzReport[] = [];
  for (const t of targets) {
    const r = await runInWorker(t, {
      cases: f.case === undefined ? f.cases : 1,
      seed: f.seed,
      from: f.case ?? 0,
      budgetMs: f.budgetMs,
      rssCapMiB: f.rssCapMib,
    }, f.hangMs);
    reports.push(r);
    if (!f.json) console.log(formatReport(r));
  }
  if (f.json) console.log(JSON.stringify(reports));
  return reports;
}

if (import.meta.main) {
  const reports = await main(Deno.args).catch((e) => {
    console.error(`fuzz: ${(e as Error).message}\n${formatUsage(FLAGS)}`);
    Deno.exit(2);
  });
  if (reports?.some((r) => r.failures.length > 0)) Deno.exit(1);
}
