//! SWIM membership and failure detection (Das, Gupta, Motivala, 2002), as a state machine
//! without I/O.
//!
//! Every protocol period a member probes the next member of a shuffled round-robin list with
//! a `Ping`; without an `Ack` within the ping timeout it asks `indirect_probes` others to
//! probe it (`PingReq`); without any `Ack` by the end of the period it *suspects* it. A
//! suspect that does not refute within the suspicion timeout is declared *dead*. A member that
//! hears itself suspected (or declared dead) refutes by raising its *incarnation* number and
//! announcing itself alive. Membership changes travel piggybacked on the protocol's own
//! messages, each sent a bounded number of times (`retransmit_mult` x log2(members)).
//!
//! Joining: a new member sends `Join` to seed members and gets the seed's whole view back
//! (`Welcome`); leaving: it announces `Left` before it goes. Members this one believes dead
//! are sent a `Join` now and then, so two sides of a healed partition find each other again.
//!
//! No sockets and no clock here: [`Swim::tick`] and [`Swim::receive`] take the time and
//! return the messages to send (to member ids: the node maps ids to its `--peer` addresses,
//! so the lab's UDP link proxies stay in the path). Tests drive many of them over a simulated
//! network with loss and partitions, in simulated time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use crate::placement::MemberId;

/// Timing and fan-out; the defaults detect a failure in under 2 s with 5 members.
#[derive(Debug, Clone)]
pub struct Config {
    /// The protocol period: one probe per member per period.
    pub period: Duration,
    /// How long a direct `Ping` waits for its `Ack` before indirect probes go out.
    pub ping_timeout: Duration,
    /// Members asked to probe an unanswering member (k).
    pub indirect_probes: usize,
    /// How long a suspect has to refute before it is declared dead.
    pub suspicion_timeout: Duration,
    /// Each update is piggybacked `retransmit_mult x ceil(log2(members + 1))` times.
    pub retransmit_mult: usize,
    /// Updates carried by one message at most (bounds a datagram's size).
    pub max_piggyback: usize,
    /// Every this many periods, one member believed dead is sent a `Join`.
    pub rejoin_every: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            period: Duration::from_millis(200),
            ping_timeout: Duration::from_millis(80),
            indirect_probes: 3,
            suspicion_timeout: Duration::from_millis(1000),
            retransmit_mult: 4,
            max_piggyback: 16,
            rejoin_every: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Alive,
    Suspect,
    Dead,
    /// Left on purpose (graceful leave): not a failure.
    Left,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
            State::Left => "left",
        }
    }

    fn gone(self) -> bool {
        matches!(self, State::Dead | State::Left)
    }
}

/// What one member is believed to be: disseminated in every message's piggyback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub member: MemberId,
    pub state: State,
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Ping {
        seq: u64,
    },
    Ack {
        seq: u64,
    },
    /// Probe `target` for me; answer with an `Ack` carrying my `seq`.
    PingReq {
        seq: u64,
        target: MemberId,
    },
    /// I am new (or back): send me your view.
    Join,
    /// A whole view, answering `Join` (and `Watch`).
    Welcome {
        members: Vec<Update>,
    },
    /// Send me your view, but I am not a member (a `cache proxy` following the ring): not
    /// added, not probed, holds no data.
    Watch,
}

/// One datagram: who sends it (its address says nothing: it comes through a proxy), at which
/// incarnation, what it asks, and the updates it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: MemberId,
    pub incarnation: u64,
    pub body: Body,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Update>,
}

/// A message to send to member `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub to: MemberId,
    pub envelope: Envelope,
}

/// A change of some member's state, for logs, the timeline and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub member: MemberId,
    /// `None`: not known before.
    pub from: Option<State>,
    pub to: State,
    pub incarnation: u64,
}

impl Change {
    /// A suspect found alive after all: the failure detector was wrong.
    pub fn is_false_suspicion(&self) -> bool {
        self.from == Some(State::Suspect) && self.to == State::Alive
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub state: State,
    pub incarnation: u64,
    /// When it entered this state.
    pub since: Instant,
}

/// The probe of the current period.
struct Probe {
    target: MemberId,
    seq: u64,
    sent: Instant,
    indirect_sent: bool,
    acked: bool,
}

pub struct Swim {
    me: MemberId,
    incarnation: u64,
    leaving: bool,
    config: Config,
    members: BTreeMap<MemberId, Member>,
    /// Members still to probe this round (shuffled at the start of each round).
    round: Vec<MemberId>,
    probe: Option<Probe>,
    next_period: Option<Instant>,
    periods: u32,
    seq: u64,
    /// Updates still to piggyback, with the sends each has left.
    gossip: Vec<(Update, usize)>,
    /// Pings sent for others' `PingReq`: my seq -> (requester, its seq).
    relayed: HashMap<u64, (MemberId, u64, Instant)>,
    /// Seeds to `Join` through until some member welcomes this one.
    seeds: Vec<MemberId>,
    joined: bool,
    changes: Vec<Change>,
    rng: SmallRng,
}

impl Swim {
    /// A member `me` that will join through `seeds` (empty: it starts the group).
    pub fn new(me: impl Into<MemberId>, seeds: Vec<MemberId>, config: Config, seed: u64) -> Self {
        let me = me.into();
        let seeds: Vec<MemberId> = seeds.into_iter().filter(|s| *s != me).collect();
        Self {
            joined: seeds.is_empty(),
            me,
            incarnation: 0,
            leaving: false,
            config,
            members: BTreeMap::new(),
            round: Vec::new(),
            probe: None,
            next_period: None,
            periods: 0,
            seq: 0,
            gossip: Vec::new(),
            relayed: HashMap::new(),
            seeds,
            changes: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn me(&self) -> &MemberId {
        &self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether some member has welcomed this one (or it started the group).
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// Every other member this one knows of, in id order.
    pub fn members(&self) -> &BTreeMap<MemberId, Member> {
        &self.members
    }

    /// This member and every other it believes alive or suspect: who holds data now.
    pub fn live_members(&self) -> Vec<MemberId> {
        let mut live: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| !m.state.gone())
            .map(|(id, _)| id.clone())
            .collect();
        if !self.leaving {
            live.push(self.me.clone());
            live.sort();
        }
        live
    }

    /// The members that place data: this one and every other not gone on purpose (a dead
    /// member keeps its place, and its writes go to hints, until it comes back or leaves).
    pub fn ring_members(&self) -> Vec<MemberId> {
        let mut ring: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.state != State::Left)
            .map(|(id, _)| id.clone())
            .collect();
        if !self.leaving {
            ring.push(self.me.clone());
            ring.sort();
        }
        ring
    }

    /// State changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Announces that this member leaves. Keep ticking and answering for a few periods: the
    /// news travels on this member's own messages too.
    pub fn leave(&mut self) {
        self.leaving = true;
        self.incarnation += 1;
        let update = Update {
            member: self.me.clone(),
            state: State::Left,
            incarnation: self.incarnation,
        };
        self.spread(update);
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A message to `to`, with the updates due for piggybacking; and if this member believes
    /// `to` suspect, dead or gone, that belief too, so `to` can refute it (else a member
    /// declared dead that never hears so would stay dead in everyone else's view).
    fn send(&mut self, to: MemberId, body: Body) -> Outbound {
        let mut updates = self.piggyback();
        if let Some(m) = self.members.get(&to)
            && m.state != State::Alive
            && !updates.iter().any(|u| u.member == to)
        {
            updates.push(Update {
                member: to.clone(),
                state: m.state,
                incarnation: m.incarnation,
            });
        }
        Outbound {
            to,
            envelope: Envelope {
                from: self.me.clone(),
                incarnation: self.incarnation,
                body,
                updates,
            },
        }
    }

    /// Advances time: probes, timeouts, suspicion expiry, joins. Call it often (every few
    /// milliseconds, or at [`Swim::next_deadline`]).
    pub fn tick(&mut self, now: Instant) -> Vec<Outbound> {
        let mut out = Vec::new();
        let period_started = match self.next_period {
            Some(at) if now < at => false,
            _ => {
                self.next_period = Some(now + self.config.period);
                self.periods = self.periods.wrapping_add(1);
                true
            }
        };
        if period_started {
            // The last period's probe, unanswered: suspect its target.
            if let Some(probe) = self.probe.take()
                && !probe.acked
            {
                self.suspect(&probe.target, now);
            }
            if !self.joined {
                for seed in self.seeds.clone() {
                    out.push(self.send(seed, Body::Join));
                }
            } else if self.periods.is_multiple_of(self.config.rejoin_every.max(1)) {
                let dead: Vec<MemberId> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.state == State::Dead)
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(target) = dead.choose(&mut self.rng).cloned() {
                    out.push(self.send(target, Body::Join));
                }
            }
            if let Some(target) = self.next_target() {
                let seq = self.next_seq();
                self.probe = Some(Probe {
                    target: target.clone(),
                    seq,
                    sent: now,
                    indirect_sent: false,
                    acked: false,
                });
                out.push(self.send(target, Body::Ping { seq }));
            }
        }
        let indirect = match &self.probe {
            Some(p) if !p.acked && !p.indirect_sent && now >= p.sent + self.config.ping_timeout => {
                Some((p.target.clone(), p.seq))
            }
            _ => None,
        };
        if let Some((target, seq)) = indirect {
            if let Some(p) = self.probe.as_mut() {
                p.indirect_sent = true;
            }
            let mut helpers: Vec<MemberId> = self
                .members
                .iter()
                .filter(|(id, m)| m.state == State::Alive && **id != target)
                .map(|(id, _)| id.clone())
                .collect();
            helpers.shuffle(&mut self.rng);
            helpers.truncate(self.config.indirect_probes);
            for helper in helpers {
                out.push(self.send(
                    helper,
                    Body::PingReq {
                        seq,
                        target: target.clone(),
                    },
                ));
            }
        }
        // Suspects out of time are dead.
        let expired: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.state == State::Suspect && now >= m.since + self.config.suspicion_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let incarnation = self.members[&id].incarnation;
            self.apply(
                Update {
                    member: id,
                    state: State::Dead,
                    incarnation,
                },
                now,
            );
        }
        let stale = now.checked_sub(self.config.period * 2);
        self.relayed
            .retain(|_, (_, _, at)| stale.is_none_or(|s| *at > s));
        out
    }

    /// The next member to probe: round-robin over a list shuffled every round (the paper's
    /// bound: every member is probed within 2n-1 periods), skipping the dead.
    fn next_target(&mut self) -> Option<MemberId> {
        loop {
            if self.round.is_empty() {
                self.round = self
                    .members
                    .iter()
                    .filter(|(_, m)| !m.state.gone())
                    .map(|(id, _)| id.clone())
                    .collect();
                if self.round.is_empty() {
                    return None;
                }
                self.round.shuffle(&mut self.rng);
            }
            let id = self.round.pop()?;
            if self.members.get(&id).is_some_and(|m| !m.state.gone()) {
                return Some(id);
            }
        }
    }

    fn suspect(&mut self, id: &MemberId, now: Instant) {
        if let Some(m) = self.members.get(id)
            && m.state == State::Alive
        {
            let incarnation = m.incarnation;
            self.apply(
                Update {
                    member: id.clone(),
                    state: State::Suspect,
                    incarnation,
                },
                now,
            );
        }
    }

    /// Handles one message; returns the replies and relays to send.
    pub fn receive(&mut self, envelope: Envelope, now: Instant) -> Vec<Outbound> {
        let mut out = Vec::new();
        if envelope.from == self.me {
            return out;
        }
        if envelope.body == Body::Watch {
            // No piggyback: the watcher is not a member, updates spent on it would be lost
            // to the members.
            out.push(Outbound {
                to: envelope.from,
                envelope: Envelope {
                    from: self.me.clone(),
                    incarnation: self.incarnation,
                    body: Body::Welcome {
                        members: self.view(),
                    },
                    updates: Vec::new(),
                },
            });
            return out;
        }
        // The sender vouches for itself at its incarnation (a suspicion at the same
        // incarnation still wins: only a refutation, a higher one, clears it).
        self.apply(
            Update {
                member: envelope.from.clone(),
                state: State::Alive,
                incarnation: envelope.incarnation,
            },
            now,
        );
        for update in envelope.updates {
            self.apply(update, now);
        }
        let from = envelope.from;
        match envelope.body {
            Body::Ping { seq } => out.push(self.send(from, Body::Ack { seq })),
            Body::Ack { seq } => {
                if let Some(probe) = self.probe.as_mut()
                    && probe.seq == seq
                {
                    probe.acked = true;
                }
                if let Some((requester, their_seq, _)) = self.relayed.remove(&seq) {
                    out.push(self.send(requester, Body::Ack { seq: their_seq }));
                }
            }
            Body::PingReq { seq, target } => {
                if target == self.me {
                    out.push(self.send(from, Body::Ack { seq }));
                } else {
                    let mine = self.next_seq();
                    self.relayed.insert(mine, (from, seq, now));
                    out.push(self.send(target, Body::Ping { seq: mine }));
                }
            }
            Body::Join => {
                let members = self.view();
                out.push(self.send(from, Body::Welcome { members }));
            }
            Body::Watch => {}
            Body::Welcome { members } => {
                self.joined = true;
                for update in members {
                    self.apply(update, now);
                }
            }
        }
        out
    }

    /// Every member this one knows, itself included, as updates: what a `Welcome` carries.
    fn view(&self) -> Vec<Update> {
        let mut members: Vec<Update> = self
            .members
            .iter()
            .map(|(id, m)| Update {
                member: id.clone(),
                state: m.state,
                incarnation: m.incarnation,
            })
            .collect();
        members.push(Update {
            member: self.me.clone(),
            state: if self.leaving {
                State::Left
            } else {
                State::Alive
            },
            incarnation: self.incarnation,
        });
        members
    }

    /// Applies what someone says about a member, by SWIM's precedence rules; a change is
    /// recorded and spread further.
    fn apply(&mut self, update: Update, now: Instant) {
        if update.member == self.me {
            // Suspected, declared dead, or said to have left (by a process of mine before a
            // restart) at my incarnation or later: refute with a higher one.
            if update.state != State::Alive
                && update.incarnation >= self.incarnation
                && !self.leaving
            {
                self.incarnation = update.incarnation + 1;
                let refutation = Update {
                    member: self.me.clone(),
                    state: State::Alive,
                    incarnation: self.incarnation,
                };
                self.spread(refutation);
            }
            return;
        }
        let accept = match self.members.get(&update.member) {
            None => true,
            Some(m) => {
                let (i, j) = (update.incarnation, m.incarnation);
                match (update.state, m.state) {
                    (State::Alive, _) => i > j,
                    (State::Suspect, State::Alive) => i >= j,
                    (State::Suspect, _) => i > j,
                    (State::Dead | State::Left, current) if current.gone() => i > j,
                    (State::Dead | State::Left, _) => i >= j,
                }
            }
        };
        if !accept {
            return;
        }
        let previous = self.members.insert(
            update.member.clone(),
            Member {
                state: update.state,
                incarnation: update.incarnation,
                since: now,
            },
        );
        let from = previous.map(|m| m.state);
        if from != Some(update.state) {
            self.changes.push(Change {
                member: update.member.clone(),
                from,
                to: update.state,
                incarnation: update.incarnation,
            });
        }
        self.spread(update);
    }

    /// Queues an update for piggybacking, replacing an older one about the same member.
    fn spread(&mut self, update: Update) {
        let n = self.members.len() + 1;
        let sends = self.config.retransmit_mult * (usize::BITS - n.leading_zeros()) as usize;
        self.gossip.retain(|(u, _)| u.member != update.member);
        self.gossip.push((update, sends.max(1)));
    }

    /// The updates for one message: those sent least so far first.
    fn piggyback(&mut self) -> Vec<Update> {
        self.gossip
            .sort_by_key(|(_, left)| std::cmp::Reverse(*left));
        let take = self.gossip.len().min(self.config.max_piggyback);
        let updates = self.gossip[..take]
            .iter_mut()
            .map(|(u, left)| {
                *left -= 1;
                u.clone()
            })
            .collect();
        self.gossip.retain(|(_, left)| *left > 0);
        updates
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};

    use rand::Rng;

    use super::*;

    /// Many members over a simulated network: 1 ms per message, seeded loss, partitions,
    /// killed members (their messages and ticks stop); time advances in 5 ms steps.
    struct Sim {
        start: Instant,
        now: Instant,
        members: BTreeMap<MemberId, Swim>,
        down: BTreeSet<MemberId>,
        /// Members on different sides cannot talk.
        side: BTreeMap<MemberId, u8>,
        loss: f64,
        queue: VecDeque<(Instant, Outbound)>,
        rng: SmallRng,
        /// (time since start, member that saw it, change)
        log: Vec<(Duration, MemberId, Change)>,
    }

    impl Sim {
        fn new(n: usize, seed: u64) -> Self {
            let start = Instant::now();
            let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
            let members = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let seeds = if i == 0 { vec![] } else { vec![ids[0].clone()] };
                    (
                        id.clone(),
                        Swim::new(id.clone(), seeds, Config::default(), seed + i as u64),
                    )
                })
                .collect();
            Self {
                start,
                now: start,
                members,
                down: BTreeSet::new(),
                side: BTreeMap::new(),
                loss: 0.0,
                queue: VecDeque::new(),
                rng: SmallRng::seed_from_u64(seed),
                log: Vec::new(),
            }
        }

        fn step(&mut self) {
            self.now += Duration::from_millis(5);
            let mut sent = Vec::new();
            while self.queue.front().is_some_and(|(at, _)| *at <= self.now) {
                let (_, message) = self.queue.pop_front().unwrap();
                let to = message.to.clone();
                if self.down.contains(&to) {
                    continue;
                }
                let member = self.members.get_mut(&to).unwrap();
                sent.extend(member.receive(message.envelope, self.now));
            }
            for (id, member) in &mut self.members {
                if !self.down.contains(id) {
                    sent.extend(member.tick(self.now));
                }
                for change in member.take_changes() {
                    self.log.push((self.now - self.start, id.clone(), change));
                }
            }
            for message in sent {
                let cut = self.side.get(&message.envelope.from).copied().unwrap_or(0)
                    != self.side.get(&message.to).copied().unwrap_or(0);
                if cut || self.rng.random_bool(self.loss) {
                    continue;
                }
                self.queue
                    .push_back((self.now + Duration::from_millis(1), message));
            }
        }

        fn run_for(&mut self, d: Duration) {
            let until = self.now + d;
            while self.now < until {
                self.step();
            }
        }

        /// Steps until `done` holds; the simulated time it took.
        fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> Duration {
            let from = self.now;
            while !done(self) {
                assert!(self.now - from < limit, "not within {limit:?}");
                self.step();
            }
            self.now - from
        }

        /// Whether every member up (but `except`) sees `id` in `state`.
        fn all_see(&self, id: &str, state: State) -> bool {
            self.members
                .iter()
                .filter(|(m, _)| !self.down.contains(*m) && m.as_str() != id)
                .all(|(_, s)| s.members().get(id).is_some_and(|m| m.state == state))
        }

        fn everyone_knows_everyone(&self) -> bool {
            let n = self.members.len();
            self.members.values().all(|s| {
                s.members().len() == n - 1 && s.members().values().all(|m| m.state == State::Alive)
            })
        }

        fn changes_to(&self, state: State) -> usize {
            self.log.iter().filter(|(_, _, c)| c.to == state).count()
        }
    }

    #[test]
    fn members_join_through_a_seed_and_learn_everyone() {
        let mut sim = Sim::new(5, 1);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        assert!(sim.members.values().all(Swim::joined));
        assert_eq!(sim.changes_to(State::Suspect), 0);
    }

    #[test]
    fn a_watcher_gets_the_view_without_becoming_a_member() {
        let mut sim = Sim::new(3, 1);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        let watch = Envelope {
            from: "proxy".into(),
            incarnation: 0,
            body: Body::Watch,
            updates: Vec::new(),
        };
        let n1 = sim.members.get_mut("n1").unwrap();
        let out = n1.receive(watch, sim.now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, "proxy");
        let Body::Welcome { members } = &out[0].envelope.body else {
            panic!("{out:?}")
        };
        let ids: Vec<&str> = members.iter().map(|u| u.member.as_str()).collect();
        assert_eq!(ids, ["n2", "n3", "n1"]);
        assert!(out[0].envelope.updates.is_empty());
        assert!(!n1.members().contains_key("proxy"));
        assert_eq!(n1.ring_members(), ["n1", "n2", "n3"]);
    }

    /// The target: from a kill to `dead` everywhere in under 2 s, default settings.
    #[test]
    fn a_killed_member_is_suspected_then_dead_everywhere_within_two_seconds() {
        for seed in 0..5 {
            let mut sim = Sim::new(5, seed);
            sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
            sim.run_for(Duration::from_millis(500));
            sim.down.insert("n3".into());
            let took = sim.run_until(Duration::from_secs(2), |s| s.all_see("n3", State::Dead));
            assert!(
                sim.log
                    .iter()
                    .any(|(_, _, c)| c.member == "n3" && c.to == State::Suspect),
                "suspected before dead"
            );
            assert!(took < Duration::from_secs(2), "seed {seed}: {took:?}");
            let live = sim.members["n1"].live_members();
            assert_eq!(live, ["n1", "n2", "n4", "n5"]);
        }
    }

    /// The target: 5% loss on every message, a minute: nobody is declared dead.
    /// Then 20% loss: suspicions now happen, and every one is refuted in time.
    #[test]
    fn message_loss_causes_suspicions_that_are_refuted_never_deaths() {
        let mut sim = Sim::new(5, 42);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        sim.loss = 0.05;
        sim.run_for(Duration::from_secs(60));
        assert_eq!(sim.changes_to(State::Dead), 0, "{:?}", sim.log);
        sim.loss = 0.20;
        sim.run_for(Duration::from_secs(30));
        let suspicions = sim.changes_to(State::Suspect);
        let refuted = sim
            .log
            .iter()
            .filter(|(_, _, c)| c.is_false_suspicion())
            .count();
        assert!(
            suspicions > 10,
            "20% loss should cause suspicions: {suspicions}"
        );
        assert_eq!(sim.changes_to(State::Dead), 0, "{:?}", sim.log);
        sim.loss = 0.0;
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        let refuted_later = sim
            .log
            .iter()
            .filter(|(_, _, c)| c.is_false_suspicion())
            .count();
        assert_eq!(
            refuted_later, suspicions,
            "every suspicion ended in a refutation ({refuted} during the loss)"
        );
    }

    #[test]
    fn a_cut_off_member_is_declared_dead_then_refutes_and_rejoins_after_the_heal() {
        let mut sim = Sim::new(5, 3);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        sim.side.insert("n2".into(), 1);
        sim.run_until(Duration::from_secs(3), |s| s.all_see("n2", State::Dead));
        let before = sim.members["n2"].incarnation();
        sim.side.clear();
        sim.run_until(Duration::from_secs(5), Sim::everyone_knows_everyone);
        assert!(
            sim.members["n2"].incarnation() > before,
            "n2 came back by refuting, with a higher incarnation"
        );
    }

    #[test]
    fn a_member_that_leaves_is_left_not_dead() {
        let mut sim = Sim::new(4, 5);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        sim.members.get_mut("n4").unwrap().leave();
        // It keeps answering until the news has spread, then goes.
        sim.run_until(Duration::from_secs(2), |s| s.all_see("n4", State::Left));
        sim.down.insert("n4".into());
        sim.run_for(Duration::from_secs(3));
        assert!(sim.all_see("n4", State::Left));
        assert_eq!(sim.changes_to(State::Suspect), 0);
        assert_eq!(sim.changes_to(State::Dead), 0);
    }

    /// Everyone else declared n5 dead but n5 never heard so (it still sees them all alive):
    /// the `Join` they send it now and then tells it, and it refutes.
    #[test]
    fn a_member_declared_dead_without_knowing_learns_it_and_refutes() {
        let mut sim = Sim::new(5, 11);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        let now = sim.now;
        for id in ["n1", "n2", "n3", "n4"] {
            let swim = sim.members.get_mut(id).unwrap();
            let incarnation = swim.members()["n5"].incarnation;
            swim.apply(update("n5", State::Dead, incarnation), now);
            swim.gossip.clear();
        }
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        assert!(sim.members["n5"].incarnation() > 0);
    }

    #[test]
    fn a_restarted_member_rejoins_above_the_incarnation_it_died_at() {
        let mut sim = Sim::new(3, 9);
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        sim.down.insert("n3".into());
        sim.run_until(Duration::from_secs(3), |s| s.all_see("n3", State::Dead));
        // A new process: no memory, incarnation 0, joining through n1.
        sim.members.insert(
            "n3".into(),
            Swim::new("n3", vec!["n1".into()], Config::default(), 99),
        );
        sim.down.clear();
        sim.run_until(Duration::from_secs(3), Sim::everyone_knows_everyone);
        assert!(sim.members["n3"].incarnation() > 0);
    }

    fn update(member: &str, state: State, incarnation: u64) -> Update {
        Update {
            member: member.into(),
            state,
            incarnation,
        }
    }

    /// The precedence rules, one by one, as the paper states them (plus rejoin after dead).
    #[test]
    fn updates_obey_swim_precedence() {
        let now = Instant::now();
        let mut s = Swim::new("me", vec![], Config::default(), 1);
        let state = |s: &Swim| {
            let m = &s.members()["x"];
            (m.state, m.incarnation)
        };
        s.apply(update("x", State::Alive, 1), now);
        s.apply(update("x", State::Suspect, 0), now);
        assert_eq!(
            state(&s),
            (State::Alive, 1),
            "an older suspicion is ignored"
        );
        s.apply(update("x", State::Suspect, 1), now);
        assert_eq!(
            state(&s),
            (State::Suspect, 1),
            "suspicion wins at equal incarnation"
        );
        s.apply(update("x", State::Alive, 1), now);
        assert_eq!(
            state(&s),
            (State::Suspect, 1),
            "alive needs a higher incarnation"
        );
        s.apply(update("x", State::Alive, 2), now);
        assert_eq!(state(&s), (State::Alive, 2), "a refutation clears it");
        s.apply(update("x", State::Dead, 2), now);
        assert_eq!(state(&s), (State::Dead, 2));
        s.apply(update("x", State::Suspect, 2), now);
        s.apply(update("x", State::Alive, 2), now);
        assert_eq!(
            state(&s),
            (State::Dead, 2),
            "dead is final at its incarnation"
        );
        s.apply(update("x", State::Alive, 3), now);
        assert_eq!(state(&s), (State::Alive, 3), "back, higher");
        let changes = s.take_changes();
        assert_eq!(changes.iter().filter(|c| c.is_false_suspicion()).count(), 1);
    }

    #[test]
    fn hearing_itself_suspected_makes_a_member_refute() {
        let now = Instant::now();
        let mut s = Swim::new("me", vec![], Config::default(), 1);
        s.apply(update("me", State::Suspect, 0), now);
        assert_eq!(s.incarnation(), 1);
        s.apply(update("me", State::Dead, 4), now);
        assert_eq!(s.incarnation(), 5);
        s.apply(update("me", State::Suspect, 2), now);
        assert_eq!(
            s.incarnation(),
            5,
            "an old suspicion needs no new refutation"
        );
        assert!(s.piggyback().contains(&update("me", State::Alive, 5)));
    }

    #[test]
    fn updates_are_piggybacked_a_bounded_number_of_times() {
        let now = Instant::now();
        let mut s = Swim::new("me", vec![], Config::default(), 1);
        s.apply(update("x", State::Alive, 0), now);
        let mut sends = 0;
        while s.piggyback().iter().any(|u| u.member == "x") {
            sends += 1;
            assert!(sends < 100);
        }
        // 2 members: retransmit_mult x ceil(log2(3)) = 4 x 2
        assert_eq!(sends, 8);
    }

    #[test]
    fn an_envelope_survives_json() {
        let envelope = Envelope {
            from: "n1".into(),
            incarnation: 3,
            body: Body::PingReq {
                seq: 9,
                target: "n2".into(),
            },
            updates: vec![update("n4", State::Suspect, 2)],
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
    }
}
