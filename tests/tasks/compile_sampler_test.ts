/**
 * @file The compiled sampler: its baked permissions stay narrow, and (where `deno compile`
 * can get its denort runtime, via DENORT_BIN) the binary's output equals `deno run` of the
 * same entry bit for bit.
 */
import { strict as assert } from "node:assert";
import { compileArgs, compileSampler } from "../../tasks/compile_sampler.ts";

Deno.test("compile:sampler bakes in only file access and one env var", () => {
  const args = compileArgs("/tmp/x");
  const perms = args.filter((a) => a.startsWith("--allow") || a === "-A");
  assert.deepEqual(perms.sort(), ["--allow-env=FLOWGPU_BACKEND", "--allow-read", "--allow-write"]);
  assert.ok(args.includes("tasks/sample.ts"));
});

const DIR = "/tmp/flowgpu-compile-test";
const denort = Deno.permissions.querySync({ name: "env", variable: "DENORT_BIN" }).state ===
    "granted"
  ? Deno.env.get("DENORT_BIN")
  : undefined;
const reason = denort
  ? ""
  : " (SKIPPED: DENORT_BIN is not set, and deno compile cannot download its denort runtime on " +
    "this machine; set DENORT_BIN to a local denort binary to run it)";

Deno.test({
  name: `compiled flowgpu-sample writes the same .npz as deno run tasks/sample.ts${reason}`,
  ignore: !denort,
  async fn() {
    const { main: train } = await import("../../tasks/train_cfm.ts");
    await Deno.mkdir(DIR, { recursive: true });
    await train([
      "--max-train-steps=5",
      "--batch-size=32",
      "--hidden=16",
      "--output-dir",
      DIR,
      "--exp-name",
      `run-${Date.now()}`,
      "--sample-every=0",
    ]);
    const runs = [...Deno.readDirSync(DIR)].filter((e) => e.isDirectory).map((e) => e.name).sort();
    const ckpt = `${DIR}/${runs.at(-1)}`;
    const bin = await compileSampler(`${DIR}/flowgpu-sample`);
    const common = ["--checkpoint", ckpt, "--num-samples", "64", "--num-steps", "8", "--seed", "3"];
    const env = { FLOWGPU_BACKEND: "cpu", NO_COLOR: "1" };
    const a = await new Deno.Command(bin, { args: [...common, "--out", `${DIR}/a.npz`], env })
      .output();
    assert.ok(a.success, new TextDecoder().decode(a.stderr));
    const b = await new Deno.Command("deno", {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-env=FLOWGPU_BACKEND",
        "tasks/sample.ts",
        ...common,
        "--out",
        `${DIR}/b.npz`,
      ],
      env,
    }).output();
    assert.ok(b.success, new TextDecoder().decode(b.stderr));
    assert.deepEqual(await Deno.readFile(`${DIR}/a.npz`), await Deno.readFile(`${DIR}/b.npz`));
  },
});
