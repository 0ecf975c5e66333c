/**
 * Causality, as in the Rust crate's `causal.rs`: who wrote what, and what a replica has seen.
 *
 * A replica id is a random 64-bit number (a `bigint` here: JavaScript numbers hold only 53
 * bits, and concurrent insertions are ordered by the whole id). A sequence number counts one
 * replica's units from 0 and is a `number` (2^53 units is more than any document will hold;
 * the codec refuses more).
 */
export function dot(replica, seq) {
    return { replica, seq };
}
export function sameDot(a, b) {
    if (a === null || b === null)
        return a === b;
    return a.replica === b.replica && a.seq === b.seq;
}
/** Dots ordered by replica, then seq: the order the Rust side sorts frontiers in. */
export function compareDots(a, b) {
    if (a.replica !== b.replica)
        return a.replica < b.replica ? -1 : 1;
    return a.seq - b.seq;
}
/** A dot as a map key. */
export function dotKey(d) {
    return `${d.replica.toString(16)}@${d.seq}`;
}
export function formatDot(d) {
    return `${d.replica.toString(16).padStart(16, "0")}@${d.seq}`;
}
/** Per replica, how many of its dots are held (so dots 0..n of it are). */
export class VersionVector {
    held = new Map();
    static from(entries) {
        const vv = new VersionVector();
        for (const [replica, count] of entries)
            vv.advance(replica, count);
        return vv;
    }
    get(replica) {
        return this.held.get(replica) ?? 0;
    }
    contains(d) {
        return d.seq < this.get(d.replica);
    }
    /** Record that `replica`'s dots up to (not including) `count` are held; never goes back. */
    advance(replica, count) {
        if (count > this.get(replica))
            this.held.set(replica, count);
    }
    merge(other) {
        for (const [replica, count] of other.entries())
            this.advance(replica, count);
    }
    includes(other) {
        for (const [replica, count] of other.entries()) {
            if (this.get(replica) < count)
                return false;
        }
        return true;
    }
    total() {
        let sum = 0;
        for (const count of this.held.values())
            sum += count;
        return sum;
    }
    /** Entries in replica order, as the Rust side encodes them. */
    entries() {
        return [...this.held.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    }
    clone() {
        return VersionVector.from(this.held.entries());
    }
    equals(other) {
        return this.includes(other) && other.includes(this);
    }
    toString() {
        return `{${this.entries()
            .map(([r, n]) => `${r.toString(16).padStart(16, "0")}: ${n}`)
            .join(", ")}}`;
    }
}
/**
 * The maximal dots of a causal history: a new operation's parents. Kept sorted and without
 * duplicates.
 */
export function frontierFrom(dots) {
    const sorted = [...dots].sort(compareDots);
    return sorted.filter((d, i) => i === 0 || compareDots(sorted[i - 1], d) !== 0);
}
/**
 * An operation with these `parents` whose last dot is `last` was applied: its parents are no
 * longer maximal, and it is (see `Frontier::advance` in Rust).
 */
export function advanceFrontier(frontier, parents, last) {
    const kept = frontier.filter((d) => !parents.some((p) => sameDot(p, d)) && d.replica !== last.replica);
    kept.push(last);
    return kept.sort(compareDots);
}
