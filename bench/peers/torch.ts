/**
 * @file Peer: PyTorch on the CPU (Debian's `python3-torch`), run as a `python3` subprocess that
 * prints one JSON object. Cases pass a script that reads its parameters from the `ARGS` global
 * (parsed JSON) and `print(json.dumps(...))` as its last line.
 * @module
 */

/** Interpreters tried in order: the PATH one may be a pyenv build without Debian's torch. */
const PYTHONS = ["python3", "/usr/bin/python3"];

let found: Promise<string | null> | undefined;

async function run(python: string, code: string): Promise<{ ok: boolean; out: string }> {
  const cmd = new Deno.Command(python, {
    args: ["-c", code],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  });
  const r = await cmd.output();
  return { ok: r.success, out: new TextDecoder().decode(r.success ? r.stdout : r.stderr) };
}

/**
 * The first interpreter that can `import torch`, or `null` (no python, no torch, or no
 * `--allow-run` permission for it).
 *
 * @example
 * ```ts
 * import { findTorchPython } from "./torch.ts";
 * const py = await findTorchPython();
 * if (py !== null && typeof py !== "string") throw new Error("bad");
 * ```
 */
export function findTorchPython(): Promise<string | null> {
  found ??= (async () => {
    for (const py of PYTHONS) {
      try {
        if ((await run(py, "import torch")).ok) return py;
      } catch {
        // Not installed, or not allowed by --allow-run: try the next one.
      }
    }
    return null;
  })();
  return found;
}

/**
 * Run `script` under PyTorch with `ARGS = args` and return the JSON it printed last, or `null`
 * when PyTorch is unavailable. A script error is thrown with Python's stderr.
 *
 * @example
 * ```ts
 * import { runTorch } from "./torch.ts";
 * const r = await runTorch("import json\nprint(json.dumps({'y': ARGS['x'] + 1}))", { x: 1 });
 * if (r !== null && (r as { y: number }).y !== 2) throw new Error("bad");
 * ```
 */
export async function runTorch(script: string, args: unknown): Promise<unknown | null> {
  const py = await findTorchPython();
  if (py === null) return null;
  const code = `import json\nARGS = json.loads(${JSON.stringify(JSON.stringify(args))})\n${script}`;
  const r = await run(py, code);
  if (!r.ok) throw new Error(`PyTorch peer failed:\n${r.out}`);
  const lines = r.out.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!);
}

/** A PyTorch script kept running: one JSON reply per request line (see {@linkcode startTorch}). */
export interface TorchSession {
  /** Send one request line and wait for the JSON object the script prints for it. */
  ask(line: string): Promise<unknown>;
  /** End the process (closing its stdin), waiting for it to exit. */
  close(): Promise<void>;
}

/**
 * Start `script` under PyTorch (with `ARGS = args`) as a long-lived process: it prints one JSON
 * line when ready, then one per line it reads from stdin, and exits at end of input. `null`
 * without PyTorch. Lets a bench alternate our runs with PyTorch's in one process each, so a
 * machine whose speed drifts (a shared VM) slows both sides of a comparison alike.
 *
 * @example
 * ```ts
 * import { startTorch } from "./torch.ts";
 * const s = await startTorch(
 *   "import json, sys\nprint(json.dumps({'ready': 1}), flush=True)\n" +
 *     "for line in sys.stdin:\n    print(json.dumps({'y': int(line) * ARGS['k']}), flush=True)",
 *   { k: 3 },
 * );
 * if (s !== null) {
 *   const r = await s.ask("2") as { y: number };
 *   await s.close();
 *   if (r.y !== 6) throw new Error("bad");
 * }
 * ```
 */
export async function startTorch(script: string, args: unknown): Promise<TorchSession | null> {
  const py = await findTorchPython();
  if (py === null) return null;
  const code = `import json\nARGS = json.loads(${JSON.stringify(JSON.stringify(args))})\n${script}`;
  const child = new Deno.Command(py, {
    args: ["-u", "-c", code],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  const writer = child.stdin.getWriter();
  let buf = "";
  const next = async (): Promise<unknown> => {
    for (;;) {
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line.startsWith("{")) return JSON.parse(line);
        continue;
      }
      const { value, done } = await lines.read();
      if (done) {
        await child.status;
        throw new Error(`PyTorch peer exited:\n${await stderr}`);
      }
      buf += value;
    }
  };
  await next(); // ready
  return {
    async ask(line: string) {
      await writer.write(new TextEncoder().encode(`${line}\n`));
      return await next();
    },
    async close() {
      await writer.close();
      await lines.cancel();
      await child.status;
      await stderr;
    },
  };
}

const MATMUL = `
import os, time, torch
# Debian's build may start with one OpenMP thread; use every core, as the WebGPU adapter does.
torch.set_num_threads(os.cpu_count() or 1)
n, warmup, reps = ARGS["n"], ARGS["warmup"], ARGS["reps"]
torch.manual_seed(0)
a = torch.rand(n, n) * 2 - 1
b = torch.rand(n, n) * 2 - 1
for _ in range(warmup):
    a @ b
ts = []
for _ in range(reps):
    t0 = time.perf_counter()
    a @ b
    ts.append(time.perf_counter() - t0)
ts.sort()
print(json.dumps({"ms": ts[len(ts) // 2] * 1e3, "ms_min": ts[0] * 1e3, "ms_max": ts[-1] * 1e3,
                  "threads": torch.get_num_threads(), "version": torch.__version__}))
`;

/** {@linkcode torchMatmulMs}'s result: median, min and max ms of the repetitions. */
export interface TorchMatmulResult {
  ms: number;
  ms_min: number;
  ms_max: number;
  threads: number;
  version: string;
}

const INFO = `
import os, torch
torch.set_num_threads(os.cpu_count() or 1)
torch.rand(64, 64) @ torch.rand(64, 64)
cfg = torch.__config__.show()
# What the build says it links against, and what this process really mapped (Debian's torch
# links the generic libblas.so.3, which libopenblas0-pthread takes over via alternatives).
built = sorted({kv.split(": ")[-1].strip().rstrip(",") for kv in cfg.replace("\\n", ", ").split(", ")
                if "=" in kv and ("BLAS" in kv.split("=")[0] or "MKL" in kv.split("=")[0])})
libs = set()
with open("/proc/self/maps") as f:
    for line in f:
        name = line.split()[-1]
        if "blas" in name.lower() or "mkl" in name.lower():
            libs.add(os.path.realpath(name))
cpu = None
try:
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
except OSError:
    pass
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(),
                  "blas_config": built, "blas_loaded": sorted(libs), "cpu": cpu}))
`;

/** The PyTorch peer's build and the BLAS it ran with. */
export interface TorchInfo {
  version: string;
  threads: number;
  /** `torch.__config__.show()` settings naming BLAS or MKL (e.g. `BLAS_INFO=generic`). */
  blas_config: string[];
  /** BLAS/MKL shared objects mapped into the process after a matmul (resolved paths). */
  blas_loaded: string[];
  /** The CPU model (`/proc/cpuinfo`), or null where unreadable. */
  cpu: string | null;
}

/**
 * PyTorch's version, thread count and BLAS, or `null` without PyTorch.
 *
 * @example
 * ```ts
 * import { torchInfo } from "./torch.ts";
 * const r = await torchInfo();
 * if (r !== null && !Array.isArray(r.blas_loaded)) throw new Error("bad");
 * ```
 */
export async function torchInfo(): Promise<TorchInfo | null> {
  return (await runTorch(INFO, {})) as TorchInfo | null;
}

/**
 * Median milliseconds of an n×n f32 `a @ b` in PyTorch on the CPU, or `null` without PyTorch.
 *
 * @example
 * ```ts
 * import { torchMatmulMs } from "./torch.ts";
 * const r = await torchMatmulMs(8, 1, 1);
 * if (r !== null && !(r.ms >= 0)) throw new Error("bad");
 * ```
 */
export async function torchMatmulMs(
  n: number,
  warmup: number,
  reps: number,
): Promise<TorchMatmulResult | null> {
  return (await runTorch(MATMUL, { n, warmup, reps })) as TorchMatmulResult | null;
}
