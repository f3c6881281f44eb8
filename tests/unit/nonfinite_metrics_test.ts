/**
 * @file Finding 1 of issue 15, on the metrics side: a diverged model's NaN/Inf samples scored
 * `"w2": 0` on WebGPU (WGSL `clamp` mapped NaN to 0). Every sample metric now refuses
 * non-finite samples with a RangeError, on the CPU backend and, when an adapter exists, on
 * WebGPU, instead of returning a number.
 */
import { strict as assert } from "node:assert";
import { getBackend, histogramKL, init, mmdRbf, setBackend, tensor, w2 } from "../../mod.ts";

const HAS_WEBGPU = await (async () => {
  try {
    return (await (navigator as { gpu?: GPU }).gpu?.requestAdapter()) != null;
  } catch {
    return false;
  }
})();

const GOOD = [[0, 0], [1, 1], [0.3, 0.1], [-0.5, 0.2]];
const BAD: [string, number][] = [["NaN", NaN], ["Infinity", Infinity], ["-Infinity", -Infinity]];

for (const backend of ["cpu", "wasm", "webgpu"] as const) {
  Deno.test({
    name: `w2, mmdRbf and histogramKL refuse NaN and ±Inf samples on the ${backend} backend`,
    ignore: backend === "webgpu" && !HAS_WEBGPU,
    async fn() {
      const prev = getBackend().name;
      if (backend !== "cpu") await init({ backend });
      setBackend(backend);
      try {
        const ok = tensor(GOOD);
        assert.ok(Number.isFinite(await w2(ok, tensor(GOOD.map(([a, b]) => [a + 1, b])))));
        for (const [name, v] of BAD) {
          const rows = GOOD.map((r) => [...r]);
          rows[2]![1] = v;
          const bad = tensor(rows);
          await assert.rejects(w2(bad, ok), RangeError, `w2 with ${name}`);
          await assert.rejects(w2(ok, bad), RangeError, `w2 with ${name} in b`);
          await assert.rejects(mmdRbf(bad, ok), /Expected finite samples for mmdRbf/, name);
          const flat = new Float32Array(rows.flat());
          assert.throws(
            () => histogramKL(new Float32Array(GOOD.flat()), flat),
            new RegExp(`finite model samples but value 5 \\(row 2\\) is ${name}`),
          );
          bad.dispose();
        }
        ok.dispose();
      } finally {
        setBackend(prev);
      }
    },
  });
}
