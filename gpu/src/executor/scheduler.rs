//! [`Scheduler`]: which tenant's work goes to the device next.
//!
//! **Shares.** Start-time fair queueing over estimated costs (FLOPs): every tenant has a virtual
//! time that advances by `cost / weight` each time one of its items is dispatched, and the next
//! item comes from the eligible tenant with the smallest virtual time. Backlogged tenants then
//! receive device work in proportion to their weights, whatever the sizes of their items. A
//! tenant that returns from idle starts at the system's virtual time (the start tag of the last
//! dispatched item), so idling earns no credit.
//!
//! **Bounds.** A tenant is eligible only below its `max_in_flight`, and nothing is dispatched
//! while `max_in_flight_total` items are on the device (1 makes the tenants take exclusive
//! turns). Queues are bounded per tenant and in total; a full queue is refused at once.
//!
//! **Priority.** A latency-critical tenant that returns from idle starts `latency_lead` cost
//! units *ahead* of the system's virtual time (the "warp" of Borrowed Virtual Time, Duda &
//! Cheriton, SOSP'99): its next request is served first, but the lead is bounded, so it can never
//! starve the others; on CUDA its stream also has the higher hardware priority.
//!
//! ```
//! use cumulus_gpu::executor::scheduler::{Scheduler, TenantShare};
//! use cumulus_gpu::Priority;
//!
//! let mut s = Scheduler::new(100, 4, 0);
//! s.add_tenant(1, TenantShare { weight: 1, priority: Priority::Normal, max_in_flight: 4, max_queue: 100 });
//! s.add_tenant(2, TenantShare { weight: 3, priority: Priority::Normal, max_in_flight: 4, max_queue: 100 });
//! for i in 0..40 {
//!     s.enqueue(1, ("a", i), 10).map_err(|r| r.error)?;
//!     s.enqueue(2, ("b", i), 10).map_err(|r| r.error)?;
//! }
//! let mut served = [0, 0];
//! for _ in 0..40 {
//!     let d = s.next_dispatch().expect("work is queued");
//!     served[(d.tenant - 1) as usize] += 1;
//!     s.complete(d.tenant);
//! }
//! assert_eq!(served, [10, 30]);
//! # Ok::<(), cumulus_gpu::GpuError>(())
//! ```

use std::collections::{BTreeMap, VecDeque};

use crate::config::Priority;
use crate::error::GpuError;

/// Tenant ids as the executor numbers them.
pub type TenantId = u64;

/// Fixed-point scale of virtual time (weights are at most 1000).
const SCALE: u128 = 1000;

/// A tenant's share settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantShare {
    pub weight: u32,
    pub priority: Priority,
    pub max_in_flight: u32,
    pub max_queue: usize,
}

struct Queue<T> {
    share: TenantShare,
    items: VecDeque<(T, u64)>,
    in_flight: u32,
    peak_in_flight: u32,
    vtime: u128,
}

/// An item leaving the queue for the device.
#[derive(Debug)]
pub struct Dispatch<T> {
    pub tenant: TenantId,
    pub item: T,
    /// Position in the order of all dispatches.
    pub seq: u64,
    pub cost: u64,
}

/// An item the queues had no room for, handed back with the reason.
#[derive(Debug)]
pub struct Refused<T> {
    pub error: GpuError,
    pub item: T,
}

/// A tenant's queue state, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: usize,
    pub in_flight: u32,
    pub peak_in_flight: u32,
}

/// The fair scheduler; see the module docs.
pub struct Scheduler<T> {
    // Ordered by id, so ties break the same way every time.
    tenants: BTreeMap<TenantId, Queue<T>>,
    floor: u128,
    queued: usize,
    max_queue_total: usize,
    in_flight: usize,
    max_in_flight_total: usize,
    latency_lead: u64,
    seq: u64,
}

impl<T> Scheduler<T> {
    pub fn new(max_queue_total: usize, max_in_flight_total: usize, latency_lead: u64) -> Self {
        Self {
            tenants: BTreeMap::new(),
            floor: 0,
            queued: 0,
            max_queue_total,
            in_flight: 0,
            max_in_flight_total: max_in_flight_total.max(1),
            latency_lead,
            seq: 0,
        }
    }

    pub fn add_tenant(&mut self, id: TenantId, share: TenantShare) {
        let share = TenantShare {
            weight: share.weight.max(1),
            max_in_flight: share.max_in_flight.max(1),
            ..share
        };
        self.tenants.insert(
            id,
            Queue {
                share,
                items: VecDeque::new(),
                in_flight: 0,
                peak_in_flight: 0,
                vtime: self.floor,
            },
        );
    }

    /// Removes a tenant and returns its queued items (to be answered with an error). Its items
    /// already on the device still end with [`Scheduler::complete`], which releases their
    /// place in the global in-flight count although the tenant is gone.
    pub fn remove_tenant(&mut self, id: TenantId) -> Vec<T> {
        match self.tenants.remove(&id) {
            Some(q) => {
                self.queued -= q.items.len();
                q.items.into_iter().map(|(t, _)| t).collect()
            }
            None => Vec::new(),
        }
    }

    /// Queues `item` of estimated `cost` for `tenant`, or refuses it when a queue is full.
    pub fn enqueue(&mut self, tenant: TenantId, item: T, cost: u64) -> Result<(), Refused<T>> {
        let (floor, lead, total_full) = (
            self.floor,
            self.latency_lead,
            self.queued >= self.max_queue_total,
        );
        let Some(q) = self.tenants.get_mut(&tenant) else {
            return Err(Refused {
                error: GpuError::UnknownSession,
                item,
            });
        };
        if q.items.len() >= q.share.max_queue {
            let error = GpuError::QueueFull {
                queue: "tenant".into(),
                limit: q.share.max_queue as u64,
            };
            return Err(Refused { error, item });
        }
        if total_full {
            let error = GpuError::QueueFull {
                queue: "executor".into(),
                limit: self.max_queue_total as u64,
            };
            return Err(Refused { error, item });
        }
        if q.items.is_empty() && q.in_flight == 0 {
            // Back from idle: no credit for the idle time, a bounded lead for latency-critical.
            let start = match q.share.priority {
                Priority::Normal => floor,
                Priority::LatencyCritical => {
                    floor.saturating_sub(u128::from(lead) * SCALE / u128::from(q.share.weight))
                }
            };
            q.vtime = q.vtime.max(start);
        }
        q.items.push_back((item, cost.max(1)));
        self.queued += 1;
        Ok(())
    }

    /// The next item to run, or `None` when nothing is eligible.
    pub fn next_dispatch(&mut self) -> Option<Dispatch<T>> {
        if self.in_flight >= self.max_in_flight_total {
            return None;
        }
        let (&id, _) = self
            .tenants
            .iter()
            .filter(|(_, q)| !q.items.is_empty() && q.in_flight < q.share.max_in_flight)
            .min_by_key(|(id, q)| {
                let class = match q.share.priority {
                    Priority::LatencyCritical => 0u8,
                    Priority::Normal => 1,
                };
                (q.vtime, class, **id)
            })?;
        let q = self.tenants.get_mut(&id).expect("the id was just found");
        let (item, cost) = q.items.pop_front().expect("eligible queues are non-empty");
        self.floor = self.floor.max(q.vtime);
        q.vtime += u128::from(cost) * SCALE / u128::from(q.share.weight);
        q.in_flight += 1;
        q.peak_in_flight = q.peak_in_flight.max(q.in_flight);
        self.queued -= 1;
        self.in_flight += 1;
        self.seq += 1;
        Some(Dispatch {
            tenant: id,
            item,
            seq: self.seq,
            cost,
        })
    }

    /// An item of `tenant` finished on the device (the tenant may already be gone).
    pub fn complete(&mut self, tenant: TenantId) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(q) = self.tenants.get_mut(&tenant) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }

    /// Items queued over all tenants.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Items on the device over all tenants.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Items dispatched so far.
    pub fn dispatched(&self) -> u64 {
        self.seq
    }

    pub fn stats(&self, tenant: TenantId) -> Option<QueueStats> {
        self.tenants.get(&tenant).map(|q| QueueStats {
            queued: q.items.len(),
            in_flight: q.in_flight,
            peak_in_flight: q.peak_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(weight: u32, max_in_flight: u32, priority: Priority) -> TenantShare {
        TenantShare {
            weight,
            priority,
            max_in_flight,
            max_queue: 10_000,
        }
    }

    /// Serves `n` items, completing each at once; counts per tenant.
    fn serve(s: &mut Scheduler<u32>, n: usize) -> BTreeMap<TenantId, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let d = s.next_dispatch().expect("backlogged");
            *counts.entry(d.tenant).or_insert(0) += 1;
            s.complete(d.tenant);
        }
        counts
    }

    #[test]
    fn backlogged_tenants_share_in_proportion_to_their_weights() {
        let mut s = Scheduler::new(100_000, 8, 0);
        for (id, w) in [(1, 1), (2, 2), (3, 5)] {
            s.add_tenant(id, share(w, 4, Priority::Normal));
            for i in 0..2000 {
                s.enqueue(id, i, 100).expect("room");
            }
        }
        let counts = serve(&mut s, 800);
        assert_eq!(counts[&1], 100);
        assert_eq!(counts[&2], 200);
        assert_eq!(counts[&3], 500);
    }

    #[test]
    fn shares_count_cost_not_items() {
        let mut s = Scheduler::new(100_000, 8, 0);
        s.add_tenant(1, share(1, 4, Priority::Normal));
        s.add_tenant(2, share(1, 4, Priority::Normal));
        for i in 0..1000 {
            s.enqueue(1, i, 10).expect("room");
            s.enqueue(2, i, 1).expect("room");
        }
        let counts = serve(&mut s, 550);
        // Equal service in cost: 50 big items against 500 small ones.
        assert_eq!((counts[&1], counts[&2]), (50, 500));
    }

    #[test]
    fn in_flight_limits_hold_per_tenant_and_in_total() {
        let mut s = Scheduler::new(1000, 3, 0);
        s.add_tenant(1, share(100, 1, Priority::Normal));
        s.add_tenant(2, share(1, 8, Priority::Normal));
        for i in 0..10 {
            s.enqueue(1, i, 1).expect("room");
            s.enqueue(2, i, 1).expect("room");
        }
        let a = s.next_dispatch().expect("one");
        let b = s.next_dispatch().expect("two");
        let c = s.next_dispatch().expect("three");
        assert!(s.next_dispatch().is_none(), "the global limit is 3");
        // Tenant 1 has the larger weight but may hold only one item on the device.
        assert_eq!(
            [a.tenant, b.tenant, c.tenant]
                .iter()
                .filter(|&&t| t == 1)
                .count(),
            1
        );
        s.complete(b.tenant);
        let d = s.next_dispatch().expect("room again");
        assert_eq!(s.stats(1).expect("tenant").peak_in_flight, 1);
        assert!(d.seq > c.seq);
    }

    #[test]
    fn exclusive_turns_run_one_item_at_a_time() {
        let mut s = Scheduler::new(100, 1, 0);
        s.add_tenant(1, share(1, 4, Priority::Normal));
        s.add_tenant(2, share(1, 4, Priority::Normal));
        for i in 0..4 {
            s.enqueue(1, i, 5).expect("room");
            s.enqueue(2, i, 5).expect("room");
        }
        let first = s.next_dispatch().expect("one");
        assert!(s.next_dispatch().is_none());
        s.complete(first.tenant);
        let second = s.next_dispatch().expect("the other tenant's turn");
        assert_ne!(first.tenant, second.tenant);
    }

    #[test]
    fn a_latency_critical_tenant_back_from_idle_goes_first_with_a_bounded_lead() {
        let mut s = Scheduler::new(100_000, 1, 30);
        s.add_tenant(1, share(1, 1, Priority::Normal));
        s.add_tenant(2, share(1, 1, Priority::LatencyCritical));
        for i in 0..100 {
            s.enqueue(1, i, 10).expect("room");
        }
        serve(&mut s, 20);
        // The latency-critical tenant wakes up with a burst: it is served at once...
        for i in 0..10 {
            s.enqueue(2, i, 10).expect("room");
        }
        let counts = serve(&mut s, 10);
        // ...for its lead of 30 units (3 items) and then by its equal share: 3 + 7/2 of 10.
        assert!(counts[&2] >= 4 && counts[&2] <= 7, "{counts:?}");
        assert!(
            counts[&1] >= 3,
            "the normal tenant is not starved: {counts:?}"
        );
    }

    #[test]
    fn idle_time_earns_no_credit() {
        let mut s = Scheduler::new(100_000, 1, 0);
        s.add_tenant(1, share(1, 1, Priority::Normal));
        s.add_tenant(2, share(1, 1, Priority::Normal));
        for i in 0..200 {
            s.enqueue(1, i, 1).expect("room");
        }
        serve(&mut s, 100);
        for i in 0..100 {
            s.enqueue(2, i, 1).expect("room");
        }
        let counts = serve(&mut s, 20);
        assert_eq!((counts[&1], counts[&2]), (10, 10), "{counts:?}");
    }

    #[test]
    fn full_queues_are_refused_and_removal_returns_what_was_queued() {
        let mut s = Scheduler::new(3, 1, 0);
        s.add_tenant(
            1,
            TenantShare {
                max_queue: 2,
                ..share(1, 1, Priority::Normal)
            },
        );
        s.add_tenant(2, share(1, 1, Priority::Normal));
        s.enqueue(1, 1, 1).expect("room");
        s.enqueue(1, 2, 1).expect("room");
        let refused = s.enqueue(1, 3, 1).expect_err("tenant queue full");
        assert!(matches!(refused.error, GpuError::QueueFull { .. }));
        assert_eq!(refused.item, 3, "the item comes back to be answered");
        s.enqueue(2, 1, 1).expect("room");
        assert!(s.enqueue(2, 2, 1).is_err(), "the executor queue holds 3");
        assert_eq!(s.remove_tenant(1), vec![1, 2]);
        assert_eq!(s.queued(), 1);
        assert!(matches!(
            s.enqueue(1, 4, 1).map_err(|r| r.error),
            Err(GpuError::UnknownSession)
        ));
    }
}
