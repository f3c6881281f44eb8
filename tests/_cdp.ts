/**
 * @file A small Chrome DevTools Protocol client for the browser tests: launch headless
 * chromium (WebGPU through SwiftShader), open a page, evaluate expressions, collect console
 * errors and exceptions, take screenshots. No dependency beyond Deno's WebSocket.
 * @module
 */

/** Where Debian's chromium lives (the tests are ignored when it is absent). */
export const CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/** The chromium binary (one that answers `--version`), or null when none is installed. */
export function findChromium(): string | null {
  for (const p of CHROMIUM_CANDIDATES) {
    try {
      const out = new Deno.Command(p, { args: ["--version"], stdout: "piped", stderr: "null" })
        .outputSync();
      if (out.success && /chromium/i.test(new TextDecoder().decode(out.stdout))) return p;
    } catch { /* not installed, or not allowed to run */ }
  }
  return null;
}

/** One console message or uncaught exception the page produced. */
export interface ConsoleEntry {
  /** `log`, `warning`, `error`, … or `exception`. */
  level: string;
  /** The text. */
  text: string;
}

/** A page session over one WebSocket. */
export class CdpPage {
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** Every console message and exception seen so far. */
  readonly console: ConsoleEntry[] = [];

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`CDP: ${msg.error.message}`));
        else p?.resolve(msg.result);
      } else if (msg.method === "Runtime.consoleAPICalled") {
        const text = msg.params.args.map((a: { value?: unknown; description?: string }) =>
          a.value !== undefined ? String(a.value) : a.description ?? ""
        ).join(" ");
        this.console.push({ level: msg.params.type, text });
      } else if (msg.method === "Runtime.exceptionThrown") {
        const d = msg.params.exceptionDetails;
        this.console.push({
          level: "exception",
          text: d.exception?.description ?? d.text ?? "exception",
        });
      } else if (msg.method === "Log.entryAdded") {
        const e = msg.params.entry;
        this.console.push({ level: e.level, text: `${e.text} ${e.url ?? ""}`.trim() });
      }
    };
    ws.onclose = () => {
      for (const p of this.#pending.values()) p.reject(new Error("CDP socket closed"));
      this.#pending.clear();
    };
  }

  /** Connect to a page's `webSocketDebuggerUrl` and enable Runtime, Log and Page events. */
  static async connect(wsUrl: string): Promise<CdpPage> {
    const ws = new WebSocket(wsUrl);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot open ${wsUrl}`));
    });
    const page = new CdpPage(ws);
    await page.send("Runtime.enable");
    await page.send("Log.enable");
    await page.send("Page.enable");
    return page;
  }

  /** Send one CDP command and wait for its result. */
  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluate an expression in the page (awaiting a promise) and return its JSON value. */
  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }) as { result: { value?: T }; exceptionDetails?: { exception?: { description?: string } } };
    if (r.exceptionDetails) {
      throw new Error(`in page: ${r.exceptionDetails.exception?.description ?? "exception"}`);
    }
    return r.result.value as T;
  }

  /** Navigate and wait for the load event. */
  async goto(url: string): Promise<void> {
    await this.send("Page.navigate", { url });
    await this.waitFor("document.readyState === 'complete'", 30_000);
  }

  /** Poll `expression` until it is truthy; throws after `timeoutMs`. */
  async waitFor<T = unknown>(expression: string, timeoutMs: number, everyMs = 250): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.eval<T>(expression).catch(() => undefined);
      if (v) return v;
      if (Date.now() > end) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${expression}`);
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }

  /** A PNG screenshot of the viewport. */
  async screenshot(): Promise<Uint8Array> {
    const r = await this.send("Page.captureScreenshot", { format: "png" }) as { data: string };
    return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
  }

  /** Close the socket. */
  close(): void {
    this.#ws.close();
  }
}

/** A headless chromium process. */
export interface Browser {
  /** A new page on `url`, connected; `preload` runs in every document before its scripts. */
  open(url: string, preload?: string): Promise<CdpPage>;
  /** Kill the browser (and wait for it). */
  close(): Promise<void>;
}

/**
 * Launch headless chromium with WebGPU on SwiftShader and the DevTools protocol on a free
 * port (read from its "DevTools listening on" line).
 */
export async function launchChromium(bin: string, profileDir: string): Promise<Browser> {
  const child = new Deno.Command(bin, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--use-webgpu-adapter=swiftshader",
      "--enable-features=Vulkan",
      "--remote-debugging-port=0",
      "--remote-debugging-address=127.0.0.1",
      `--user-data-dir=${profileDir}`,
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-gpu-sandbox",
      "--window-size=1200,900",
      "about:blank",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let port: number | undefined;
  const deadline = Date.now() + 30_000;
  while (port === undefined) {
    const timer = new Promise<{ done: true; value: undefined }>((r) =>
      setTimeout(() => r({ done: true, value: undefined }), Math.max(0, deadline - Date.now()))
    );
    const { value, done } = await Promise.race([reader.read(), timer]);
    if (done) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      throw new Error(`chromium did not report a DevTools port:\n${buf.slice(-2000)}`);
    }
    buf += value;
    const m = /DevTools listening on ws:\/\/[^:]+:(\d+)\//.exec(buf);
    if (m) port = Number(m[1]);
  }
  // Keep draining stderr so chromium never blocks on a full pipe.
  (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch { /* closed */ }
  })();
  const base = `http://127.0.0.1:${port}`;
  const pages: CdpPage[] = [];
  return {
    async open(url: string, preload?: string): Promise<CdpPage> {
      const res = await fetch(`${base}/json/new?${encodeURI("about:blank")}`, { method: "PUT" });
      const target = await res.json() as { webSocketDebuggerUrl: string };
      const page = await CdpPage.connect(target.webSocketDebuggerUrl);
      pages.push(page);
      if (preload) await page.send("Page.addScriptToEvaluateOnNewDocument", { source: preload });
      await page.goto(url);
      return page;
    },
    async close(): Promise<void> {
      for (const p of pages) p.close();
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(t);
    },
  };
}
