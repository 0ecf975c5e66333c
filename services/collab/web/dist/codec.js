/**
 * The binary encoding of operations and sync frames, byte for byte the Rust crate's
 * (`codec.rs`, `sync.rs`): LEB128 varints, a parent or origin of the operation's own replica
 * as a distance back, a run of typed characters as one record of UTF-8.
 *
 * ```text
 * record  = kind:u8 replica:varint seq:varint parents body
 * parents = count:varint (dot)*
 * dot     = 0 back:varint | 1 replica:varint seq:varint
 * insert  = flags:u8 (bit 0 left, bit 1 right) [dot] [dot] bytes:varint utf8
 * delete  = count:varint (dot len:varint)*
 * frame   = kind:u8 doc:str body     Hello 1, Sync 2, Ops 3, Ack 4, Presence 5, Refused 6
 * ```
 *
 * Decoding checks every length against what is left and every string for UTF-8, and says at
 * which byte it stopped, as the Rust decoder does.
 */
import { VersionVector, dot, frontierFrom } from "./causal.js";
import { deleteOp, insertOp } from "./op.js";
/** The most characters one operation may carry (as `doc::MAX_OP_CHARS`). */
export const MAX_OP_CHARS = 1 << 20;
/** Longest document name, user name or token. */
export const MAX_NAME = 256;
const MAX_REASON = 4096;
const INSERT = 1;
const DELETE = 2;
export class DecodeError extends Error {
    offset;
    reason;
    constructor(offset, reason) {
        super(`at byte ${offset}: ${reason}`);
        this.offset = offset;
        this.reason = reason;
    }
}
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
export class Writer {
    bytes = new Uint8Array(64);
    len = 0;
    byte(b) {
        if (this.len === this.bytes.length) {
            const grown = new Uint8Array(this.bytes.length * 2);
            grown.set(this.bytes);
            this.bytes = grown;
        }
        this.bytes[this.len++] = b;
    }
    varint(value) {
        let v = BigInt(value);
        if (v < 0n)
            throw new Error(`a varint cannot be negative: ${v}`);
        while (v >= 0x80n) {
            this.byte(Number(v & 0x7fn) | 0x80);
            v >>= 7n;
        }
        this.byte(Number(v));
    }
    raw(data) {
        for (const b of data)
            this.byte(b);
    }
    string(text) {
        const data = utf8.encode(text);
        this.varint(data.length);
        this.raw(data);
    }
    version(version) {
        const entries = version.entries();
        this.varint(entries.length);
        for (const [replica, held] of entries) {
            this.varint(replica);
            this.varint(held);
        }
    }
    finish() {
        return this.bytes.slice(0, this.len);
    }
}
export class Reader {
    bytes;
    at = 0;
    constructor(bytes) {
        this.bytes = bytes;
    }
    error(reason) {
        return new DecodeError(this.at, reason);
    }
    atEnd() {
        return this.at === this.bytes.length;
    }
    byte() {
        if (this.at >= this.bytes.length)
            throw this.error("truncated");
        return this.bytes[this.at++];
    }
    /** A varint of up to 64 bits. */
    bigVarint() {
        let value = 0n;
        for (let shift = 0n; shift < 64n; shift += 7n) {
            const b = this.byte();
            const bits = BigInt(b & 0x7f);
            if (shift === 63n && bits > 1n)
                throw this.error("varint overflows 64 bits");
            value |= bits << shift;
            if ((b & 0x80) === 0)
                return value;
        }
        throw this.error("varint longer than 10 bytes");
    }
    /** A varint that must fit a JavaScript number exactly. */
    varint() {
        const value = this.bigVarint();
        if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
            throw this.error(`${value} is beyond the 2^53 this client counts to`);
        }
        return Number(value);
    }
    /** A count of items each taking at least one byte: never more than the bytes left. */
    length(what) {
        const count = this.bigVarint();
        if (count > BigInt(this.bytes.length - this.at)) {
            throw this.error(`${what} count ${count} is more than the bytes left`);
        }
        return Number(count);
    }
    string(what, limit) {
        const len = this.length(what);
        if (len > limit)
            throw this.error(`${what} of ${len} bytes is over the limit of ${limit}`);
        let text;
        try {
            text = strictUtf8.decode(this.bytes.subarray(this.at, this.at + len));
        }
        catch {
            throw this.error(`${what} is not UTF-8`);
        }
        this.at += len;
        return text;
    }
    version() {
        const version = new VersionVector();
        const count = this.length("version entry");
        for (let i = 0; i < count; i++) {
            const replica = this.bigVarint();
            version.advance(replica, this.varint());
        }
        return version;
    }
    dot(id) {
        const tag = this.byte();
        if (tag === 0) {
            const back = this.varint();
            if (back > id.seq)
                throw this.error(`a dot ${back} before seq ${id.seq} of its own replica`);
            return dot(id.replica, id.seq - back);
        }
        if (tag === 1) {
            const replica = this.bigVarint();
            return dot(replica, this.varint());
        }
        throw this.error(`unknown dot tag ${tag}`);
    }
    op() {
        const kind = this.byte();
        if (kind !== INSERT && kind !== DELETE)
            throw this.error(`unknown record kind ${kind}`);
        const replica = this.bigVarint();
        const id = dot(replica, this.varint());
        const parents = [];
        const count = this.length("parent");
        for (let i = 0; i < count; i++)
            parents.push(this.dot(id));
        if (kind === INSERT) {
            const flags = this.byte();
            if (flags > 3)
                throw this.error(`unknown origin flags 0x${flags.toString(16)}`);
            const left = flags & 1 ? this.dot(id) : null;
            const right = flags & 2 ? this.dot(id) : null;
            const text = this.string("text", 4 * MAX_OP_CHARS);
            if (text.length === 0)
                throw this.error("an insertion of no text");
            return insertOp(id, frontierFrom(parents), left, right, text);
        }
        const targets = [];
        const spans = this.length("span");
        for (let i = 0; i < spans; i++) {
            const start = this.dot(id);
            const len = this.varint();
            if (len === 0 || start.seq + len > Number.MAX_SAFE_INTEGER) {
                throw this.error(`a deleted span of length ${len} from ${start.seq}`);
            }
            targets.push({ start, len });
        }
        if (targets.length === 0)
            throw this.error("a deletion of nothing");
        return deleteOp(id, frontierFrom(parents), targets);
    }
}
function writeDot(w, id, d) {
    if (d.replica === id.replica && d.seq <= id.seq) {
        w.byte(0);
        w.varint(id.seq - d.seq);
    }
    else {
        w.byte(1);
        w.varint(d.replica);
        w.varint(d.seq);
    }
}
export function writeOp(w, op) {
    const body = op.body;
    w.byte(body.kind === "insert" ? INSERT : DELETE);
    w.varint(op.id.replica);
    w.varint(op.id.seq);
    w.varint(op.parents.length);
    for (const parent of op.parents)
        writeDot(w, op.id, parent);
    if (body.kind === "insert") {
        w.byte((body.left ? 1 : 0) | (body.right ? 2 : 0));
        if (body.left)
            writeDot(w, op.id, body.left);
        if (body.right)
            writeDot(w, op.id, body.right);
        w.string(body.text);
    }
    else {
        w.varint(body.targets.length);
        for (const span of body.targets) {
            writeDot(w, op.id, span.start);
            w.varint(span.len);
        }
    }
}
/** Records one after another (what a server stores, and the conformance test's log). */
export function decodeOps(bytes) {
    const r = new Reader(bytes);
    const ops = [];
    while (!r.atEnd())
        ops.push(r.op());
    return ops;
}
export function encodeOps(ops) {
    const w = new Writer();
    for (const op of ops)
        writeOp(w, op);
    return w.finish();
}
const KINDS = { hello: 1, sync: 2, ops: 3, ack: 4, presence: 5, refused: 6 };
export function encodeFrame(frame) {
    const w = new Writer();
    const m = frame.message;
    w.byte(KINDS[m.kind]);
    w.string(frame.doc);
    switch (m.kind) {
        case "hello":
            w.string(m.user);
            w.string(m.token);
            w.varint(m.replica);
            w.version(m.version);
            break;
        case "sync":
        case "ack":
            w.version(m.version);
            break;
        case "ops":
            w.varint(m.ops.length);
            for (const op of m.ops)
                writeOp(w, op);
            break;
        case "presence":
            w.varint(m.replica);
            w.string(m.user);
            w.varint(m.cursor === null ? 0 : m.cursor + 1);
            break;
        case "refused":
            w.string(m.reason);
            break;
    }
    return w.finish();
}
/** One frame, all of `bytes`. */
export function decodeFrame(bytes) {
    const r = new Reader(bytes);
    const kind = r.byte();
    const doc = r.string("document name", MAX_NAME);
    let message;
    switch (kind) {
        case 1:
            message = {
                kind: "hello",
                user: r.string("user name", MAX_NAME),
                token: r.string("token", MAX_NAME),
                replica: r.bigVarint(),
                version: r.version(),
            };
            break;
        case 2:
            message = { kind: "sync", version: r.version() };
            break;
        case 3: {
            const ops = [];
            const count = r.length("operation");
            for (let i = 0; i < count; i++)
                ops.push(r.op());
            message = { kind: "ops", ops };
            break;
        }
        case 4:
            message = { kind: "ack", version: r.version() };
            break;
        case 5: {
            const replica = r.bigVarint();
            const user = r.string("user name", MAX_NAME);
            const cursor = r.varint();
            message = { kind: "presence", replica, user, cursor: cursor === 0 ? null : cursor - 1 };
            break;
        }
        case 6:
            message = { kind: "refused", reason: r.string("reason", MAX_REASON) };
            break;
        default:
            throw r.error(`unknown message kind ${kind}`);
    }
    if (!r.atEnd())
        throw r.error("bytes after the end of the message");
    return { doc, message };
}
