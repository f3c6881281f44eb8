/**
 * @file Distribution checks: every deno.json task has scoped permissions, and `mod.ts`
 * imports and trains with no permissions at all.
 */
import { strict as assert } from "node:assert";

const ROOT = new URL("../../", import.meta.url);

/** Parse the permission flags out of a task's command line. */
function permissionFlags(cmd: string): string[] {
  return cmd.split(/\s+/).filter((w) => /^(-A|--allow-[a-z-]+(=.*)?)$/.test(w));
}

Deno.test("deno.json tasks use only scoped permissions", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const tasks: Record<string, string> = cfg.tasks;
  assert.ok(Object.keys(tasks).length >= 3, "expected tasks in deno.json");
  const problems: string[] = [];
  for (const [name, cmd] of Object.entries(tasks)) {
    for (const flag of permissionFlags(cmd)) {
      if (flag === "-A" || flag === "--allow-all") problems.push(`${name}: ${flag}`);
      const m = flag.match(/^--allow-(read|write|net|run|ffi|sys)$/);
      if (m) problems.push(`${name}: unscoped ${flag}`);
    }
  }
  assert.deepEqual(problems, [], `tasks with broad permissions: ${problems.join("; ")}`);
});

Deno.test("the permission scanner itself flags broad permissions", () => {
  // Guards the test above against a scanner that finds nothing.
  assert.deepEqual(permissionFlags("deno run -A x.ts"), ["-A"]);
  assert.deepEqual(permissionFlags("deno run --allow-read --allow-net=a.com x.ts"), [
    "--allow-read",
    "--allow-net=a.com",
  ]);
});

Deno.test("mod.ts imports and trains a few steps with zero permissions", async () => {
  const script = `
    import * as fg from ${JSON.stringify(new URL("mod.ts", ROOT).href)};
    await fg.init();
    const w = fg.tensor([0.5, -0.5], [2, 1]);
    const x = fg.randn([64, 2], { seed: 1 });
    const y = fg.matmul(x, fg.tensor([2, -3], [2, 1]));
    let last = 0;
    for (let i = 0; i < 50; i++) {
      const [loss, g] = fg.valueAndGrad((p) => fg.mse(fg.matmul(x, p), y))(w);
      last = await loss.item();
      const upd = fg.tidy(() => w.sub(g.mul(0.1)));
      w._assign(upd);
      loss.dispose(); g.dispose();
    }
    console.log(JSON.stringify({ last, w: Array.from(await w.data()) }));
  `;
  const dir = await Deno.makeTempDir();
  const file = `${dir}/zero_perm.ts`;
  await Deno.writeTextFile(file, script);
  const out = await new Deno.Command("deno", {
    args: ["run", "--no-prompt", "--quiet", file],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `zero-permission run failed: ${stderr}`);
  const res = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
  // Least squares on noiseless data: w converges to the generating [2, -3].
  assert.ok(Math.abs(res.w[0] - 2) < 1e-2 && Math.abs(res.w[1] + 3) < 1e-2, JSON.stringify(res));
  assert.ok(res.last < 1e-3, `loss ${res.last}`);
  assert.ok(!/PermissionDenied|NotCapable/.test(stderr), stderr);
});

Deno.test("viz/charts imports by URL and renders an SVG chart with zero permissions", async () => {
  const { serveFiles } = await import("../../tasks/serve.ts");
  const srv = serveFiles(ROOT, 0);
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/chart.ts`;
    await Deno.writeTextFile(
      file,
      `import { lineChart } from "${srv.url}/viz/charts.ts";
      const svg = await lineChart([{ name: "Loss", x: [1, 2], y: [1, 0.5] }], { logY: true });
      console.log(JSON.stringify({ svg: svg.startsWith("<svg"), legend: svg.includes("Loss") }));`,
    );
    const out = await new Deno.Command("deno", {
      // --allow-import only lets the script fetch modules from the local server; the run
      // itself gets no read, write, net, env, ffi or sys access.
      args: ["run", "--no-prompt", "--quiet", "--no-config", "--allow-import=127.0.0.1", file],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, `zero-permission chart failed: ${stderr}`);
    const res = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    assert.deepEqual(res, { svg: true, legend: true });
  } finally {
    await srv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
