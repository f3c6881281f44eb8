/**
 * @file `deno task convert <in> <out>` — PyTorch state dict ⇄ flowgpu checkpoint, by the input:
 * a flowgpu checkpoint becomes a PyTorch state dict (plain keys, F32, config in the metadata);
 * other safetensors (F32/F16/BF16; a `.pt` goes through tasks/torch/export.py first) become a
 * checkpoint that `deno task sample` loads. Its config: `--config`, else the file's metadata,
 * else the shapes. Keys map by name (table in lib/nn/convert.ts); missing, unexpected or
 * mis-shaped keys, dtypes not taken, and a config that does not fit the weights are errors
 * naming the keys (exit 2). `--time-convention repa` rewrites weights of REPA/StableVM code
 * (t = 0 data, v = ε − x) into ours (t = 0 noise, v = x1 − x0), and back on the way out.
 *
 *   deno task convert sd.safetensors ckpt.safetensors --config runs/x/config.json
 *   deno task convert ema.safetensors ckpt.safetensors --time-convention repa --ignore-prefix projectors.
 *   deno task convert runs/x/checkpoints/last.safetensors sd.safetensors --weights ema
 * @module
 */
import {
  atomicWrite,
  buildCfmModel,
  type CfmModelConfig,
  decodeCheckpoint,
  decodeSafetensorsWithMetadata,
  encodeSafetensors,
  nn,
  parseConfigFile,
  saveCheckpoint,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { CONVERT_FLAGS } from "./convert.ts";
 * const tc = CONVERT_FLAGS.find((f) => f.name === "time-convention");
 * if (tc?.default !== "flowgpu") throw new Error("the default convention is flowgpu's");
 * ```
 */
const TIMES = ["flowgpu", "repa"] as const;
export const CONVERT_FLAGS = [
  { name: "config", type: "string", help: "config.json, run dir or checkpoint of the weights" },
  { name: "ema", type: "string", help: "PyTorch state dict of the EMA weights" },
  { name: "weights", type: "choice", choices: ["ema", "model"], help: "which to export" },
  {
    name: "time-convention",
    type: "choice",
    choices: TIMES,
    default: "flowgpu",
    help: "repa: t=0 data",
  },
  { name: "ignore-prefix", type: "string", help: "drop keys with these prefixes (a,b,…)" },
  { name: "dataset", type: "string", help: "dataset name of a config read from the shapes" },
] as const satisfies readonly FlagSpec[];

type Config = CfmModelConfig & Record<string, unknown>;

/** A config for messages: what buildCfmModel makes of it. */
function describe(c: Config): string {
  const s = `${c.model}, hidden ${c.hidden}, depth ${c.depth}, dataShape [${c.dataShape}]`;
  if (c.model !== "dit-tiny") return `${s}, ${c.numClasses} classes`;
  const p = c.dataShape[1]! % 4 === 0 ? 4 : c.dataShape[1]! % 2 === 0 ? 2 : 1;
  return `${s}, patch ${p}, ${c.hidden % 4 === 0 ? 4 : 1} heads, ${c.numClasses} classes`;
}

async function read(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch {
    throw new RangeError(`${what}${path}: no such file or cannot be read`);
  }
}

async function readConfig(spec: string): Promise<Config> {
  const isDir = await Deno.stat(spec).then((s) => s.isDirectory, () => false);
  const path = isDir ? `${spec.replace(/\/+$/, "")}/config.json` : spec;
  try {
    return parseConfigFile(new TextDecoder().decode(await read(path, "--config "))) as Config;
  } catch (e) {
    throw new RangeError(
      `--config ${path}: ${(e as Error).message.replace(`--config ${path}: `, "")}`,
    );
  }
}

/** The train:cfm config of a state dict, read from its shapes. */
function inferConfig(a: nn.DetectedArchitecture, dataset?: string): Config {
  // REPA/SV label tables, and ours with label dropout, end with the null class.
  const cls = { numClasses: Math.max(0, a.labelRows - 1), cfgDropout: a.labelRows ? 0.1 : 0 };
  const base = { task: "train:cfm", ...cls, seed: 0, dataset: dataset ?? "converted" };
  if (a.kind === "dit") {
    if (a.inputSize === undefined) {
      throw new RangeError(
        `The state dict has no "pos_embed", so the image size is unknown: pass --config`,
      );
    }
    const dataShape = [a.inChannels, a.inputSize, a.inputSize];
    if (!dataset && dataShape.join() === "1,28,28") base.dataset = "fashion-mnist";
    return { ...base, model: "dit-tiny", hidden: a.hiddenSize, depth: a.depth, dataShape };
  }
  if (a.kind === "velocity-mlp" && a.timeFeatures === 1) {
    return { ...base, model: "velocity-mlp", hidden: a.hidden, depth: a.depth, dataShape: [a.dim] };
  }
  throw new RangeError(
    a.kind === "velocity-mlp"
      ? `"net.0.weight" takes ${a.timeFeatures} time features but train:cfm's velocity-mlp takes raw t: pass --config`
      : `The state dict is an AdaLNMLP (StableVM toy): load it with nn.loadTorchStateDict; deno task sample reads train:cfm models`,
  );
}

/** The module a train:cfm config describes (checking the weights are of its kind), loaded by `fill`. */
function build(c: Config, a: nn.DetectedArchitecture, file: string, fill: (m: nn.Module) => void) {
  if (c?.task !== "train:cfm") {
    throw new RangeError(`${file}: the config is for task ${c?.task}, not train:cfm`);
  }
  if ((c.model === "dit-tiny" ? "dit" : c.model) !== a.kind) {
    throw new RangeError(
      `${file}: the weights are a ${a.kind} ("${a.key}") but the config describes ${describe(c)}`,
    );
  }
  const m = buildCfmModel(c);
  try {
    fill(m);
  } catch (e) {
    m.dispose();
    throw new RangeError(`${file}: the weights do not fit ${describe(c)}: ${(e as Error).message}`);
  }
  return m;
}

/** What `main` returns: the direction, the file written, the config, tensors written. */
export interface ConvertResult {
  /** `"flowgpu"`: a checkpoint was written; `"torch"`: a state dict. */
  to: "flowgpu" | "torch";
  /** The file written. */
  out: string;
  /** The config of the weights. */
  config: Record<string, unknown>;
  /** Tensors written (the model section of a checkpoint). */
  tensors: number;
}

/**
 * Run the task (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./convert.ts";
 * if ((await main(["--help"])) !== null) throw new Error("--help converts nothing");
 * ```
 */
export async function main(argv: readonly string[]): Promise<ConvertResult | null> {
  const f = parseTaskFlags(argv, CONVERT_FLAGS, {
    task: "convert",
    usage: "convert <in.safetensors> <out.safetensors>: PyTorch state dict ⇄ flowgpu checkpoint.",
    positionals: true,
  });
  if (!f) return null;
  const [input, out, ...rest] = f._;
  if (!input || !out || rest.length) {
    throw new RangeError(
      `Expected <in.safetensors> <out.safetensors> but found ${f._.length} arguments`,
    );
  }
  const convention = f.timeConvention as nn.TimeConvention;
  const opts = { convention, ignorePrefixes: (f.ignorePrefix ?? "").split(",").filter((p) => p) };
  const bytes = await read(input, "");
  const dec = decodeSafetensorsWithMetadata(bytes, input);

  if (dec.metadata.format === "flowgpu-checkpoint") { // flowgpu → PyTorch
    const ck = decodeCheckpoint(bytes, input);
    const config = ck.config as Config;
    const which = f.weights ?? (ck.ema ? "ema" : "model");
    if (which === "ema" && !ck.ema) throw new RangeError(`--weights ema: ${input} holds no EMA`);
    const model = build(config, nn.detectArchitecture(ck.model), input, (m) => {
      m.loadStateDict({ ...ck.model, ...(which === "ema" ? ck.ema : {}) });
    });
    const sd = await nn.exportTorchStateDict(model, { convention });
    model.dispose();
    const meta = { format: "pt", source: "flowgpu", weights: which, step: String(ck.step) };
    const cfg = JSON.stringify(config);
    await atomicWrite(
      out,
      encodeSafetensors(sd, { ...meta, time_convention: convention, config: cfg }),
    );
    const n = Object.keys(sd).length;
    console.log(`convert: flowgpu → torch: ${n} tensors (${which}, ${describe(config)}) -> ${out}`);
    return { to: "torch", out, config, tensors: n };
  }
  // PyTorch → flowgpu
  const arch = nn.detectArchitecture(dec.tensors);
  const notes: string[] = [];
  let config: Config;
  if (f.config) config = await readConfig(f.config);
  else if (dec.metadata.config) config = JSON.parse(dec.metadata.config);
  else {
    config = inferConfig(arch, f.dataset);
    notes.push(
      `config read from the shapes: ${describe(config)}` +
        (config.model === "dit-tiny"
          ? "; the weights do not store heads: dit-tiny's rule applies"
          : "") +
        (config.numClasses ? "; the last label row is the null class" : ""),
    );
  }
  const load = (sd: nn.TorchStateDict, file: string) =>
    build(config, arch, file, (m) => m.loadStateDict(nn.importTorchStateDict(m, sd, opts)));
  const model = load(dec.tensors, input);
  const emaFile = f.ema && decodeSafetensorsWithMetadata(await read(f.ema, "--ema "), f.ema);
  const emaModel = emaFile ? load(emaFile.tensors, f.ema!) : undefined;
  const r = nn.compareStateDict(model, dec.tensors, opts);
  await saveCheckpoint(out, {
    model: model.stateDict(),
    ema: emaModel ? Object.fromEntries(emaModel.namedParameters()) : undefined,
    step: /^\d+$/.test(dec.metadata.step ?? "") ? Number(dec.metadata.step) : 0,
    rng: { seed: Number(config.seed ?? 0), counter: 0 },
    config,
    extra: { convertedFrom: input.split("/").pop(), timeConvention: convention },
  });
  const n = Object.keys(model.stateDict()).length;
  model.dispose();
  emaModel?.dispose();
  if (r.ignored.length) notes.push(`dropped ${r.ignored.length} keys (${opts.ignorePrefixes})`);
  if (r.missingBuffers.length) {
    notes.push(`kept flowgpu's own ${r.missingBuffers} (not in the file)`);
  }
  for (const s of notes) console.log(`convert: ${s}`);
  console.log(
    `convert: torch → flowgpu: ${n} tensors${emaModel ? " + EMA" : ""} (${
      describe(config)
    }, ${convention} time) -> ${out}`,
  );
  return { to: "flowgpu", out, config, tensors: n };
}

if (import.meta.main) await runTask("convert", main);
