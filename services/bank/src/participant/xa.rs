//! The XA path: a participant whose store is a real database, PostgreSQL, and whose prepared
//! transactions are the database's own (`PREPARE TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK
//! PREPARED`), as an XA resource manager's are. `--store postgres` selects it; the embedded
//! sled store stays the default.
//!
//! What the protocol asks of a participant's store, and how PostgreSQL gives it:
//! - prepare: the branch's writes (balance updates on a shard, the journal row on the ledger)
//!   run in a transaction that is then *prepared*: durable, holding its row locks, invisible to
//!   readers, able to commit or roll back after any crash. The vote is yes only once
//!   `PREPARE TRANSACTION` returned.
//! - commit and abort: `COMMIT PREPARED` / `ROLLBACK PREPARED` by the transaction's global id;
//!   both are idempotent here (a transaction already finished is not an error: only this
//!   participant finishes its own).
//! - recovery: the database lists its prepared transactions in `pg_prepared_xacts`. Each one's
//!   global id carries what the participant needs to be in doubt about it again (the
//!   transaction, its age for wait-die, its coordinator, its writes), so a participant
//!   restarted after kill -9 rebuilds its prepared records from the database alone and asks
//!   their coordinator, as with the embedded store.
//!
//! The participant's own lock table still orders transactions (wait-die): PostgreSQL's row
//! locks never wait on each other because no two transactions the lock table let through
//! touch one row. A `lock_timeout` on every connection turns a wait that should not happen
//! into an error (a no vote) rather than a hang.
//!
//! The server is a throwaway one in the participant's data dir ([`crate::postgres`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use tokio_postgres::error::SqlState;

use super::{Prepared, Write};
use crate::domain::{Bank, JournalEntry, Transfer};
use crate::lock::{Age, TxId};
use crate::postgres::Postgres;
use crate::store::Recovered;

/// What every global id of ours starts with; other prepared transactions are not ours.
const GID_PREFIX: &str = "distlab/";
/// PostgreSQL's limit on a global id.
const GID_MAX: usize = 199;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    account text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS journal (
    seq bigserial PRIMARY KEY,
    tx bigint NOT NULL,
    transfer_id text NOT NULL,
    source text NOT NULL,
    dest text NOT NULL,
    amount bigint NOT NULL
);
";

/// A name that may go into a global id: letters, digits, `.`, `_`, `-`.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The global id of a prepared record:
/// `distlab/TX/STARTED_US/AT_MS/COORDINATOR/ACCOUNT:DELTA,...` (no writes on the ledger).
pub fn gid(record: &Prepared) -> Result<String, String> {
    if !plain(&record.coordinator) {
        return Err(format!(
            "coordinator {:?} cannot go into a PostgreSQL global id",
            record.coordinator
        ));
    }
    let mut writes = Vec::with_capacity(record.writes.len());
    for w in &record.writes {
        if !plain(&w.account) {
            return Err(format!(
                "account {:?} cannot go into a PostgreSQL global id",
                w.account
            ));
        }
        writes.push(format!("{}:{}", w.account, w.delta));
    }
    let gid = format!(
        "{GID_PREFIX}{}/{}/{}/{}/{}",
        record.tx,
        record.age.started,
        record.at_ms,
        record.coordinator,
        writes.join(",")
    );
    if gid.len() > GID_MAX {
        return Err(format!(
            "transaction {}: {} writes do not fit in a PostgreSQL global id ({} bytes, at most {GID_MAX})",
            record.tx,
            record.writes.len(),
            gid.len()
        ));
    }
    Ok(gid)
}

/// The prepared record a global id of ours stands for (`None`: not ours). The ledger's journal
/// entry is in the prepared transaction itself, so the record has none.
pub fn parse_gid(gid: &str) -> Result<Option<Prepared>, String> {
    let Some(rest) = gid.strip_prefix(GID_PREFIX) else {
        return Ok(None);
    };
    let bad = |what: &str| format!("prepared transaction {gid:?}: {what}");
    let fields: Vec<&str> = rest.split('/').collect();
    let [tx, started, at_ms, coordinator, writes] = fields[..] else {
        return Err(bad("not TX/STARTED/AT/COORDINATOR/WRITES"));
    };
    let number = |text: &str, what: &str| {
        text.parse::<u64>()
            .map_err(|_| bad(&format!("{what} {text:?} is not a number")))
    };
    let tx = number(tx, "the transaction")?;
    if tx == 0 || !plain(coordinator) {
        return Err(bad("no transaction or coordinator"));
    }
    let writes = if writes.is_empty() {
        Vec::new()
    } else {
        writes
            .split(',')
            .map(|w| {
                let (account, delta) = w
                    .split_once(':')
                    .filter(|(a, _)| plain(a))
                    .ok_or_else(|| bad(&format!("write {w:?} is not ACCOUNT:DELTA")))?;
                let delta = delta
                    .parse()
                    .map_err(|_| bad(&format!("write {w:?}: the delta is not a number")))?;
                Ok(Write {
                    account: account.to_string(),
                    delta,
                })
            })
            .collect::<Result<_, String>>()?
    };
    Ok(Some(Prepared {
        tx,
        age: Age {
            started: number(started, "the start")?,
            tx,
        },
        coordinator: coordinator.to_string(),
        writes,
        journal: None,
        at_ms: number(at_ms, "the prepare time")?,
    }))
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("PostgreSQL: {e}"))
}

/// Whether `e` says the prepared transaction does not exist (already committed or rolled
/// back: by this participant, which is the only one that finishes it).
fn already_finished(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_OBJECT)
}

/// A participant's store on its own PostgreSQL server.
pub struct XaStore {
    server: tokio::sync::Mutex<Postgres>,
    pool: deadpool_postgres::Pool,
    /// The global id of every transaction prepared (or being prepared) and not yet finished.
    gids: Mutex<HashMap<TxId, String>>,
    /// Global ids whose rollback failed (the database unreachable for a moment): retried by
    /// [`XaStore::retry_rollbacks`] until they go, since they hold row locks.
    to_roll_back: Mutex<Vec<String>>,
}

impl XaStore {
    /// Starts (or restarts) the server in `dir/postgres`, makes the schema and `accounts` with
    /// the bank's opening balance the first time, and recovers the committed balances and the
    /// prepared transactions. A database made for another bank is refused.
    pub async fn open(
        dir: &Path,
        bank: Bank,
        accounts: &[String],
    ) -> anyhow::Result<(XaStore, Recovered)> {
        let server = Postgres::start(&dir.join("postgres")).await?;
        let mut config = deadpool_postgres::Config::new();
        config.host = Some("127.0.0.1".into());
        config.port = Some(server.port);
        config.user = Some(crate::postgres::USER.into());
        config.dbname = Some("postgres".into());
        config.options = Some("-c lock_timeout=5s -c client_min_messages=warning".into());
        config.pool = Some(deadpool_postgres::PoolConfig::new(16));
        let pool = config
            .create_pool(
                Some(deadpool_postgres::Runtime::Tokio1),
                tokio_postgres::NoTls,
            )
            .context("making the PostgreSQL connection pool")?;
        let mut client = pool
            .get()
            .await
            .context("connecting to the participant's PostgreSQL")?;
        client
            .batch_execute(SCHEMA)
            .await
            .context("making the schema")?;
        let want = serde_json::to_string(&bank)?;
        let have: Option<String> = client
            .query_opt("SELECT value FROM meta WHERE key = 'bank'", &[])
            .await?
            .map(|row| row.get(0));
        match have {
            Some(have) if have == want => {}
            Some(have) => anyhow::bail!(
                "{}: its PostgreSQL holds the accounts of another bank ({have}), not {want}: use \
                 another --data-dir",
                dir.display()
            ),
            None => {
                let t = client.transaction().await?;
                t.execute(
                    "INSERT INTO accounts (account, balance) SELECT unnest($1::text[]), $2",
                    &[&accounts, &bank.opening],
                )
                .await
                .context("creating the accounts")?;
                t.execute(
                    "INSERT INTO meta (key, value) VALUES ('bank', $1)",
                    &[&want],
                )
                .await?;
                t.commit().await.context("creating the accounts")?;
            }
        }
        let mut recovered = Recovered::default();
        for row in client
            .query("SELECT account, balance FROM accounts", &[])
            .await?
        {
            recovered.balances.insert(row.get(0), row.get(1));
        }
        let mut gids = HashMap::new();
        for row in client
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                &[],
            )
            .await?
        {
            let gid: String = row.get(0);
            let Some(record) = parse_gid(&gid).map_err(|e| {
                anyhow::anyhow!(
                    "{e}: finish it by hand (COMMIT PREPARED or ROLLBACK PREPARED) in {}",
                    dir.join("postgres").display()
                )
            })?
            else {
                continue;
            };
            gids.insert(record.tx, gid);
            recovered.prepared.push(record);
        }
        let journal: i64 = client
            .query_one("SELECT count(*) FROM journal", &[])
            .await?
            .get(0);
        recovered.journal = journal as u64;
        drop(client);
        Ok((
            XaStore {
                server: tokio::sync::Mutex::new(server),
                pool,
                gids: Mutex::new(gids),
                to_roll_back: Mutex::new(Vec::new()),
            },
            recovered,
        ))
    }

    /// Runs the record's writes in a transaction and prepares it (before the yes vote).
    pub async fn prepare(&self, record: &Prepared) -> std::io::Result<()> {
        let gid = gid(record).map_err(std::io::Error::other)?;
        let client = self.pool.get().await.map_err(io)?;
        // Known before PREPARE TRANSACTION is sent: if the answer is lost, abort still finds it.
        self.gids
            .lock()
            .expect("never poisoned")
            .insert(record.tx, gid.clone());
        let prepared = async {
            client.batch_execute("BEGIN").await?;
            let update = client
                .prepare_cached("UPDATE accounts SET balance = balance + $1 WHERE account = $2")
                .await?;
            for w in &record.writes {
                if client.execute(&update, &[&w.delta, &w.account]).await? != 1 {
                    return Ok(Err(format!("account {} is not in the database", w.account)));
                }
            }
            if let Some(t) = &record.journal {
                let insert = client
                    .prepare_cached(
                        "INSERT INTO journal (tx, transfer_id, source, dest, amount) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .await?;
                client
                    .execute(
                        &insert,
                        &[&(record.tx as i64), &t.id, &t.from, &t.to, &t.amount],
                    )
                    .await?;
            }
            client
                .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
                .await?;
            Ok::<_, tokio_postgres::Error>(Ok(()))
        }
        .await;
        match prepared {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(std::io::Error::other(why))
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(io(e))
            }
        }
    }

    /// Finishes `tx`'s prepared transaction with `verb` (`COMMIT PREPARED`, `ROLLBACK
    /// PREPARED`); one already finished is not an error.
    async fn finish(&self, tx: TxId, verb: &str) -> std::io::Result<()> {
        let Some(gid) = self.gids.lock().expect("never poisoned").get(&tx).cloned() else {
            return Ok(());
        };
        let client = self.pool.get().await.map_err(io)?;
        match client.batch_execute(&format!("{verb} '{gid}'")).await {
            Ok(()) => {}
            Err(e) if already_finished(&e) => {}
            Err(e) => return Err(io(e)),
        }
        self.gids.lock().expect("never poisoned").remove(&tx);
        Ok(())
    }

    /// Commits `tx`'s prepared transaction: its writes become visible, its row locks go.
    pub async fn commit(&self, tx: TxId) -> std::io::Result<()> {
        self.finish(tx, "COMMIT PREPARED").await
    }

    /// Rolls `tx`'s prepared transaction back (nothing to do if it never prepared). One that
    /// cannot be rolled back now is remembered and retried: it holds row locks.
    pub async fn abort(&self, tx: TxId) -> std::io::Result<()> {
        match self.finish(tx, "ROLLBACK PREPARED").await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(gid) = self.gids.lock().expect("never poisoned").remove(&tx) {
                    self.to_roll_back.lock().expect("never poisoned").push(gid);
                }
                Err(e)
            }
        }
    }

    /// Retries the rollbacks that failed (the participant's background task calls it).
    pub async fn retry_rollbacks(&self) {
        let pending = std::mem::take(&mut *self.to_roll_back.lock().expect("never poisoned"));
        for gid in pending {
            let done = match self.pool.get().await {
                Ok(client) => match client
                    .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
                    .await
                {
                    Ok(()) => true,
                    Err(e) => already_finished(&e),
                },
                Err(_) => false,
            };
            if done {
                tracing::info!(gid, "a failed rollback went through");
            } else {
                self.to_roll_back.lock().expect("never poisoned").push(gid);
            }
        }
    }

    /// Up to `limit` committed journal entries from sequence number `from` on, oldest first.
    /// (A row's number is taken when its transaction prepares, so numbers commit out of
    /// order: readers read the whole journal.)
    pub async fn journal(
        &self,
        from: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, JournalEntry)>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, tx, transfer_id, source, dest, amount FROM journal \
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&(from.min(i64::MAX as u64) as i64), &(limit as i64)],
            )
            .await
            .context("reading the journal")?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let seq: i64 = row.get(0);
                let tx: i64 = row.get(1);
                (
                    seq as u64,
                    JournalEntry {
                        transfer: Transfer {
                            id: row.get(2),
                            from: row.get(3),
                            to: row.get(4),
                            amount: row.get(5),
                        },
                        tx: tx as u64,
                    },
                )
            })
            .collect())
    }

    /// Closes the connections and stops the server (prepared transactions stay prepared).
    pub async fn close(&self) {
        self.pool.close();
        self.server.lock().await.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(writes: Vec<Write>) -> Prepared {
        Prepared {
            tx: 42,
            age: Age {
                started: 1_700_000_000_000_000,
                tx: 42,
            },
            coordinator: "tc1".into(),
            writes,
            journal: None,
            at_ms: 1_700_000_000_123,
        }
    }

    fn w(account: &str, delta: i64) -> Write {
        Write {
            account: account.into(),
            delta,
        }
    }

    #[test]
    fn a_global_id_gives_back_its_prepared_record() {
        for writes in [
            vec![],
            vec![w("acct-0001", -30)],
            vec![w("acct-0001", -30), w("acct-0420", 30)],
        ] {
            let r = record(writes);
            let id = gid(&r).unwrap();
            assert!(id.len() <= GID_MAX);
            assert_eq!(parse_gid(&id).unwrap(), Some(r));
        }
        assert_eq!(parse_gid("someone-else's").unwrap(), None);
    }

    #[test]
    fn what_cannot_go_into_a_global_id_is_refused_with_its_name() {
        let e = gid(&record(vec![w("acct'; DROP TABLE accounts; --", 1)])).unwrap_err();
        assert!(e.contains("cannot go into"), "{e}");
        let many = (0..20).map(|i| w(&format!("acct-{i:04}"), -1)).collect();
        let e = gid(&record(many)).unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
        for bad in [
            "distlab/x/1/2/tc1/",
            "distlab/1/2/3/tc1",
            "distlab/1/2/3/tc1/acct-0001",
            "distlab/1/2/3/tc1/acct-0001:x",
            "distlab/0/2/3/tc1/",
        ] {
            let e = parse_gid(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
