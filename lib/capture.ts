/**
 * @file Hooks between a traced training step (lib/device/trace.ts) and the code whose host
 * state a step changes. A trace replays the recorded dispatches without running the
 * JavaScript that made them, so every host-side effect of that code (a generator's counter, an
 * optimizer's step count, a metric window's step) must be redone on replay, and every value
 * that such state bakes into a kernel's parameter words must be recomputed, never replayed
 * stale. Code that has such state registers, while a capture is active, a host effect
 * (`host`) and reads its per-step values through dynamic values (`Dyn`, evaluated at replay in
 * recording order, after the effects recorded before them). Pure helper: no GPU, no Tensor.
 * @module
 */

/** What a replay knows about the step it replays. */
export interface TraceEnv {
  /** The 1-based training step being replayed. */
  readonly step: number;
}

/** A per-step value: recomputed at each replay (after the host effects recorded before it). */
export type Dyn = (env: TraceEnv) => number;

/** What a capture offers the code that runs inside it. */
export interface CaptureHooks {
  /** Record a host-side effect to redo, in order, at every replay. */
  host(fn: (env: TraceEnv) => void): void;
  /** Mark the capture as not replayable (e.g. a dynamic value took an untraceable path). */
  refuse(why: string): void;
}

let current: CaptureHooks | null = null;

/**
 * The active capture's hooks, or null when no step is being captured.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { captureHooks, setCaptureHooks, type TraceEnv } from "./capture.ts";
 * assert.equal(captureHooks(), null);
 * const effects: ((env: TraceEnv) => void)[] = [];
 * const prev = setCaptureHooks({ host: (fn) => effects.push(fn), refuse: () => {} });
 * let counter = 0;
 * captureHooks()?.host(() => counter++);
 * setCaptureHooks(prev);
 * effects.forEach((f) => f({ step: 2 })); // a replay redoes the effect
 * assert.equal(counter, 1);
 * ```
 */
export function captureHooks(): CaptureHooks | null {
  return current;
}

/**
 * Install `h` as the active capture's hooks (null: none); returns the previous hooks.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { captureHooks, setCaptureHooks } from "./capture.ts";
 * const why: string[] = [];
 * const prev = setCaptureHooks({ host: () => {}, refuse: (w) => why.push(w) });
 * captureHooks()!.refuse("read back a value");
 * assert.equal(setCaptureHooks(prev)?.host !== undefined, true);
 * assert.deepEqual(why, ["read back a value"]);
 * ```
 */
export function setCaptureHooks(h: CaptureHooks | null): CaptureHooks | null {
  const prev = current;
  current = h;
  return prev;
}
