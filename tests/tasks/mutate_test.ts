/**
 * @file The mutant list of `deno task mutate` follows the code: each mutant's target text
 * occurs exactly once in its file, and its tests exist (running them is `deno task mutate`).
 */
import { strict as assert } from "node:assert";
import { MUTANTS } from "../../tasks/mutate.ts";

const ROOT = new URL("../../", import.meta.url);

Deno.test("deno task mutate: every mutant's target occurs once and its test files exist", async () => {
  assert.ok(MUTANTS.length >= 8);
  for (const m of MUTANTS) {
    const src = await Deno.readTextFile(new URL(m.file, ROOT));
    assert.equal(src.split(m.find).length - 1, 1, `${m.name}: "${m.find}" in ${m.file}`);
    assert.notEqual(m.find, m.replace, m.name);
    for (const t of m.tests) assert.ok((await Deno.stat(new URL(t, ROOT))).isFile, t);
  }
});
