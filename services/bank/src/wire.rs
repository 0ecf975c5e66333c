//! Conversions between the wire (`bank.v1`) and the domain, in one place: the coordinator
//! sends branches, participants receive them, clients send transfers.

use distlab_proto::bank::v1 as pb;

use crate::domain::Transfer;
use crate::participant::Write;

impl From<&Write> for pb::Write {
    fn from(w: &Write) -> Self {
        pb::Write {
            account: w.account.clone(),
            delta: w.delta,
        }
    }
}

impl From<pb::Write> for Write {
    fn from(w: pb::Write) -> Self {
        Write {
            account: w.account,
            delta: w.delta,
        }
    }
}

impl From<&Transfer> for pb::Journal {
    fn from(t: &Transfer) -> Self {
        pb::Journal {
            id: t.id.clone(),
            from: t.from.clone(),
            to: t.to.clone(),
            amount: t.amount,
        }
    }
}

impl From<pb::Journal> for Transfer {
    fn from(j: pb::Journal) -> Self {
        Transfer {
            id: j.id,
            from: j.from,
            to: j.to,
            amount: j.amount,
        }
    }
}

impl From<pb::TransferRequest> for Transfer {
    fn from(r: pb::TransferRequest) -> Self {
        Transfer {
            id: r.id,
            from: r.from,
            to: r.to,
            amount: r.amount,
        }
    }
}

/// A lazily connecting channel to a bank node at `addr`, each call bounded by `timeout`.
pub fn channel(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = distlab_runtime::channel::endpoint(addr, std::time::Duration::from_secs(1))?;
    Ok(endpoint.timeout(timeout).connect_lazy())
}

/// A client of a bank coordinator (or orchestrator) at `addr`: what `bank transfer`, the tests
/// and the lab's workload use.
pub fn connect(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> anyhow::Result<pb::bank_client::BankClient<tonic::transport::Channel>> {
    Ok(pb::bank_client::BankClient::new(channel(addr, timeout)?))
}
