//! A bounded set of long-lived requests on this node (watch streams, long
//! polls): each holds a slot while it runs, and all of them end when the
//! node shuts down.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub struct Slots {
    permits: Arc<Semaphore>,
    pub max: usize,
    /// Cancelled at shutdown: every holder ends its request.
    pub shutdown: CancellationToken,
}

impl Slots {
    pub fn new(max: usize, shutdown: CancellationToken) -> Self {
        Slots { permits: Arc::new(Semaphore::new(max)), max, shutdown }
    }

    /// Slots held now.
    pub fn active(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// A slot, held until the permit drops; `None` when all are taken.
    pub fn enter(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}
