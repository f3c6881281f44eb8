/**
 * Bad input raises a TypeError/RangeError whose message names the input and the shapes
 * involved, so a user can fix the call without reading the library.
 */
import { strict as assert } from "node:assert";
import * as fg from "../../mod.ts";
import { HAS_WEBGPU } from "../_helpers.ts";

fg.setBackend("cpu");

/** Assert `fn` throws an instance of `type` whose message contains every fragment. */
function throwsWith(fn: () => unknown, type: ErrorConstructor, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(
      e instanceof type,
      `expected ${type.name} but got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`,
    );
    for (const f of fragments) {
      assert.ok((e as Error).message.includes(f), `message "${(e as Error).message}" lacks "${f}"`);
    }
    return true;
  });
}

const a23 = () => fg.zeros([2, 3]);
const a45 = () => fg.zeros([4, 5]);

Deno.test("binary ops: non-broadcastable shapes are a RangeError naming both shapes", () => {
  throwsWith(() => fg.add(a23(), a45()), RangeError, "[2, 3]", "[4, 5]", "add");
  throwsWith(() => fg.mul(a23(), fg.zeros([3, 2])), RangeError, "[2, 3]", "[3, 2]");
  throwsWith(() => fg.where(fg.zeros([2]), a23(), a23()), RangeError, "[2]", "[2, 3]");
  throwsWith(() => fg.maximum(a23(), fg.zeros([4])), RangeError, "[2, 3]", "[4]");
  throwsWith(() => fg.broadcastTo(a23(), [4, 3]), RangeError, "[2, 3]", "[4, 3]");
  throwsWith(() => fg.broadcastTo(a23(), [3]), RangeError, "[2, 3]", "[3]");
});

Deno.test("matmul: misaligned inner axes, bad batch axes and rank 0 name the shapes", () => {
  throwsWith(() => fg.matmul(a23(), a45()), RangeError, "[2, 3]", "[4, 5]", "align");
  throwsWith(() => fg.matmul(a23(), a23(), { transB: false }), RangeError, "[2, 3]");
  throwsWith(
    () => fg.matmul(a23(), fg.zeros([3, 4]), { transA: true }),
    RangeError,
    "transA=true",
    "[3, 4]",
  );
  throwsWith(() => fg.matmul(fg.zeros([2, 2, 3]), fg.zeros([3, 3, 4])), RangeError, "[2]", "[3]");
  throwsWith(() => fg.matmul(fg.zeros([3]), fg.zeros([4])), RangeError, "[3]", "[4]");
  throwsWith(() => fg.matmul(fg.tensor(1), a23()), RangeError, "[]", "[2, 3]");
});

Deno.test("concat/stack/split: mismatched shapes and sizes name the shapes", () => {
  throwsWith(
    () => fg.concat([a23(), fg.zeros([3, 3])], 1),
    RangeError,
    "[2, 3]",
    "[3, 3]",
    "axis 1",
  );
  throwsWith(() => fg.concat([a23(), fg.zeros([2, 3, 1])]), RangeError, "[2, 3, 1]");
  throwsWith(() => fg.concat([]), RangeError, "at least one");
  throwsWith(() => fg.stack([a23(), fg.zeros([3, 2])]), RangeError, "[1, 2, 3]", "[1, 3, 2]");
  throwsWith(() => fg.split(a23(), [1, 2]), RangeError, "[1, 2]", "[2, 3]");
});

Deno.test("reshape/slice/gather/scatterAdd/transpose/squeeze/pad: bad arguments name the shapes", () => {
  throwsWith(() => fg.reshape(a23(), [4, 5]), RangeError, "[2, 3]", "[4, 5]");
  throwsWith(() => fg.reshape(a23(), [4, -1]), RangeError, "[2, 3]", "[4, -1]");
  throwsWith(() => fg.slice(a23(), [1, 0], [2, 3]), RangeError, "[2, 3]");
  throwsWith(() => fg.slice(a23(), [0], [1]), RangeError, "[2, 3]");
  throwsWith(() => fg.sliceRows(a23(), 1, 5), RangeError, "[2, 3]");
  throwsWith(() => fg.gather(a23(), fg.tensor([[0, 1]]), 0), RangeError, "[1, 2]", "1-D");
  throwsWith(() => fg.gather(a23(), fg.tensor([0, 3]), 1), RangeError, "3", "size 3");
  throwsWith(() => fg.gather(a23(), fg.tensor([0.5]), 0), RangeError, "0.5");
  throwsWith(() => fg.scatterAdd(a23(), fg.tensor([0, 1, 2]), 0, 4), RangeError, "[2, 3]", "[3]");
  throwsWith(() => fg.transpose(a23(), [0, 0]), RangeError, "[2, 3]", "[0, 0]");
  throwsWith(() => fg.squeeze(a23(), 0), RangeError, "[2, 3]");
  throwsWith(() => fg.pad(a23(), [[1, 1]]), RangeError, "[2, 3]");
  throwsWith(() => fg.pad(a23(), [[-1, 0], [0, 0]]), RangeError, "[2, 3]", "[-1, 0]", "[1, 3]");
  throwsWith(() => fg.padSlice(a23(), [2, 2], [0, 0]), RangeError, "[2, 3]", "[2, 2]");
  throwsWith(() => fg.padSlice(a23(), [3, 4], [2, 0]), RangeError, "[2, 3]", "[2, 0]", "[3, 4]");
  throwsWith(() => fg.slice(a23(), [0.5, 0], [1, 1]), RangeError, "[0.5, 0]", "[2, 3]");
  throwsWith(() => fg.pairwiseSqDist(a23(), fg.zeros([4, 2])), RangeError, "[2, 3]", "[4, 2]");
});

Deno.test("out-of-range axes are a RangeError naming the axis and the shape", () => {
  throwsWith(() => fg.sum(a23(), 2), RangeError, "Axis 2", "[2, 3]");
  throwsWith(() => fg.mean(a23(), [-3]), RangeError, "Axis -3", "[2, 3]");
  throwsWith(() => fg.max(a23(), 5, true), RangeError, "Axis 5", "[2, 3]");
  throwsWith(() => fg.argmax(a23(), 2), RangeError, "Axis 2", "[2, 3]");
  throwsWith(() => fg.softmax(a23(), 2), RangeError, "Axis 2", "[2, 3]");
  throwsWith(() => fg.concat([a23(), a23()], 2), RangeError, "Axis 2", "[2, 3]");
  throwsWith(() => fg.gather(a23(), fg.tensor([0]), -3), RangeError, "Axis -3", "[2, 3]");
  throwsWith(() => fg.expandDims(a23(), 4), RangeError, "Axis 4", "[2, 3]");
  throwsWith(() => fg.sum(a23(), 1.5), RangeError, "Axis 1.5");
  throwsWith(() => fg.max(fg.zeros([2, 0]), 1), RangeError, "empty", "[2, 0]");
});

Deno.test("tensor(): ragged arrays and size mismatches are rejected", () => {
  throwsWith(() => fg.tensor([[1, 2], [3]]), TypeError, "rectangular");
  throwsWith(() => fg.tensor([[1, 2], 3] as unknown as number[][]), TypeError, "rectangular");
  throwsWith(
    () => fg.tensor([[1, 2], [3, [4]]] as unknown as number[][]),
    TypeError,
    "rectangular",
  );
  throwsWith(() => fg.tensor([1, 2, 3], [2, 2]), RangeError, "[2, 2]", "3 values");
  throwsWith(() => fg.tensor([1, 2], [2, -1]), TypeError, "shape");
  throwsWith(() => fg.zeros([2.5]), TypeError, "shape");
  throwsWith(() => fg.tensor("abc" as unknown as number[]), TypeError, "tensor data");
});

Deno.test("creation and RNG arguments are validated", () => {
  throwsWith(() => fg.arange(0, 5, 0), RangeError, "step");
  throwsWith(() => fg.linspace(0, 1, 0), RangeError, "num", "0");
  throwsWith(() => new fg.Generator(-1), RangeError, "seed", "-1");
  throwsWith(() => new fg.Generator(1.5), RangeError, "seed", "1.5");
  throwsWith(() => fg.randint(3, 3, [2]), RangeError, "high", "3");
  throwsWith(() => fg.randint(0, 2 ** 25, [2]), RangeError, "high - low", String(2 ** 25));
  throwsWith(() => fg.randn([2, -1]), TypeError, "shape");
  throwsWith(() => new fg.Generator(0).permutationHost(-2), RangeError, "n", "-2");
});

Deno.test("autodiff arguments are validated", async () => {
  throwsWith(
    () => fg.valueAndGrad((w: fg.Tensor) => fg.mul(w, 2))(fg.tensor([1, 2, 3])),
    TypeError,
    "size 1",
    "[3]",
  );
  throwsWith(
    () => fg.jvp((x: fg.Tensor) => x, [a23()], [fg.zeros([3, 2])]),
    RangeError,
    "[3, 2]",
    "[2, 3]",
  );
  throwsWith(() => fg.jvp((x: fg.Tensor) => x, [a23()], []), RangeError, "1 primals", "0 tangents");
  await assert.rejects(
    () => fg.ones([2]).item(),
    (e: Error) => e instanceof RangeError && e.message.includes("[2]"),
  );
});

Deno.test("setBackend with an unknown name is a RangeError listing the choices", () => {
  // deno-lint-ignore no-explicit-any
  throwsWith(() => fg.setBackend("cuda" as any), RangeError, '"cuda"', '"cpu"', '"webgpu"');
  assert.equal(fg.getBackend().name, "cpu");
  if (!HAS_WEBGPU) throwsWith(() => fg.setBackend("webgpu"), Error, "WebGPU");
  fg.setBackend("cpu");
});

Deno.test({
  name: "mixing tensors from two backends is a TypeError naming both",
  ignore: !HAS_WEBGPU,
  fn: () => {
    const c = fg.tensor([1, 2], undefined, fg.backendByName("cpu")!);
    const g = fg.tensor([1, 2], undefined, fg.backendByName("webgpu")!);
    throwsWith(() => fg.add(c, g), TypeError, "cpu", "webgpu");
    throwsWith(() => fg.matmul(c, g), TypeError, "cpu", "webgpu");
    throwsWith(() => fg.concat([c, g]), TypeError, "cpu", "webgpu");
    c.dispose();
    g.dispose();
  },
});
