/**
 * @file What every results table shares: mean ± sample standard deviation over seeds, the rule
 * for calling a difference real, the commit a table ran on, and the marked blocks of the README
 * that `deno task results` rewrites. Tables are written by tasks (`cfm:table`, `gmm:table`,
 * `shortcut:table`, `flowmap:table`); these helpers keep their statistics and wording identical.
 * @module
 */

/** Mean, sample standard deviation (n − 1; 0 for one value) and count of a list of numbers. */
export interface MeanStd {
  /** Arithmetic mean (NaN for an empty list). */
  mean: number;
  /** Sample standard deviation with Bessel's correction (0 for a single value). */
  std: number;
  /** How many values. */
  n: number;
}

/**
 * Mean and sample standard deviation (n − 1 in the denominator, as NumPy's `std(ddof=1)`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { meanStd } from "./results.ts";
 * const r = meanStd([1, 2, 3, 4]);
 * assert.equal(r.mean, 2.5);
 * assert.ok(Math.abs(r.std - Math.sqrt(5 / 3)) < 1e-15); // Σ(x − 2.5)² = 5, over n − 1 = 3
 * assert.deepEqual(meanStd([7]), { mean: 7, std: 0, n: 1 });
 * ```
 */
export function meanStd(xs: readonly number[]): MeanStd {
  const n = xs.length;
  if (!n) return { mean: NaN, std: NaN, n: 0 };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const v = n > 1 ? xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1) : 0;
  return { mean, std: Math.sqrt(v), n };
}

/**
 * `"mean ± std"` with `digits` decimals (just the value for one seed; "n/a" for none or a
 * non-finite mean).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fmtMeanStd } from "./results.ts";
 * assert.equal(fmtMeanStd([1, 3]), "2.000 ± 1.414");
 * assert.equal(fmtMeanStd([0.5], 2), "0.50");
 * assert.equal(fmtMeanStd([]), "n/a");
 * ```
 */
export function fmtMeanStd(xs: readonly number[], digits = 3): string {
  const { mean, std, n } = meanStd(xs);
  if (!n || !Number.isFinite(mean)) return "n/a";
  return n > 1 ? `${mean.toFixed(digits)} ± ${std.toFixed(digits)}` : mean.toFixed(digits);
}

/**
 * Whether two sets of per-seed values differ beyond their spread: the means are further apart
 * than the sum of the two standard deviations (a deliberately conservative rule — about a
 * 2σ-of-the-difference test for equal spreads — used for every "beats"/"lower" in the tables).
 * Needs at least 2 values on each side; fewer never separates.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { separated } from "./results.ts";
 * assert.equal(separated([1, 1.1, 0.9], [2, 2.1, 1.9]), true); // gap 1 > 0.1 + 0.1
 * assert.equal(separated([1, 1.5, 0.5], [1.4, 1.9, 0.9]), false); // gap 0.4 < 0.5 + 0.5
 * assert.equal(separated([1], [5]), false); // one seed cannot separate
 * ```
 */
export function separated(a: readonly number[], b: readonly number[]): boolean {
  const x = meanStd(a), y = meanStd(b);
  if (x.n < 2 || y.n < 2) return false;
  return Math.abs(x.mean - y.mean) > x.std + y.std;
}

/**
 * The repository's short commit, with "+" when tracked files have uncommitted changes
 * ("unknown" without git or without `--allow-run=git`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gitCommit } from "./results.ts";
 * assert.match(await gitCommit(), /^([0-9a-f]{7,}\+?|unknown)$/);
 * ```
 */
export async function gitCommit(): Promise<string> {
  const cwd = new URL("..", import.meta.url).pathname;
  const git = async (args: string[]) => {
    const o = await new Deno.Command("git", { args, cwd, stdout: "piped", stderr: "null" })
      .output();
    return new TextDecoder().decode(o.stdout).trim();
  };
  try {
    const head = await git(["rev-parse", "--short", "HEAD"]);
    const dirty = await git(["status", "--porcelain", "--untracked-files=no"]);
    return head ? head + (dirty ? "+" : "") : "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * Replace the text between `<!-- results:NAME -->` and `<!-- /results:NAME -->` (markers kept)
 * with `content`. Throws a RangeError naming the block when either marker is missing or they
 * are out of order, so a README edit cannot silently stop a table from updating.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { replaceBlock } from "./results.ts";
 * const md = "a\n<!-- results:t -->\nold\n<!-- /results:t -->\nb\n";
 * assert.equal(
 *   replaceBlock(md, "t", "new"),
 *   "a\n<!-- results:t -->\n\nnew\n\n<!-- /results:t -->\nb\n",
 * );
 * assert.throws(() => replaceBlock(md, "u", "x"), /results:u/);
 * ```
 */
export function replaceBlock(text: string, name: string, content: string): string {
  const open = `<!-- results:${name} -->`, close = `<!-- /results:${name} -->`;
  const i = text.indexOf(open), j = text.indexOf(close);
  if (i < 0 || j < 0 || j < i) {
    throw new RangeError(`Expected the markers "${open}" … "${close}" in the file`);
  }
  // Blank lines around the content, as `deno fmt` writes them (so a rewrite is a fixed point).
  return text.slice(0, i + open.length) + "\n\n" + content.trim() + "\n\n" + text.slice(j);
}

/**
 * A non-empty comma-separated list (`--datasets a,b`), trimmed; a RangeError naming `flag`
 * otherwise. With `allowed`, every item must be one of them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseList } from "./results.ts";
 * assert.deepEqual(parseList("--exps", " cfm, stf "), ["cfm", "stf"]);
 * assert.throws(() => parseList("--exps", ","), /--exps/);
 * assert.throws(() => parseList("--exps", "cfm,x", ["cfm"]), /Unknown value "x" in --exps/);
 * ```
 */
export function parseList(flag: string, s: string, allowed?: readonly string[]): string[] {
  const xs = s.split(",").map((x) => x.trim()).filter((x) => x);
  if (!xs.length) throw new RangeError(`Expected ${flag} to be a non-empty comma-separated list`);
  for (const x of xs) {
    if (allowed && !allowed.includes(x)) {
      throw new RangeError(`Unknown value "${x}" in ${flag}: expected ${allowed.join(", ")}`);
    }
  }
  return xs;
}

/**
 * A comma-separated list of non-negative integer seeds (`--seeds 0,1,2`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseSeeds } from "./results.ts";
 * assert.deepEqual(parseSeeds("--seeds", "0,1,2"), [0, 1, 2]);
 * assert.throws(() => parseSeeds("--seeds", "0,-1"), /Bad seed "-1" in --seeds/);
 * ```
 */
export function parseSeeds(flag: string, s: string): number[] {
  return parseList(flag, s).map((x) => {
    const k = Number(x);
    if (!Number.isInteger(k) || k < 0) throw new RangeError(`Bad seed "${x}" in ${flag}`);
    return k;
  });
}

/**
 * A comma-separated list of layer widths, each an integer >= 1 (`--hidden 512,256`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseWidths } from "./results.ts";
 * assert.deepEqual(parseWidths("--hidden", "512, 256"), [512, 256]);
 * assert.throws(
 *   () => parseWidths("--hidden", "512,0"),
 *   /Expected --hidden to be comma-separated widths >= 1 but found 512,0/,
 * );
 * assert.throws(() => parseWidths("--hidden", "512,"), RangeError); // an empty width is 0
 * ```
 */
export function parseWidths(flag: string, s: string): number[] {
  // Not parseList: that drops empty items, and "512," must stay an error here.
  const widths = s.split(",").map((x) => Number(x.trim()));
  if (widths.some((w) => !Number.isInteger(w) || w < 1)) {
    throw new RangeError(`Expected ${flag} to be comma-separated widths >= 1 but found ${s}`);
  }
  return widths;
}

/**
 * The records of a JSON-lines file (a table's `results.jsonl`); `[]` when it does not exist.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readJsonl } from "./results.ts";
 * const p = await Deno.makeTempFile();
 * await Deno.writeTextFile(p, '{"a":1}\n\n{"a":2}\n');
 * assert.deepEqual(await readJsonl(p), [{ a: 1 }, { a: 2 }]);
 * assert.deepEqual(await readJsonl(p + ".missing"), []);
 * await Deno.remove(p);
 * ```
 */
export async function readJsonl<T = unknown>(path: string): Promise<T[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim()).map((l) =>
      JSON.parse(l) as T
    );
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}
