//! `lab bench proj5`: transfers per second and latency for two-phase commit and for sagas,
//! over 2 and 4 embedded shards, with uniform and hot-account contention, beside the same
//! transfers as single-node PostgreSQL transactions in the same run (one database, no
//! distribution: the anchor), and two-phase commit again with PostgreSQL participants
//! (`2pc-postgres`: `--store postgres`, a server per shard and for the ledger, each prepare a
//! `PREPARE TRANSACTION`).
//!
//! Every system runs on this machine with durable commits (sled flushed before an answer;
//! PostgreSQL with `fsync` and `synchronous_commit` on). The bank runs as `lab node bank`
//! processes (`services/bank`'s `LocalBank`, no link proxies); the saga runs without Kafka-lite
//! (its outbox fills and nothing relays it: the notify step's cost is one store write). A
//! PostgreSQL transfer locks both rows in account order (`SELECT ... FOR UPDATE`, so two
//! transfers cannot deadlock), checks the balance, updates both and journals the transfer.
//!
//! Closed loop: `--clients` clients, each sending its next transfer once the last answered,
//! amounts 1 to 10 between two accounts of `--accounts` (uniform), or of the first 8 (`hot`).
//! One line per figure, and the ratios the issue sets targets for, e.g.
//! `bench=proj5 system=2pc shards=2 contention=uniform clients=16 seconds=10.000 transfers=... transfers_per_sec=... p50_us=... p99_us=... aborted=... errors=0`
//! `bench=proj5 figure=2pc_vs_postgres shards=2 contention=uniform throughput_ratio=0.71 target=0.5`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distlab_bank::cluster::{LocalBank, Mode, NodeCommand};
use distlab_bank::domain::account_name;
use distlab_bank::postgres::Postgres;
use distlab_proto::bank::v1 as pb;
use distlab_runtime::bench::{Figure, closed_loop};
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Postgres,
    #[value(name = "2pc")]
    TwoPhaseCommit,
    /// Two-phase commit with PostgreSQL participants (`--store postgres`).
    #[value(name = "2pc-postgres")]
    TwoPhaseCommitOnPostgres,
    Saga,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Postgres => "postgres",
            System::TwoPhaseCommit => "2pc",
            System::TwoPhaseCommitOnPostgres => "2pc-postgres",
            System::Saga => "saga",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contention {
    /// Two of all the accounts.
    Uniform,
    /// Two of the first 8 accounts.
    Hot,
}

impl Contention {
    fn name(self) -> &'static str {
        match self {
            Contention::Uniform => "uniform",
            Contention::Hot => "hot",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Proj5BenchArgs {
    /// Systems to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "postgres,2pc,2pc-postgres,saga"
    )]
    pub systems: Vec<System>,
    /// Shard counts for the bank, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub shards: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "uniform,hot")]
    pub contention: Vec<Contention>,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Measured time per figure (after a 2 s warm-up).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "10s")]
    pub duration: Duration,
    /// Where the stores go (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const OPENING: i64 = 1_000_000;
const WARMUP: Duration = Duration::from_secs(2);

/// The accounts of one transfer.
fn pick(rng: &mut rand::rngs::SmallRng, contention: Contention, accounts: usize) -> (usize, usize) {
    let n = match contention {
        Contention::Uniform => accounts,
        Contention::Hot => 8.min(accounts),
    };
    let from = rng.random_range(0..n);
    let mut to = rng.random_range(0..n);
    while to == from {
        to = rng.random_range(0..n);
    }
    (from, to)
}

/// Why a transfer did not count: refused (aborted, compensated) or an error.
enum NotMoved {
    Refused,
    Failed,
}

fn line(
    system: System,
    shards: usize,
    contention: Contention,
    clients: usize,
    f: &Figure,
    refused: u64,
) {
    println!(
        "bench=proj5 system={} shards={shards} contention={} clients={clients} seconds={:.3} transfers={} transfers_per_sec={:.0} p50_us={} p99_us={} aborted={refused} errors={}",
        system.name(),
        contention.name(),
        f.seconds,
        f.ops,
        f.ops_per_sec(),
        f.us_at(0.5),
        f.us_at(0.99),
        f.errors.saturating_sub(refused)
    );
}

async fn bank(
    args: &Proj5BenchArgs,
    exe: &Path,
    dir: &Path,
    system: System,
    shards: usize,
    contention: Contention,
) -> anyhow::Result<(Figure, u64)> {
    let mode = match system {
        System::Saga => Mode::Saga,
        _ => Mode::TwoPhaseCommit,
    };
    let on_postgres = system == System::TwoPhaseCommitOnPostgres;
    let command = NodeCommand {
        program: exe.to_path_buf(),
        args: vec!["node".into(), "bank".into()],
    };
    let accounts = args.accounts.to_string();
    let flags = move |id: &str| {
        let mut flags = vec![
            "--accounts".to_string(),
            accounts.clone(),
            "--opening".to_string(),
            OPENING.to_string(),
            "--max-attempts".to_string(),
            "100".to_string(),
        ];
        if on_postgres && id != mode.front() {
            flags.extend(["--store".to_string(), "postgres".to_string()]);
        }
        flags
    };
    let bank = LocalBank::start(command, dir, mode, shards, &flags).await?;
    let client = bank.client();
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let count = refused.clone();
    let accounts = args.accounts;
    let figure = closed_loop(args.clients, WARMUP, args.duration, |i| {
        let client = client.clone();
        let refused = count.clone();
        let sent = sent.clone();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(i as u64);
        move || {
            let (from, to) = pick(&mut rng, contention, accounts);
            let request = pb::TransferRequest {
                id: format!("b{}", sent.fetch_add(1, Ordering::Relaxed)),
                from: account_name(from),
                to: account_name(to),
                amount: rng.random_range(1..=10),
            };
            let mut client = client.clone();
            let refused = refused.clone();
            async move {
                match client.transfer(request).await {
                    Ok(r) if r.get_ref().committed => Ok(()),
                    Ok(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        Err(NotMoved::Refused)
                    }
                    Err(_) => Err(NotMoved::Failed),
                }
            }
        }
    })
    .await?;
    anyhow::ensure!(bank.all_alive(), "a bank node died during the benchmark");
    let read = bank
        .client()
        .read_all(pb::ReadAllRequest {})
        .await?
        .into_inner();
    anyhow::ensure!(
        read.total == read.expected || read.in_flight_after != 0,
        "money created or destroyed: {} where {} is the bank's",
        read.total,
        read.expected
    );
    drop(bank);
    Ok((figure, refused.load(Ordering::Relaxed)))
}

async fn postgres(
    args: &Proj5BenchArgs,
    server: &Postgres,
    contention: Contention,
) -> anyhow::Result<(Figure, u64)> {
    let setup = server.connect().await?;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS accounts, journal;
             CREATE TABLE accounts (account text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
             CREATE TABLE journal (id text PRIMARY KEY, from_account text NOT NULL, to_account text NOT NULL, amount bigint NOT NULL);",
        )
        .await?;
    setup
        .execute(
            "INSERT INTO accounts SELECT 'acct-' || lpad(i::text, 4, '0'), $1 FROM generate_series(0, $2 - 1) AS i",
            &[&OPENING, &(args.accounts as i32)],
        )
        .await?;
    let mut connections = Vec::new();
    for _ in 0..args.clients {
        connections.push(Arc::new(tokio::sync::Mutex::new(server.connect().await?)));
    }
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let count = refused.clone();
    let accounts = args.accounts;
    let figure = closed_loop(args.clients, WARMUP, args.duration, |i| {
        let connection = connections[i].clone();
        let refused = count.clone();
        let sent = sent.clone();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(i as u64);
        move || {
            let (from, to) = pick(&mut rng, contention, accounts);
            let (from, to) = (account_name(from), account_name(to));
            let amount: i64 = rng.random_range(1..=10);
            let id = format!("b{}", sent.fetch_add(1, Ordering::Relaxed));
            let connection = connection.clone();
            let refused = refused.clone();
            async move {
                let mut client = connection.lock().await;
                let moved = async {
                    let tx = client.transaction().await?;
                    let rows = tx
                        .query(
                            "SELECT account, balance FROM accounts WHERE account = ANY($1) ORDER BY account FOR UPDATE",
                            &[&vec![from.clone(), to.clone()]],
                        )
                        .await?;
                    let balance: i64 = rows
                        .iter()
                        .find(|r| r.get::<_, String>(0) == from)
                        .map_or(0, |r| r.get(1));
                    if balance < amount {
                        tx.rollback().await?;
                        return Ok::<bool, tokio_postgres::Error>(false);
                    }
                    tx.execute(
                        "UPDATE accounts SET balance = balance - $2 WHERE account = $1",
                        &[&from, &amount],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE accounts SET balance = balance + $2 WHERE account = $1",
                        &[&to, &amount],
                    )
                    .await?;
                    tx.execute(
                        "INSERT INTO journal VALUES ($1, $2, $3, $4)",
                        &[&id, &from, &to, &amount],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(true)
                }
                .await;
                match moved {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        Err(NotMoved::Refused)
                    }
                    Err(_) => Err(NotMoved::Failed),
                }
            }
        }
    })
    .await?;
    let total: i64 = setup
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        total == OPENING * args.accounts as i64,
        "PostgreSQL's total moved: {total}"
    );
    Ok((figure, refused.load(Ordering::Relaxed)))
}

pub async fn run(args: &Proj5BenchArgs, exe: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.accounts >= 8 && !args.duration.is_zero(),
        "--clients must be at least 1, --accounts at least 8, --duration more than 0"
    );
    anyhow::ensure!(
        args.shards.iter().all(|s| (1..=16).contains(s)),
        "--shards: 1 to 16 each"
    );
    let scratch = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let mut throughput: std::collections::BTreeMap<(&str, usize, &str), f64> = Default::default();
    for &contention in &args.contention {
        if args.systems.contains(&System::Postgres) {
            let mut server =
                Postgres::start(&dir.join(format!("postgres-{}", contention.name()))).await?;
            let (figure, refused) = postgres(args, &server, contention).await?;
            server.stop().await;
            line(
                System::Postgres,
                1,
                contention,
                args.clients,
                &figure,
                refused,
            );
            throughput.insert(("postgres", 1, contention.name()), figure.ops_per_sec());
        }
        for &shards in &args.shards {
            for system in [
                System::TwoPhaseCommit,
                System::TwoPhaseCommitOnPostgres,
                System::Saga,
            ] {
                if !args.systems.contains(&system) {
                    continue;
                }
                let run_dir = dir.join(format!("{}-{shards}-{}", system.name(), contention.name()));
                let (figure, refused) =
                    bank(args, &exe, &run_dir, system, shards, contention).await?;
                line(system, shards, contention, args.clients, &figure, refused);
                throughput.insert(
                    (system.name(), shards, contention.name()),
                    figure.ops_per_sec(),
                );
            }
        }
    }
    // The figures the issue sets targets for.
    for &contention in &args.contention {
        let c = contention.name();
        for &shards in &args.shards {
            if let (Some(two), Some(pg)) = (
                throughput.get(&("2pc", shards, c)),
                throughput.get(&("postgres", 1, c)),
            ) {
                println!(
                    "bench=proj5 figure=2pc_vs_postgres shards={shards} contention={c} throughput_ratio={:.2} target=0.5",
                    two / pg.max(1e-9)
                );
            }
            if let (Some(saga), Some(two)) = (
                throughput.get(&("saga", shards, c)),
                throughput.get(&("2pc", shards, c)),
            ) {
                println!(
                    "bench=proj5 figure=saga_vs_2pc shards={shards} contention={c} throughput_ratio={:.2} target=2",
                    saga / two.max(1e-9)
                );
            }
        }
    }
    Ok(())
}
