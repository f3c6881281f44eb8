/**
 * @file `deno task fuzz` end to end: each target runs in a worker under the watchdog and the
 * task prints one line per target and exits 0 when nothing failed.
 * @module
 */
import { strict as assert } from "node:assert";

Deno.test("deno task fuzz runs targets in workers and reports cases and error classes", async () => {
  const out = await new Deno.Command("deno", {
    args: [
      "run",
      "--allow-read=.",
      "--allow-env=FLOWGPU_BACKEND",
      "tasks/fuzz.ts",
      "--cases",
      "40",
      "--seed",
      "3",
      "--target",
      "npy,checkpoint",
      "--json",
    ],
    cwd: new URL("../..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const reports = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.deepEqual(reports.map((r: { target: string }) => r.target), ["npy", "checkpoint"]);
  for (const r of reports) {
    assert.equal(r.cases, 40);
    assert.deepEqual(r.failures, []);
  }
  assert.ok(reports[1].errors.CheckpointError > 0);
});
