/**
 * Operations, as in the Rust crate's `op.rs`: a run of units by one replica. An insertion of
 * `n` characters typed left to right takes dots `id .. id+n`; each character after the first
 * has the one before it as its left origin and the run's right origin. A deletion of `n`
 * characters takes `n` dots and names what it removes as spans of consecutive dots. Any
 * suffix of a run is an operation too.
 *
 * "Characters" are Unicode scalar values (code points), as Rust's `char`: never UTF-16 code
 * units, so an emoji is one character on both sides.
 */

import { type Dot, dot, sameDot } from "./causal.js";

export interface Span {
  readonly start: Dot;
  readonly len: number;
}

export type Body =
  | { readonly kind: "insert"; readonly left: Dot | null; readonly right: Dot | null; readonly text: string }
  | { readonly kind: "delete"; readonly targets: readonly Span[] };

export interface Op {
  readonly id: Dot;
  readonly parents: readonly Dot[];
  readonly body: Body;
  /** Characters inserted or deleted: how many dots the operation takes. */
  readonly len: number;
}

/** The characters (code points) of `text`. */
export function chars(text: string): string[] {
  return Array.from(text);
}

export function insertOp(id: Dot, parents: readonly Dot[], left: Dot | null, right: Dot | null, text: string): Op {
  return { id, parents, body: { kind: "insert", left, right, text }, len: chars(text).length };
}

export function deleteOp(id: Dot, parents: readonly Dot[], targets: readonly Span[]): Op {
  return { id, parents, body: { kind: "delete", targets }, len: targets.reduce((n, s) => n + s.len, 0) };
}

/** The dot after the operation's last. */
export function opEnd(op: Op): number {
  return op.id.seq + op.len;
}

export function opLast(op: Op): Dot {
  return dot(op.id.replica, op.id.seq + op.len - 1);
}

/** The units from `skip` on, as an operation of its own (its parent is the unit before). */
export function suffixFrom(op: Op, skip: number): Op {
  if (skip === 0) return op;
  if (skip >= op.len) throw new Error("a suffix must keep at least one unit");
  const id = dot(op.id.replica, op.id.seq + skip);
  const before = dot(id.replica, id.seq - 1);
  const body = op.body;
  if (body.kind === "insert") {
    return insertOp(id, [before], before, body.right, chars(body.text).slice(skip).join(""));
  }
  return deleteOp(id, [before], skipSpans(body.targets, skip, Infinity));
}

/** The first `keep` units, as an operation of its own. */
export function prefix(op: Op, keep: number): Op {
  if (keep >= op.len) return op;
  const body = op.body;
  if (body.kind === "insert") {
    return insertOp(op.id, op.parents, body.left, body.right, chars(body.text).slice(0, keep).join(""));
  }
  return deleteOp(op.id, op.parents, skipSpans(body.targets, 0, keep));
}

/**
 * `last` followed by `next` (the same replica's following operation, made right after with
 * nothing in between) as one run, or null when they do not read as one.
 */
export function absorb(last: Op, next: Op): Op | null {
  if (next.id.replica !== last.id.replica || next.id.seq !== opEnd(last)) return null;
  if (next.parents.length !== 1 || !sameDot(next.parents[0], opLast(last))) return null;
  const a = last.body;
  const b = next.body;
  if (a.kind === "insert" && b.kind === "insert") {
    if (!sameDot(b.left, opLast(last)) || !sameDot(b.right, a.right)) return null;
    return { id: last.id, parents: last.parents, body: { ...a, text: a.text + b.text }, len: last.len + next.len };
  }
  if (a.kind === "delete" && b.kind === "delete") {
    const targets = [...a.targets];
    for (const span of b.targets) pushSpan(targets, span);
    return { id: last.id, parents: last.parents, body: { kind: "delete", targets }, len: last.len + next.len };
  }
  return null;
}

/** Append `span`, extending the last one when they are consecutive. */
export function pushSpan(spans: Span[], span: Span): void {
  const last = spans[spans.length - 1];
  if (last !== undefined && last.start.replica === span.start.replica && last.start.seq + last.len === span.start.seq) {
    spans[spans.length - 1] = { start: last.start, len: last.len + span.len };
  } else {
    spans.push(span);
  }
}

/** The units `skip .. skip+keep` of a list of spans. */
function skipSpans(spans: readonly Span[], skip: number, keep: number): Span[] {
  const out: Span[] = [];
  for (const span of spans) {
    if (keep === 0) break;
    if (skip >= span.len) {
      skip -= span.len;
      continue;
    }
    const len = Math.min(span.len - skip, keep);
    out.push({ start: dot(span.start.replica, span.start.seq + skip), len });
    keep -= len;
    skip = 0;
  }
  return out;
}
