/**
 * A replica of one text document in the browser: the same CRDT as the Rust crate (FugueMax,
 * Weidner, Gentle and Kleppmann 2023, in its YjsMod form), kept per character in an array.
 *
 * The Rust side stores run-length encoded runs in a chunked list because it replays traces of
 * hundreds of thousands of edits; a browser tab holds a document a person is typing, so one
 * item per character (deleted ones kept as tombstones) is the form that is easiest to check,
 * and the conformance test (`services/collab/tests/browser.rs`) checks that both give the same
 * text for the same operations. Each item remembers its index, renumbered after an insertion,
 * so finding a character by its id is a map look-up.
 *
 * Operations are applied in causal order: one whose history is not all here waits in
 * `pending`; duplicates and already-held prefixes are skipped; an operation naming characters
 * its own history does not hold is refused before it changes anything.
 */
import { VersionVector, advanceFrontier, dot, dotKey, formatDot, } from "./causal.js";
import { MAX_OP_CHARS } from "./codec.js";
import { absorb, chars, deleteOp, insertOp, opEnd, opLast, pushSpan, suffixFrom } from "./op.js";
/** The most operations waiting for missing history before more are refused. */
const MAX_PENDING = 100_000;
/** Why a remote operation was refused (the Rust `OpError`'s messages). */
export class OpError extends Error {
}
export class Doc {
    replica;
    items = [];
    byId = new Map();
    visible = 0;
    log = [];
    held = new VersionVector();
    heads = [];
    pending = [];
    /** Operations that waited, then were refused when their history arrived. */
    refused = [];
    constructor(replica) {
        this.replica = replica;
    }
    text() {
        let out = "";
        for (const item of this.items)
            if (!item.deleted)
                out += item.ch;
        return out;
    }
    /** Visible characters. */
    get length() {
        return this.visible;
    }
    get version() {
        return this.held;
    }
    get frontier() {
        return this.heads;
    }
    /** The operations applied here, in the order applied, merged into runs. */
    history() {
        return this.log;
    }
    pendingCount() {
        return this.pending.length;
    }
    /** Insert `text` before the `pos`-th character (code points); the operation to send. */
    insert(pos, text) {
        if (!Number.isInteger(pos) || pos < 0 || pos > this.visible) {
            throw new RangeError(`position ${pos} is past the end of the document (${this.visible} characters)`);
        }
        const cs = chars(text);
        if (cs.length === 0)
            return null;
        if (cs.length > MAX_OP_CHARS) {
            throw new RangeError(`an insertion of ${cs.length} characters is more than the limit of ${MAX_OP_CHARS}`);
        }
        // The gap just before the pos-th visible character, after any tombstones before it; at
        // the end, after everything.
        const at = pos === this.visible ? this.items.length : this.indexOfVisible(pos);
        const left = at > 0 ? this.items[at - 1].id : null;
        const right = at < this.items.length ? this.items[at].id : null;
        const id = dot(this.replica, this.held.get(this.replica));
        const op = insertOp(id, this.heads, left, right, text);
        this.place(at, op, cs);
        this.record(op);
        return op;
    }
    /** Delete `count` characters from the `pos`-th; the operation to send. */
    delete(pos, count) {
        if (!Number.isInteger(pos) || !Number.isInteger(count) || pos < 0 || count < 0 || pos + count > this.visible) {
            throw new RangeError(`deleting ${count} characters from position ${pos} goes past the end (${this.visible} characters)`);
        }
        if (count === 0)
            return null;
        const targets = [];
        let left = count;
        for (let i = this.indexOfVisible(pos); left > 0; i++) {
            const item = this.items[i];
            if (item.deleted)
                continue;
            item.deleted = true;
            this.visible--;
            left--;
            pushSpan(targets, { start: item.id, len: 1 });
        }
        const id = dot(this.replica, this.held.get(this.replica));
        const op = deleteOp(id, this.heads, targets);
        this.record(op);
        return op;
    }
    /** Apply an operation from another replica, in whatever order it arrives. */
    apply(op) {
        checkShape(op);
        if (opEnd(op) <= this.held.get(op.id.replica))
            return "duplicate";
        if (!this.ready(op)) {
            if (this.pending.length >= MAX_PENDING) {
                throw new OpError(`${this.pending.length} operations wait for missing history (limit ${MAX_PENDING}); operation ${formatDot(op.id)} refused`);
            }
            this.pending.push(op);
            return "pending";
        }
        this.integrate(op);
        this.drainPending();
        return "integrated";
    }
    /** The operations held beyond `version`: what a replica at `version` lacks. */
    opsSince(version) {
        const out = [];
        for (const op of this.log) {
            const held = version.get(op.id.replica);
            if (opEnd(op) <= held)
                continue;
            out.push(op.id.seq >= held ? op : suffixFrom(op, held - op.id.seq));
        }
        return out;
    }
    /** The text after the first `n` operations of the history (time travel). */
    textAfter(n) {
        const past = new Doc(this.replica);
        for (const op of this.log.slice(0, n))
            past.apply(op);
        return past.text();
    }
    /** The id of the visible character just before position `pos` (null at the start). */
    anchorBefore(pos) {
        if (pos <= 0)
            return null;
        return this.items[this.indexOfVisible(pos - 1)].id;
    }
    /** The position just after the character `anchor` (deleted or not) now. */
    positionAfter(anchor) {
        if (anchor === null)
            return 0;
        const item = this.byId.get(dotKey(anchor));
        if (item === undefined)
            return 0;
        let pos = 0;
        for (let i = 0; i <= item.index; i++)
            if (!this.items[i].deleted)
                pos++;
        return pos;
    }
    indexOfVisible(pos) {
        let seen = 0;
        for (let i = 0; i < this.items.length; i++) {
            if (this.items[i].deleted)
                continue;
            if (seen === pos)
                return i;
            seen++;
        }
        throw new RangeError(`no visible character ${pos}`);
    }
    index(d) {
        const item = this.byId.get(dotKey(d));
        if (item === undefined)
            throw new Error(`character ${formatDot(d)} is not held`);
        return item.index;
    }
    ready(op) {
        return op.id.seq <= this.held.get(op.id.replica) && op.parents.every((p) => this.held.contains(p));
    }
    /** Apply a ready operation: the part not held yet, if everything it names is held. */
    integrate(whole) {
        const held = this.held.get(whole.id.replica);
        const op = whole.id.seq < held ? suffixFrom(whole, held - whole.id.seq) : whole;
        this.checkReferences(op);
        const body = op.body;
        if (body.kind === "insert") {
            let left = body.left;
            chars(body.text).forEach((ch, k) => {
                const id = dot(op.id.replica, op.id.seq + k);
                this.integrateChar({ id, left, right: body.right, ch, deleted: false, index: -1 });
                left = id;
            });
        }
        else {
            for (const span of body.targets) {
                for (let k = 0; k < span.len; k++) {
                    const item = this.byId.get(dotKey(dot(span.start.replica, span.start.seq + k)));
                    if (!item.deleted) {
                        item.deleted = true;
                        this.visible--;
                    }
                }
            }
        }
        this.record(op);
    }
    /** FugueMax: where a character goes among those already between its origins. */
    integrateChar(item) {
        const left = item.left === null ? -1 : this.index(item.left);
        const right = item.right === null ? this.items.length : this.index(item.right);
        let dest = left + 1;
        let scanning = false;
        for (let i = left + 1;; i++) {
            if (!scanning)
                dest = i;
            if (i === this.items.length || i === right)
                break;
            const other = this.items[i];
            const oleft = other.left === null ? -1 : this.index(other.left);
            const oright = other.right === null ? this.items.length : this.index(other.right);
            if (oleft < left)
                break;
            if (oleft === left) {
                if (oright < right) {
                    scanning = true;
                }
                else if (oright === right) {
                    if (item.id.replica < other.id.replica)
                        break;
                    scanning = false;
                }
                else {
                    scanning = false;
                }
            }
        }
        this.insertItems(dest, [item]);
    }
    /** A local insertion's characters, at index `at`. */
    place(at, op, cs) {
        const body = op.body;
        if (body.kind !== "insert")
            return;
        let left = body.left;
        const items = cs.map((ch, k) => {
            const id = dot(op.id.replica, op.id.seq + k);
            const item = { id, left, right: body.right, ch, deleted: false, index: -1 };
            left = id;
            return item;
        });
        this.insertItems(at, items);
    }
    insertItems(at, items) {
        this.items.splice(at, 0, ...items);
        for (let i = at; i < this.items.length; i++)
            this.items[i].index = i;
        for (const item of items)
            this.byId.set(dotKey(item.id), item);
        this.visible += items.length;
    }
    /** Everything an operation names must be held: it was made on a history that held it. */
    checkReferences(op) {
        const impossible = (missing, what) => new OpError(`operation ${formatDot(op.id)} names ${formatDot(missing)} (${what}), which its own history does not hold`);
        const body = op.body;
        if (body.kind === "insert") {
            const left = body.left && this.byId.get(dotKey(body.left));
            if (body.left && !left)
                throw impossible(body.left, "left origin");
            const right = body.right && this.byId.get(dotKey(body.right));
            if (body.right && !right)
                throw impossible(body.right, "right origin");
            if (left && right && left.index >= right.index) {
                throw new OpError(`operation ${formatDot(op.id)} names a left origin ${formatDot(body.left)} that comes after its right origin ${formatDot(body.right)}`);
            }
        }
        else {
            for (const span of body.targets) {
                for (let k = 0; k < span.len; k++) {
                    const d = dot(span.start.replica, span.start.seq + k);
                    if (!this.byId.has(dotKey(d)))
                        throw impossible(span.start, "deleted character");
                }
            }
        }
    }
    record(op) {
        this.held.advance(op.id.replica, opEnd(op));
        this.heads = advanceFrontier(this.heads, op.parents, opLast(op));
        const last = this.log[this.log.length - 1];
        const merged = last !== undefined && last.id.replica === op.id.replica ? absorb(last, op) : null;
        if (merged) {
            this.log[this.log.length - 1] = merged;
        }
        else {
            this.log.push(op);
        }
    }
    drainPending() {
        for (let progressed = true; progressed;) {
            progressed = false;
            const waiting = this.pending;
            this.pending = [];
            for (const op of waiting) {
                if (opEnd(op) <= this.held.get(op.id.replica))
                    continue;
                if (!this.ready(op)) {
                    this.pending.push(op);
                    continue;
                }
                try {
                    this.integrate(op);
                }
                catch (error) {
                    this.refused.push(String(error instanceof Error ? error.message : error));
                    if (this.refused.length > 100)
                        this.refused.shift();
                }
                progressed = true;
            }
        }
    }
}
/** What can be checked of an operation without the document. */
function checkShape(op) {
    if (op.len === 0)
        throw new OpError(`operation ${formatDot(op.id)} is empty`);
    if (op.len > MAX_OP_CHARS) {
        throw new OpError(`operation ${formatDot(op.id)} carries ${op.len} characters, more than the limit of ${MAX_OP_CHARS}`);
    }
    if (op.parents.some((p) => p.replica === op.id.replica && p.seq >= op.id.seq)) {
        throw new OpError(`operation ${formatDot(op.id)} lists itself or a later dot of its replica as a parent`);
    }
}
