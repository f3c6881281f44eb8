/**
 * @file Backend selection. The default backend is chosen once, when the library is first
 * imported: `FLOWGPU_BACKEND=cpu|webgpu` if set (and readable), else WebGPU when an adapter
 * exists, else the CPU backend with a one-line warning naming the fix.
 * @module
 */
import type { Backend } from "./backend.ts";
import { CpuBackend } from "./cpu.ts";
import { createWebGPUBackend } from "./webgpu.ts";
import { envGet } from "../_util.ts";

/** Names of the backends. */
export type BackendName = "cpu" | "webgpu";

const backends: Partial<Record<BackendName, Backend>> = { cpu: new CpuBackend() };
let webgpuError: string | undefined;
let current: Backend = backends.cpu!;

async function initDefault(): Promise<void> {
  const want = envGet("FLOWGPU_BACKEND");
  if (want !== undefined && want !== "" && want !== "cpu" && want !== "webgpu") {
    throw new RangeError(
      `Unknown FLOWGPU_BACKEND "${want}": expected one of "cpu", "webgpu"`,
    );
  }
  if (want === "cpu") return;
  try {
    backends.webgpu = await createWebGPUBackend();
    current = backends.webgpu;
  } catch (e) {
    webgpuError = (e as Error).message;
    if (want === "webgpu") {
      throw new Error(
        `FLOWGPU_BACKEND=webgpu was requested but no WebGPU device is available: ${webgpuError}`,
      );
    }
    console.warn(
      `flowgpu: no WebGPU adapter (${webgpuError}); using the CPU backend. ` +
        `Fix: install a GPU driver, or 'apt-get install mesa-vulkan-drivers' for a CPU WebGPU adapter.`,
    );
  }
}
await initDefault();

/**
 * The backend new tensors are created on.
 *
 * @example
 * ```ts
 * import { getBackend } from "./select.ts";
 * console.log(getBackend().name);
 * ```
 */
export function getBackend(): Backend {
  return current;
}

/**
 * Select the backend for tensors created from now on. Throws when WebGPU is requested and
 * no device is available.
 *
 * @example
 * ```ts
 * import { setBackend } from "./select.ts";
 * setBackend("cpu");
 * ```
 */
export function setBackend(name: BackendName): Backend {
  if (name !== "cpu" && name !== "webgpu") {
    throw new RangeError(`Unknown backend "${name}": expected one of "cpu", "webgpu"`);
  }
  const be = backends[name];
  if (!be) {
    throw new Error(
      `The WebGPU backend is not available: ${webgpuError ?? "it was not initialised"}. ` +
        `Install a GPU driver, or 'apt-get install mesa-vulkan-drivers' for a CPU WebGPU adapter`,
    );
  }
  current = be;
  return be;
}

/**
 * Whether a backend is available on this machine.
 *
 * @example
 * ```ts
 * import { hasBackend } from "./select.ts";
 * if (!hasBackend("cpu")) throw new Error("bad");
 * ```
 */
export function hasBackend(name: BackendName): boolean {
  return backends[name] !== undefined;
}

/**
 * Get a backend by name without switching to it (undefined when unavailable).
 *
 * @example
 * ```ts
 * import { backendByName } from "./select.ts";
 * backendByName("cpu");
 * ```
 */
export function backendByName(name: BackendName): Backend | undefined {
  return backends[name];
}
