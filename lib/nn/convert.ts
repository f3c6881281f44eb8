/**
 * @file PyTorch state dicts ⇄ flowgpu modules.
 *
 * **Key mapping.** flowgpu's networks register their parameters under the reference
 * implementations' names and layouts (Linear weight [out, in], Conv2d [out, in, k, k]), so the
 * mapping is the identity:
 *
 * | flowgpu          | reference                                        | keys                                                                                                                                                                                                                                 |
 * | ---------------- | ------------------------------------------------ | ------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------ |
 * | `nn.DiT`/`nn.SiT` | facebookresearch/DiT `DiT`; REPA and StableVM `SiT` | `x_embedder.proj.{weight,bias}`, `pos_embed` (buffer), `t_embedder.mlp.{0,2}.*`, `y_embedder.embedding_table.weight`, `blocks.N.attn.{qkv,proj}.*`, `blocks.N.mlp.{fc1,fc2}.*`, `blocks.N.adaLN_modulation.1.*`, `final_layer.{linear,adaLN_modulation.1}.*` |
 * | `nn.VelocityMLP` | torchcfm `MLP`                                   | `net.{0,2,4,…}.{weight,bias}` (+ `y_embedder.embedding_table.weight`)                                                                                                                                                               |
 * | `nn.AdaLNMLP`    | StableVM gmm_exp.py `ScoreNet`                   | `input_layer.*`, `blocks.N.0.norm.*`, `blocks.N.0.fc.*`, `blocks.N.1.*`, `output_layer.*` (+ `y_embedder.embedding_table.weight`)                                                                                                      |
 *
 * Prefixes added by wrappers — DDP's `module.` and `torch.compile`'s `_orig_mod.` — are
 * stripped when every key has them. Reference keys that are not part of the velocity network
 * (REPA/SV's alignment heads `projectors.*`) are dropped only when asked (`ignorePrefixes`).
 * Tensors are taken in F32, F16 and BF16 ({@linkcode TORCH_DTYPES}) and become f32.
 *
 * **Time convention.** flowgpu: t = 0 noise, t = 1 data, v = x1 − x0. REPA and StableVM
 * train with s = 1 − t and predict ε − x, so their network satisfies
 * v_ours(x, t) = −net(x, 1 − t). `convention: "repa"` folds both changes into the weights:
 * with angle a_i = scale·f_i of each sinusoid pair, emb(1 − t) = R·emb(t) where R acts on the
 * pair (cos, sin) as [[cos a, sin a], [sin a, −cos a]] (symmetric, R² = I), so every weight
 * that reads the embedding is multiplied by R (and a label table added to it, AdaLNMLP's, too);
 * a raw-t input column c becomes −c with c added to the bias; the output layer is negated.
 * The rewrite is its own inverse, so the same call converts back.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { fmtShape } from "../_util.ts";
import type { Module, StateDictValue } from "./module.ts";
import { DiT } from "./transformer.ts";
import { AdaLNMLP, VelocityMLP } from "./velocity.ts";

/**
 * The safetensors dtypes the converter takes (converted to f32).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * assert.deepEqual([...nn.TORCH_DTYPES], ["F32", "F16", "BF16"]);
 * ```
 */
export const TORCH_DTYPES = ["F32", "F16", "BF16"] as const;

/**
 * Time conventions: `"flowgpu"` (t = 0 noise, v = x1 − x0) and `"repa"` (REPA/StableVM
 * code: t = 0 data, v = ε − x).
 */
export type TimeConvention = "flowgpu" | "repa";

/** A state-dict entry from a file: f32 values, shape, and the dtype it was stored in. */
export interface TorchEntry {
  /** Shape. */
  shape: readonly number[];
  /** Values (already f32). */
  data: Float32Array;
  /** The stored dtype (`F32`, `F16`, `BF16`, …); absent means F32. */
  dtype?: string;
}

/** A PyTorch state dict on the host, e.g. from `decodeSafetensors`. */
export type TorchStateDict = Record<string, TorchEntry>;

/** Everything wrong (or notable) about a state dict against a module, key by key. */
export interface StateDictReport {
  /** Parameters of the module the dict lacks. */
  missing: string[];
  /** Buffers the dict lacks (the module keeps its own values, e.g. the fixed `pos_embed`). */
  missingBuffers: string[];
  /** Keys the module does not have. */
  unexpected: string[];
  /** Keys whose shapes differ. */
  shapeMismatches: { key: string; got: number[]; want: number[] }[];
  /** Keys stored in a dtype the converter does not take. */
  badDtypes: { key: string; dtype: string }[];
  /** Keys dropped by `ignorePrefixes`. */
  ignored: string[];
  /** The wrapper prefix stripped from every key (`module.`), or "". */
  stripped: string;
}

/** Options of {@linkcode compareStateDict} and {@linkcode importTorchStateDict}. */
export interface ImportOptions {
  /** Drop keys starting with these (e.g. `["projectors."]` for REPA checkpoints). */
  ignorePrefixes?: readonly string[];
  /** The convention the weights were trained in (default `"flowgpu"`). */
  convention?: TimeConvention;
}

const LIST_MAX = 40;
function list(names: readonly string[]): string {
  const shown = names.slice(0, LIST_MAX).map((k) => `"${k}"`).join(", ");
  return names.length > LIST_MAX ? `${shown} … and ${names.length - LIST_MAX} more` : shown;
}

/**
 * Render a report's problems as one message (empty when there are none).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const msg = nn.formatStateDictReport({
 *   missing: ["w"], missingBuffers: [], unexpected: ["v"], shapeMismatches: [],
 *   badDtypes: [], ignored: [], stripped: "",
 * });
 * assert.equal(msg, 'missing keys "w"; unexpected keys "v"');
 * ```
 */
export function formatStateDictReport(r: StateDictReport): string {
  const parts: string[] = [];
  if (r.badDtypes.length) {
    parts.push(
      `dtypes not taken (the converter takes ${TORCH_DTYPES.join(", ")}): ${
        r.badDtypes.slice(0, LIST_MAX).map((b) => `"${b.key}" is ${b.dtype}`).join(", ")
      }${r.badDtypes.length > LIST_MAX ? ` … and ${r.badDtypes.length - LIST_MAX} more` : ""}`,
    );
  }
  if (r.missing.length) parts.push(`missing keys ${list(r.missing)}`);
  if (r.unexpected.length) parts.push(`unexpected keys ${list(r.unexpected)}`);
  if (r.shapeMismatches.length) {
    parts.push(
      `shape mismatches ${
        r.shapeMismatches.slice(0, LIST_MAX).map((m) =>
          `"${m.key}" is ${fmtShape(m.got)} in the state dict but ${fmtShape(m.want)} in the model`
        ).join(", ")
      }`,
    );
  }
  return parts.join("; ");
}

/**
 * The state dict does not fit the module; `report` has the keys, the message names them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const e = new nn.StateDictError("bad", { missing: ["w"], missingBuffers: [], unexpected: [], shapeMismatches: [], badDtypes: [], ignored: [], stripped: "" });
 * assert.ok(e instanceof RangeError);
 * assert.deepEqual(e.report.missing, ["w"]);
 * ```
 */
export class StateDictError extends RangeError {
  /** The problems, key by key. */
  readonly report: StateDictReport;
  /** An error with a message and its report. */
  constructor(message: string, report: StateDictReport) {
    super(message);
    this.name = "StateDictError";
    this.report = report;
  }
}

function stripWrapper(dict: TorchStateDict): { dict: TorchStateDict; stripped: string } {
  const keys = Object.keys(dict);
  for (const p of ["module.", "_orig_mod."]) {
    if (keys.length && keys.every((k) => k.startsWith(p))) {
      const out: TorchStateDict = {};
      for (const k of keys) out[k.slice(p.length)] = dict[k]!;
      const inner = stripWrapper(out);
      return { dict: inner.dict, stripped: p + inner.stripped };
    }
  }
  return { dict, stripped: "" };
}

function prepare(dict: TorchStateDict, opts: ImportOptions) {
  if (!dict || typeof dict !== "object") {
    throw new TypeError(`Expected a state dict object (name → {shape, data}) but found ${dict}`);
  }
  const { dict: d, stripped } = stripWrapper(dict);
  const ignorePrefixes = opts.ignorePrefixes ?? [];
  const kept: TorchStateDict = {};
  const ignored: string[] = [];
  for (const [k, v] of Object.entries(d)) {
    if (ignorePrefixes.some((p) => k.startsWith(p))) ignored.push(k);
    else kept[k] = v;
  }
  return { kept, ignored, stripped };
}

/**
 * Compare a state dict with a module key by key: missing and unexpected names, shape
 * mismatches and dtypes not taken, after stripping a `module.` / `_orig_mod.` wrapper prefix
 * and dropping `ignorePrefixes`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const lin = new nn.Linear(3, 2, { seed: 0 });
 * const r = nn.compareStateDict(lin, {
 *   "module.weight": { shape: [2, 4], data: new Float32Array(8) },
 *   "module.extra": { shape: [1], data: new Float32Array(1), dtype: "F64" },
 * });
 * assert.deepEqual(r.missing, ["bias"]);
 * assert.deepEqual(r.unexpected, ["extra"]);
 * assert.equal(r.shapeMismatches[0]!.key, "weight"); // [2, 4] where [2, 3] is expected
 * assert.equal(r.badDtypes[0]!.dtype, "F64");
 * assert.equal(r.stripped, "module."); // DDP's prefix
 * ```
 */
export function compareStateDict(
  module: Module,
  dict: TorchStateDict,
  opts: ImportOptions = {},
): StateDictReport {
  const { kept, ignored, stripped } = prepare(dict, opts);
  const params = module.namedParameters(), buffers = module.namedBuffers();
  const r: StateDictReport = {
    missing: [...params.keys()].filter((k) => !(k in kept)),
    missingBuffers: [...buffers.keys()].filter((k) => !(k in kept)),
    unexpected: Object.keys(kept).filter((k) => !params.has(k) && !buffers.has(k)),
    shapeMismatches: [],
    badDtypes: [],
    ignored,
    stripped,
  };
  for (const [k, v] of Object.entries(kept)) {
    const dtype = v?.dtype ?? "F32";
    if (!(TORCH_DTYPES as readonly string[]).includes(dtype)) r.badDtypes.push({ key: k, dtype });
    const own = params.get(k) ?? buffers.get(k);
    if (!own) continue;
    const got = [...(v?.shape ?? [])];
    if (got.length !== own.rank || got.some((d, i) => d !== own.shape[i])) {
      r.shapeMismatches.push({ key: k, got, want: [...own.shape] });
    }
  }
  return r;
}

function ok(r: StateDictReport): boolean {
  return !r.missing.length && !r.unexpected.length && !r.shapeMismatches.length &&
    !r.badDtypes.length;
}

// f_i as timestepEmbedding computes them (f64, rounded to f32), times the scale.
function angles(dim: number, maxPeriod: number, scale: number): Float64Array {
  const half = Math.floor(dim / 2), a = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    a[i] = Math.fround(scale * Math.exp(-Math.log(maxPeriod) * i / half));
  }
  return a;
}

interface Emb {
  dim: number;
  maxPeriod: number;
  scale: number;
  order: "cos_sin" | "sin_cos";
}

// Multiply columns [off, off + dim) of a [rows, cols] matrix by R (R is symmetric, so this is
// also R applied to each row of a label table [rows, dim] when off = 0).
function applyR(e: TorchEntry, off: number, emb: Emb): TorchEntry {
  const [rows, cols] = e.shape as [number, number];
  const a = angles(emb.dim, emb.maxPeriod, emb.scale), half = a.length;
  const out = Float32Array.from(e.data);
  for (let i = 0; i < half; i++) {
    const c = Math.cos(a[i]!), s = Math.sin(a[i]!);
    const ic = off + (emb.order === "cos_sin" ? i : half + i);
    const is = off + (emb.order === "cos_sin" ? half + i : i);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      const wc = e.data[base + ic]!, ws = e.data[base + is]!;
      out[base + ic] = wc * c + ws * s;
      out[base + is] = wc * s - ws * c;
    }
  }
  return { ...e, data: out };
}

function negate(e: TorchEntry): TorchEntry {
  return { ...e, data: e.data.map((v) => -v) };
}

function need(dict: TorchStateDict, k: string): TorchEntry {
  const e = dict[k];
  if (!e) throw new RangeError(`Cannot change the time convention: the state dict has no "${k}"`);
  return e;
}

/**
 * Rewrite weights between the REPA/StableVM time convention and flowgpu's (an involution:
 * applying it twice gives the weights back). Works for `nn.DiT`, `nn.VelocityMLP` and
 * `nn.AdaLNMLP`; the module supplies the architecture, the dict the values.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, tensor } from "../../mod.ts";
 * const net = new nn.VelocityMLP({ dim: 2, hidden: 8, depth: 1, seed: 0 });
 * const sd: nn.TorchStateDict = {};
 * for (const [k, v] of net.namedParameters()) sd[k] = { shape: v.shape, data: await v.data() };
 * const repa = new nn.VelocityMLP({ dim: 2, hidden: 8, depth: 1 });
 * repa.loadStateDict(nn.flipTimeConvention(net, sd)); // repa(x, 1 − t) = −net(x, t)
 * const x = randn([3, 2], { seed: 1 });
 * const a = await net.forward(x, tensor([0.2, 0.5, 0.9])).data();
 * const b = await repa.forward(x, tensor([0.8, 0.5, 0.1])).data();
 * a.forEach((v, i) => assert.ok(Math.abs(v + b[i]!) <= 1e-5));
 * ```
 */
export function flipTimeConvention(module: Module, dict: TorchStateDict): TorchStateDict {
  const out: TorchStateDict = { ...dict };
  const rot = (k: string, off: number, emb: Emb) => {
    out[k] = applyR(need(dict, k), off, emb);
  };
  const neg = (prefix: string) => {
    for (const s of ["weight", "bias"]) {
      if (dict[`${prefix}.${s}`]) out[`${prefix}.${s}`] = negate(dict[`${prefix}.${s}`]!);
    }
  };
  if (module instanceof DiT) {
    const te = module.tEmbedder, o = te.embeddingOptions;
    rot("t_embedder.mlp.0.weight", 0, {
      dim: te.frequencyEmbeddingSize,
      maxPeriod: o.maxPeriod ?? 10000,
      scale: o.scale ?? 1,
      order: o.order ?? "cos_sin",
    });
    neg("final_layer.linear");
  } else if (module instanceof VelocityMLP) {
    const first = "net.0.weight", d = module.dim;
    if (module.timeEmbedDim) {
      rot(first, d, { dim: module.timeEmbedDim, maxPeriod: 10000, scale: 1, order: "cos_sin" });
    } else {
      // w·(1 − t) = w − w·t: the t column changes sign and is added to the bias.
      const w = need(dict, first), b = need(dict, "net.0.bias");
      const [rows, cols] = w.shape as [number, number];
      const nw = Float32Array.from(w.data), nb = Float32Array.from(b.data);
      for (let r = 0; r < rows; r++) {
        nb[r] = b.data[r]! + w.data[r * cols + d]!;
        nw[r * cols + d] = -w.data[r * cols + d]!;
      }
      out[first] = { ...w, data: nw };
      out["net.0.bias"] = { ...b, data: nb };
    }
    neg(`net.${module.net.layers.length - 1}`);
  } else if (module instanceof AdaLNMLP) {
    const emb: Emb = {
      dim: module.timeEmbedDim,
      maxPeriod: 1000,
      scale: 2 * Math.PI,
      order: "sin_cos",
    };
    rot("input_layer.weight", module.dim, emb);
    for (let i = 0; i < module.blocks.layers.length; i++) rot(`blocks.${i}.0.fc.weight`, 0, emb);
    // cond = emb(1 − t) + y = R(emb(t) + R·y): the label table is multiplied by R too.
    if (module.yEmbedder) rot("y_embedder.embedding_table.weight", 0, emb);
    neg("output_layer");
  } else {
    throw new TypeError(
      `The time-convention rewrite is defined for nn.DiT, nn.VelocityMLP and nn.AdaLNMLP, not ${module.constructor.name}`,
    );
  }
  return out;
}

/**
 * Validate a PyTorch state dict against a module and turn it into flowgpu's state dict:
 * wrapper prefixes stripped, `ignorePrefixes` dropped, weights rewritten from the `"repa"`
 * convention when asked, absent buffers taken from the module. Throws a
 * {@linkcode StateDictError} naming every missing, unexpected or mis-shaped key and every
 * dtype not taken.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const lin = new nn.Linear(2, 1, { seed: 0 });
 * const sd = { weight: { shape: [1, 2], data: new Float32Array([1, 2]), dtype: "BF16" }, bias: { shape: [1], data: new Float32Array([3]) } };
 * lin.loadStateDict(nn.importTorchStateDict(lin, sd));
 * assert.deepEqual([...await lin.weight.data()], [1, 2]);
 * assert.throws(() => nn.importTorchStateDict(lin, { weight: sd.weight }), /missing keys "bias"/);
 * ```
 */
export function importTorchStateDict(
  module: Module,
  dict: TorchStateDict,
  opts: ImportOptions = {},
): Record<string, StateDictValue> {
  const report = compareStateDict(module, dict, opts);
  if (!ok(report)) {
    throw new StateDictError(
      `Cannot load the state dict into ${module.constructor.name}: ${
        formatStateDictReport(report)
      }`,
      report,
    );
  }
  let { kept } = prepare(dict, opts);
  if ((opts.convention ?? "flowgpu") === "repa") kept = flipTimeConvention(module, kept);
  const out: Record<string, StateDictValue> = {};
  for (const [k, v] of Object.entries(kept)) out[k] = { shape: [...v.shape], data: v.data };
  const buffers = module.namedBuffers();
  for (const k of report.missingBuffers) out[k] = buffers.get(k) as Tensor;
  return out;
}

/**
 * Load a PyTorch state dict into a module (see {@linkcode importTorchStateDict}); returns
 * the report (ignored keys, buffers kept, the stripped prefix).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const lin = new nn.Linear(1, 1);
 * const r = nn.loadTorchStateDict(lin, {
 *   "module.weight": { shape: [1, 1], data: new Float32Array([2]) },
 *   "module.bias": { shape: [1], data: new Float32Array([0]) },
 * });
 * assert.equal(r.stripped, "module.");
 * assert.deepEqual([...await lin.weight.data()], [2]);
 * ```
 */
export function loadTorchStateDict(
  module: Module,
  dict: TorchStateDict,
  opts: ImportOptions = {},
): StateDictReport {
  module.loadStateDict(importTorchStateDict(module, dict, opts));
  return compareStateDict(module, dict, opts);
}

/**
 * A module's weights as a PyTorch state dict on the host (F32; parameters and buffers, in
 * registration order), rewritten into the `"repa"` convention when asked. `source` replaces
 * the module's own values (e.g. EMA weights by name).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const net = new nn.DiT({ inputSize: 4, inChannels: 1, hiddenSize: 8, depth: 1, numHeads: 2, numClasses: 2, seed: 0 });
 * const sd = await nn.exportTorchStateDict(net);
 * assert.deepEqual([...sd["blocks.0.attn.qkv.weight"]!.shape], [24, 8]); // 3·hidden × hidden
 * assert.deepEqual([...sd["pos_embed"]!.shape], [1, 4, 8]); // (4/2)² patches (default patch 2)
 * ```
 */
export async function exportTorchStateDict(
  module: Module,
  opts: { convention?: TimeConvention; source?: Record<string, Tensor> } = {},
): Promise<Record<string, { shape: number[]; data: Float32Array }>> {
  const own = module.stateDict();
  let out: TorchStateDict = {};
  for (const [k, t] of Object.entries(own)) {
    const v = opts.source?.[k] ?? t;
    if (v.size !== t.size) {
      throw new RangeError(`Cannot export "${k}": ${fmtShape(v.shape)} vs ${fmtShape(t.shape)}`);
    }
    out[k] = { shape: [...t.shape], data: Float32Array.from(await v.data()) };
  }
  if (opts.convention === "repa") out = flipTimeConvention(module, out);
  return Object.fromEntries(
    Object.entries(out).map(([k, v]) => [k, { shape: [...v.shape], data: v.data }]),
  );
}

/** What {@linkcode detectArchitecture} reads from a state dict's shapes (`key`: the key that told the kind). */
export type DetectedArchitecture =
  & { key: string }
  & (
    | {
      kind: "dit";
      hiddenSize: number;
      inChannels: number;
      patchSize: number;
      depth: number;
      mlpRatio: number;
      /** Image side from `pos_embed` (undefined without it). */
      inputSize: number | undefined;
      /** Rows of the label table (0 without one): classes, plus 1 with a null class. */
      labelRows: number;
      frequencyEmbeddingSize: number;
    }
    | {
      kind: "velocity-mlp";
      dim: number;
      hidden: number;
      depth: number;
      /** Input columns beyond x: 1 for raw t, else a sinusoid's width. */
      timeFeatures: number;
      labelRows: number;
    }
    | {
      kind: "adaln-mlp";
      dim: number;
      hidden: number;
      blocks: number;
      timeEmbedDim: number;
      labelRows: number;
    }
  );

/** Shapes by name: a state dict, or a module's or checkpoint's tensors. */
type Shapes = Record<string, { readonly shape: readonly number[] }>;

function shapeOf(d: Shapes, k: string): readonly number[] {
  const e = d[k];
  if (!e || !Array.isArray(e.shape)) {
    throw new RangeError(`The state dict has no "${k}" (needed to read the architecture)`);
  }
  return e.shape;
}

function countIndexed(d: Shapes, prefix: string): number {
  const ids = new Set<number>();
  for (const k of Object.keys(d)) {
    const m = k.startsWith(prefix) ? /^(\d+)\./.exec(k.slice(prefix.length)) : null;
    if (m) ids.add(Number(m[1]));
  }
  return ids.size;
}

/**
 * Tell which of flowgpu's networks a state dict (or any name → `{shape}` record, such as a
 * checkpoint's tensors) holds and read its sizes from the shapes (after stripping a
 * `module.`/`_orig_mod.` prefix). Throws a `RangeError` naming the keys it
 * looked for when it is none of them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const net = new nn.VelocityMLP({ dim: 2, hidden: 8, depth: 2, seed: 0 });
 * const a = nn.detectArchitecture(await nn.exportTorchStateDict(net));
 * assert.equal(a.kind, "velocity-mlp");
 * assert.equal(a.kind === "velocity-mlp" && a.depth, 2);
 * assert.equal(a.kind === "velocity-mlp" && a.timeFeatures, 1);
 * ```
 */
export function detectArchitecture(
  dict: Record<string, { readonly shape: readonly number[] }>,
): DetectedArchitecture {
  const { dict: d } = stripWrapper(dict as TorchStateDict);
  const rows = (k: string) => (d[k] ? shapeOf(d, k)[0]! : 0);
  if (d["x_embedder.proj.weight"]) {
    const [hidden, inCh, p] = shapeOf(d, "x_embedder.proj.weight") as number[];
    const tokens = d["pos_embed"] ? shapeOf(d, "pos_embed")[1]! : undefined;
    return {
      kind: "dit",
      key: "x_embedder.proj.weight",
      hiddenSize: hidden!,
      inChannels: inCh!,
      patchSize: p!,
      depth: countIndexed(d, "blocks."),
      mlpRatio: shapeOf(d, "blocks.0.mlp.fc1.weight")[0]! / hidden!,
      inputSize: tokens === undefined ? undefined : Math.round(Math.sqrt(tokens)) * p!,
      labelRows: rows("y_embedder.embedding_table.weight"),
      frequencyEmbeddingSize: shapeOf(d, "t_embedder.mlp.0.weight")[1]!,
    };
  }
  if (d["net.0.weight"]) {
    const n = countIndexed(d, "net.");
    const lastIdx = Math.max(
      ...Object.keys(d).map((k) => /^net\.(\d+)\.weight$/.exec(k)).filter((m) => m).map((m) =>
        Number(m![1])
      ),
    );
    const dim = shapeOf(d, `net.${lastIdx}.weight`)[0]!;
    return {
      kind: "velocity-mlp",
      key: "net.0.weight",
      dim,
      hidden: shapeOf(d, "net.0.weight")[0]!,
      depth: n - 1,
      timeFeatures: shapeOf(d, "net.0.weight")[1]! - dim,
      labelRows: rows("y_embedder.embedding_table.weight"),
    };
  }
  if (d["input_layer.weight"] && d["output_layer.weight"]) {
    const dim = shapeOf(d, "output_layer.weight")[0]!;
    return {
      kind: "adaln-mlp",
      key: "input_layer.weight",
      dim,
      hidden: shapeOf(d, "input_layer.weight")[0]!,
      blocks: countIndexed(d, "blocks."),
      timeEmbedDim: shapeOf(d, "input_layer.weight")[1]! - dim,
      labelRows: rows("y_embedder.embedding_table.weight"),
    };
  }
  const keys = Object.keys(d);
  throw new RangeError(
    `Cannot tell the architecture of this state dict: it has none of "x_embedder.proj.weight" ` +
      `(DiT/SiT), "net.0.weight" (VelocityMLP, torchcfm MLP), "input_layer.weight" + ` +
      `"output_layer.weight" (AdaLNMLP, StableVM ScoreNet); its keys begin ${
        list(keys.slice(0, 8))
      }`,
  );
}
