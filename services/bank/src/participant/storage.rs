//! Where a participant keeps its balances, prepared transactions and journal: the embedded
//! sled store (the default, [`crate::store::ParticipantStore`]) or PostgreSQL with its own
//! prepared transactions (`--store postgres`, [`super::xa::XaStore`]). The service talks to
//! this one type; saga steps exist on the embedded store only.

use std::path::Path;

use super::xa::XaStore;
use super::{Applied, Prepared};
use crate::domain::{Bank, JournalEntry};
use crate::lock::TxId;
use crate::store::{ParticipantStore, Recovered};

/// `--store`: which store a participant runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreKind {
    /// sled, in the data dir: 2PC and saga steps.
    #[default]
    Embedded,
    /// A throwaway PostgreSQL server in the data dir, prepared transactions as
    /// `PREPARE TRANSACTION` (2PC only).
    Postgres,
}

impl StoreKind {
    /// As `--store` spells it.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Postgres => "postgres",
        }
    }
}

pub enum Storage {
    Embedded(ParticipantStore),
    Postgres(Box<XaStore>),
}

impl Storage {
    pub async fn open(
        kind: StoreKind,
        dir: &Path,
        bank: Bank,
        accounts: &[String],
        fsync: bool,
    ) -> anyhow::Result<(Storage, Recovered)> {
        Ok(match kind {
            StoreKind::Embedded => {
                let (store, recovered) = ParticipantStore::open(dir, bank, accounts, fsync)?;
                (Storage::Embedded(store), recovered)
            }
            StoreKind::Postgres => {
                let (store, recovered) = XaStore::open(dir, bank, accounts).await?;
                (Storage::Postgres(Box::new(store)), recovered)
            }
        })
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            Storage::Embedded(_) => StoreKind::Embedded,
            Storage::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// The embedded store, where saga steps live (`None` on PostgreSQL).
    pub fn embedded(&self) -> Option<&ParticipantStore> {
        match self {
            Storage::Embedded(store) => Some(store),
            Storage::Postgres(_) => None,
        }
    }

    /// Makes a prepare durable before the yes vote.
    pub async fn prepare(&self, record: &Prepared) -> std::io::Result<()> {
        match self {
            Storage::Embedded(store) => store.prepare(record).await,
            Storage::Postgres(store) => store.prepare(record).await,
        }
    }

    /// Applies a commit durably (on PostgreSQL the writes are in the prepared transaction:
    /// `applied` is what the participant's own state becomes).
    pub async fn commit(&self, tx: TxId, applied: &Applied) -> std::io::Result<()> {
        match self {
            Storage::Embedded(store) => store.commit(tx, applied).await,
            Storage::Postgres(store) if applied.changed => store.commit(tx).await,
            Storage::Postgres(_) => Ok(()),
        }
    }

    /// Drops a prepare durably (abort).
    pub async fn abort(&self, tx: TxId) -> std::io::Result<()> {
        match self {
            Storage::Embedded(store) => store.abort(tx).await,
            Storage::Postgres(store) => store.abort(tx).await,
        }
    }

    /// Up to `limit` journal entries from sequence number `from` on (the ledger's).
    pub async fn journal(
        &self,
        from: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, JournalEntry)>> {
        match self {
            Storage::Embedded(store) => store.journal(from, limit),
            Storage::Postgres(store) => store.journal(from, limit).await,
        }
    }

    /// Background upkeep: rollbacks that failed are retried (PostgreSQL).
    pub async fn upkeep(&self) {
        if let Storage::Postgres(store) = self {
            store.retry_rollbacks().await;
        }
    }

    pub async fn close(&self) -> std::io::Result<()> {
        match self {
            Storage::Embedded(store) => store.close().await,
            Storage::Postgres(store) => {
                store.close().await;
                Ok(())
            }
        }
    }
}
