/**
 * @file `deno task setup` (run first by `deno task test`): make sure the system packages the
 * tests and tasks read are present — Mesa's lavapipe (a CPU WebGPU adapter, used when the
 * machine has no GPU) and Debian's Fashion-MNIST — installing them with apt-get when running
 * as root, and saying exactly what is missing otherwise.
 * @module
 */

const FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return { ok: r.success, out: new TextDecoder().decode(r.stdout) };
  } catch {
    return { ok: false, out: "" };
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Return the Debian packages that are missing. */
export async function missingPackages(): Promise<string[]> {
  const missing: string[] = [];
  const lvp = await run("dpkg-query", ["-W", "-f=${Status}", "mesa-vulkan-drivers"]);
  const hasAdapter = (await navigator.gpu?.requestAdapter()) != null;
  if (!hasAdapter && !lvp.out.includes("install ok installed")) missing.push("mesa-vulkan-drivers");
  if (!(await exists(FASHION))) missing.push("dataset-fashion-mnist");
  return missing;
}

if (import.meta.main) {
  const missing = await missingPackages();
  if (missing.length === 0) Deno.exit(0);
  const isRoot = Deno.uid?.() === 0;
  if (!isRoot) {
    console.error(
      `setup: missing Debian packages: ${missing.join(" ")}. Install them with ` +
        `'sudo apt-get install -y ${missing.join(" ")}'; tests that need them will fail.`,
    );
    Deno.exit(0);
  }
  console.error(`setup: apt-get install -y ${missing.join(" ")}`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [["update", "-qq"], ["install", "-y", "-qq", ...missing]]) {
    const r = await new Deno.Command("apt-get", { args, env, stdout: "inherit", stderr: "inherit" })
      .output();
    if (!r.success) {
      console.error(`setup: 'apt-get ${args.join(" ")}' failed`);
      Deno.exit(1);
    }
  }
}
