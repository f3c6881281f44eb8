/**
 * @file Grouped elementwise fusion: one expression applied to many groups of tensors (an
 * optimizer's p, g, m, v for every parameter) in one kernel. Per-dispatch overhead dominates
 * small models on Deno's WebGPU, so optimizer updates and EMA use this. The expression
 * builder (`Fx`, `fx`) is lib/ir.ts's and single-group fusion (`fused`) is lib/tensor.ts's.
 * @module
 */
import { backendOf, differentiating, fused, Tensor } from "../tensor.ts";
import type { Storage } from "../backend/backend.ts";
import { Fx } from "../ir.ts";

/**
 * Apply one elementwise expression to several groups of same-shaped tensors (per parameter:
 * p, g, m, v) plus shared scalar tensors (0-d or one element) in one kernel on WebGPU (a
 * few when the groups need more storage buffers than a shader may bind). `build` receives
 * the group's inputs, then the scalars. Returns, per group, one tensor per expression of
 * the group's shape. With `into`, output t (where `into[t] ≥ 0`) updates the group's input
 * `into[t]` instead, and that input tensor itself is returned: the kernel writes its buffer in
 * place when no other tensor shares it (else a new buffer is assigned to it, like
 * `_assign`), which saves an output binding per group, so more groups fit one dispatch.
 * Runs `fused` per group instead when any input is being differentiated (so gradients stay
 * exact).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fusedGroups, tensor } from "../../mod.ts";
 * const lr = tensor(0.1);
 * const [[a], [b]] = fusedGroups(
 *   [[tensor([1, 2]), tensor([1, 1])], [tensor([3]), tensor([2])]],
 *   [lr],
 *   (p, g, lr) => p.sub(g.mul(lr)),
 * );
 * const [da, db] = [await a!.data(), await b!.data()];
 * // p − 0.1·g: [1 − 0.1, 2 − 0.1] and [3 − 0.2]
 * assert.ok(Math.abs(da[0]! - 0.9) < 1e-6 && Math.abs(da[1]! - 1.9) < 1e-6);
 * assert.ok(Math.abs(db[0]! - 2.8) < 1e-6);
 * ```
 */
export function fusedGroups(
  groups: readonly (readonly Tensor[])[],
  scalars: readonly Tensor[],
  build: (...xs: Fx[]) => Fx | Fx[],
  opts: { into?: readonly number[] } = {},
): Tensor[][] {
  if (groups.length === 0) return [];
  const k = groups[0]!.length;
  groups.forEach((g, i) => {
    if (g.length !== k) {
      throw new RangeError(`Expected group ${i} to have ${k} tensors but found ${g.length}`);
    }
    g.forEach((x, t) => {
      if (x.shape.length !== g[0]!.shape.length || x.shape.some((d, a) => d !== g[0]!.shape[a])) {
        throw new RangeError(
          `Expected tensor ${t} of group ${i} to have shape [${
            g[0]!.shape
          }] but found [${x.shape}]`,
        );
      }
    });
  });
  scalars.forEach((s, t) => {
    if (s.size !== 1) {
      throw new RangeError(`Expected scalar ${t} to have one element but found ${s.size}`);
    }
  });
  const into = opts.into ?? [];
  into.forEach((u, t) => {
    if (!Number.isInteger(u) || u >= k || u < -1) {
      throw new RangeError(
        `Expected into[${t}] to be an input index in [-1, ${k - 1}] but found ${u}`,
      );
    }
  });
  const all = [...groups.flat(), ...scalars];
  const be = backendOf(all);
  // Results as fresh tensors, then each `into` output assigned to its input tensor.
  const assignInto = (res: Tensor[][]) =>
    res.map((outs, i) =>
      outs.map((o, t) => {
        const u = into[t] ?? -1;
        if (u < 0) return o;
        groups[i]![u]!._assign(o);
        return groups[i]![u]!;
      })
    );
  if (k === 0 || differentiating(all)) {
    return assignInto(groups.map((g) => fused([...g, ...scalars], build)));
  }
  const vars = Array.from({ length: k + scalars.length }, (_, i) => Fx.input(i));
  const res = build(...vars);
  const outs = (Array.isArray(res) ? res : [res]).map((f) => f.node);
  const spec = groups.map((g) => ({ inputs: g.map((x) => x.storage), size: g[0]!.size }));
  // Writing in place is safe only when the written buffer is this tensor's alone (no
  // reshape view shares it) and is bound nowhere else in the call (WebGPU rejects a
  // writable buffer bound twice; a second reader would see a half-updated buffer).
  const counts = new Map<Storage, number>();
  for (const x of all) counts.set(x.storage, (counts.get(x.storage) ?? 0) + 1);
  const targets = groups.flatMap((g) => into.filter((u) => u >= 0).map((u) => g[u]!));
  const inPlace = into.length > 0 &&
    targets.every((x) => x._buf().refs === 1 && counts.get(x.storage) === 1);
  if (!inPlace) {
    const ss = be.elementwiseGroups(outs, spec, scalars.map((s) => s.storage));
    return assignInto(
      ss.map((row, i) => row.map((s) => Tensor._fromStorage(s, groups[i]![0]!.shape, be))),
    );
  }
  const ss = be.elementwiseGroups(
    outs,
    spec,
    scalars.map((s) => s.storage),
    outs.map((_, t) => into[t] ?? -1),
  );
  return ss.map((row, i) =>
    row.map((s, t) =>
      (into[t] ?? -1) >= 0
        ? groups[i]![into[t]!]!
        : Tensor._fromStorage(s, groups[i]![0]!.shape, be)
    )
  );
}
