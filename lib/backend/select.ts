/**
 * @file Backend selection. Nothing happens at import (no top-level await, no adapter
 * request), so the library imports with zero permissions and no GPU. Until `init()` runs,
 * tensors live on the CPU backend, created on first use. `await init()` picks the default
 * backend once: `FLOWGPU_BACKEND=cpu|wasm|webgpu` if set (and readable), else WebGPU when a
 * hardware adapter exists, else the `wasm` backend (WebAssembly SIMD on the CPU's cores: no
 * adapter, or a software one such as lavapipe or SwiftShader, which it outruns 2–3×), else the
 * CPU backend with a one-line warning naming the fix. Selection
 * errors (an unknown name, WebGPU requested but missing) are raised by `init()` and
 * `setBackend()`.
 * @module
 */
import type { Backend } from "./backend.ts";
import { CpuBackend } from "./cpu.ts";
import { createWebGPUBackend, type WebGPUBackend } from "./webgpu.ts";
import { createWasmBackend, type WasmBackend, wasmSimdAvailable } from "./wasm.ts";
import { envGet } from "../_util.ts";

/** Names of the backends. */
export type BackendName = "cpu" | "wasm" | "webgpu";

/** Options for {@link init}. */
export interface InitOptions {
  /**
   * The backend to select; wins over `FLOWGPU_BACKEND`. Default: the variable if set, else
   * WebGPU when an adapter exists, else the CPU backend.
   */
  backend?: BackendName;
}

const NAMES: readonly BackendName[] = ["cpu", "wasm", "webgpu"];
const FIX = "install a GPU driver, or 'apt-get install mesa-vulkan-drivers' for a CPU WebGPU " +
  "adapter";

let cpu: CpuBackend | undefined;
let wasm: WasmBackend | undefined;
let webgpu: WebGPUBackend | undefined;
let webgpuError: string | undefined;
// The one attempt at creating the WebGPU backend (an adapter request is not repeated).
let webgpuAttempt: Promise<void> | undefined;
let current: Backend | undefined;
let initialised = false;

function cpuBackend(): CpuBackend {
  return (cpu ??= new CpuBackend());
}

function tryWebGPU(): Promise<void> {
  return webgpuAttempt ??= createWebGPUBackend().then(
    (be) => void (webgpu = be),
    (e) => void (webgpuError = (e as Error).message),
  );
}

function checkName(name: unknown, what: string): BackendName {
  if (!NAMES.includes(name as BackendName)) {
    throw new RangeError(
      `Unknown ${what} "${name}": expected one of ${NAMES.map((n) => `"${n}"`).join(", ")}`,
    );
  }
  return name as BackendName;
}

/**
 * Initialise the engine and select the default backend: `opts.backend` if given, else
 * `FLOWGPU_BACKEND=cpu|wasm|webgpu` if set (and readable), else WebGPU when a hardware adapter
 * exists, else the `wasm` backend when the engine has WebAssembly SIMD and shared memory (on a
 * software adapter too: it is faster there), else the CPU backend with a one-line warning
 * naming the fix. Later calls without
 * `opts.backend` return the backend in use (so a `setBackend` choice stands). Throws a
 * RangeError for an unknown name and an Error when WebGPU is requested but unavailable.
 * Before `init()`, tensors are created on the CPU backend.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { init, tensor } from "../../mod.ts";
 * const be = await init(); // WebGPU on a GPU, else wasm (or the CPU backend)
 * const x = tensor([1, 2, 3]); // on `be`
 * assert.ok(["webgpu", "wasm", "cpu"].includes(be.name));
 * assert.equal(x.backend, be);
 * ```
 */
export async function init(opts: InitOptions = {}): Promise<Backend> {
  if (opts.backend === undefined && initialised) return getBackend();
  let want: BackendName | undefined;
  let source: string;
  if (opts.backend !== undefined) {
    want = checkName(opts.backend, "backend");
    source = `init({ backend: "${want}" })`;
  } else {
    const env = envGet("FLOWGPU_BACKEND");
    if (env !== undefined && env !== "") want = checkName(env, "FLOWGPU_BACKEND");
    source = `FLOWGPU_BACKEND=${want}`;
  }
  if (want === "wasm") {
    // WebAssembly SIMD kernels on this CPU's cores (no adapter involved).
    wasm ??= await createWasmBackend().catch((e) => {
      throw new Error(`${source} was requested but cannot start: ${(e as Error).message}`);
    });
    current = wasm;
    initialised = true;
    return current;
  }
  if (want !== "cpu") await tryWebGPU();
  if (want === "webgpu" && !webgpu) {
    throw new Error(
      `${source} was requested but no WebGPU device is available: ${webgpuError}. Fix: ${FIX}`,
    );
  }
  if (want === undefined && (!webgpu || webgpu.software) && wasmSimdAvailable()) {
    // No GPU, or a software adapter on the CPU: the wasm backend uses the same cores 2–3×
    // better (measured: docs/engine_round2.md). FLOWGPU_BACKEND=webgpu keeps the adapter.
    const w = await createWasmBackend().catch(() => undefined);
    if (w) {
      wasm ??= w;
      if (!webgpu && !initialised) {
        console.warn(`flowgpu: no WebGPU adapter (${webgpuError}); using the wasm backend.`);
      }
      current = wasm;
      initialised = true;
      return current;
    }
  }
  if (want === undefined && !webgpu && !initialised) {
    console.warn(
      `flowgpu: no WebGPU adapter (${webgpuError}); using the CPU backend. Fix: ${FIX}.`,
    );
  }
  current = want === "cpu" || !webgpu ? cpuBackend() : webgpu;
  initialised = true;
  return current;
}

/**
 * The backend new tensors are created on: the one `init()` or `setBackend()` selected, else
 * (before `init()`) the CPU backend.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { getBackend } from "./select.ts";
 * assert.equal(getBackend().name, "cpu"); // "cpu" until init() selects another
 * ```
 */
export function getBackend(): Backend {
  return (current ??= cpuBackend());
}

/**
 * Select the backend for tensors created from now on. Throws a RangeError for an unknown
 * name, and an Error when WebGPU is requested but `init()` has not created it (not called
 * yet, `FLOWGPU_BACKEND=cpu`, or no adapter).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { getBackend, setBackend } from "./select.ts";
 * assert.equal(setBackend("cpu").name, "cpu");
 * assert.equal(getBackend().name, "cpu");
 * ```
 */
export function setBackend(name: BackendName): Backend {
  checkName(name, "backend");
  const be = backendByName(name);
  if (!be && name === "wasm") {
    throw new Error('The wasm backend is not initialised: call `await init({ backend: "wasm" })`');
  }
  if (!be) {
    throw new Error(
      webgpuAttempt === undefined
        ? "The WebGPU backend is not initialised: call `await init()` first"
        : `The WebGPU backend is not available: ${
          webgpuError ?? "it was not initialised (FLOWGPU_BACKEND=cpu?)"
        }. Fix: ${FIX}`,
    );
  }
  current = be;
  return be;
}

/**
 * Whether a backend is available: always for "cpu"; for "webgpu" once `init()` has created
 * it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hasBackend } from "./select.ts";
 * assert.equal(hasBackend("cpu"), true); // the CPU backend always exists
 * ```
 */
export function hasBackend(name: BackendName): boolean {
  return backendByName(name) !== undefined;
}

/**
 * Get a backend by name without switching to it (undefined when unavailable: WebGPU before
 * `init()` or without an adapter).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { backendByName } from "./select.ts";
 * assert.equal(backendByName("cpu")?.name, "cpu");
 * ```
 */
export function backendByName(name: BackendName): Backend | undefined {
  return name === "cpu" ? cpuBackend() : name === "webgpu" ? webgpu : wasm;
}
