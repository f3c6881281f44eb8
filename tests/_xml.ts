/**
 * @file A strict little XML parser for tests: elements, attributes (quoted), text, comments,
 * CDATA, the XML declaration and the five predefined entities plus numeric references.
 * Throws on anything not well-formed (unclosed or mismatched tags, bad attributes, stray
 * `<` or `&`), which is what the SVG chart tests need to know.
 * @module
 */

/** A parsed element. */
export interface XmlElement {
  /** Tag name. */
  name: string;
  /** Attributes, entities decoded. */
  attrs: Record<string, string>;
  /** Child elements and text nodes. */
  children: (XmlElement | string)[];
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function decode(s: string, at: number): string {
  return s.replace(/&([^;\s&<]*);?/g, (m, name: string) => {
    if (!m.endsWith(";")) throw new SyntaxError(`bare & near offset ${at}`);
    if (name in ENTITIES) return ENTITIES[name]!;
    const num = /^#(x[0-9a-fA-F]+|\d+)$/.exec(name);
    if (num) {
      const v = num[1]!.startsWith("x") ? parseInt(num[1]!.slice(1), 16) : Number(num[1]);
      return String.fromCodePoint(v);
    }
    throw new SyntaxError(`unknown entity &${name}; near offset ${at}`);
  });
}

/** Parse an XML document; returns its root element. */
export function parseXml(src: string): XmlElement {
  let i = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  const name = /^[A-Za-z_:][\w:.-]*/;
  while (i < src.length) {
    if (src.startsWith("<?", i)) {
      const e = src.indexOf("?>", i);
      if (e < 0) throw new SyntaxError("unterminated <?");
      i = e + 2;
    } else if (src.startsWith("<!--", i)) {
      const e = src.indexOf("-->", i);
      if (e < 0) throw new SyntaxError("unterminated comment");
      i = e + 3;
    } else if (src.startsWith("<![CDATA[", i)) {
      const e = src.indexOf("]]>", i);
      if (e < 0 || !stack.length) throw new SyntaxError("bad CDATA");
      stack[stack.length - 1]!.children.push(src.slice(i + 9, e));
      i = e + 3;
    } else if (src.startsWith("<!DOCTYPE", i)) {
      i = src.indexOf(">", i) + 1;
    } else if (src.startsWith("</", i)) {
      const m = name.exec(src.slice(i + 2));
      const top = stack.pop();
      if (!m || !top || top.name !== m[0]) {
        throw new SyntaxError(`mismatched </${m?.[0]}> for <${top?.name}> at ${i}`);
      }
      i += 2 + m[0].length;
      while (/\s/.test(src[i] ?? "")) i++;
      if (src[i] !== ">") throw new SyntaxError(`bad end tag at ${i}`);
      i++;
    } else if (src[i] === "<") {
      const m = name.exec(src.slice(i + 1));
      if (!m) throw new SyntaxError(`bad tag at ${i}`);
      const el: XmlElement = { name: m[0], attrs: {}, children: [] };
      i += 1 + m[0].length;
      for (;;) {
        const ws = /^\s*/.exec(src.slice(i))![0].length;
        i += ws;
        if (src.startsWith("/>", i) || src[i] === ">") break;
        if (!ws) throw new SyntaxError(`attributes need whitespace at ${i}`);
        const a = /^([A-Za-z_:][\w:.-]*)\s*=\s*("([^"<]*)"|'([^'<]*)')/.exec(src.slice(i));
        if (!a) throw new SyntaxError(`bad attribute at ${i}: ${src.slice(i, i + 30)}`);
        if (a[1]! in el.attrs) throw new SyntaxError(`duplicate attribute ${a[1]} at ${i}`);
        el.attrs[a[1]!] = decode(a[3] ?? a[4]!, i);
        i += a[0].length;
      }
      if (stack.length) stack[stack.length - 1]!.children.push(el);
      else if (root) throw new SyntaxError("more than one root element");
      else root = el;
      if (src.startsWith("/>", i)) i += 2;
      else {
        i++;
        stack.push(el);
      }
    } else {
      const e = src.indexOf("<", i);
      const text = src.slice(i, e < 0 ? src.length : e);
      if (!stack.length) {
        if (text.trim()) throw new SyntaxError(`text outside the root at ${i}`);
      } else stack[stack.length - 1]!.children.push(decode(text, i));
      i = e < 0 ? src.length : e;
    }
  }
  if (stack.length) throw new SyntaxError(`unclosed <${stack[stack.length - 1]!.name}>`);
  if (!root) throw new SyntaxError("no root element");
  return root;
}

/** Every element (depth first) for which `pred` holds. */
export function findAll(el: XmlElement, pred: (e: XmlElement) => boolean): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement) => {
    if (pred(e)) out.push(e);
    for (const c of e.children) if (typeof c !== "string") walk(c);
  };
  walk(el);
  return out;
}

/** The concatenated text of an element. */
export function textOf(el: XmlElement): string {
  return el.children.map((c) => (typeof c === "string" ? c : textOf(c))).join("");
}
