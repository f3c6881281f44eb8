/**
 * @file Worker side of `deno task fuzz`: runs one target and posts a message before every
 * case, so the main thread can terminate a worker stuck in a synchronous loop and name the
 * case that hung.
 * @module
 */
import { type RunOptions, runTarget } from "./lib.ts";
import { TARGETS } from "./targets.ts";
import { setBackend } from "../../mod.ts";

// The worker scope, typed without `lib="deno.worker"` (which would drop the DOM types the
// library's WebGPU code refers to).
const scope = self as unknown as {
  onmessage: (e: MessageEvent<{ target: string } & RunOptions>) => void;
  postMessage(message: unknown): void;
};

scope.onmessage = async (e) => {
  setBackend("cpu"); // accepted checkpoints become tensors; keep the GPU out of the loop
  const { target, ...opts } = e.data;
  const report = await runTarget(TARGETS[target]!(), {
    ...opts,
    onCase: (i) => scope.postMessage({ type: "case", index: i }),
  });
  scope.postMessage({ type: "done", report });
};
