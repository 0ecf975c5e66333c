//! The cache node's admin page (`GET /` on the admin port): the ring as this node sees it
//! (members, states, incarnations, vnodes, ownership), its hint queues, the recent membership
//! changes and its counters. Drawn from the same `/status` detail the lab reads, so the two
//! never disagree.

use std::fmt::Write;

use distlab_runtime::admin::escape;
use serde_json::Value;

use crate::placement::MemberId;

/// The page body for a node whose `/status` detail is `detail`.
pub fn render(me: &str, detail: &Value) -> String {
    let mut html = String::new();
    let config = &detail["config"];
    let _ = write!(
        html,
        "<p>{placement} · N={n} W={w} R={r} · {live} live of {ring} on the ring · \
         incarnation {inc} · {items} items · hit rate {hit}</p>",
        placement = escape(detail["placement"].as_str().unwrap_or("?")),
        n = config["replicas"],
        w = config["write_quorum"],
        r = config["read_quorum"],
        live = detail["live_members"],
        ring = detail["ring"].as_array().map_or(0, Vec::len),
        inc = detail["incarnation"],
        items = detail["items"],
        hit = detail["hit_rate"]
            .as_f64()
            .map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
    );
    html.push_str(
        "<h2>ring</h2><table><tr><th>member</th><th>state</th><th>incarnation</th>\
         <th>vnodes</th><th>ownership</th><th></th></tr>",
    );
    let vnodes = match config["placement"].as_str() {
        Some("ring") => config["vnodes"].to_string(),
        _ => "-".into(),
    };
    for MemberSeen {
        id,
        state,
        incarnation,
    } in members_seen(me, detail)
    {
        let incarnation = incarnation.map_or("-".into(), |i| i.to_string());
        let share = detail["ownership"][&id].as_f64().unwrap_or(0.0);
        let _ = write!(
            html,
            "<tr><td>{id}</td><td class=\"{state}\">{state}</td><td>{incarnation}</td>\
             <td>{vnodes}</td><td>{pct:.1}%</td><td><span class=\"bar\" style=\"width:{px}px\">\
             </span></td></tr>",
            id = escape(&id),
            state = escape(&state),
            pct = share * 100.0,
            px = (share * 400.0).round(),
        );
    }
    html.push_str("</table><h2>hint queues</h2>");
    match detail["hints"].as_object().filter(|h| !h.is_empty()) {
        None => html.push_str("<p class=\"dim\">none: every write reached its replicas</p>"),
        Some(queues) => {
            html.push_str("<table><tr><th>for</th><th>hints waiting</th></tr>");
            for (owner, count) in queues {
                let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(owner));
            }
            html.push_str("</table>");
        }
    }
    html.push_str(
        "<h2>recent membership changes</h2><table><tr><th>when (unix ms)</th><th>what</th></tr>",
    );
    let recent = detail["recent_changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for change in recent.iter().rev() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            change["unix_ms"],
            escape(change["what"].as_str().unwrap_or_default())
        );
    }
    html.push_str("</table><h2>last join or leave</h2>");
    match detail["last_ring_change"].as_object() {
        None => html.push_str("<p class=\"dim\">none yet</p>"),
        Some(change) => {
            let _ = write!(
                html,
                "<p>{} → {}: of the {} keys this node counts, {} changed primary; {} copies sent</p>",
                escape(&change["before"].to_string()),
                escape(&change["members"].to_string()),
                change["primary_keys"],
                change["primaries_moved"],
                change["copies_sent"],
            );
        }
    }
    html.push_str("<h2>counters</h2><table>");
    for (name, value) in detail["counts"].as_object().into_iter().flatten() {
        let _ = write!(html, "<tr><td>{}</td><td>{value}</td></tr>", escape(name));
    }
    html.push_str("</table>");
    html
}

/// A member as a node's `/status` detail describes it: `self` for the node itself.
pub struct MemberSeen {
    pub id: MemberId,
    /// `alive`, `suspect`, `dead`, `left`, or `self`.
    pub state: String,
    pub incarnation: Option<u64>,
}

/// Every member node `me` knows of (on its ring or in its SWIM view, itself included), in id
/// order, with the state and incarnation it has for each: what the admin page and the lab's
/// ring view list.
pub fn members_seen(me: &str, detail: &Value) -> Vec<MemberSeen> {
    let mut ids: Vec<MemberId> = detail["ring"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(String::from))
        .chain(
            detail["members"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys().cloned()),
        )
        .chain([me.to_string()])
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let (state, incarnation) = if id == me {
                ("self".to_string(), detail["incarnation"].as_u64())
            } else {
                let member = &detail["members"][&id];
                (
                    member["state"].as_str().unwrap_or("?").to_string(),
                    member["incarnation"].as_u64(),
                )
            };
            MemberSeen {
                id,
                state,
                incarnation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_page_shows_the_ring_hints_and_changes_and_escapes_what_it_did_not_write() {
        let detail = json!({
            "config": {"replicas": 3, "write_quorum": 2, "read_quorum": 2, "placement": "ring", "vnodes": 256},
            "placement": "ring(256 vnodes)",
            "ring": ["n1", "n2", "<n3>"],
            "members": {"n2": {"state": "dead", "incarnation": 4}, "<n3>": {"state": "alive", "incarnation": 0}},
            "incarnation": 1,
            "live_members": 2,
            "items": 10,
            "hit_rate": 0.75,
            "ownership": {"n1": 0.3, "n2": 0.35, "<n3>": 0.35},
            "hints": {"n2": 12},
            "recent_changes": [{"unix_ms": 5, "what": "n2: suspect -> dead (incarnation 4)"}],
            "last_ring_change": null,
            "counts": {"hits": 3},
        });
        let page = render("n1", &detail);
        assert!(page.contains("hit rate 75.0%"), "{page}");
        assert!(
            page.contains(
                "<td>n2</td><td class=\"dead\">dead</td><td>4</td><td>256</td><td>35.0%</td>"
            ),
            "{page}"
        );
        assert!(
            page.contains("<td>n1</td><td class=\"self\">self</td><td>1</td>"),
            "{page}"
        );
        assert!(page.contains("<tr><td>n2</td><td>12</td></tr>"), "{page}");
        assert!(page.contains("suspect -&gt; dead"), "{page}");
        assert!(
            page.contains("&lt;n3&gt;") && !page.contains("<n3>"),
            "{page}"
        );
    }
}
