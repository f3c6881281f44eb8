/**
 * @file `deno task compile:sampler`: compile the sampler entry (`tasks/sample.ts`) into a
 * standalone binary `dist/flowgpu-sample` with WebGPU and its permissions baked in.
 *
 * Permissions: the binary reads the checkpoint and writes the output at paths given at run
 * time. Deno resolves scoped `--allow-read=<path>` flags against the directory `deno compile`
 * ran in (denoland/deno#23715), so a binary that works from any directory needs plain
 * `--allow-read`/`--allow-write`; it gets nothing else (no net, no run, no ffi, env only for
 * FLOWGPU_BACKEND), and `tasks/sample.ts` touches only `--checkpoint` and `--out`.
 *
 * `deno compile` downloads a `denort` runtime; machines without that access can point
 * `DENORT_BIN` at a local copy.
 * @module
 */

/** The `deno compile` arguments for the sampler binary. */
export function compileArgs(output = "dist/flowgpu-sample"): string[] {
  return [
    "compile",
    "--allow-read",
    "--allow-write",
    "--allow-env=FLOWGPU_BACKEND",
    "--no-prompt",
    "--output",
    output,
    "tasks/sample.ts",
  ];
}

/** Compile; resolves to the binary's path or throws with deno's own explanation. */
export async function compileSampler(output = "dist/flowgpu-sample"): Promise<string> {
  const r = await new Deno.Command("deno", {
    args: compileArgs(output),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    const err = new TextDecoder().decode(r.stderr);
    const hint = /denort|dl\.deno\.land|Download/i.test(err)
      ? "\n`deno compile` could not get its denort runtime: set DENORT_BIN to a local denort " +
        "binary of the same Deno version, or run on a machine that can reach dl.deno.land."
      : "";
    throw new Error(`deno compile failed:\n${err.trim()}${hint}`);
  }
  return output;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h") || Deno.args.length > 1) {
    console.log(
      "Usage: deno task compile:sampler [OUTPUT]\n" +
        "Compile tasks/sample.ts into a standalone binary (default dist/flowgpu-sample).\n" +
        "deno compile downloads its denort runtime; set DENORT_BIN where it cannot.",
    );
    Deno.exit(Deno.args.length > 1 && !Deno.args.includes("--help") ? 2 : 0);
  }
  if (Deno.args[0]?.startsWith("-")) {
    console.error(`compile:sampler: unknown flag ${Deno.args[0]} (see --help)`);
    Deno.exit(2);
  }
  try {
    const out = await compileSampler(Deno.args[0]);
    console.log(
      `compiled: ${out}\nrun: ${out} --checkpoint <run dir or .safetensors> --out samples.png`,
    );
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
