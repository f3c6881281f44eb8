/**
 * @file Progress reporting for long loops: one updating bar on a TTY
 * (`label 1234/5000 [=====>   ] loss 0.1234  85.2 it/s  ETA 00:44`), plain periodic
 * lines otherwise (`label step 1000/5000 loss 0.1234 85.2 it/s eta 44s`): every 10% of the
 * work and at least every `intervalMs` (10 s), so a slow run still reports. `start()` prints
 * the first line at once (before a first step that compiles pipelines), and a resumed run
 * counts rates and ETA from the step it resumed at. {@linkcode startPhase} reports one-shot
 * work (loading a dataset) by a start and an end line. Writes to stderr, which needs no
 * permission.
 * @module
 */
import { checkInt } from "../_util.ts";

/** Options of {@linkcode Progress}. */
export interface ProgressOptions {
  /** Prefix of every line (e.g. the task name). */
  label?: string;
  /** In plain mode, print every `every` steps (default: every 10% of `total`). */
  every?: number;
  /** Force TTY (`true`) or plain (`false`) mode; default: `Deno.stderr.isTerminal()`. */
  tty?: boolean;
  /** Output sink (default: stderr). */
  write?: (s: string) => void;
  /** Clock in milliseconds (default `performance.now`), injectable for tests. */
  now?: () => number;
  /** Minimum milliseconds between TTY redraws (default 100). */
  redrawMs?: number;
  /** Step the work starts from (a resumed run): rates count from here (default 0). */
  startStep?: number;
  /** In plain mode, also print when this many milliseconds passed since the last line
   * (default 10000). */
  intervalMs?: number;
  /** What one step is called in plain lines (default "step"; e.g. "sample", "batch"). */
  unit?: string;
}

function stderrIsTty(): boolean {
  try {
    return (globalThis as { Deno?: typeof Deno }).Deno?.stderr.isTerminal() ?? false;
  } catch {
    return false;
  }
}

const encoder = new TextEncoder();
function writeStderr(s: string): void {
  try {
    const stderr = (globalThis as { Deno?: typeof Deno }).Deno?.stderr;
    if (stderr === undefined) {
      console.log(s.replace(/\r|\n$/g, ""));
      return;
    }
    const b = encoder.encode(s);
    let o = 0;
    while (o < b.length) o += stderr.writeSync(b.subarray(o));
  } catch { /* stderr closed: progress is best effort */ }
}

/** @internal Format a metric value compactly (`0.1234`, `1.234e-5`). */
export function fmtMetric(v: unknown): string {
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(3) : v.toFixed(4);
}

function fmtClock(sec: number): string {
  if (!Number.isFinite(sec)) return "--:--";
  const s = Math.round(sec), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const p = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${p(m)}:${p(s % 60)}` : `${p(m)}:${p(s % 60)}`;
}

function fmtSeconds(sec: number): string {
  if (!Number.isFinite(sec)) return "?";
  if (sec < 60) return `${Math.round(sec)}s`;
  if (sec < 3600) {
    return `${Math.floor(sec / 60)}m${String(Math.round(sec % 60)).padStart(2, "0")}s`;
  }
  return `${Math.floor(sec / 3600)}h${String(Math.floor((sec % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * A progress reporter for `total` steps.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Progress } from "../../mod.ts";
 * const lines: string[] = [];
 * const p = new Progress(100, { label: "train", tty: false, write: (s) => lines.push(s) });
 * for (let step = 1; step <= 100; step++) p.update(step, { loss: 1 / step });
 * p.done();
 * assert.equal(lines.length, 11); // 10 periodic lines (every 10%) + the final one
 * assert.ok(lines[0]!.includes("train"));
 *
 * // A resumed run: the count starts at 60 and the rate counts only this session's steps.
 * let t = 0;
 * const out: string[] = [];
 * const r = new Progress(100, { tty: false, startStep: 60, write: (s) => out.push(s), now: () => t });
 * r.start();
 * for (let step = 61; step <= 100; step++) {
 *   t += 100; // 10 it/s
 *   r.update(step);
 * }
 * r.done();
 * assert.equal(out[0], "start 60/100 (resumed; 40 to go)\n");
 * assert.equal(out[1], "step 70/100 10.0 it/s eta 3s\n");
 * assert.equal(out.at(-1), "done 100/100 steps (40 this session) in 4.0s (10.0 it/s)\n");
 * ```
 */
export class Progress {
  /** Number of steps. */
  readonly total: number;
  /** Line prefix. */
  readonly label: string;
  /** Whether the bar redraws in place. */
  readonly tty: boolean;
  #every: number;
  #write: (s: string) => void;
  #now: () => number;
  #redraw: number;
  #t0: number | undefined;
  #s0 = 0;
  #lastDraw = -Infinity;
  #lastPrinted = 0;
  #lastPrintAt = -Infinity;
  #interval: number;
  #unit: string;
  #step = 0;
  #metrics: Record<string, unknown> = {};
  #finished = false;

  /** Report progress over `total` steps. */
  constructor(total: number, opts: ProgressOptions = {}) {
    this.total = checkInt("progress total", total, 0);
    this.label = opts.label ?? "";
    this.tty = opts.tty ?? stderrIsTty();
    this.#every = checkInt(
      "progress every",
      opts.every ?? Math.max(1, Math.ceil(total / 10)),
      1,
    );
    this.#write = opts.write ?? writeStderr;
    this.#now = opts.now ?? (() => performance.now());
    this.#redraw = opts.redrawMs ?? 100;
    // The clock starts now, not at the first update: callers often update only every N steps,
    // and a rate measured from the first update would count one step over no time.
    this.#t0 = this.#now();
    this.#s0 = checkInt("progress startStep", opts.startStep ?? 0, 0);
    this.#step = this.#s0;
    this.#lastPrinted = this.#s0;
    this.#interval = opts.intervalMs ?? 10_000;
    this.#lastPrintAt = this.#t0;
    this.#unit = opts.unit ?? "step";
  }

  /**
   * Print the first line now, before any step is done (a first step may spend seconds
   * compiling GPU pipelines): `label start 0/500: note`, or for a resumed run
   * `label start 300/500 (resumed; 200 to go): note`.
   */
  start(note = ""): void {
    const pre = this.label ? `${this.label} ` : "";
    const resumed = this.#s0 > 0 ? ` (resumed; ${this.total - this.#s0} to go)` : "";
    const line = `${pre}start ${this.#s0}/${this.total}${resumed}${note ? `: ${note}` : ""}`;
    this.#lastPrintAt = this.#now();
    if (this.tty) {
      this.#lastDraw = this.#lastPrintAt;
      this.#write(`\r\x1b[2K${line}`);
    } else this.#write(`${line}\n`);
  }

  /** Iterations per second since the first update. */
  get rate(): number {
    if (this.#t0 === undefined) return NaN;
    const dt = (this.#now() - this.#t0) / 1000;
    return dt > 0 ? (this.#step - this.#s0) / dt : NaN;
  }

  #metricText(): string {
    return Object.entries(this.#metrics).map(([k, v]) => `${k} ${fmtMetric(v)}`).join(" ");
  }

  /** Record that `step` steps are done, with the latest metrics (e.g. `{loss}`). */
  update(step: number, metrics: Record<string, unknown> = {}): void {
    this.#step = step;
    this.#metrics = metrics;
    const rate = this.rate;
    const eta = (this.total - step) / rate;
    const pre = this.label ? `${this.label} ` : "";
    const m = this.#metricText();
    if (this.tty) {
      const t = this.#now();
      if (t - this.#lastDraw < this.#redraw && step < this.total) return;
      this.#lastDraw = t;
      const width = 24, frac = this.total > 0 ? Math.min(1, step / this.total) : 1;
      const fill = Math.floor(frac * width);
      const bar = "=".repeat(fill) + (fill < width ? ">" : "") +
        " ".repeat(Math.max(0, width - fill - 1));
      const r = Number.isFinite(rate) ? `${rate.toFixed(1)} it/s` : "-- it/s";
      this.#write(
        `\r\x1b[2K${pre}${step}/${this.total} [${bar}]${m ? ` ${m}` : ""}  ${r}  ETA ${
          fmtClock(eta)
        }`,
      );
      return;
    }
    const crossed = Math.floor(step / this.#every) > Math.floor(this.#lastPrinted / this.#every);
    const now = this.#now();
    const quiet = now - this.#lastPrintAt >= this.#interval;
    if ((crossed || quiet || step === this.total) && step !== this.#lastPrinted) {
      this.#lastPrinted = step;
      this.#lastPrintAt = now;
      const r = Number.isFinite(rate) ? `${rate.toFixed(1)} it/s` : "-- it/s";
      this.#write(
        `${pre}${this.#unit} ${step}/${this.total}${m ? ` ${m}` : ""} ${r} eta ${
          fmtSeconds(eta)
        }\n`,
      );
    }
  }

  /** Finish: end the bar and print a summary line (steps, time, rate, extra metrics). */
  done(summary: Record<string, unknown> = {}): void {
    if (this.#finished) return;
    this.#finished = true;
    const pre = this.label ? `${this.label} ` : "";
    const secs = this.#t0 === undefined ? 0 : (this.#now() - this.#t0) / 1000;
    const rate = this.rate;
    const extra = Object.entries(summary).map(([k, v]) => ` ${k} ${fmtMetric(v)}`).join("");
    const r = Number.isFinite(rate) ? ` (${rate.toFixed(1)} it/s)` : "";
    // A resumed run says how much of the count this session did, so "in 4.0s" is not read
    // as the time of all the steps.
    const session = this.#s0 > 0 ? ` (${this.#step - this.#s0} this session)` : "";
    this.#write(
      `${
        this.tty ? "\r\x1b[2K" : ""
      }${pre}done ${this.#step}/${this.total} ${this.#unit}s${session} in ${
        secs.toFixed(1)
      }s${r}${extra}\n`,
    );
  }
}

/** Options of {@linkcode startPhase}. */
export interface PhaseOptions {
  /** Output sink (default: stderr). */
  write?: (s: string) => void;
  /** Clock in milliseconds (default `performance.now`). */
  now?: () => number;
}

/** A running phase of {@linkcode startPhase}. */
export interface Phase {
  /** Print `label: what done in 1.2s (detail)`; later calls do nothing. */
  done(detail?: string): void;
}

/**
 * Report one-shot work that has no steps to count (loading a dataset, building a table's
 * inputs): a line now (`label: what…`), and one with the time taken when it ends.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { startPhase } from "../../mod.ts";
 * const lines: string[] = [];
 * let t = 0;
 * const p = startPhase("train:cfm", "loading fashion-mnist", { write: (s) => lines.push(s), now: () => t });
 * t = 1500;
 * p.done("60000 images");
 * assert.deepEqual(lines, [
 *   "train:cfm: loading fashion-mnist…\n",
 *   "train:cfm: loading fashion-mnist done in 1.5s (60000 images)\n",
 * ]);
 * ```
 */
export function startPhase(label: string, what: string, opts: PhaseOptions = {}): Phase {
  const write = opts.write ?? writeStderr;
  const now = opts.now ?? (() => performance.now());
  const t0 = now();
  const pre = label ? `${label}: ` : "";
  write(`${pre}${what}…\n`);
  let ended = false;
  return {
    done(detail?: string) {
      if (ended) return;
      ended = true;
      const secs = ((now() - t0) / 1000).toFixed(1);
      write(`${pre}${what} done in ${secs}s${detail ? ` (${detail})` : ""}\n`);
    },
  };
}

/**
 * Run `work` as a {@linkcode startPhase}: a line before, one with its time after (also when
 * it fails, saying so). Returns what `work` returns.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { withPhase } from "../../mod.ts";
 * const lines: string[] = [];
 * const n = await withPhase("eval", "loading data", () => Promise.resolve(42), {
 *   write: (s) => lines.push(s),
 * });
 * assert.equal(n, 42);
 * assert.equal(lines[0], "eval: loading data…\n");
 * assert.match(lines[1]!, /^eval: loading data done in \d+\.\ds\n$/);
 * ```
 */
export async function withPhase<T>(
  label: string,
  what: string,
  work: () => Promise<T>,
  opts: PhaseOptions = {},
): Promise<T> {
  const p = startPhase(label, what, opts);
  try {
    const out = await work();
    p.done();
    return out;
  } catch (e) {
    p.done("failed");
    throw e;
  }
}
