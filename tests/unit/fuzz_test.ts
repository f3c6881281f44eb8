/**
 * @file A small seeded run of every fuzz target (`deno task fuzz` runs 10,000 cases per
 * target): each mutated file must be accepted with consistent contents or refused with a
 * typed error carrying the file name, within the per-case time budget.
 * @module
 */
import { strict as assert } from "node:assert";
import { runTarget } from "../fuzz/lib.ts";
import { TARGETS } from "../fuzz/targets.ts";
import { formatReport, FUZZ_TARGETS } from "../../tasks/fuzz.ts";

const CASES = 300;

for (const name of FUZZ_TARGETS) {
  Deno.test(`fuzz ${name}: ${CASES} seeded cases, only typed errors, no hang, bounded memory`, async () => {
    const rep = await runTarget(TARGETS[name]!(), { cases: CASES, seed: 15, budgetMs: 5000 });
    assert.equal(rep.failures.length, 0, formatReport(rep));
    assert.equal(rep.cases, CASES);
    assert.ok(rep.accepted > 0 && rep.accepted < CASES, formatReport(rep));
  });
}
