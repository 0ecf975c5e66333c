/**
 * The TypeScript half of the conformance test (`services/collab/tests/browser.rs`), run by
 * Node.js: the Rust test writes the frames one replica received, in the order it received them
 * (out of order, duplicated, partly held); this replays them into the TypeScript replica,
 * makes seeded edits of its own halfway through (concurrent with the rest), and prints what it
 * ends with as one JSON line, which the Rust side compares with its own replica's.
 *
 * ```text
 * node dist/conformance.js FRAMES --replica HEX --edits N --seed S --split K [--key PASS]
 * FRAMES = (length:varint frame)*
 *
 * With `--key`, the frames' insertions are sealed with the key of document "conformance" for
 * PASS (as a `--key` editor sends them): they are opened on arrival, and the operations made
 * here are sealed before they are printed.
 * ```
 */

import { readFileSync } from "node:fs";

import { Reader, decodeFrame, encodeFrame, encodeOps } from "./codec.js";
import { DocKey } from "./crypt.js";
import { Doc } from "./doc.js";
import type { Op } from "./op.js";
import { PeerState } from "./sync.js";

function flag(name: string, fallback?: string): string {
  const at = process.argv.indexOf(`--${name}`);
  const value = at >= 0 ? process.argv[at + 1] : fallback;
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

/** xorshift32: a seeded sequence both runs of the test repeat. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

const bytes = new Uint8Array(readFileSync(process.argv[2]));
const doc = new Doc(BigInt(`0x${flag("replica")}`));
const edits = Number(flag("edits", "0"));
const split = Number(flag("split", "0"));
const random = rng(Number(flag("seed", "1")));
const server = new PeerState();
const passphrase = process.argv.includes("--key") ? flag("key") : null;
const key = passphrase === null ? null : await DocKey.derive("conformance", passphrase);
const alphabet = ["a", "b", "c", " ", "é", "🦀", "字"];

const frames: Uint8Array[] = [];
const r = new Reader(bytes);
while (!r.atEnd()) {
  const len = r.length("frame");
  frames.push(bytes.subarray(r.at, r.at + len));
  r.at += len;
}

let reencodedDiffer = 0;
const refused: string[] = [];
const made: Op[] = [];
function editLocally(): void {
    for (let k = 0; k < edits; k++) {
      if (doc.length > 0 && random(10) < 3) {
        const pos = random(doc.length);
        const op = doc.delete(pos, Math.min(1 + random(3), doc.length - pos));
        if (op) made.push(op);
      } else {
        const text = Array.from({ length: 1 + random(3) }, () => alphabet[random(alphabet.length)]).join("");
        const op = doc.insert(random(doc.length + 1), text);
        if (op) made.push(op);
      }
    }
}

frames.forEach((frame, i) => {
  if (i === split) editLocally();
  const decoded = decodeFrame(frame);
  const again = encodeFrame(decoded);
  if (again.length !== frame.length || again.some((b, j) => b !== frame[j])) reencodedDiffer++;
  if (decoded.message.kind === "ops") {
    const ops = key === null ? decoded.message.ops : decoded.message.ops.map((op) => key.open(op));
    refused.push(...server.receive(doc, ops).refused);
  }
});
if (split >= frames.length) editLocally();

console.log(
  JSON.stringify({
    text: doc.text(),
    version: doc.version.entries().map(([replica, n]) => [replica.toString(16), n]),
    pending: doc.pendingCount(),
    refused: [...refused, ...doc.refused],
    reencoded_differ: reencodedDiffer,
    made: Buffer.from(encodeOps(key === null ? made : made.map((op) => key.seal(op)))).toString("hex"),
    history: doc.history().length,
  }),
);
