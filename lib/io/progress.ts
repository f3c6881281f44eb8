/**
 * @file Progress reporting for long loops: one updating bar on a TTY
 * (`label 1234/5000 [=====>   ] loss 0.1234  85.2 it/s  ETA 00:44`), plain periodic
 * lines otherwise (`label step 1000/5000 loss 0.1234 85.2 it/s eta 44s`). Writes to
 * stderr, which needs no permission.
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
    if ((crossed || step === this.total) && step !== this.#lastPrinted) {
      this.#lastPrinted = step;
      const r = Number.isFinite(rate) ? `${rate.toFixed(1)} it/s` : "-- it/s";
      this.#write(
        `${pre}step ${step}/${this.total}${m ? ` ${m}` : ""} ${r} eta ${fmtSeconds(eta)}\n`,
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
    this.#write(
      `${this.tty ? "\r\x1b[2K" : ""}${pre}done ${this.#step}/${this.total} steps in ${
        secs.toFixed(1)
      }s${r}${extra}\n`,
    );
  }
}
