/**
 * @file The logging window of the training loop: per-metric sums over the steps since the
 * last log line, kept on the device, plus a device-side "first non-finite step" per metric,
 * so NaN/Inf is caught without reading anything back per step. Each step adds its scalars
 * in one fused kernel (sum += v; bad = bad > 0 ? bad : step·[v is NaN or |v| > f32 max]);
 * one readback of all sums and flags happens only when the loop logs, checkpoints or samples.
 * @module
 */
import { keep, type Tensor } from "../tensor.ts";
import { concat, fusedGroups, fx, reshape, tensor } from "../ops/mod.ts";
import { captureHooks } from "../capture.ts";

/** The largest finite f32: only ±Inf has a larger magnitude. */
const F32_MAX = 3.4028234663852886e38;

/** Where a value first stopped being finite. */
export interface NonFinite {
  /** Step at which it happened. */
  step: number;
  /** Metric name (e.g. `training/loss_flow`). */
  name: string;
  /** The value (NaN, Infinity or −Infinity); the window sum when only that is known. */
  value: number;
}

/** What one readback of the window holds. */
export interface WindowSnapshot {
  /** Mean of each metric over the window's steps. */
  means: Record<string, number>;
  /** The earliest non-finite value, or null. */
  nonFinite: NonFinite | null;
}

/** Serialisable window contents, stored in checkpoints so a resumed run logs the same means. */
export interface WindowState {
  /** Device metrics: [sum, steps]. */
  device: Record<string, [number, number]>;
  /** Host metrics: [sum, steps]. */
  host: Record<string, [number, number]>;
}

interface DevAcc {
  sum: Tensor;
  /** Step of the first non-finite value (0: none yet). */
  bad: Tensor;
  /** That value. */
  badValue: Tensor;
  n: number;
}

/**
 * Accumulates metrics between log lines. Device values (0-d or one-element tensors) are
 * taken over and disposed; host numbers are summed in f64 and checked at once.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { MetricWindow, tensor } from "../../mod.ts";
 * const w = new MetricWindow();
 * w.add(1, { "training/loss_flow": tensor(2) }, { "training/ot_error": 0.5 });
 * w.add(2, { "training/loss_flow": tensor(4) }, {});
 * const snap = await w.read();
 * assert.equal(snap.means["training/loss_flow"], 3);
 * assert.equal(snap.nonFinite, null);
 * w.add(3, { "training/loss_flow": tensor(NaN) }, {});
 * assert.deepEqual((await w.read()).nonFinite?.step, 3);
 * w.dispose();
 * ```
 */
export class MetricWindow {
  #dev = new Map<string, DevAcc>();
  #host = new Map<string, [number, number]>();
  #hostBad: NonFinite | null = null;
  #last: WindowSnapshot | null = null;
  #sums = new Map<string, number>();

  /** Steps accumulated for `name` (0 when absent). */
  count(name: string): number {
    return this.#dev.get(name)?.n ?? this.#host.get(name)?.[1] ?? 0;
  }

  /** Whether the window holds nothing. */
  get empty(): boolean {
    return [...this.#dev.values()].every((a) => a.n === 0) && this.#host.size === 0;
  }

  /** Add one step's values; returns the first non-finite host value (checked at once). */
  add(
    step: number,
    device: Record<string, Tensor>,
    host: Record<string, number>,
  ): NonFinite | null {
    this.#last = null;
    const groups: Tensor[][] = [];
    const owned: Tensor[] = [];
    try {
      for (const [name, v] of Object.entries(device)) {
        if (v.size !== 1) {
          throw new TypeError(
            `Expected metric "${name}" to be a scalar tensor but found shape [${v.shape}]`,
          );
        }
        let acc = this.#dev.get(name);
        if (!acc) {
          acc = {
            sum: keep(tensor([0])),
            bad: keep(tensor([0])),
            badValue: keep(tensor([0])),
            n: 0,
          };
          this.#dev.set(name, acc);
        }
        acc.n++;
        const flat = reshape(v, [1]);
        owned.push(flat);
        groups.push([acc.sum, acc.bad, acc.badValue, flat]);
      }
      // Inside a captured step a replay redoes the counts and writes its own step number.
      const hooks = captureHooks();
      if (hooks) {
        const accs = Object.keys(device).map((name) => this.#dev.get(name)!);
        hooks.host(() => {
          this.#last = null;
          for (const a of accs) a.n++;
        });
      }
      if (groups.length) {
        // One kernel for every metric, accumulators updated in place. NaN is tested on the
        // bits (isNan) and Inf by |v| > f32 max: WGSL compilers may fold `v != v` away.
        fusedGroups(groups, [], (s, b, bv, v) => {
          const nonFinite = v!.un("isNan").add(v!.un("abs").un("gtScalar", F32_MAX));
          const seen = b!.un("gtScalar", 0);
          return [
            s!.add(v!),
            fx.where(
              seen,
              b!,
              nonFinite.mul(hooks ? fx.const(step, (env) => env.step) : fx.const(step)),
            ),
            fx.where(seen, bv!, v!),
          ];
        }, { into: [0, 1, 2] });
      }
    } finally {
      owned.forEach((t) => t.dispose());
      Object.values(device).forEach((t) => t.dispose());
    }
    for (const [name, v] of Object.entries(host)) {
      const acc = this.#host.get(name) ?? [0, 0];
      acc[0] += v;
      acc[1]++;
      this.#host.set(name, acc);
      if (!Number.isFinite(v) && !this.#hostBad) this.#hostBad = { step, name, value: v };
    }
    return this.#hostBad;
  }

  /** Read every sum and flag back (one readback); cached until the next `add`. */
  async read(): Promise<WindowSnapshot> {
    if (this.#last) return this.#last;
    const names = [...this.#dev.keys()];
    const accs = [...this.#dev.values()];
    let vals: Float32Array = new Float32Array(0);
    if (accs.length) {
      const all = concat([
        ...accs.map((a) => a.sum),
        ...accs.map((a) => a.bad),
        ...accs.map((a) => a.badValue),
      ]);
      try {
        vals = await all.data();
      } finally {
        all.dispose();
      }
    }
    const means: Record<string, number> = {};
    let nonFinite: NonFinite | null = this.#hostBad;
    this.#sums.clear();
    const k = names.length;
    names.forEach((name, i) => {
      // Accumulators kept from an earlier window for a metric not reported in this one.
      if (accs[i]!.n === 0) return;
      const sum = vals[i]!, bad = vals[k + i]!;
      this.#sums.set(name, sum);
      means[name] = sum / accs[i]!.n;
      const found = bad > 0
        ? { step: bad, name, value: vals[2 * k + i]! }
        // Compilers may assume floats are finite; the sum is a second witness.
        : !Number.isFinite(sum)
        ? { step: NaN, name, value: sum }
        : null;
      if (found && (!nonFinite || found.step < nonFinite.step || Number.isNaN(nonFinite.step))) {
        nonFinite = found;
      }
    });
    for (const [name, [sum, n]] of this.#host) means[name] = sum / n;
    this.#last = { means, nonFinite };
    return this.#last;
  }

  /**
   * The window's contents (after `read()`), for a checkpoint. f32 sums read back and
   * uploaded again are bit-identical, so a resumed run continues the same window.
   */
  state(): WindowState {
    if (!this.#last && [...this.#dev.values()].some((a) => a.n > 0)) {
      throw new Error("MetricWindow.state() needs read() first");
    }
    const device: WindowState["device"] = {};
    [...this.#dev.entries()].forEach(([name, a]) => {
      if (a.n > 0) device[name] = [this.#sums.get(name)!, a.n];
    });
    const host: WindowState["host"] = {};
    for (const [name, [s, n]] of this.#host) host[name] = [s, n];
    return { device, host };
  }

  /**
   * Restore contents saved by `state()` (replaces the current ones). The sums are known on
   * the host, so they count as read: `state()` works at once (a run resumed at the end of its
   * budget saves its checkpoint again without a step).
   */
  load(st: WindowState | undefined): void {
    this.dispose();
    if (!st) return;
    const means: Record<string, number> = {};
    for (const [name, [sum, n]] of Object.entries(st.device ?? {})) {
      this.#dev.set(name, {
        sum: keep(tensor([sum])),
        bad: keep(tensor([0])),
        badValue: keep(tensor([0])),
        n,
      });
      this.#sums.set(name, sum);
      means[name] = sum / n;
    }
    for (const [name, [sum, n]] of Object.entries(st.host ?? {})) {
      this.#host.set(name, [sum, n]);
      means[name] = sum / n;
    }
    this.#last = { means, nonFinite: null };
  }

  /**
   * Start a new window. The device accumulators are zeroed in place and kept, so a traced
   * step (lib/train/trace.ts) that updates them stays valid across log lines.
   */
  reset(): void {
    const accs = [...this.#dev.values()];
    if (accs.length) {
      fusedGroups(
        accs.map((a) => [a.sum, a.bad, a.badValue]),
        [],
        () => [fx.const(0), fx.const(0), fx.const(0)],
        { into: [0, 1, 2] },
      );
    }
    for (const a of accs) a.n = 0;
    this.#sums.clear();
    this.#host.clear();
    this.#hostBad = null;
    this.#last = null;
  }

  /** Free the device accumulators. */
  dispose(): void {
    for (const a of this.#dev.values()) {
      a.sum.dispose();
      a.bad.dispose();
      a.badValue.dispose();
    }
    this.#dev.clear();
    this.reset();
  }
}
