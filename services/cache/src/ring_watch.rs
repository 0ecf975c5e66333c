//! Following the ring from outside it: what the sidecar (`cache proxy`) and the routing
//! client library use to send each key straight to its replicas.
//!
//! A watcher is never a member (it holds no data and is not probed, so watchers come and go
//! without moving keys). Every `every` it sends a SWIM `Watch` to the next node of its seed
//! list (round robin, so a dead one costs one period) and takes the `Welcome` view it gets
//! back: members, states, incarnations. From it, the placement the nodes use (every member
//! that has not left: dead ones keep their place, as on the nodes) and the members to skip
//! (the dead).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::placement::{MemberId, Placement, PlacementKind};
use crate::swim::{Body, Envelope, State, Update};

/// The membership as the last `Welcome` gave it, and the placement built from it.
struct View {
    placement: Arc<dyn Placement>,
    down: Vec<MemberId>,
    /// Which node said so, and when.
    from: Option<(MemberId, Instant)>,
}

/// A ring learned by gossip, kept fresh by a background task (stopped when this is dropped).
pub struct RingWatch {
    view: Arc<RwLock<View>>,
    task: JoinHandle<()>,
}

impl RingWatch {
    /// Starts watching: `me` names the watcher in its `Watch` messages, `socket` is where the
    /// views come back, `seeds` are the nodes asked in turn (their gossip addresses).
    pub fn start(
        me: MemberId,
        socket: UdpSocket,
        seeds: Vec<(MemberId, SocketAddr)>,
        kind: PlacementKind,
        every: Duration,
    ) -> Self {
        let view = Arc::new(RwLock::new(View {
            placement: Arc::from(kind.build(Vec::<MemberId>::new())),
            down: Vec::new(),
            from: None,
        }));
        let task = tokio::spawn(watch(me, view.clone(), kind, socket, seeds, every));
        Self { view, task }
    }

    /// The replicas of `key` (the first `replicas` members by the placement) that the last
    /// view did not say are dead, in placement order. Empty until a view came.
    pub fn live_replicas(&self, key: &[u8], replicas: usize) -> Vec<MemberId> {
        let view = self.view.read().expect("never poisoned");
        view.placement
            .replicas(key, replicas)
            .into_iter()
            .filter(|m| !view.down.contains(m))
            .cloned()
            .collect()
    }

    /// Every member on the ring, dead ones included.
    pub fn members(&self) -> Vec<MemberId> {
        let view = self.view.read().expect("never poisoned");
        view.placement.members().to_vec()
    }

    /// What `/status` shows of the view.
    pub fn detail(&self) -> serde_json::Value {
        let view = self.view.read().expect("never poisoned");
        json!({
            "ring": view.placement.members(),
            "down": view.down,
            "placement": view.placement.describe(),
            "view_from": view.from.as_ref().map(|(m, _)| m),
            "view_age_ms": view.from.as_ref().map(|(_, at)| at.elapsed().as_millis() as u64),
        })
    }
}

impl Drop for RingWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asks the seeds for their view, one after another, forever.
async fn watch(
    me: MemberId,
    view: Arc<RwLock<View>>,
    kind: PlacementKind,
    socket: UdpSocket,
    seeds: Vec<(MemberId, SocketAddr)>,
    every: Duration,
) {
    if seeds.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (_, addr) = &seeds[next % seeds.len()];
                next += 1;
                let envelope = Envelope {
                    from: me.clone(),
                    incarnation: 0,
                    body: Body::Watch,
                    updates: Vec::new(),
                };
                if let Ok(bytes) = serde_json::to_vec(&envelope) {
                    let _ = socket.send_to(&bytes, addr).await;
                }
            }
            received = socket.recv_from(&mut buffer) => {
                let Ok((len, _)) = received else { continue };
                match serde_json::from_slice::<Envelope>(&buffer[..len]) {
                    Ok(Envelope { from, body: Body::Welcome { members }, .. }) => {
                        take_view(&view, kind, from, &members);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "a datagram that is not a view"),
                }
            }
        }
    }
}

/// Takes a node's view: the ring is every member that has not left; the dead are skipped.
fn take_view(view: &RwLock<View>, kind: PlacementKind, from: MemberId, members: &[Update]) {
    let mut ring: Vec<MemberId> = members
        .iter()
        .filter(|u| u.state != State::Left)
        .map(|u| u.member.clone())
        .collect();
    ring.sort();
    let down: Vec<MemberId> = members
        .iter()
        .filter(|u| u.state == State::Dead)
        .map(|u| u.member.clone())
        .collect();
    let mut view = view.write().expect("never poisoned");
    if view.placement.members() != ring.as_slice() {
        tracing::info!(
            event = "ring_changed",
            members = %ring.join(","),
            "routing over {} members (view from {from})",
            ring.len()
        );
        view.placement = Arc::from(kind.build(ring));
    }
    view.down = down;
    view.from = Some((from, Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(member: &str, state: State) -> Update {
        Update {
            member: member.into(),
            incarnation: 1,
            state,
        }
    }

    #[test]
    fn a_view_places_every_member_but_the_departed_and_skips_the_dead() {
        let kind = PlacementKind::parse("ring", 16).unwrap();
        let view = RwLock::new(View {
            placement: Arc::from(kind.build(Vec::<MemberId>::new())),
            down: Vec::new(),
            from: None,
        });
        let members = [
            update("n3", State::Alive),
            update("n1", State::Dead),
            update("n2", State::Suspect),
            update("n4", State::Left),
        ];
        take_view(&view, kind, "n2".into(), &members);
        let view = view.read().unwrap();
        assert_eq!(view.placement.members(), ["n1", "n2", "n3"]);
        assert_eq!(view.down, ["n1"]);
        assert_eq!(view.from.as_ref().unwrap().0, "n2");
    }
}
