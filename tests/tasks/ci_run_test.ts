/**
 * @file `.ci/run` must not change the mode of a caller's XDG_RUNTIME_DIR (when that is /tmp,
 * a chmod 700 breaks every other program), and must create a missing one private (700).
 * The script runs under bash with stub `deno`, `dpkg`, `apt-get` and `npm` on PATH, so
 * nothing is installed and no test suite is started. Bash is reached through a child
 * `deno run` granted only `--allow-run=bash` (the test permissions allow running `deno`).
 * @module
 */
import { strict as assert } from "node:assert";

const STUB_DENO = `#!/bin/sh
case "$1" in
  --version) echo "deno 2.9.6 (stub)";;
  *) echo "ok | 1 passed | 0 failed (0ms)";;
esac
`;

/** Run `.ci/run` copied into `root` with stubs; returns the mode of `xdg` afterwards. */
const PROBE = `
const [root, xdg] = Deno.args;
const out = await new Deno.Command("bash", {
  args: [root + "/.ci/run"],
  env: { PATH: root + "/bin:/usr/bin:/bin", XDG_RUNTIME_DIR: xdg, HOME: root },
  clearEnv: true,
  stdout: "piped",
  stderr: "piped",
}).output();
const mode = (Deno.statSync(xdg).mode ?? 0) & 0o777;
console.log(JSON.stringify({
  code: out.code,
  mode,
  stdout: new TextDecoder().decode(out.stdout),
  stderr: new TextDecoder().decode(out.stderr),
}));
`;

Deno.test(".ci/run leaves a caller's XDG_RUNTIME_DIR mode alone and creates a missing one 700", async () => {
  const root = await Deno.makeTempDir({ prefix: "ci_run_" });
  try {
    await Deno.mkdir(`${root}/.ci`);
    await Deno.copyFile(new URL("../../.ci/run", import.meta.url), `${root}/.ci/run`);
    await Deno.mkdir(`${root}/bin`);
    for (
      const [name, body] of [["deno", STUB_DENO], ["dpkg", "#!/bin/sh\nexit 0\n"], [
        "apt-get",
        "#!/bin/sh\nexit 0\n",
      ], ["npm", "#!/bin/sh\nexit 0\n"]]
    ) {
      await Deno.writeTextFile(`${root}/bin/${name}`, body, { mode: 0o755 });
    }
    await Deno.writeTextFile(`${root}/probe.ts`, PROBE);
    const probe = async (xdg: string) => {
      const out = await new Deno.Command("deno", {
        args: [
          "run",
          "--quiet",
          "--no-lock",
          "--allow-run=bash",
          `--allow-read=${root}`,
          `${root}/probe.ts`,
          root,
          xdg,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, `probe failed: ${new TextDecoder().decode(out.stderr)}`);
      return JSON.parse(text) as { code: number; mode: number; stdout: string; stderr: string };
    };
    // A caller's shared directory (mode 1777 like /tmp, or 755): untouched.
    for (const mode of [0o1777 & 0o777, 0o755]) {
      const shared = `${root}/shared-${mode.toString(8)}`;
      await Deno.mkdir(shared);
      await Deno.chmod(shared, mode);
      const r = await probe(shared);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /tests: 1 passed, 0 failed/);
      assert.equal(r.mode.toString(8), mode.toString(8), "the caller's directory was chmodded");
    }
    // A directory the script creates itself: private.
    const fresh = `${root}/fresh/xdg`;
    const r = await probe(fresh);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.mode.toString(8), "700");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
