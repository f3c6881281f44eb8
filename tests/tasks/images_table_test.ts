/**
 * @file `deno task images:table` in a shortened form (a tiny DiT, 2 steps, 20 scored samples,
 * output under /tmp): a row with finite scores for each variant and the variant's own flags,
 * seed 0's grids copied beside the table, an interrupted run resumed (and a finished but
 * unrecorded one only re-scored), rows seeded from the committed JSON, `--render-only` with
 * mean ± std recomputed here, and bad input refused naming the flag.
 */
import { strict as assert } from "node:assert";
import { main } from "../../tasks/images_table.ts";
import { main as trainMain } from "../../tasks/train_stablevm.ts";
import type { ImagesRow } from "../../cli/tables/images.ts";
import { readJsonl } from "../../cli/mod.ts";
import { decodePng } from "../../mod.ts";

const FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const hasFashion = await Deno.stat(FASHION).then(() => true, () => false);
if (!hasFashion) console.log(`images:table tests ignored: ${FASHION} missing`);

const TINY = [
  ...["--max-train-steps", "2", "--batch-size", "8", "--hidden", "16", "--blocks", "1"],
  ...["--eval-samples", "20", "--eval-steps", "2", "--grid-steps", "2", "--seeds", "0"],
];

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

Deno.test({
  name: "images:table: a row per variant, grids, resume of an interrupted run, JSON seeding",
  ignore: !hasFashion,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "images-table-" });
    try {
      const out = `${dir}/docs/t.md`, runs = `${dir}/runs`;
      const args = [...TINY, "--out", out, "--output-dir", runs];
      const rows = (await main(args))!;
      assert.deepEqual(rows.map((r) => r.variant), ["cfm", "stablevm", "stablevm-repa"]);
      for (const r of rows) {
        assert.ok(Number.isFinite(r.fd) && r.fd > 0, `${r.variant} fd ${r.fd}`);
        assert.ok(r.classAcc >= 0 && r.classAcc <= 1, `${r.variant} classAcc ${r.classAcc}`);
        assert.equal(r.classAccPerClass.length, 10);
        assert.ok(Number.isFinite(r.fdRealTrainTest) && r.fdRealTrainTest > 0);
        assert.deepEqual(
          [r.seed, r.steps, r.batchSize, r.hidden, r.blocks, r.evalSamples, r.cfgScale],
          [0, 2, 8, 16, 1, 20, 3],
        );
        assert.equal(r.resumed, false);
        assert.ok(r.seconds > 0 && r.stepMs! > 0);
        assert.match(
          r.command,
          /^deno task train:stablevm --data-dir fashion-mnist --model dit-tiny /,
        );
        // Seed 0's grid: the run's final sample grid upscaled ×2 after a margin of class names.
        assert.equal(r.grid, `${dir}/docs/img/images_table_${r.variant}_seed0.png`);
        const name = r.command.match(/--exp-name (\S+)/)![1]!;
        const raw = await decodePng(
          await Deno.readFile(`${runs}/${name}/samples/samples-step-000002.png`),
        );
        const big = await decodePng(await Deno.readFile(r.grid!));
        assert.deepEqual([raw.channels, big.channels, big.height], [4, 4, 2 * raw.height]);
        const margin = big.width - 2 * raw.width;
        assert.ok(margin > 20, `label margin ${margin}`);
        for (const [x, y] of [[0, 0], [40, 33], [raw.width - 1, raw.height - 1]]) {
          const at = (
            img: typeof raw,
            u: number,
            v: number,
          ) => [...img.data.subarray((v * img.width + u) * 4, (v * img.width + u) * 4 + 4)];
          assert.deepEqual(at(big, margin + 2 * x! + 1, 2 * y! + 1), at(raw, x!, y!));
        }
      }
      // The variants differ in their loss flags only; the floor is the same data for all.
      const [cfm, svm, repa] = rows as [ImagesRow, ImagesRow, ImagesRow];
      assert.match(cfm.command, /--loss-type si /);
      assert.doesNotMatch(cfm.command, /--prefill-bank-fully|--use-proj-loss/);
      assert.match(svm.command, /--loss-type stablevm --prefill-bank-fully /);
      assert.doesNotMatch(svm.command, /--use-proj-loss/);
      assert.match(cfm.command, / --sample-steps 2 /);
      assert.match(
        repa.command,
        /--loss-type stablevm --prefill-bank-fully --use-proj-loss --proj-encoder assets\/classifier_fmnist\.safetensors --proj-weight-schedule sigmoid --proj-tau 0\.7 --proj-k 20 /,
      );
      const strip = (c: string) =>
        c.replace(
          /--loss-type \S+|--prefill-bank-fully|--use-proj-loss.*--proj-k 20|--exp-name \S+/g,
          "",
        )
          .replace(/\s+/g, " ");
      assert.equal(strip(svm.command), strip(cfm.command));
      assert.equal(strip(repa.command), strip(cfm.command));
      assert.equal(svm.fdRealTrainTest, cfm.fdRealTrainTest);
      const md = await Deno.readTextFile(out);
      assert.match(md, /\| StableVM \+ VA-REPA \| 1 \|/);
      assert.match(md, /!\[CFM class grid, seed 0\]\(img\/images_table_cfm_seed0\.png\)/);
      const json = JSON.parse(await Deno.readTextFile(`${dir}/docs/t.json`));
      assert.deepEqual(json.rows, rows);

      // An interrupted run: the StableVM run stopped after its step-1 checkpoint, no row.
      const name = svm.command.match(/--exp-name (\S+)/)![1]!;
      await Deno.remove(`${runs}/${name}`, { recursive: true });
      const cmd = svm.command.split(" ").slice(3);
      cmd[cmd.indexOf("--max-train-steps") + 1] = "1";
      await trainMain(cmd);
      // And a finished CFM run whose row was lost.
      const keep = (await readJsonl<ImagesRow>(`${runs}/results.jsonl`)).filter((r) =>
        r.variant === "stablevm-repa"
      );
      await Deno.writeTextFile(`${runs}/results.jsonl`, JSON.stringify(keep[0]) + "\n");
      const again = (await main(args))!;
      const by = (v: string) => again.find((r) => r.variant === v)!;
      assert.equal(by("stablevm-repa").fd, repa.fd); // kept, not rerun
      assert.equal(by("stablevm").resumed, true);
      assert.equal(by("stablevm").steps, 2);
      assert.ok(await exists(`${runs}/${name}/checkpoints/step-000001.safetensors`));
      assert.ok(await exists(`${runs}/${name}/checkpoints/step-000002.safetensors`));
      // The finished run is only scored again: no step this session, the same samples.
      assert.equal(by("cfm").resumed, true);
      assert.equal(by("cfm").stepMs, null);
      assert.equal(by("cfm").fd, cfm.fd);
      assert.equal(by("cfm").classAcc, cfm.classAcc);

      // A fresh clone: no results.jsonl, the committed JSON beside --out carries the rows,
      // so nothing is trained again.
      const runs2 = `${dir}/runs2`;
      const seeded = (await main([...TINY, "--out", out, "--output-dir", runs2]))!;
      assert.equal(seeded.length, 3);
      assert.deepEqual(
        [...Deno.readDirSync(runs2)].map((e) => e.name),
        ["results.jsonl"],
        "no run directories",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("images:table --render-only: mean ± std and the verdict from the rows", async () => {
  const dir = await Deno.makeTempDir({ prefix: "images-table-render-" });
  try {
    const row = (variant: string, seed: number, fd: number, classAcc: number): ImagesRow => ({
      variant,
      seed,
      steps: 100,
      batchSize: 64,
      learningRate: 3e-4,
      hidden: 128,
      blocks: 4,
      evalSamples: 2000,
      evalSteps: 50,
      cfgScale: 3,
      fd,
      fdRealTrainTest: 7.5,
      classAcc,
      classAccPerClass: new Array(10).fill(classAcc),
      seconds: 120 * (seed + 1),
      stepMs: 1000,
      resumed: false,
      backend: "wasm",
      command: `deno task train:stablevm --seed ${seed}`,
      commit: "abc1234",
    });
    // CFM FD 10, 20, 30 (mean 20, std 10); StableVM 1, 2, 3 (2 ± 1): separated, lower.
    // Class agreement 0.5, 0.6, 0.7 both: not separated.
    const rows = [0, 1, 2].flatMap((s) => [
      row("cfm", s, 10 * (s + 1), 0.5 + s / 10),
      row("stablevm", s, s + 1, 0.5 + s / 10),
    ]);
    await Deno.writeTextFile(`${dir}/results.jsonl`, rows.map((r) => JSON.stringify(r)).join("\n"));
    const got = (await main(["--render-only", "--output-dir", dir, "--out", `${dir}/t.md`]))!;
    assert.deepEqual(got, rows);
    const md = (await Deno.readTextFile(`${dir}/t.md`)).replace(/\s+/g, " ");
    // Wall time: 2, 4, 6 minutes → 4.0 ± 2.0.
    assert.match(
      md,
      /\| CFM \(`--loss-type si`\) \| 3 \| 20\.00 ± 10\.00 \| 7\.50 \| 0\.600 ± 0\.100 \| 4\.0 ± 2\.0 \| 1000 ± 0 \|/,
    );
    assert.match(md, /\| StableVM \| 3 \| 2\.00 ± 1\.00 \|/);
    assert.match(
      md,
      /StableVM vs CFM: FD lower beyond the seed spread \(2\.00 ± 1\.00 vs 20\.00 ± 10\.00; better\); class agreement not separated by the seed spread/,
    );
    assert.doesNotMatch(md, /VA-REPA vs/); // no rows of it: no comparison
    assert.match(
      md,
      /\| StableVM \| 2 \| 100 \| 3\.00 \| 7\.50 \| 0\.700 \| 360 \| 1000 \| abc1234 \| `deno task train:stablevm --seed 2` \|/,
    );
    const json = JSON.parse(await Deno.readTextFile(`${dir}/t.json`));
    assert.deepEqual(json, { table: "images", rows });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("images:table: bad input names the flag", async () => {
  const dir = await Deno.makeTempDir({ prefix: "images-table-bad-" });
  try {
    const o = ["--output-dir", dir, "--out", `${dir}/t.md`];
    await assert.rejects(
      () => main(["--variants", "cfm,dit", ...o]),
      /Unknown value "dit" in --variants: expected cfm, stablevm, stablevm-repa/,
    );
    await assert.rejects(
      () => main(["--cfg-scale", "-1", ...o]),
      /Expected --cfg-scale to be a number >= 0/,
    );
    await assert.rejects(() => main(["--seeds", "0,x", ...o]), /Bad seed "x" in --seeds/);
    await assert.rejects(() => main(["--hidden", "18", ...o]), /--hidden to be a multiple of 4/);
    await assert.rejects(
      () => main(["--eval-samples", "20000", ...o]),
      /--eval-samples to be an integer in \[2, 10000\]/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing written");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
