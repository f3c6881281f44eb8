/**
 * @file Backend initialisation: importing the library selects nothing (tensors start on the CPU
 * backend, no adapter is requested), `init()` picks FLOWGPU_BACKEND or WebGPU when an adapter
 * exists, and selection errors surface from `init()`/`setBackend()`, not at import. Each case
 * runs in a fresh `deno` process, since the selection is per process.
 */
import { strict as assert } from "node:assert";
import * as fg from "../../mod.ts";
import "../_helpers.ts";

// Whether this machine has a WebGPU adapter, whatever FLOWGPU_BACKEND this test process runs
// under (under `wasm` or `cpu` the helpers' init() never opens WebGPU): probed directly, the
// default backend restored.
const HAS_WEBGPU = await (async () => {
  const prev = fg.getBackend().name;
  const ok = await fg.init({ backend: "webgpu" }).then(() => true, () => false);
  fg.setBackend(prev);
  return ok;
})();

const MOD = new URL("../../mod.ts", import.meta.url).href;

const SCRIPT = `
import * as fg from ${JSON.stringify(MOD)};
const out = {};
out.before = fg.getBackend().name;
out.webgpuBefore = fg.hasBackend("webgpu");
try { fg.setBackend("webgpu"); out.setError = null; } catch (e) { out.setError = e.message; }
out.tensorBefore = fg.tensor([1, 2]).backend.name;
try {
  out.init = (await fg.init()).name;
} catch (e) {
  out.initError = e.constructor.name + ": " + e.message;
}
out.after = fg.getBackend().name;
out.tensorAfter = fg.tensor([1, 2]).backend.name;
fg.setBackend("cpu");
try { out.again = (await fg.init()).name; } catch (e) { out.againError = e.message; }
console.log(JSON.stringify(out));
`;

async function run(
  env: Record<string, string>,
): Promise<{ out: Record<string, unknown>; err: string }> {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/init_case.ts`;
    await Deno.writeTextFile(file, SCRIPT);
    const res = await new Deno.Command("deno", {
      args: ["run", "--no-prompt", "--quiet", "--allow-env=FLOWGPU_BACKEND", file],
      env: { NO_COLOR: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(res.stderr);
    assert.ok(res.success, err);
    const lines = new TextDecoder().decode(res.stdout).trim().split("\n");
    return { out: JSON.parse(lines[lines.length - 1]!), err };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("before init() tensors live on the CPU backend and WebGPU is not requested", async () => {
  const { out } = await run({ FLOWGPU_BACKEND: "cpu" });
  assert.equal(out.before, "cpu");
  assert.equal(out.webgpuBefore, false);
  assert.match(String(out.setError), /not initialised: call `await init\(\)` first/);
  assert.equal(out.tensorBefore, "cpu");
  // FLOWGPU_BACKEND=cpu: init selects the CPU backend and never creates the WebGPU one.
  assert.equal(out.init, "cpu");
  assert.equal(out.after, "cpu");
});

Deno.test("init() picks WebGPU on a hardware adapter, else the wasm backend (a software adapter's cores run it faster)", async () => {
  // An empty FLOWGPU_BACKEND counts as unset (the parent's value would be inherited).
  const { out, err } = await run({ FLOWGPU_BACKEND: "" });
  const software = HAS_WEBGPU &&
    (fg.backendByName("webgpu") as unknown as { software: boolean }).software;
  const want = HAS_WEBGPU && !software ? "webgpu" : "wasm";
  assert.equal(out.init, want);
  assert.equal(out.after, want);
  assert.equal(out.tensorAfter, want);
  // A later init() keeps the backend setBackend chose.
  assert.equal(out.again, "cpu");
  if (!HAS_WEBGPU) assert.match(err, /no WebGPU adapter .*; using the wasm backend/);
  else assert.doesNotMatch(err, /no WebGPU adapter/);
});

Deno.test("a bad FLOWGPU_BACKEND fails init(), not the import", async () => {
  const { out } = await run({ FLOWGPU_BACKEND: "cuda" });
  assert.equal(out.before, "cpu");
  assert.match(String(out.initError), /^RangeError: Unknown FLOWGPU_BACKEND "cuda"/);
  assert.match(String(out.initError), /"cpu", "wasm", "webgpu"/);
});

Deno.test({
  name: "FLOWGPU_BACKEND=webgpu without an adapter fails init() naming the fix",
  ignore: HAS_WEBGPU,
  fn: async () => {
    const { out } = await run({ FLOWGPU_BACKEND: "webgpu" });
    assert.match(String(out.initError), /^Error: FLOWGPU_BACKEND=webgpu was requested/);
    assert.match(String(out.initError), /mesa-vulkan-drivers/);
  },
});

Deno.test("init() with an unknown backend option is a RangeError listing the choices", async () => {
  const cuda = "cuda" as unknown as fg.BackendName;
  await assert.rejects(
    () => fg.init({ backend: cuda }),
    (e: Error) =>
      e instanceof RangeError && /Unknown backend "cuda".*"cpu", "wasm", "webgpu"/.test(e.message),
  );
});
