/**
 * @file `deno task bench --compare OLD.jsonl`: each figure of this run against the same case in
 * an earlier run's JSON lines, so a change is read as a ratio beside both runs' spreads.
 * @module
 */

/** One bench output line. */
export type BenchLine = Record<string, unknown>;

/** Fields that identify a record within its case (the rest are measurements or notes). */
const KEY_FIELDS = ["dtype", "n", "dim", "batch", "steps", "method"] as const;

/** Measured fields compared, with their spreads when the record has them. */
const FIGURES = ["ours", "tfjs_webgpu", "tfjs_cpu", "torch_cpu"] as const;

/**
 * Parse JSON lines (blank lines skipped); a bad line is a `TypeError` naming the file and line.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseJsonl } from "./compare.ts";
 * assert.deepEqual(parseJsonl('{"case":"matmul"}\n\n', "a.jsonl"), [{ case: "matmul" }]);
 * assert.throws(() => parseJsonl("{", "a.jsonl"), /a.jsonl line 1/);
 * ```
 */
export function parseJsonl(text: string, name: string): BenchLine[] {
  const out: BenchLine[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new TypeError(
        `Expected ${name} line ${i + 1} to be a JSON object (a bench output line) but it does ` +
          `not parse: ${(e as Error).message}`,
      );
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new TypeError(`Expected ${name} line ${i + 1} to be a JSON object but found ${line}`);
    }
    out.push(v as BenchLine);
  });
  return out;
}

/**
 * The identity of a record: its case and the fields that tell its sizes apart.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { recordKey } from "./compare.ts";
 * assert.equal(recordKey({ case: "toy-cfm", batch: 256, ours: 50 }), "toy-cfm batch=256");
 * ```
 */
export function recordKey(r: BenchLine): string {
  const parts = [String(r.case)];
  for (const k of KEY_FIELDS) if (r[k] !== undefined) parts.push(`${k}=${r[k]}`);
  return parts.join(" ");
}

const fmt = (x: number) => Number(x.toPrecision(3)).toString();

function figure(r: BenchLine, f: string): string | null {
  const v = r[f];
  if (typeof v !== "number") return null;
  const lo = r[`${f}_min`], hi = r[`${f}_max`];
  return typeof lo === "number" && typeof hi === "number"
    ? `${fmt(v)} [${fmt(lo)}, ${fmt(hi)}]`
    : fmt(v);
}

/**
 * Lines describing each figure's change from `old` to `now`, matched by {@linkcode recordKey}:
 * `ours 56 [52, 60] → 101 [97, 104] ×1.8` with the unit, and whether the two runs' [min, max]
 * ranges overlap (a change inside both spreads is noise, not a change). Records only in one run
 * are listed as such.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { compareRuns } from "./compare.ts";
 * const old = [{ case: "toy-cfm", batch: 256, unit: "steps/s", ours: 50, ours_min: 48, ours_max: 52 }];
 * const now = [{ case: "toy-cfm", batch: 256, unit: "steps/s", ours: 100, ours_min: 95, ours_max: 104 }];
 * const lines = compareRuns(old, now);
 * assert.equal(lines.length, 1);
 * assert.match(lines[0]!, /ours 50 \[48, 52\] → 100 \[95, 104\] ×2 \(ranges apart\)/);
 * ```
 */
export function compareRuns(old: readonly BenchLine[], now: readonly BenchLine[]): string[] {
  const before = new Map(old.filter((r) => r.case !== "env").map((r) => [recordKey(r), r]));
  const lines: string[] = [];
  for (const r of now) {
    if (r.case === "env") continue;
    const key = recordKey(r);
    const o = before.get(key);
    before.delete(key);
    if (!o) {
      lines.push(`${key}: new (not in the baseline)`);
      continue;
    }
    const parts: string[] = [];
    for (const f of FIGURES) {
      const a = figure(o, f), b = figure(r, f);
      if (a === null || b === null) continue;
      const x = (r[f] as number) / (o[f] as number);
      const lo = [o[`${f}_min`], r[`${f}_min`]], hi = [o[`${f}_max`], r[`${f}_max`]];
      const spread = [...lo, ...hi].every((v) => typeof v === "number")
        ? (hi[0] as number) < (lo[1] as number) || (hi[1] as number) < (lo[0] as number)
          ? " (ranges apart)"
          : " (ranges overlap)"
        : "";
      parts.push(`${f} ${a} → ${b} ×${fmt(x)}${spread}`);
    }
    lines.push(`${key} (${r.unit ?? "?"}): ${parts.join("; ") || "no common figures"}`);
  }
  for (const key of before.keys()) lines.push(`${key}: only in the baseline`);
  return lines;
}
