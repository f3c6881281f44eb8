/**
 * @file A small mutation fuzzer: a seeded generator, byte-level mutators (bit flips, byte
 * insert/delete, truncation, chunk duplication, size-field extremes) and a runner that
 * classifies every case as accepted, rejected with a typed error, or a failure (an untyped
 * error, a broken invariant, a case over its time budget, or memory growth over a cap).
 * Every case draws from its own generator seeded by (seed, target, case index), so a
 * failure is reproduced by running that one case again.
 * @module
 */

/** A seeded generator (SplitMix32 steps; quality is ample for choosing mutations). */
export class Rng {
  #s: number;
  /** A generator for a 32-bit seed. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    let z = (this.#s = (this.#s + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  /** A uniform integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 2 ** 32) * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }
  /** One element of a non-empty list. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** FNV-1a of a string, for deriving per-case seeds. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The generator of case `i` of `target` under `seed`. */
export function caseRng(seed: number, target: string, i: number): Rng {
  return new Rng(hashString(`${seed}/${target}/${i}`));
}

/** Byte values that often sit on a boundary. */
const INTERESTING8 = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x2c, 0x30, 0x39, 0x7b, 0x7d];

/** Integer values that stress size and offset fields. */
export const EXTREMES = [
  0,
  1,
  2,
  7,
  0x7f,
  0xff,
  0x100,
  0x7fff,
  0xffff,
  0x10000,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 63,
  2 ** 64 - 1,
];

/** Write `v` as a `width`-byte integer (LE or BE) at `off`, clipped to the buffer. */
export function writeInt(b: Uint8Array, off: number, width: number, v: number, le: boolean) {
  let x = BigInt.asUintN(width * 8, BigInt(Math.floor(v)));
  for (let k = 0; k < width; k++) {
    const i = le ? off + k : off + width - 1 - k;
    if (i >= 0 && i < b.length) b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** A mutation of a byte string (returns a new array; the input is not modified). */
export type Mutator = (b: Uint8Array, r: Rng) => Uint8Array;

/** The generic byte-level mutators. */
export const MUTATORS: Record<string, Mutator> = {
  bitFlip(b, r) {
    const out = b.slice();
    if (out.length) out[r.int(out.length)]! ^= 1 << r.int(8);
    return out;
  },
  byteSet(b, r) {
    const out = b.slice();
    if (out.length) out[r.int(out.length)] = r.chance(0.5) ? r.pick(INTERESTING8) : r.int(256);
    return out;
  },
  insert(b, r) {
    const at = r.int(b.length + 1), n = 1 + r.int(r.chance(0.8) ? 8 : 256);
    const ins = r.chance(0.5) ? r.bytes(n) : new Uint8Array(n).fill(r.pick(INTERESTING8));
    const out = new Uint8Array(b.length + n);
    out.set(b.subarray(0, at));
    out.set(ins, at);
    out.set(b.subarray(at), at + n);
    return out;
  },
  delete(b, r) {
    if (!b.length) return b.slice();
    const at = r.int(b.length), n = 1 + r.int(Math.min(b.length - at, r.chance(0.8) ? 8 : 512));
    const out = new Uint8Array(b.length - n);
    out.set(b.subarray(0, at));
    out.set(b.subarray(at + n), at);
    return out;
  },
  truncate(b, r) {
    return b.slice(0, r.int(b.length + 1));
  },
  duplicate(b, r) {
    if (!b.length) return b.slice();
    const at = r.int(b.length), n = 1 + r.int(Math.min(b.length - at, 64));
    const to = r.int(b.length + 1);
    const piece = b.slice(at, at + n);
    const out = new Uint8Array(b.length + n);
    out.set(b.subarray(0, to));
    out.set(piece, to);
    out.set(b.subarray(to), to + n);
    return out;
  },
  sizeField(b, r) {
    const out = b.slice();
    const width = r.pick([2, 4, 8]);
    const off = r.chance(0.5)
      ? r.int(Math.max(1, out.length))
      : width * r.int(out.length / width + 1);
    const base = r.pick(EXTREMES);
    const v = r.chance(0.8) ? base : base + r.int(5) - 2;
    writeInt(out, off, width, Math.max(0, v), r.chance(0.7));
    return out;
  },
};

/** Apply 1–4 mutations drawn from the generic set plus `extra` (structure-aware ones). */
export function mutate(b: Uint8Array, r: Rng, extra: readonly Mutator[] = []): Uint8Array {
  const all = [...Object.values(MUTATORS), ...extra, ...extra];
  let out = b;
  const n = 1 + (r.chance(0.6) ? 0 : r.int(4));
  for (let k = 0; k < n; k++) out = r.pick(all)(out, r);
  return out;
}

/** Values a text header edit puts in place of a number. */
export const TEXT_EXTREMES = [
  "0",
  "-1",
  "1",
  "0.5",
  "1e308",
  "1e400",
  "-0",
  "NaN",
  "4294967295",
  "4294967296",
  "9007199254740993",
  "99999999999999999999",
  "1" + "0".repeat(310),
  "",
  "x",
  "null",
  "[]",
  '"1"',
];

/** Replace one run of digits in `text` by an extreme value. */
export function editNumber(text: string, r: Rng): string {
  const runs = [...text.matchAll(/\d+/g)];
  if (!runs.length) return text;
  const m = r.pick(runs);
  return text.slice(0, m.index!) + r.pick(TEXT_EXTREMES) + text.slice(m.index! + m[0].length);
}

/** Replace one quoted string (`"…"` or `'…'`) in `text` with one of `words`. */
export function editString(text: string, r: Rng, words: readonly string[]): string {
  const runs = [...text.matchAll(/(["'])([^"']*)\1/g)];
  if (!runs.length) return text;
  const m = r.pick(runs);
  const q = m[1]!;
  return text.slice(0, m.index!) + q + r.pick(words) + q + text.slice(m.index! + m[0].length);
}

/** A broken invariant on a file the decoder accepted. */
export class OracleFailure extends Error {
  /** Create a failure with a description of the broken invariant. */
  constructor(message: string) {
    super(message);
    this.name = "OracleFailure";
  }
}

/** One generated case: what to run on it. */
export interface FuzzCase {
  /** The name passed to the decoder (errors must carry it). */
  name: string;
  /** Decode the mutated input and check invariants on success (throws OracleFailure). */
  run(): Promise<unknown>;
}

/** A fuzz target: a parser, its valid seed files and its mutations. */
export interface FuzzTarget {
  /** Target name (`png`, `npy`, …). */
  name: string;
  /** Error class names a rejection may use. */
  errorNames: readonly string[];
  /** Whether an error must carry the case's file name in `file` (false for flags). */
  needsFile: boolean;
  /** Further condition on a typed error (e.g. its message names a flag). */
  accepts?: (e: Error) => boolean;
  /** Build seed inputs once (may read fixtures). */
  setup(): Promise<void>;
  /** Make case `i` from its generator. */
  make(r: Rng, name: string): Promise<FuzzCase>;
}

/** A case that did not end in acceptance or a typed rejection. */
export interface FuzzFailure {
  /** Case index (rerun with the same seed and `--case`). */
  index: number;
  /** `untyped`, `oracle`, `slow`, `hang` or `memory`. */
  kind: "untyped" | "oracle" | "slow" | "hang" | "memory";
  /** What happened. */
  message: string;
}

/** Results of fuzzing one target. */
export interface FuzzReport {
  /** Target name. */
  target: string;
  /** Cases run. */
  cases: number;
  /** Cases the decoder accepted (invariants held). */
  accepted: number;
  /** Typed rejections by error class name. */
  errors: Record<string, number>;
  /** Failures (empty when the target passed). */
  failures: FuzzFailure[];
  /** Wall time in ms. */
  ms: number;
  /** Slowest case in ms. */
  maxCaseMs: number;
  /** Largest RSS growth over the start, in MiB. */
  rssGrowthMiB: number;
}

/** Options of {@linkcode runTarget}. */
export interface RunOptions {
  /** Number of cases (default 300). */
  cases?: number;
  /** Seed of the whole run (default 1). */
  seed?: number;
  /** First case index (default 0); with `cases: 1` reruns one case. */
  from?: number;
  /** Per-case time budget in ms (default 5000); async work past 5× is reported as a hang. */
  budgetMs?: number;
  /** RSS growth cap in MiB (default 512). */
  rssCapMiB?: number;
  /** Called before each case (e.g. to post progress to a watchdog). */
  onCase?: (index: number) => void;
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message.slice(0, 300)}`;
  return String(e);
}

/** Run `opts.cases` mutated inputs through a target and classify the outcomes. */
export async function runTarget(t: FuzzTarget, opts: RunOptions = {}): Promise<FuzzReport> {
  const cases = opts.cases ?? 300, seed = opts.seed ?? 1, from = opts.from ?? 0;
  const budget = opts.budgetMs ?? 5000, cap = opts.rssCapMiB ?? 512;
  await t.setup();
  const rep: FuzzReport = {
    target: t.name,
    cases: 0,
    accepted: 0,
    errors: {},
    failures: [],
    ms: 0,
    maxCaseMs: 0,
    rssGrowthMiB: 0,
  };
  const rss0 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  for (let i = from; i < from + cases; i++) {
    opts.onCase?.(i);
    const r = caseRng(seed, t.name, i);
    const c = await t.make(r, `fuzz-${t.name}-${seed}-${i}`);
    const start = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hang = new Promise<"hang">((res) => {
      timer = setTimeout(() => res("hang"), budget * 5);
    });
    try {
      const out = await Promise.race([c.run(), hang]);
      if (out === "hang") {
        rep.failures.push({ index: i, kind: "hang", message: `no result within ${budget * 5} ms` });
      } else rep.accepted++;
    } catch (e) {
      const err = e as Error & { file?: unknown };
      if (e instanceof OracleFailure) {
        rep.failures.push({ index: i, kind: "oracle", message: e.message });
      } else if (
        e instanceof Error && t.errorNames.includes(err.name) &&
        (!t.needsFile || (typeof err.file === "string" && err.file.startsWith(c.name))) &&
        (t.accepts?.(e) ?? true)
      ) {
        rep.errors[err.name] = (rep.errors[err.name] ?? 0) + 1;
      } else {
        rep.failures.push({ index: i, kind: "untyped", message: describe(e) });
      }
    } finally {
      clearTimeout(timer);
    }
    const ms = performance.now() - start;
    rep.maxCaseMs = Math.max(rep.maxCaseMs, ms);
    if (ms > budget) {
      rep.failures.push({ index: i, kind: "slow", message: `${ms.toFixed(0)} ms > ${budget} ms` });
    }
    const growth = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
    if (growth > rep.rssGrowthMiB) rep.rssGrowthMiB = growth;
    if (growth > cap) {
      rep.failures.push({
        index: i,
        kind: "memory",
        message: `RSS grew by ${growth.toFixed(0)} MiB > ${cap} MiB`,
      });
      break;
    }
    rep.cases++;
  }
  rep.ms = performance.now() - t0;
  rep.rssGrowthMiB = Math.round(rep.rssGrowthMiB);
  return rep;
}
