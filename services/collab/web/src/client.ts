/**
 * The browser editor: a text area bound to a replica of the document that lives in the tab.
 * The CRDT runs here (client-side, as the point of a CRDT editor is): typing changes the local
 * replica at once and the operation is pushed to the server if connected; the server's
 * operations are merged in as they come. Offline (the "work offline" box, or the server
 * unreachable), typing goes on, and on reconnect the Hello exchange sends each side what the
 * other lacks, as the Rust editors do (`editor.rs`). The replica survives a reload of the tab
 * (sessionStorage), so offline edits are not lost with it.
 *
 * `?doc=NAME&user=NAME&token=TOKEN` choose the document and who is editing (`--acl`);
 * `#key=PASSPHRASE` encrypts it as `--key` editors do (the fragment never reaches the server).
 */

import { type ReplicaId, VersionVector } from "./causal.js";
import { DocKey } from "./crypt.js";
import { type Frame, type Message, decodeFrame, decodeOps, encodeFrame, encodeOps } from "./codec.js";
import { Doc } from "./doc.js";
import type { Op } from "./op.js";
import { PeerState } from "./sync.js";

const params = new URLSearchParams(location.search);
const docName = params.get("doc") ?? "notes";
const user = params.get("user") ?? `browser-${Math.floor(Math.random() * 0x10000).toString(16)}`;
const token = params.get("token") ?? "";
const storageKey = `distlab-collab:${docName}`;
const passphrase = new URLSearchParams(location.hash.slice(1)).get("key");
/** The document's key once derived: what goes to the server is sealed, what comes opened. */
let key: DocKey | null = null;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const area = $<HTMLTextAreaElement>("text");
const statusLine = $<HTMLElement>("status");
const offlineBox = $<HTMLInputElement>("offline");
const people = $<HTMLElement>("people");
const refusals = $<HTMLElement>("refused");
const slider = $<HTMLInputElement>("history");
const step = $<HTMLElement>("step");
const past = $<HTMLElement>("past");
document.title = `${docName} — distlab collab`;
$<HTMLElement>("doc").textContent = docName;

function randomReplica(): ReplicaId {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (BigInt(words[0]) << 32n) | BigInt(words[1]);
}

/** The replica: restored from this tab's storage, or new. */
function restore(): Doc {
  const saved = sessionStorage.getItem(storageKey);
  if (saved !== null) {
    try {
      const { replica, ops } = JSON.parse(saved) as { replica: string; ops: string };
      const doc = new Doc(BigInt(`0x${replica}`));
      const bytes = Uint8Array.from(atob(ops), (c) => c.charCodeAt(0));
      for (const op of decodeOps(bytes)) doc.apply(op);
      return doc;
    } catch (error) {
      console.error("the saved replica is unreadable; starting afresh", error);
    }
  }
  return new Doc(randomReplica());
}

const doc = restore();
let shown = doc.text();
area.value = shown;

let socket: WebSocket | null = null;
let opened = false;
let peer = new PeerState();
const acked = new VersionVector();
const others = new Map<ReplicaId, { user: string; cursor: number | null; seen: number }>();
const refused: string[] = [];
let backoff = 250;
let composing = false;

// Code points (the CRDT's characters) and UTF-16 units (the text area's) convert here.
function toUnits(text: string, points: number): number {
  let units = 0;
  let seen = 0;
  for (const c of text) {
    if (seen === points) break;
    units += c.length;
    seen++;
  }
  return units;
}

function toPoints(text: string, units: number): number {
  return Array.from(text.slice(0, units)).length;
}

function send(message: Message): void {
  if (socket !== null && opened) socket.send(encodeFrame({ doc: docName, message }));
}

function sendOwn(ops: Op[]): void {
  const sealer = key;
  if (ops.length > 0) send({ kind: "ops", ops: sealer === null ? ops : ops.map((op) => sealer.seal(op)) });
}

/** A local change of the text area, as the operations that make it. */
function onInput(): void {
  if (composing) return;
  const before = Array.from(shown);
  const after = Array.from(area.value);
  let head = 0;
  while (head < before.length && head < after.length && before[head] === after[head]) head++;
  let tail = 0;
  while (
    tail < before.length - head &&
    tail < after.length - head &&
    before[before.length - 1 - tail] === after[after.length - 1 - tail]
  ) {
    tail++;
  }
  const made: Op[] = [];
  const removed = before.length - head - tail;
  if (removed > 0) {
    const op = doc.delete(head, removed);
    if (op) made.push(op);
  }
  const inserted = after.slice(head, after.length - tail).join("");
  if (inserted.length > 0) {
    const op = doc.insert(head, inserted);
    if (op) made.push(op);
  }
  shown = area.value;
  if (made.length > 0) {
    if (opened) sendOwn(peer.forward(made));
    changed();
  }
}

/** Shows the document after remote changes, keeping the local selection where it was. */
function render(): void {
  if (composing) return;
  const text = doc.text();
  if (text === area.value) return;
  area.value = text;
  shown = text;
}

function renderKeepingSelection(apply: () => void): void {
  const start = doc.anchorBefore(toPoints(area.value, area.selectionStart));
  const end = doc.anchorBefore(toPoints(area.value, area.selectionEnd));
  apply();
  const focused = document.activeElement === area;
  render();
  if (focused) {
    area.setSelectionRange(toUnits(shown, doc.positionAfter(start)), toUnits(shown, doc.positionAfter(end)));
  }
}

function receive(frame: Frame): void {
  if (frame.doc !== docName) return;
  const m = frame.message;
  switch (m.kind) {
    case "hello":
    case "sync": {
      // The server holds this: send what it lacks of our own operations.
      const own = peer.onVersion(doc, m.version).filter((op) => op.id.replica === doc.replica);
      sendOwn(own);
      break;
    }
    case "ops": {
      let received = { changed: false, refused: [] as string[] };
      const opener = key;
      const ops = opener === null ? m.ops : m.ops.map((op) => opener.open(op));
      renderKeepingSelection(() => {
        received = peer.receive(doc, ops);
      });
      for (const reason of received.refused) note(`refused the server's operation: ${reason}`);
      if (received.changed) changed();
      break;
    }
    case "ack":
      acked.merge(m.version);
      showStatus();
      break;
    case "presence":
      others.set(m.replica, { user: m.user, cursor: m.cursor, seen: Date.now() });
      showPeople();
      break;
    case "refused":
      note(`the server refused: ${m.reason}`);
      break;
  }
}

function note(reason: string): void {
  refused.push(reason);
  if (refused.length > 5) refused.shift();
  refusals.textContent = refused.join("\n");
}

function connect(): void {
  if (offlineBox.checked || socket !== null) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/doc`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  socket = ws;
  ws.onopen = () => {
    opened = true;
    backoff = 250;
    peer = new PeerState();
    send({ kind: "hello", user, token, replica: doc.replica, version: doc.version.clone() });
    announce();
    showStatus();
  };
  ws.onmessage = (event) => {
    try {
      receive(decodeFrame(new Uint8Array(event.data as ArrayBuffer)));
    } catch (error) {
      note(`a damaged frame from the server: ${error instanceof Error ? error.message : error}`);
    }
  };
  ws.onclose = () => {
    if (socket === ws) {
      socket = null;
      opened = false;
      showStatus();
      if (!offlineBox.checked) setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 4000);
    }
  };
}

function disconnect(): void {
  const ws = socket;
  socket = null;
  opened = false;
  ws?.close();
  showStatus();
}

function cursor(): number {
  return toPoints(area.value, area.selectionStart);
}

function announce(): void {
  send({ kind: "presence", replica: doc.replica, user, cursor: cursor() });
}

function showStatus(): void {
  const made = doc.version.get(doc.replica);
  const unsaved = made - Math.min(acked.get(doc.replica), made);
  const link = offlineBox.checked ? "offline (by choice)" : opened ? "online" : "offline (reconnecting)";
  statusLine.textContent = `${link} · ${doc.length} characters · ${doc.version.total()} edits · ${
    unsaved === 0 ? "all saved" : `${unsaved} not yet saved by a server`
  } · replica ${doc.replica.toString(16)} as ${user}${key === null ? "" : " · encrypted"}`;
}

function showPeople(): void {
  const now = Date.now();
  const lines: string[] = [];
  for (const [replica, p] of others) {
    if (now - p.seen > 10_000 || replica === doc.replica) continue;
    if (p.cursor === null) {
      lines.push(`${p.user}: no cursor`);
      continue;
    }
    const before = Array.from(shown).slice(0, p.cursor).join("");
    const line = before.split("\n").length;
    const column = Array.from(before.slice(before.lastIndexOf("\n") + 1)).length + 1;
    lines.push(`${p.user}: line ${line}, column ${column}`);
  }
  people.textContent = lines.length > 0 ? lines.join("\n") : "nobody else here";
}

/** The history slider: step through the versions this replica passed through. */
function showHistory(): void {
  const log = doc.history();
  const atEnd = slider.value === slider.max;
  slider.max = String(log.length);
  if (atEnd) slider.value = slider.max;
  const n = Number(slider.value);
  if (n === log.length) {
    step.textContent = `now (${log.length} operations)`;
    past.hidden = true;
    return;
  }
  const op = log[n - 1];
  const what =
    op === undefined
      ? "the empty document"
      : `after #${n}: ${op.body.kind === "insert" ? `insert ${JSON.stringify(op.body.text)}` : `delete ${op.len}`} by ${op.id.replica.toString(16)}@${op.id.seq}`;
  step.textContent = what;
  past.textContent = doc.textAfter(n);
  past.hidden = false;
}

let saveTimer: ReturnType<typeof setTimeout> | null = null;

/** The document changed: status, history, and the tab's saved copy. */
function changed(): void {
  showStatus();
  showHistory();
  saveTimer ??= setTimeout(() => {
    saveTimer = null;
    const bytes = encodeOps(doc.history());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    const ops = btoa(binary);
    sessionStorage.setItem(storageKey, JSON.stringify({ replica: doc.replica.toString(16), ops }));
  }, 200);
}

area.addEventListener("input", onInput);
area.addEventListener("compositionstart", () => {
  composing = true;
});
area.addEventListener("compositionend", () => {
  composing = false;
  onInput();
  render();
});
document.addEventListener("selectionchange", () => {
  if (document.activeElement === area) announce();
});
offlineBox.addEventListener("change", () => (offlineBox.checked ? disconnect() : connect()));
slider.addEventListener("input", showHistory);
setInterval(() => {
  // Anti-entropy: ask for anything missed; say where the cursor is.
  if (opened) {
    send({ kind: "sync", version: doc.version.clone() });
    announce();
  }
  showPeople();
}, 1000);

/** What the end-to-end test reads and drives. */
(window as unknown as { collab: unknown }).collab = {
  text: () => doc.text(),
  version: () => doc.version.toString(),
  online: () => opened,
  saved: () => acked.get(doc.replica) >= doc.version.get(doc.replica),
  setOffline: (offline: boolean) => {
    offlineBox.checked = offline;
    offlineBox.dispatchEvent(new Event("change"));
  },
  people: () => people.textContent,
  storedLocally: () => saveTimer === null && sessionStorage.getItem(storageKey) !== null,
  historyLength: () => doc.history().length,
  textAfter: (n: number) => doc.textAfter(n),
};

showStatus();
showHistory();
showPeople();
if (passphrase === null) {
  connect();
} else if (globalThis.crypto?.subtle === undefined) {
  note("this document's key needs a secure page (https, or the server on localhost): not connecting");
} else {
  DocKey.derive(docName, passphrase).then((derived) => {
    key = derived;
    showStatus();
    connect();
  });
}
