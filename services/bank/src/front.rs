//! What a bank's front serves its clients, whichever way it runs transfers: the two-phase
//! commit coordinator and the saga orchestrator both implement [`Front`], and [`BankApi`]
//! puts either behind `bank.v1.Bank`.

use std::sync::Arc;

use distlab_proto::bank::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::Transfer;

/// A node that takes transfers, reads every balance and runs anti-entropy passes.
#[tonic::async_trait]
pub trait Front: Send + Sync + 'static {
    /// Runs (or, for a repeated id, answers) one transfer.
    async fn transfer(self: Arc<Self>, t: Transfer) -> Result<pb::TransferResponse, Status>;
    /// Every balance, and what is in flight if the mode has any.
    async fn read_all(&self) -> Result<pb::ReadAllResponse, Status>;
    /// One anti-entropy pass: drift found, and repaired if asked.
    async fn reconcile(&self, repair: bool) -> Result<pb::ReconcileResponse, Status>;
}

/// Runs an anti-entropy pass every `every` (repairing if `repair`) until `shutdown`: the
/// front's `--reconcile-every`.
pub fn reconcile_every<F: Front>(
    front: Arc<F>,
    every: std::time::Duration,
    repair: bool,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = distlab_runtime::clock::Every::new(every, &shutdown);
        while tick.tick().await {
            if let Err(e) = front.reconcile(repair).await {
                tracing::info!(error = %e.message(), "an anti-entropy pass could not finish");
            }
        }
    });
}

/// `bank.v1.Bank` over a [`Front`].
pub struct BankApi<F> {
    pub front: Arc<F>,
}

#[tonic::async_trait]
impl<F: Front> pb::bank_server::Bank for BankApi<F> {
    async fn transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        self.front
            .clone()
            .transfer(request.into_inner().into())
            .await
            .map(Response::new)
    }

    async fn read_all(
        &self,
        _: Request<pb::ReadAllRequest>,
    ) -> Result<Response<pb::ReadAllResponse>, Status> {
        self.front.read_all().await.map(Response::new)
    }

    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileResponse>, Status> {
        self.front
            .reconcile(request.into_inner().repair)
            .await
            .map(Response::new)
    }
}
