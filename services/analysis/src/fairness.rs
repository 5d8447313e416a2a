//! Per-tenant fairness of a replica's training: [`TenantGate`] hands out the replica's training
//! slots (whole small jobs, and the fold items and fold plans of large ones) so that one tenant's
//! flood of jobs cannot starve another tenant.
//!
//! A replica admits many more deliveries than it trains at once (`work.admitted_jobs`); admitted
//! work waits here, its delivery kept alive by progress acks. When a slot frees, it goes to the
//! waiting tenant with the fewest slots held in this replica, then the one served longest ago, then
//! the oldest waiter: tenants take turns whatever the order their jobs arrived in. Every replica
//! pulls from the same durable consumers and applies the same rule, so across the mesh a tenant
//! with one job waits for at most one slot per replica to free, not for another tenant's backlog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

#[derive(Debug)]
struct Waiter {
    tenant: String,
    arrival: u64,
    grant: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    waiting: Vec<Waiter>,
    /// Slots held per tenant.
    held: HashMap<String, usize>,
    /// When each tenant was last granted a slot (a counter).
    served: HashMap<String, u64>,
    clock: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Grants free slots to waiters in turn (see the module docs).
    fn dispatch(&mut self) {
        while self.free > 0 && !self.waiting.is_empty() {
            let next = (0..self.waiting.len())
                .min_by_key(|&i| {
                    let w = &self.waiting[i];
                    (
                        self.held.get(&w.tenant).copied().unwrap_or(0),
                        self.served.get(&w.tenant).copied().unwrap_or(0),
                        w.arrival,
                    )
                })
                .unwrap_or(0);
            let waiter = self.waiting.swap_remove(next);
            // A waiter that gave up (its delivery was cancelled) is skipped.
            if waiter.grant.send(()).is_ok() {
                self.free -= 1;
                *self.held.entry(waiter.tenant.clone()).or_default() += 1;
                let now = self.tick();
                self.served.insert(waiter.tenant, now);
            }
        }
    }
}

/// The training slots of one replica, shared fairly between tenants.
#[derive(Debug, Clone)]
pub(crate) struct TenantGate {
    state: Arc<Mutex<State>>,
}

/// A held slot; dropping it frees the slot for the next tenant in turn. While [`TenantGate::acquire`]
/// waits it is the waiter's place in line: dropping it then (a cancelled delivery) leaves the line.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Arc<Mutex<State>>,
    tenant: String,
    arrival: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = state.waiting.iter().position(|w| w.arrival == self.arrival) {
            state.waiting.swap_remove(i);
            return;
        }
        if let Some(held) = state.held.get_mut(&self.tenant) {
            *held = held.saturating_sub(1);
        }
        state.free += 1;
        state.dispatch();
    }
}

impl TenantGate {
    /// A gate with `slots` training slots (at least one).
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            })),
        }
    }

    /// Waits for a slot for `tenant`'s work, in turn with the other tenants waiting.
    pub(crate) async fn acquire(&self, tenant: &str) -> Slot {
        let (grant, granted) = oneshot::channel();
        let arrival = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let arrival = state.tick();
            state.waiting.push(Waiter {
                tenant: tenant.to_owned(),
                arrival,
                grant,
            });
            state.dispatch();
            arrival
        };
        // Declared after `granted`, so dropped first if this future is: while `granted` is alive a
        // waiter is never skipped, so the slot knows whether it was granted.
        let slot = Slot {
            state: Arc::clone(&self.state),
            tenant: tenant.to_owned(),
            arrival,
        };
        // NOTE: the sender is dropped only after sending to this live receiver, so this is `Ok`.
        let _ = granted.await;
        slot
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Order in which `(tenant, job)` waiters get the single slot after `first` holds it.
    #[tokio::test]
    async fn a_flooding_tenant_takes_turns_with_a_tenant_that_arrives_later() {
        let gate = TenantGate::new(1);
        let first = gate.acquire("flood").await;
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (tenant, job) in [
            ("flood", 1),
            ("flood", 2),
            ("flood", 3),
            ("flood", 4),
            ("quiet", 0),
            ("flood", 5),
        ] {
            let (gate, done) = (gate.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let slot = gate.acquire(tenant).await;
                done.send((tenant, job)).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            // Arrival order is the order written above.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        drop(done);
        let mut served = Vec::new();
        while let Some(next) = order.recv().await {
            served.push(next);
        }
        // The quiet tenant, which arrived after four of the flood's jobs, is served next; then the
        // flood's jobs in their order.
        assert_eq!(
            served,
            [
                ("quiet", 0),
                ("flood", 1),
                ("flood", 2),
                ("flood", 3),
                ("flood", 4),
                ("flood", 5)
            ]
        );
    }

    #[tokio::test]
    async fn a_tenant_holding_slots_yields_the_next_free_one() {
        let gate = TenantGate::new(2);
        let a1 = gate.acquire("a").await;
        let _a2 = gate.acquire("a").await;
        let (a3, b1) = (gate.clone(), gate.clone());
        let a3 = tokio::spawn(async move { a3.acquire("a").await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b1 = tokio::spawn(async move { b1.acquire("b").await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(a1);
        let b1 = tokio::time::timeout(Duration::from_secs(1), b1)
            .await
            .expect("b gets the freed slot")
            .unwrap();
        assert!(!a3.is_finished(), "a waits while it holds a slot");
        drop(b1);
        tokio::time::timeout(Duration::from_secs(1), a3)
            .await
            .expect("then a")
            .unwrap();
    }
}
