/**
 * @file Command-line flags on top of `node:util` `parseArgs`, accepting the spellings
 * users paste from the papers' READMEs: kebab-case (`--num-steps`), snake_case
 * (`--num_steps`), dotted model flags (`--model.anchor_weight=1.0`), `--flag value`,
 * `--flag=value`, `--no-flag`, and Python-style booleans (`--flag=True`).
 * @module
 */
import { parseArgs } from "node:util";

/** One flag of a task. */
export interface FlagSpec {
  /** Kebab-case name without dashes (`bank-capacity-per-class`). */
  readonly name: string;
  /** Value type. */
  readonly type: "int" | "number" | "string" | "bool" | "choice";
  /** Allowed values of a `choice` flag. */
  readonly choices?: readonly string[];
  /** Default value (bools default to false). */
  readonly default?: number | string | boolean;
  /** One-line help text. */
  readonly help?: string;
  /** Inclusive lower bound of an int/number flag. */
  readonly min?: number;
  /** Inclusive upper bound of an int/number flag. */
  readonly max?: number;
  /** Other accepted names (kebab-case), e.g. a seed's spelling. */
  readonly aliases?: readonly string[];
}

/** `num-steps` → `numSteps`. */
export type CamelCase<S extends string> = S extends `${infer H}-${infer T}`
  ? `${H}${Capitalize<CamelCase<T>>}`
  : S;

/** The parsed value type of one flag spec (number, boolean, a choice's literal union, string). */
export type FlagValue<F extends FlagSpec> = F["type"] extends "int" | "number" ? number
  : F["type"] extends "bool" ? boolean
  : F["type"] extends "choice" ? (F["choices"] extends readonly (infer C)[] ? C : string)
  : string;

/** The parsed flags: camelCase keys, typed by each spec entry. */
export type ParsedFlags<S extends readonly FlagSpec[]> =
  & {
    -readonly [F in S[number] as CamelCase<F["name"]>]: F["type"] extends "bool" ? boolean
      : undefined extends F["default"] ? FlagValue<F> | undefined
      : FlagValue<F>;
  }
  & { _: string[] };

/** Options of {@linkcode parseFlags}. */
export interface ParseFlagsOptions {
  /** Task name for usage and error messages (e.g. `train:stablevm`). */
  task?: string;
  /** A paragraph describing the task, printed by `--help`. */
  usage?: string;
  /** Accept positional arguments (returned in `_`); default false. */
  positionals?: boolean;
  /** Called with the usage text on `--help` (default: print it and exit 0). */
  onHelp?: (text: string) => never | void;
  /**
   * Filled with the camelCase keys of the flags present on the command line (defaults
   * excluded), e.g. to tell a resumed run which settings the user changed.
   */
  given?: Set<string>;
}

/** `num_steps`/`num-steps`/`numSteps` → `num-steps`. */
function kebab(s: string): string {
  return s.replace(/_/g, "-").replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
}

/** `num-steps` → `numSteps`. */
function camel(s: string): string {
  return s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length]!;
}

/** @internal Names in `names` close to `name` (edit distance or substring), best first. */
export function closeMatches(name: string, names: readonly string[], limit = 3): string[] {
  return names
    .map((n) => {
      let d = levenshtein(name, n);
      if (n.includes(name) || name.includes(n)) d = Math.min(d, 1);
      return { n, d };
    })
    .filter(({ n, d }) => d <= Math.max(2, Math.floor(Math.max(n.length, name.length) / 3)))
    .sort((a, b) => a.d - b.d)
    .slice(0, limit)
    .map(({ n }) => n);
}

const TRUE = new Set(["true", "1", "yes", "y", "on"]);
const FALSE = new Set(["false", "0", "no", "n", "off"]);

function fmtRange(f: FlagSpec): string {
  const lo = f.min ?? -Infinity, hi = f.max ?? Infinity;
  if (lo === -Infinity && hi === Infinity) return "";
  if (hi === Infinity) return `>= ${lo}`;
  if (lo === -Infinity) return `<= ${hi}`;
  return `in [${lo}, ${hi}]`;
}

function convert(f: FlagSpec, raw: string): number | string | boolean {
  const flag = `--${f.name}`;
  switch (f.type) {
    case "int":
    case "number": {
      const v = raw.trim() === "" ? NaN : Number(raw);
      const kind = f.type === "int" ? "an integer" : "a number";
      const range = fmtRange(f);
      if (!Number.isFinite(v) || (f.type === "int" && !Number.isInteger(v))) {
        throw new RangeError(
          `Expected ${flag} to be ${kind}${range ? ` ${range}` : ""} but found "${raw}"`,
        );
      }
      if ((f.min !== undefined && v < f.min) || (f.max !== undefined && v > f.max)) {
        throw new RangeError(`Expected ${flag} to be ${kind} ${range} but found ${raw}`);
      }
      return v;
    }
    case "bool": {
      const l = raw.toLowerCase();
      if (TRUE.has(l)) return true;
      if (FALSE.has(l)) return false;
      throw new RangeError(`Expected ${flag} to be true/false (or 1/0) but found "${raw}"`);
    }
    case "choice": {
      const choices = f.choices ?? [];
      if (!choices.includes(raw)) {
        throw new RangeError(
          `Expected ${flag} to be one of ${
            choices.map((c) => `"${c}"`).join(", ")
          } but found "${raw}"`,
        );
      }
      return raw;
    }
    default:
      return raw;
  }
}

function checkSpec(spec: readonly FlagSpec[]): void {
  const seen = new Set<string>();
  for (const f of spec) {
    if (!/^[a-z][a-z0-9-]*$/.test(f.name)) {
      throw new TypeError(
        `Expected flag name to be kebab-case (like "num-steps") but found "${f.name}"`,
      );
    }
    if (!["int", "number", "string", "bool", "choice"].includes(f.type)) {
      throw new TypeError(`Unknown type "${f.type}" for flag --${f.name}`);
    }
    if (f.type === "choice" && !(f.choices && f.choices.length)) {
      throw new TypeError(`Expected flag --${f.name} of type "choice" to list its choices`);
    }
    if (f.default !== undefined) {
      const t = typeof f.default;
      const want = f.type === "bool"
        ? "boolean"
        : f.type === "int" || f.type === "number"
        ? "number"
        : "string";
      if (t !== want || (f.type === "choice" && !f.choices!.includes(f.default as string))) {
        throw new TypeError(
          `Default ${
            JSON.stringify(f.default)
          } of flag --${f.name} does not fit its type "${f.type}"`,
        );
      }
    }
    for (const n of [f.name, ...(f.aliases ?? [])]) {
      if (seen.has(n) || n === "help") throw new TypeError(`Flag --${n} is defined twice`);
      seen.add(n);
    }
  }
}

/**
 * The `--help` text for a flag spec.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatUsage } from "./mod.ts";
 * const text = formatUsage([{ name: "num-steps", type: "int", default: 50, help: "ODE steps" }], {
 *   task: "sample",
 * });
 * assert.ok(text.includes("--num-steps <int>"));
 * assert.ok(text.includes("ODE steps"));
 * ```
 */
export function formatUsage(spec: readonly FlagSpec[], opts: ParseFlagsOptions = {}): string {
  const lines = [`Usage: deno task ${opts.task ?? "<task>"} [flags]`];
  if (opts.usage) lines.push("", opts.usage);
  lines.push("", "Flags:");
  const left = spec.map((f) => {
    const arg = f.type === "bool"
      ? ""
      : f.type === "choice"
      ? ` <${f.choices!.join("|")}>`
      : ` <${f.type}>`;
    return `  --${f.name}${arg}`;
  });
  const w = Math.min(40, Math.max(...left.map((l) => l.length), 10) + 2);
  spec.forEach((f, i) => {
    const extra: string[] = [];
    if (f.default !== undefined) extra.push(`default: ${f.default}`);
    const r = fmtRange(f);
    if (r) extra.push(r);
    if (f.aliases?.length) extra.push(`alias: ${f.aliases.map((a) => `--${a}`).join(", ")}`);
    const l = left[i]!;
    const help = `${f.help ?? ""}${extra.length ? ` (${extra.join("; ")})` : ""}`;
    lines.push(l.length >= w ? `${l}\n${" ".repeat(w)}${help}` : `${l.padEnd(w)}${help}`);
  });
  lines.push(`  --help${" ".repeat(Math.max(1, w - 8))}Show this help`);
  lines.push(
    "",
    "Flags also accept snake_case (--num_steps), dotted (--model.num_steps), --flag=value,",
    "--flag value, --no-<bool> and --<bool>=True/False.",
  );
  return lines.join("\n");
}

/**
 * Parse command-line flags against a spec into a typed object with camelCase keys.
 * Unknown flags raise a `RangeError` listing close matches; malformed numbers,
 * out-of-range values and bad choices raise errors naming the flag and what is valid.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseFlags } from "./mod.ts";
 * const flags = parseFlags(
 *   ["--num_steps", "20", "--model.anchor_weight=0.5", "--loss-type=stablevm", "--no-ema"],
 *   [
 *     { name: "num-steps", type: "int", default: 100, min: 1 },
 *     { name: "anchor-weight", type: "number", default: 1 },
 *     { name: "loss-type", type: "choice", choices: ["si", "stablevm"], default: "si" },
 *     { name: "ema", type: "bool", default: true },
 *   ],
 *   { task: "demo" },
 * );
 * assert.equal(flags.numSteps, 20);
 * assert.equal(flags.anchorWeight, 0.5);
 * assert.equal(flags.lossType, "stablevm");
 * assert.equal(flags.ema, false);
 * ```
 */
export function parseFlags<const S extends readonly FlagSpec[]>(
  argv: readonly string[],
  spec: S,
  opts: ParseFlagsOptions = {},
): ParsedFlags<S> {
  checkSpec(spec);
  const byName = new Map<string, FlagSpec>();
  for (const f of spec) {
    byName.set(f.name, f);
    for (const a of f.aliases ?? []) byName.set(a, f);
  }
  const names = [...byName.keys()];
  const forTask = opts.task ? ` for ${opts.task}` : "";
  const resolve = (raw: string): { f: FlagSpec; negated: boolean } | null => {
    const k = kebab(raw);
    const cands = [k, k.replace(/\./g, "-")];
    // Dotted flags (`--model.anchor_weight`) name a field of a config group: try the
    // full name, then the trailing parts.
    const parts = k.split(".");
    for (let i = 1; i < parts.length; i++) cands.push(parts.slice(i).join("-"));
    for (const c of cands) {
      const f = byName.get(c);
      if (f) return { f, negated: false };
    }
    for (const c of cands) {
      if (c.startsWith("no-")) {
        const f = byName.get(c.slice(3));
        if (f) return { f, negated: true };
      }
    }
    return null;
  };

  // Normalise every token to `--<canonical>=<value>` (or `--<bool>`/`--no-<bool>`)
  // before handing them to parseArgs, which then only splits them.
  const norm: string[] = [];
  const bools = new Map<string, boolean>();
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === "--") {
      norm.push(...argv.slice(i));
      break;
    }
    if (tok === "--help" || tok === "-h") {
      const text = formatUsage(spec, opts);
      if (opts.onHelp) opts.onHelp(text);
      else {
        console.log(text);
        Deno.exit(0);
      }
      continue;
    }
    if (!tok.startsWith("--") || tok === "--") {
      if (tok.startsWith("-") && tok.length > 1 && !/^-\d/.test(tok)) {
        throw new RangeError(
          `Unknown flag ${tok}${forTask}: flags are spelled --name (see --help)`,
        );
      }
      norm.push(tok);
      continue;
    }
    const eq = tok.indexOf("=");
    const rawName = eq < 0 ? tok.slice(2) : tok.slice(2, eq);
    let value: string | undefined = eq < 0 ? undefined : tok.slice(eq + 1);
    const hit = resolve(rawName);
    if (!hit) {
      const near = closeMatches(kebab(rawName).replace(/\./g, "-"), names);
      throw new RangeError(
        `Unknown flag --${rawName}${forTask}${
          near.length ? `; did you mean ${near.map((n) => `--${n}`).join(", ")}?` : " (see --help)"
        }`,
      );
    }
    const { f, negated } = hit;
    if (f.type === "bool") {
      if (value === undefined && i + 1 < argv.length && /^(true|false)$/i.test(argv[i + 1]!)) {
        value = argv[++i]!;
      }
      let v = value === undefined ? true : convert(f, value) as boolean;
      if (negated) {
        if (value !== undefined) {
          throw new RangeError(`Expected --no-${f.name} without a value but found "${value}"`);
        }
        v = false;
      }
      bools.set(f.name, v);
      opts.given?.add(camel(f.name));
      norm.push(`--${f.name}`);
      continue;
    }
    if (negated) throw new RangeError(`Flag --${f.name} is not a boolean and cannot be negated`);
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("--") && next !== "--")) {
        throw new RangeError(`Expected a value after --${f.name} (${f.type})`);
      }
      value = next;
      i++;
    }
    opts.given?.add(camel(f.name));
    norm.push(`--${f.name}=${value}`);
  }

  const options: Record<string, { type: "string" | "boolean"; multiple: true }> = {};
  for (const f of spec) {
    options[f.name] = { type: f.type === "bool" ? "boolean" : "string", multiple: true };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: norm, options, strict: true, allowPositionals: true });
  } catch (e) {
    throw new RangeError(`Cannot parse flags${forTask}: ${(e as Error).message}`);
  }
  if (!opts.positionals && parsed.positionals.length) {
    throw new RangeError(
      `Unexpected argument "${parsed.positionals[0]}"${forTask}: flags are spelled --name value`,
    );
  }
  const out: Record<string, unknown> = { _: parsed.positionals };
  for (const f of spec) {
    const key = camel(f.name);
    const vals = (parsed.values as Record<string, (string | boolean)[] | undefined>)[f.name];
    if (f.type === "bool") {
      out[key] = bools.has(f.name) ? bools.get(f.name) : Boolean(f.default ?? false);
    } else if (vals && vals.length) {
      out[key] = convert(f, String(vals[vals.length - 1])); // the last occurrence wins
    } else {
      out[key] = f.default;
    }
  }
  return out as ParsedFlags<S>;
}

/**
 * {@linkcode parseFlags} for a task's `main(argv)`: on `--help` the usage is printed and
 * `null` returned (so `main` returns without running and tests can call it), otherwise the
 * parsed flags. Replaces the `let help = false; … onHelp …; if (help) return null` preamble.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseTaskFlags } from "./flags.ts";
 * const spec = [{ name: "steps", type: "int", default: 3 }] as const;
 * assert.equal(parseTaskFlags(["--steps", "5"], spec, { task: "demo" })?.steps, 5);
 * assert.equal(parseTaskFlags(["--help"], spec, { task: "demo" }), null); // prints the usage
 * ```
 */
export function parseTaskFlags<const S extends readonly FlagSpec[]>(
  argv: readonly string[],
  spec: S,
  opts: Omit<ParseFlagsOptions, "onHelp"> = {},
): ParsedFlags<S> | null {
  let help = false;
  const f = parseFlags(argv, spec, {
    ...opts,
    onHelp: (text) => {
      console.log(text);
      help = true;
    },
  });
  return help ? null : f;
}
