/**
 * Per-document encryption in the tab, the same cipher as the Rust editors' (`crypt.rs`), so a
 * tab and a `--key` editor with one passphrase read each other's text while servers hold only
 * ciphertext.
 *
 * What the CRDT needs of an insertion (ids, parents, origins, lengths) stays in the clear;
 * each inserted character is enciphered on its own, keyed by the document's key and its id:
 * the key is SHA-256 of the document name and the passphrase; the keystream is ChaCha20 (the
 * DJB form: 64-bit block counter, 64-bit stream) with the character's replica as the stream
 * and two words per character from word `2 * seq`, as `rand_chacha`'s `ChaCha20Rng` reads it;
 * the cipher adds the keystream, modulo the number of Unicode scalar values, to the
 * character's index among them, so a character becomes exactly one character.
 *
 * The passphrase comes from the page address's fragment (`#key=...`), which the browser never
 * sends to the server.
 */

import { type Dot, type ReplicaId, dot } from "./causal.js";
import { type Op, insertOp } from "./op.js";

/** Unicode scalar values: every code point but the 2,048 surrogates. */
const SCALARS = 0x110000 - 0x800;

function index(c: number): number {
  return c >= 0xe000 ? c - 0x800 : c;
}

function scalar(i: number): number {
  return i >= 0xd800 ? i + 0x800 : i;
}

function rotl(x: number, n: number): number {
  return ((x << n) | (x >>> (32 - n))) >>> 0;
}

function quarter(s: Uint32Array, a: number, b: number, c: number, d: number): void {
  s[a] = (s[a] + s[b]) >>> 0;
  s[d] = rotl(s[d] ^ s[a], 16);
  s[c] = (s[c] + s[d]) >>> 0;
  s[b] = rotl(s[b] ^ s[c], 12);
  s[a] = (s[a] + s[b]) >>> 0;
  s[d] = rotl(s[d] ^ s[a], 8);
  s[c] = (s[c] + s[d]) >>> 0;
  s[b] = rotl(s[b] ^ s[c], 7);
}

/** One ChaCha20 block: 16 words of keystream. */
export function chacha20Block(key: Uint32Array, block: bigint, stream: bigint): Uint32Array {
  const init = new Uint32Array(16);
  init.set([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
  init.set(key, 4);
  init[12] = Number(block & 0xffffffffn);
  init[13] = Number((block >> 32n) & 0xffffffffn);
  init[14] = Number(stream & 0xffffffffn);
  init[15] = Number((stream >> 32n) & 0xffffffffn);
  const s = init.slice();
  for (let round = 0; round < 10; round++) {
    quarter(s, 0, 4, 8, 12);
    quarter(s, 1, 5, 9, 13);
    quarter(s, 2, 6, 10, 14);
    quarter(s, 3, 7, 11, 15);
    quarter(s, 0, 5, 10, 15);
    quarter(s, 1, 6, 11, 12);
    quarter(s, 2, 7, 8, 13);
    quarter(s, 3, 4, 9, 14);
  }
  for (let i = 0; i < 16; i++) s[i] = (s[i] + init[i]) >>> 0;
  return s;
}

/** One document's key. */
export class DocKey {
  private cached: { replica: ReplicaId; block: number; words: Uint32Array } | null = null;

  private constructor(private readonly key: Uint32Array) {}

  /** The key of document `doc` for `passphrase` (another document, another key). */
  static async derive(doc: string, passphrase: string): Promise<DocKey> {
    const utf8 = new TextEncoder();
    const parts = [utf8.encode("distlab-collab doc key\0"), utf8.encode(doc), new Uint8Array([0]), utf8.encode(passphrase)];
    const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      data.set(part, at);
      at += part.length;
    }
    const hash = new DataView(await crypto.subtle.digest("SHA-256", data));
    const key = new Uint32Array(8);
    for (let i = 0; i < 8; i++) key[i] = hash.getUint32(i * 4, true);
    return new DocKey(key);
  }

  /** The keystream for the character `d`, reduced modulo the scalar values. */
  pad(d: Dot): number {
    const block = Math.floor(d.seq / 8);
    const c = this.cached;
    const words =
      c !== null && c.replica === d.replica && c.block === block
        ? c.words
        : chacha20Block(this.key, BigInt(block), d.replica);
    this.cached = { replica: d.replica, block, words };
    const i = (d.seq % 8) * 2;
    const value = (BigInt(words[i + 1]) << 32n) | BigInt(words[i]);
    return Number(value % BigInt(SCALARS));
  }

  private map(op: Op, f: (c: number, pad: number) => number): Op {
    const body = op.body;
    if (body.kind !== "insert") return op;
    let k = 0;
    let text = "";
    for (const ch of body.text) {
      const pad = this.pad(dot(op.id.replica, op.id.seq + k++));
      text += String.fromCodePoint(scalar(f(index(ch.codePointAt(0)!), pad)));
    }
    return insertOp(op.id, op.parents, body.left, body.right, text);
  }

  /** `op` as servers may see it: its inserted characters enciphered. */
  seal(op: Op): Op {
    return this.map(op, (c, pad) => (c + pad) % SCALARS);
  }

  /** `op` as it was before `seal`. */
  open(op: Op): Op {
    return this.map(op, (c, pad) => (c + SCALARS - pad) % SCALARS);
  }
}
