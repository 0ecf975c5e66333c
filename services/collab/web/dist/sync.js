/**
 * One side's view of one peer for one document (the Rust crate's `sync::PeerState`): what
 * the peer is known to hold, so nothing is sent twice and nothing it lacks is left unsent.
 * The browser's only peer is its server.
 */
import { VersionVector } from "./causal.js";
import { OpError } from "./doc.js";
import { opEnd, suffixFrom } from "./op.js";
export class PeerState {
    known = new VersionVector();
    /** The peer said it holds `version`: the operations it lacks. */
    onVersion(doc, version) {
        this.known.merge(version);
        const delta = doc.opsSince(this.known);
        this.sent(delta);
        return delta;
    }
    /** Of `ops`, those the peer is not known to hold (and from now on is). */
    forward(ops) {
        const out = [];
        for (const op of ops) {
            const held = this.known.get(op.id.replica);
            if (opEnd(op) <= held)
                continue;
            out.push(op.id.seq >= held ? op : suffixFrom(op, held - op.id.seq));
        }
        this.sent(out);
        return out;
    }
    /** The peer sent `ops`: it holds them. Applies each to `doc`. */
    receive(doc, ops) {
        const before = doc.version.total();
        const refused = [];
        for (const op of ops) {
            try {
                doc.apply(op);
                this.known.advance(op.id.replica, opEnd(op));
            }
            catch (error) {
                if (!(error instanceof OpError))
                    throw error;
                refused.push(error.message);
            }
        }
        return { changed: doc.version.total() !== before, refused };
    }
    sent(ops) {
        for (const op of ops)
            this.known.advance(op.id.replica, opEnd(op));
    }
}
