// flowgpu in a browser tab: train a 2-D flow-matching model live on the visitor's GPU, draw
// its samples and velocity field while it trains, then report W2 and histogram KL against
// the data (and the same numbers for the untrained model, measured the same way).
//
// Build the bundle first (`deno task build:web`), serve the repository (`deno task serve`)
// and open http://127.0.0.1:8000/examples/web/. URL parameters (all optional):
//   dataset=checkerboard|8gaussians  steps=N  hidden=H  batch=B  lr=X  seed=S  autostart=1
//   backend=cpu (train on the CPU backend even when WebGPU exists)
// The page's state is mirrored in `window.flowgpuDemo` for tests.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const demo = { state: "loading", step: 0, loss: null, error: null };
globalThis.flowgpuDemo = demo;

const RANGES = { checkerboard: 2.6, "8gaussians": 7.5 }; // half-width of the plotted square
const N_W2 = 512; // exact W2 is an O(n³) assignment: 512 points take well under a second
const N_KL = 4096; // histogram KL wants many points; 20 × 20 bins keep ~10 per bin
const KL_BINS = 20;

function setStatus(text, state) {
  $("status").textContent = text;
  if (state) demo.state = state;
}

function fail(e) {
  console.error(e);
  demo.error = String(e?.message ?? e);
  setStatus(`Error: ${demo.error}`, "error");
}

/** Show why there is no WebGPU, offering the (slower) CPU backend instead. */
function showNoWebGpu(why) {
  const box = $("nogpu");
  box.hidden = false;
  box.innerHTML = `<strong>This browser has no WebGPU.</strong> ${why}<br>
    flowgpu trains on the GPU through WebGPU: use a current Chrome or Edge (113+), Safari 26, or
    Firefox 141+ on Windows; on Linux, Chrome needs <code>--enable-unsafe-webgpu</code> (or
    chrome://flags/#enable-unsafe-webgpu). You can still train here on the plain-JavaScript
    CPU backend (slower): <button id="useCpu" type="button">Train on the CPU instead</button>`;
  setStatus("No WebGPU in this browser (see above).", "no-webgpu");
  $("useCpu").onclick = () => {
    box.hidden = true;
    start(true).catch(fail);
  };
}

// ---- drawing ----------------------------------------------------------------------------

function toPx(canvas, r) {
  const s = canvas.width / (2 * r);
  return [(x) => (x + r) * s, (y) => (r - y) * s];
}

function drawAxes(ctx, canvas, r) {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const [px, py] = toPx(canvas, r);
  ctx.strokeStyle = "#eee";
  ctx.lineWidth = 1;
  const step = r > 4 ? 2 : 1;
  for (let v = -Math.floor(r / step) * step; v <= r; v += step) {
    ctx.beginPath();
    ctx.moveTo(px(v), 0);
    ctx.lineTo(px(v), canvas.height);
    ctx.moveTo(0, py(v));
    ctx.lineTo(canvas.width, py(v));
    ctx.stroke();
  }
}

function drawSamples(canvas, r, data, model, title) {
  const ctx = canvas.getContext("2d");
  drawAxes(ctx, canvas, r);
  const [px, py] = toPx(canvas, r);
  const dot = (pts, color, size) => {
    ctx.fillStyle = color;
    for (let i = 0; i + 1 < pts.length; i += 2) {
      ctx.fillRect(px(pts[i]) - size / 2, py(pts[i + 1]) - size / 2, size, size);
    }
  };
  dot(data, "rgba(120,120,120,0.35)", 4);
  if (model) dot(model, "rgba(31,119,180,0.75)", 4);
  ctx.fillStyle = "#222";
  ctx.font = "26px system-ui, sans-serif";
  ctx.fillText(title, 14, 34);
}

function drawField(canvas, r, grid, g, vel, title) {
  const ctx = canvas.getContext("2d");
  drawAxes(ctx, canvas, r);
  const [px, py] = toPx(canvas, r);
  let vmax = 1e-6;
  for (let i = 0; i < g * g; i++) vmax = Math.max(vmax, Math.hypot(vel[2 * i], vel[2 * i + 1]));
  const cell = (2 * r) / g;
  ctx.lineWidth = 2;
  for (let i = 0; i < g * g; i++) {
    const [x, y] = [grid[2 * i], grid[2 * i + 1]];
    const [u, v] = [vel[2 * i], vel[2 * i + 1]];
    const m = Math.hypot(u, v) / vmax;
    const len = 0.9 * cell * m;
    const a = Math.atan2(v, u);
    const [x1, y1] = [x + len * Math.cos(a), y + len * Math.sin(a)];
    ctx.strokeStyle = ctx.fillStyle = `hsl(${220 - 200 * m}, 75%, 42%)`;
    ctx.beginPath();
    ctx.moveTo(px(x), py(y));
    ctx.lineTo(px(x1), py(y1));
    ctx.stroke();
    const h = 6 + 6 * m;
    ctx.beginPath();
    ctx.moveTo(px(x1), py(y1));
    ctx.lineTo(px(x1) - h * Math.cos(a - 0.5), py(y1) + h * Math.sin(a - 0.5));
    ctx.lineTo(px(x1) - h * Math.cos(a + 0.5), py(y1) + h * Math.sin(a + 0.5));
    ctx.fill();
  }
  ctx.fillStyle = "#222";
  ctx.font = "26px system-ui, sans-serif";
  ctx.fillText(title, 14, 34);
}

// ---- the experiment ---------------------------------------------------------------------

let fg; // the library, imported once

async function loadLibrary() {
  if (fg) return fg;
  try {
    fg = await import("../../dist/flowgpu.js");
  } catch (e) {
    throw new Error(
      `could not load ../../dist/flowgpu.js (${e.message}); build it with 'deno task build:web'`,
    );
  }
  // Newer engines create the backend on an explicit init(); older ones at import.
  if (typeof fg.init === "function") await fg.init();
  return fg;
}

async function start(forceCpu) {
  const lib = await loadLibrary();
  if (forceCpu || params.get("backend") === "cpu") lib.setBackend("cpu");
  const be = lib.getBackend();
  if (be.name !== "webgpu" && !forceCpu && params.get("backend") !== "cpu") {
    showNoWebGpu("A WebGPU adapter was found but no device could be created from it.");
    return;
  }
  // CPU WebGPU adapters (SwiftShader, lavapipe) compile large unrolled matmul kernels slowly:
  // keep their matrices small so each pipeline compiles in about a second.
  const cpuAdapter = be.name !== "webgpu" || /fallback|swiftshader|llvmpipe|lavapipe/i.test(
    be.description,
  );
  const cfg = {
    hidden: Number(params.get("hidden") ?? (cpuAdapter ? 32 : 128)),
    batch: Number(params.get("batch") ?? (cpuAdapter ? 64 : 256)),
    lr: Number(params.get("lr") ?? 2e-3),
    seed: Number(params.get("seed") ?? 0),
    chunk: cpuAdapter ? 64 : 4096,
  };
  demo.backend = be.name;
  demo.adapter = be.description;
  demo.config = cfg;
  $("env").textContent = `Backend: ${be.description}. Model: MLP, ${cfg.hidden} wide, 3 deep; ` +
    `batch ${cfg.batch}, Adam lr ${cfg.lr}.` +
    (cpuAdapter && be.name === "webgpu" ? " (A CPU WebGPU adapter: a smaller model.)" : "");
  const form = $("controls");
  $("train").disabled = false;
  form.onsubmit = (ev) => {
    ev.preventDefault();
    train(lib, cfg).catch(fail);
  };
  setStatus(`Ready on ${be.description}. Choose a distribution and press Train.`, "ready");
  if (params.get("autostart")) await train(lib, cfg);
}

/** Evaluate `fn(rows)` on `xs` ([n, 2] host data) in chunks of `chunk` rows. */
async function chunked(lib, xs, chunk, fn) {
  const n = xs.length / 2, out = new Float32Array(xs.length);
  for (let i = 0; i < n; i += chunk) {
    const rows = Math.min(chunk, n - i);
    const x = lib.tensor(xs.subarray(2 * i, 2 * (i + rows)), [rows, 2]);
    const y = await fn(x);
    out.set(await y.data(), 2 * i);
    y.dispose();
    x.dispose();
  }
  return out;
}

async function train(lib, cfg) {
  $("train").disabled = true;
  $("metrics").hidden = true;
  const dataset = $("dataset").value;
  const steps = Math.max(10, Math.floor(Number($("steps").value) || 2000));
  const r = RANGES[dataset];
  Object.assign(demo, { dataset, steps, step: 0, loss: null, w2: null, kl: null });

  const model = new lib.nn.VelocityMLP({
    dim: 2,
    hidden: cfg.hidden,
    depth: 3,
    seed: cfg.seed + 1,
  });
  const ps = model.parameters();
  const opt = new lib.optim.Adam({ lr: cfg.lr });
  const gen = new lib.Generator(cfg.seed);
  const velocity = (x, t) => lib.tidy(() => model.forward(x, t));

  // Fixed evaluation inputs: noise, data, and the field's grid.
  const host = async (t) => {
    const a = await t.data();
    t.dispose();
    return a;
  };
  const noise = await host(lib.randn([N_KL, 2], { seed: cfg.seed + 7 }));
  const data = await host(lib.sampleToy(dataset, N_KL, new lib.Generator(cfg.seed + 8)));
  const G = 17;
  const grid = new Float32Array(2 * G * G);
  for (let i = 0; i < G; i++) {
    for (let j = 0; j < G; j++) {
      grid[2 * (i * G + j)] = -r + (2 * r * (j + 0.5)) / G;
      grid[2 * (i * G + j) + 1] = -r + (2 * r * (i + 0.5)) / G;
    }
  }
  const sample = (n, nSteps) =>
    chunked(lib, noise.subarray(0, 2 * n), cfg.chunk, async (x0) => {
      const { x } = await lib.integrate(velocity, x0, { method: "euler", steps: nSteps });
      return x;
    });
  const field = () =>
    chunked(lib, grid, cfg.chunk, (x) => {
      const t = lib.full([x.shape[0]], 0.5);
      const v = velocity(x, t);
      t.dispose();
      return v;
    });
  const draw = async (label) => {
    drawSamples($("samples"), r, data.subarray(0, 2 * 2048), await sample(512, 20), label);
    drawField($("field"), r, grid, G, await field(), label);
  };
  const metrics = async (n) => {
    const xs = await sample(n, 50);
    // The metrics are host-side: an exact assignment and a histogram. Run W2's cost matrix
    // on the CPU backend so it never competes with training for GPU memory.
    const prev = lib.getBackend().name;
    lib.setBackend("cpu");
    try {
      const w2 = await lib.w2(xs.subarray(0, 2 * N_W2), data.subarray(0, 2 * N_W2));
      const kl = lib.histogramKL(data.subarray(0, 2 * n), xs, { bins: KL_BINS, range: [-r, r] });
      return { w2, kl };
    } finally {
      lib.setBackend(prev);
    }
  };

  setStatus("Measuring the untrained model…", "evaluating");
  const before = await metrics(N_KL);
  demo.w2Untrained = before.w2;
  demo.klUntrained = before.kl;
  await draw("step 0");

  setStatus(`Training on ${dataset}…`, "training");
  const lossOf = (_p, x1) => lib.cfmLoss(velocity, x1, { generator: gen }).loss;
  const drawEvery = Math.max(50, Math.round(steps / 8 / 50) * 50);
  const t0 = performance.now();
  for (let step = 1; step <= steps; step++) {
    const x1 = lib.sampleToy(dataset, cfg.batch, gen);
    const [loss, grads] = lib.valueAndGrad(lossOf)(ps, x1);
    opt.step(ps, grads);
    if (step % 25 === 0 || step === steps) {
      demo.loss = await loss.item();
      demo.step = step;
      const rate = step / ((performance.now() - t0) / 1000);
      setStatus(
        `Training on ${dataset}: step ${step}/${steps}, loss ${demo.loss.toFixed(4)}, ` +
          `${rate.toFixed(0)} steps/s`,
      );
    }
    loss.dispose();
    grads.forEach((g) => g.dispose());
    x1.dispose();
    if (step % drawEvery === 0 && step < steps) await draw(`step ${step}`);
  }
  demo.trainSeconds = (performance.now() - t0) / 1000;

  setStatus("Sampling and measuring the trained model…", "evaluating");
  await draw(`step ${steps}`);
  const after = await metrics(N_KL);
  Object.assign(demo, after);
  $("nW2").textContent = String(N_W2);
  $("klBins").textContent = `${KL_BINS}×${KL_BINS}`;
  $("w2u").textContent = before.w2.toFixed(3);
  $("klu").textContent = before.kl.toFixed(3);
  $("w2").textContent = after.w2.toFixed(3);
  $("kl").textContent = after.kl.toFixed(3);
  $("metrics").hidden = false;
  ps.forEach((p) => p.dispose?.());
  setStatus(
    `Done: ${steps} steps in ${demo.trainSeconds.toFixed(1)} s. W2 ${after.w2.toFixed(3)} ` +
      `(untrained ${before.w2.toFixed(3)}), KL ${after.kl.toFixed(3)}.`,
    "done",
  );
  $("train").disabled = false;
}

// ---- entry --------------------------------------------------------------------------------

for (const [k, id] of [["dataset", "dataset"], ["steps", "steps"]]) {
  if (params.get(k)) $(id).value = params.get(k);
}

(async () => {
  if (params.get("backend") === "cpu") return await start(true);
  if (!("gpu" in navigator) || !navigator.gpu) {
    return showNoWebGpu("<code>navigator.gpu</code> is not defined here.");
  }
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) {
    return showNoWebGpu("<code>navigator.gpu.requestAdapter()</code> found no adapter.");
  }
  await start(false);
})().catch(fail);
