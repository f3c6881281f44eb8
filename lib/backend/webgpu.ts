/**
 * @file Placeholder: the WebGPU backend is being written.
 * @module
 */
import type { Backend } from "./backend.ts";

/** Create the WebGPU backend (not yet implemented). */
export function createWebGPUBackend(): Promise<Backend> {
  return Promise.reject(new Error("the WebGPU backend is not built yet"));
}
