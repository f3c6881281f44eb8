/**
 * @file Helpers of `deno task report`: listing a run's files, step numbers in file names, and
 * the environment a report is generated in. Apart from the task so it stays short.
 * @module
 */

/** Whether `e` is Deno's NotFound error. */
export const isNotFound = (e: unknown) => e instanceof Error && e.name === "NotFound";

/** Files under `dir` (relative names, sorted), descending `depth` directory levels. */
export async function listFiles(dir: string, depth = 1): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile) out.push(e.name);
      else if (e.isDirectory && depth > 0) {
        for (const f of await listFiles(`${dir}/${e.name}`, depth - 1)) out.push(`${e.name}/${f}`);
      }
    }
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  return out.sort();
}

/** The step number in a file name such as `step-000123.png` (the last number), or null. */
export const stepOf = (name: string): number | null => {
  const all = name.replace(/\.[^.]+$/, "").match(/\d+/g);
  return all ? Number(all[all.length - 1]) : null;
};

/**
 * Where and with what the report is generated: commit (when `git` may run), Deno, OS,
 * WebGPU adapter, time.
 *
 * @example
 * ```ts
 * import { currentEnvironment } from "./_report_files.ts";
 * import { strict as assert } from "node:assert";
 * const env = await currentEnvironment();
 * assert.equal(env["Deno"], Deno.version.deno);
 * assert.ok("WebGPU adapter" in env);
 * ```
 */
export async function currentEnvironment(): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
    }).output();
    if (out.success) env["flowgpu commit"] = new TextDecoder().decode(out.stdout).trim();
  } catch { /* no git, or not allowed */ }
  env["Deno"] = Deno.version.deno;
  env["OS"] = `${Deno.build.os} ${Deno.build.arch}`;
  try {
    const a = await navigator.gpu?.requestAdapter();
    env["WebGPU adapter"] = a
      ? a.info.description || [a.info.vendor, a.info.architecture].filter(Boolean).join(" ")
      : "none";
  } catch {
    env["WebGPU adapter"] = "none";
  }
  env["Generated"] = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  return env;
}
