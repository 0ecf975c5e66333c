//! The nemesis: random faults, one at a time, from a list, for a while. Each fault is applied,
//! left for `every ± jitter`, undone, and followed by the same quiet time, so the system is
//! seen both failing and recovering. Every choice (which fault, which node, how long) comes
//! from the run's seeded RNG: the same seed gives the same schedule.

use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use tokio::time::Instant;

use super::events::EventKind;
use super::scenario::{NemesisFault, NemesisStep};
use super::supervisor::{ProcessFault, ProcessState, Supervisor};

/// Runs the nemesis until its duration has passed; leaves the cluster healed.
pub async fn run(supervisor: &Supervisor, step: &NemesisStep) -> anyhow::Result<()> {
    let until = Instant::now() + step.duration.0;
    let jitter = step.jitter.map_or(Duration::ZERO, |j| j.0);
    let pause = |supervisor: &Supervisor| {
        let spread = jitter.as_secs_f64();
        let offset = supervisor.with_rng(|rng| rng.random_range(-spread..=spread));
        Duration::from_secs_f64((step.every.0.as_secs_f64() + offset).max(0.0))
    };
    while Instant::now() < until {
        let fault =
            supervisor.with_rng(|rng| *step.faults.choose(rng).expect("validated: at least one"));
        let undo = apply(supervisor, fault).await?;
        tokio::time::sleep_until((Instant::now() + pause(supervisor)).min(until)).await;
        undo_fault(supervisor, undo).await?;
        tokio::time::sleep_until((Instant::now() + pause(supervisor)).min(until)).await;
    }
    Ok(())
}

/// How to take a fault back.
enum Undo {
    Start(String),
    Resume(String),
    Heal,
    Nothing,
}

async fn random_running(supervisor: &Supervisor) -> Option<String> {
    let running: Vec<String> = supervisor
        .nodes()
        .await
        .into_iter()
        .filter(|n| n.state == ProcessState::Running)
        .map(|n| n.id)
        .collect();
    supervisor.with_rng(|rng| running.choose(rng).cloned())
}

async fn apply(supervisor: &Supervisor, fault: NemesisFault) -> anyhow::Result<Undo> {
    let timeline = supervisor.timeline();
    timeline.record(EventKind::Note, None, format!("nemesis: {fault:?}"));
    Ok(match fault {
        NemesisFault::Kill | NemesisFault::Terminate | NemesisFault::Pause => {
            let Some(id) = random_running(supervisor).await else {
                return Ok(Undo::Nothing);
            };
            let (process_fault, undo) = match fault {
                NemesisFault::Kill => (ProcessFault::Kill, Undo::Start(id.clone())),
                NemesisFault::Terminate => (ProcessFault::Terminate, Undo::Start(id.clone())),
                _ => (ProcessFault::Pause, Undo::Resume(id.clone())),
            };
            supervisor.apply(process_fault, &id).await?;
            undo
        }
        NemesisFault::Partition => {
            supervisor.partition("majority-minority")?;
            Undo::Heal
        }
        NemesisFault::Isolate | NemesisFault::Delay | NemesisFault::Loss => {
            let ids = supervisor.ids();
            let Some(id) = supervisor.with_rng(|rng| ids.choose(rng).cloned()) else {
                return Ok(Undo::Nothing);
            };
            match fault {
                NemesisFault::Isolate => supervisor.partition(&format!("isolate {id}"))?,
                _ => {
                    let spec = if fault == NemesisFault::Delay {
                        "delay 100ms 50ms"
                    } else {
                        "loss 20%"
                    };
                    for links in [
                        format!("{id}->*"),
                        format!("*->{id}"),
                        format!("client->{id}"),
                        format!("{id}->client"),
                    ] {
                        // A single-node cluster has no node links: only the client ones match.
                        let _ = supervisor.link(&links, spec);
                    }
                }
            }
            Undo::Heal
        }
    })
}

async fn undo_fault(supervisor: &Supervisor, undo: Undo) -> anyhow::Result<()> {
    match undo {
        Undo::Start(id) => supervisor.apply(ProcessFault::Start, &id).await,
        Undo::Resume(id) => supervisor.apply(ProcessFault::Resume, &id).await,
        Undo::Heal => {
            supervisor.heal();
            Ok(())
        }
        Undo::Nothing => Ok(()),
    }
}
