//! The banking domain both transaction modes share: accounts, where each lives, what a valid
//! transfer is, and the total money that must never change.

use crate::lock::TxId;

/// A transfer as a client asks for it. The id is the client's idempotency key: a retry with
/// the same id is the same transfer, and the same id with anything else different is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Transfer {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
}

/// The accounts of a bank of `count` accounts: `acct-0000`, `acct-0001`, ...
pub fn account_name(i: usize) -> String {
    format!("acct-{i:04}")
}

/// Which of `shards` account shards owns `account` (0-based): a stable hash, the same on
/// every machine and every run.
pub fn shard_of(account: &str, shards: usize) -> usize {
    (distlab_runtime::hash::fnv1a(account.bytes()) % shards.max(1) as u64) as usize
}

/// The bank's accounts: how many, and each one's opening balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bank {
    pub accounts: usize,
    pub opening: i64,
}

impl Bank {
    pub fn total(&self) -> i128 {
        self.accounts as i128 * self.opening as i128
    }

    pub fn names(&self) -> impl Iterator<Item = String> {
        (0..self.accounts).map(account_name)
    }

    /// Whether `account` is one of this bank's.
    pub fn has(&self, account: &str) -> bool {
        account
            .strip_prefix("acct-")
            .filter(|n| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|i| i < self.accounts && account_name(i) == account)
    }

    /// Checks a transfer a client asked for; the refusal names what is wrong.
    pub fn check(&self, t: &Transfer) -> Result<(), String> {
        if t.id.is_empty() || t.id.len() > 128 {
            return Err("a transfer needs an id (its idempotency key) of 1 to 128 bytes".into());
        }
        for (side, account) in [("from", &t.from), ("to", &t.to)] {
            if !self.has(account) {
                return Err(format!(
                    "transfer {}: unknown {side} account {account:?} (accounts are {} to {})",
                    t.id,
                    account_name(0),
                    account_name(self.accounts.saturating_sub(1))
                ));
            }
        }
        if t.from == t.to {
            return Err(format!(
                "transfer {}: from and to are both {}",
                t.id, t.from
            ));
        }
        if t.amount <= 0 {
            return Err(format!(
                "transfer {}: the amount must be positive, not {}",
                t.id, t.amount
            ));
        }
        if i128::from(t.amount) > self.total() {
            return Err(format!(
                "transfer {}: {} is more money than the bank holds ({})",
                t.id,
                t.amount,
                self.total()
            ));
        }
        Ok(())
    }
}

/// One entry of the ledger's journal: a transfer and the transaction that committed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub transfer: Transfer,
    pub tx: TxId,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(from: &str, to: &str, amount: i64) -> Transfer {
        Transfer {
            id: "t1".into(),
            from: from.into(),
            to: to.into(),
            amount,
        }
    }

    #[test]
    fn bad_transfers_are_refused_with_the_reason() {
        let bank = Bank {
            accounts: 10,
            opening: 100,
        };
        assert!(bank.check(&t("acct-0001", "acct-0002", 5)).is_ok());
        let cases = [
            (t("acct-0010", "acct-0002", 5), "unknown from account"),
            (t("acct-0001", "acct-1", 5), "unknown to account"),
            (t("acct-0001", "acct-0001", 5), "both"),
            (t("acct-0001", "acct-0002", 0), "positive"),
            (t("acct-0001", "acct-0002", -3), "positive"),
            (t("acct-0001", "acct-0002", i64::MAX), "more money"),
        ];
        for (transfer, why) in cases {
            let e = bank.check(&transfer).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn accounts_spread_over_the_shards_the_same_way_every_time() {
        let mut per = [0; 4];
        for name in (Bank {
            accounts: 1000,
            opening: 1,
        })
        .names()
        {
            per[shard_of(&name, 4)] += 1;
        }
        assert!(per.iter().all(|n| *n > 150), "{per:?}");
        assert_eq!(shard_of("acct-0000", 4), shard_of("acct-0000", 4));
    }
}
