//! Fleet mode: one host's hold on one batch, kept in the shared database. A lease lasts
//! `[fleet] lease_secs` from the moment it was asked for and is renewed every third of that
//! while the batch is worked; its fencing token is checked by every change the host makes
//! (`Store::transition`), so a host whose lease expired changes nothing.
//!
//! By its own clock a host acts on a batch only while more than a quarter of the lease remains,
//! counted from the instant it *sent* the last renewal that succeeded (the database's expiry is
//! later than that by the round trip): a process frozen past its lease (SIGSTOP, a stalled VM)
//! writes nothing more when it wakes. DONE follows a renewal made just before it: the lease then
//! outlives DONE's request by at least a quarter of its length (7.5 s with the default 30 s).

use super::lock::Holder;
use crate::delivery::Fence;
use crate::store::Store;
use crate::tasks::Tasks;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A live lease, renewed in the background until dropped (then given back); both are tasks of
/// the process's shutdown tree, awaited before the database closes.
pub struct Lease {
    fence: Arc<LeaseFence>,
    /// Ends the renewals (when the lease is dropped, not when shutdown starts: a delivery still
    /// on its way to a safe point keeps its lease meanwhile).
    renewing: CancellationToken,
    tasks: Tasks,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease(batch {}, token {})", self.fence.id, self.fence.token)
    }
}

/// What the upload checks, on its own thread, before it writes.
pub struct LeaseFence {
    store: Store,
    id: i64,
    token: i64,
    lease: Duration,
    born: Instant,
    /// Nanoseconds after `born` until which the lease is surely ours.
    valid_until: AtomicU64,
    lost: AtomicBool,
    runtime: tokio::runtime::Handle,
}

impl LeaseFence {
    fn extend(&self, sent: Instant) {
        let until = (sent.saturating_duration_since(self.born) + self.lease).as_nanos() as u64;
        self.valid_until.fetch_max(until, Ordering::SeqCst);
    }

    fn remaining(&self) -> Duration {
        let until = Duration::from_nanos(self.valid_until.load(Ordering::SeqCst));
        until.saturating_sub(self.born.elapsed())
    }

    async fn renew(&self) -> bool {
        let sent = Instant::now();
        match self.store.renew_lease(self.id, self.token).await {
            Ok(true) => {
                self.extend(sent);
                true
            }
            Ok(false) => {
                if !self.lost.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        id = self.id,
                        "lost the lease on this batch (expired or taken over by another host); stopping work on it"
                    );
                }
                self.store.forget_fence(self.id, self.token);
                false
            }
            Err(e) => {
                tracing::warn!(id = self.id, "cannot renew the lease on this batch ({e}); will try again");
                false
            }
        }
    }
}

impl Fence for LeaseFence {
    fn holds(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && self.remaining() > self.lease / 4
    }

    fn confirm(&self) -> bool {
        // The upload runs on a blocking thread of the runtime: it may wait for the database.
        self.runtime.block_on(self.renew()) && self.holds()
    }
}

impl Lease {
    /// Takes the lease of batch `id`, or says which host holds it.
    pub async fn take(store: &Store, id: i64, tasks: &Tasks) -> Result<Result<Lease, Holder>, crate::store::StoreError> {
        let sent = Instant::now();
        Ok(match store.acquire_lease(id).await? {
            Ok(token) => Ok(Lease::held(store, id, token, sent, tasks)),
            Err((host, until)) => Err(Holder { pid: None, since: None, host, until: until.map(|t| t.to_rfc3339()) }),
        })
    }

    /// A lease this process took at `sent` with `token` (the claim takes one with the record).
    pub fn held(store: &Store, id: i64, token: i64, sent: Instant, tasks: &Tasks) -> Lease {
        let lease = store.fleet().map_or(Duration::from_secs(30), |f| f.lease);
        let fence = Arc::new(LeaseFence {
            store: store.clone(),
            id,
            token,
            lease,
            born: sent,
            valid_until: AtomicU64::new(lease.as_nanos() as u64),
            lost: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        });
        let (renewed, renewing) = (fence.clone(), CancellationToken::new());
        let stop = renewing.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(renewed.lease / 3) => {}
                    _ = stop.cancelled() => return,
                }
                if renewed.lost.load(Ordering::SeqCst) {
                    return;
                }
                renewed.renew().await;
            }
        });
        Lease { fence, renewing, tasks: tasks.clone() }
    }

    pub fn fence(&self) -> Arc<LeaseFence> {
        self.fence.clone()
    }

    /// Renews the lease now: true while it is still this process's, with time to act.
    pub async fn confirm(&self) -> bool {
        self.fence.renew().await && self.fence.holds()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.cancel();
        let (store, id, token) = (self.fence.store.clone(), self.fence.id, self.fence.token);
        store.forget_fence(id, token);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tasks.spawn(async move {
                if let Err(e) = store.release_lease(id, token).await {
                    tracing::warn!(id, "cannot give the lease on this batch back ({e}); it expires by itself");
                }
            });
        }
    }
}
