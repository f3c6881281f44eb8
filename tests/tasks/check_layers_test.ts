/**
 * @file `deno task check:layers` on this repository (so CI enforces the layering through the
 * test command), and its checker on graphs with known answers.
 */
import { strict as assert } from "node:assert";
import { checkGraph, cycles, groupOf, main } from "../../tasks/check_layers.ts";

Deno.test("check:layers: the repository has no import cycle and no upward or sibling import", async () => {
  const problems = await main(["--root", new URL("../../", import.meta.url).pathname]);
  assert.ok(problems);
  assert.deepEqual(problems.map((p) => p.message), []);
});

Deno.test("check:layers: the checker finds cycles, upward and sibling imports, and unassigned files", () => {
  const g = new Map<string, string[]>([
    ["lib/ops/a.ts", ["lib/ops/b.ts"]],
    ["lib/ops/b.ts", ["lib/ops/a.ts", "lib/shape.ts"]],
    ["lib/shape.ts", []],
    ["lib/flow/x.ts", ["lib/data/y.ts"]], // siblings
    ["lib/data/y.ts", []],
    ["lib/nn/m.ts", ["lib/train/fit.ts"]], // upward
    ["lib/train/fit.ts", []],
    ["lib/mystery/z.ts", []],
  ]);
  const kinds = checkGraph(g).map((p) => p.kind).sort();
  assert.deepEqual(kinds, ["cycle", "sibling", "unassigned", "upward"]);
  assert.deepEqual(cycles(g).map((c) => c.sort()), [["lib/ops/a.ts", "lib/ops/b.ts"]]);
  assert.ok(groupOf("lib/tensor.ts")!.layer === groupOf("lib/ops/ops.ts")!.layer);
  assert.ok(groupOf("kernels/matmul.ts")!.layer < groupOf("lib/backend/cpu.ts")!.layer);
});
