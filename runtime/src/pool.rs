//! The warm pool of one function: which instance an invocation gets, the bounded queue in front,
//! and what keep-alive, pre-warming and `min_instances` ask for at a given time.
//!
//! Pure bookkeeping under one lock, never held across an await: decisions come out as values
//! ([`Acquire`], [`ReapPlan`]) and the platform carries them out (spawning, killing).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::FunctionSpec;
use crate::keepalive::KeepAlivePolicy;
use crate::local::LocalInstance;

/// What the pool needs to know of an instance.
pub(crate) trait Member: Send + Sync + std::fmt::Debug {
    /// Unique within the platform.
    fn id(&self) -> u64;
    /// The process still runs.
    fn is_alive(&self) -> bool;
}

impl Member for LocalInstance {
    fn id(&self) -> u64 {
        self.id
    }
    fn is_alive(&self) -> bool {
        LocalInstance::is_alive(self)
    }
}

/// One alive instance and its use.
#[derive(Debug)]
struct Slot<I> {
    instance: Arc<I>,
    in_flight: usize,
    /// When an idle instance may be stopped (platform time).
    keep_until: Duration,
}

/// Where an invocation goes.
pub(crate) enum Acquire<I = LocalInstance> {
    /// To this running instance.
    Warm(Arc<I>),
    /// To a new instance the caller starts (a start slot was reserved).
    Cold,
    /// Into the queue; an instance will be handed over through this receiver.
    Queued(oneshot::Receiver<Arc<I>>),
    /// Nowhere: the queue is full.
    Full,
}

/// What the reaper must do for one pool.
#[derive(Debug)]
pub(crate) struct ReapPlan<I = LocalInstance> {
    /// Instances to stop.
    pub stop: Vec<Arc<I>>,
    /// Instances to start ahead of invocations, each kept until the given time (start slots reserved).
    pub start: Vec<Duration>,
}

/// Counters and sizes of one pool, for tests, benchmarks and operators.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances alive (idle or busy).
    pub alive: usize,
    /// Alive instances running nothing.
    pub idle: usize,
    /// Instances being started.
    pub starting: usize,
    /// Invocations waiting in the queue.
    pub queued: usize,
    /// Invocations that started an instance.
    pub cold_starts: u64,
    /// Invocations served by a running instance.
    pub warm_starts: u64,
    /// Instances started ahead of invocations.
    pub prewarm_starts: u64,
    /// Instances that died during use (OOM, crash, deadline).
    pub replaced: u64,
}

#[derive(Debug)]
pub(crate) struct PoolState<I = LocalInstance> {
    slots: Vec<Slot<I>>,
    starting: usize,
    waiters: VecDeque<oneshot::Sender<Arc<I>>>,
    policy: Box<dyn KeepAlivePolicy>,
    running: usize,
    last_end: Option<Duration>,
    /// A pre-warm the policy asked for: `(at, until)`.
    prewarm: Option<(Duration, Duration)>,
    stats: PoolStats,
}

impl<I: Member> PoolState<I> {
    pub(crate) fn new(policy: Box<dyn KeepAlivePolicy>) -> Self {
        Self {
            slots: Vec::new(),
            starting: 0,
            waiters: VecDeque::new(),
            policy,
            running: 0,
            last_end: None,
            prewarm: None,
            stats: PoolStats::default(),
        }
    }

    /// Picks an idle instance, reserves a cold start, queues, or refuses.
    pub(crate) fn acquire(&mut self, spec: &FunctionSpec, now: Duration) -> Acquire<I> {
        if let (0, Some(end)) = (self.running, self.last_end) {
            self.policy.observe_idle(now.saturating_sub(end));
        }
        // The most recently used instance first, so the others stay idle and can expire.
        let free = self
            .slots
            .iter_mut()
            .rev()
            .find(|s| s.in_flight < spec.concurrency && s.instance.is_alive());
        if let Some(slot) = free {
            slot.in_flight += 1;
            self.running += 1;
            self.stats.warm_starts += 1;
            return Acquire::Warm(slot.instance.clone());
        }
        let alive = self.slots.iter().filter(|s| s.instance.is_alive()).count();
        if alive + self.starting < spec.max_instances {
            self.starting += 1;
            self.running += 1;
            self.stats.cold_starts += 1;
            return Acquire::Cold;
        }
        self.waiters.retain(|w| !w.is_closed());
        if self.waiters.len() >= spec.queue_capacity {
            return Acquire::Full;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(tx);
        self.running += 1;
        self.stats.warm_starts += 1;
        Acquire::Queued(rx)
    }

    /// A reserved start finished: the new instance is in use by its starter (`busy`) or idle until
    /// `keep_until`. Returns the instance to the caller when a queued invocation should get it.
    pub(crate) fn started(&mut self, instance: Arc<I>, busy: bool, keep_until: Duration) {
        self.starting = self.starting.saturating_sub(1);
        self.slots.push(Slot {
            instance: instance.clone(),
            in_flight: usize::from(busy),
            keep_until,
        });
        if !busy {
            self.hand_over(&instance);
        }
    }

    /// A reserved start failed.
    pub(crate) fn start_failed(&mut self, counted_invocation: bool) {
        self.starting = self.starting.saturating_sub(1);
        if counted_invocation {
            self.running = self.running.saturating_sub(1);
        }
    }

    /// Gives an instance with a free slot to the first live waiter, if any.
    fn hand_over(&mut self, instance: &Arc<I>) -> bool {
        while let Some(w) = self.waiters.pop_front() {
            if w.send(instance.clone()).is_ok() {
                if let Some(slot) = self
                    .slots
                    .iter_mut()
                    .find(|s| s.instance.id() == instance.id())
                {
                    slot.in_flight += 1;
                }
                return true;
            }
        }
        false
    }

    /// An invocation on `instance` ended at `now`; `healthy` = the instance can be reused.
    pub(crate) fn release(&mut self, instance: &Arc<I>, healthy: bool, now: Duration) {
        self.running = self.running.saturating_sub(1);
        self.last_end = Some(now);
        let Some(pos) = self
            .slots
            .iter()
            .position(|s| s.instance.id() == instance.id())
        else {
            return;
        };
        if !healthy {
            self.slots.remove(pos);
            self.stats.replaced += 1;
            return;
        }
        let mut slot = self.slots.remove(pos);
        slot.in_flight = slot.in_flight.saturating_sub(1);
        let windows = self.policy.windows();
        if windows.prewarm.is_zero() {
            slot.keep_until = now + windows.keep_alive;
        } else {
            // Unload now and load again when the next invocation becomes likely.
            slot.keep_until = now;
            self.prewarm = Some((
                now + windows.prewarm,
                now + windows.prewarm + windows.keep_alive,
            ));
        }
        self.slots.push(slot);
        if !self.waiters.is_empty() {
            self.hand_over(instance);
        }
    }

    /// A queued invocation gave up (deadline) before getting an instance.
    pub(crate) fn abandon(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// What to stop and start at `now`.
    pub(crate) fn reap(&mut self, spec: &FunctionSpec, now: Duration) -> ReapPlan<I> {
        let mut plan = ReapPlan {
            stop: Vec::new(),
            start: Vec::new(),
        };
        // Dead idle instances go now; a dead one still in flight is left to `release`, which
        // counts it once, whichever of the two notices the death first.
        let before = self.slots.len();
        self.slots
            .retain(|s| s.in_flight > 0 || s.instance.is_alive());
        self.stats.replaced += (before - self.slots.len()) as u64;
        self.waiters.retain(|w| !w.is_closed());
        let mut alive = self.slots.iter().filter(|s| s.instance.is_alive()).count() + self.starting;
        // Expired idle instances, oldest expiry first, never below min_instances.
        let mut expired: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].in_flight == 0 && self.slots[i].keep_until <= now)
            .collect();
        expired.sort_by_key(|&i| self.slots[i].keep_until);
        let mut remove = Vec::new();
        for i in expired {
            if alive <= spec.min_instances {
                break;
            }
            remove.push(i);
            alive -= 1;
        }
        remove.sort_unstable_by(|a, b| b.cmp(a));
        for i in remove {
            plan.stop.push(self.slots.remove(i).instance);
        }
        if let Some((at, until)) = self.prewarm {
            if now >= until {
                self.prewarm = None;
            } else if now >= at {
                self.prewarm = None;
                if alive == 0 {
                    plan.start.push(until);
                    alive += 1;
                }
            }
        }
        let want = spec
            .min_instances
            .max(self.waiters.len().min(spec.max_instances));
        while alive < want {
            plan.start.push(now);
            alive += 1;
        }
        self.starting += plan.start.len();
        self.stats.prewarm_starts += plan.start.len() as u64;
        plan
    }

    /// Removes every instance (shutdown) and returns them.
    pub(crate) fn drain(&mut self) -> Vec<Arc<I>> {
        self.waiters.clear();
        self.slots.drain(..).map(|s| s.instance).collect()
    }

    /// Stops idle instances now, regardless of keep-alive (min_instances come back on the next tick).
    pub(crate) fn take_idle(&mut self) -> Vec<Arc<I>> {
        let (idle, busy): (Vec<_>, Vec<_>) = self.slots.drain(..).partition(|s| s.in_flight == 0);
        self.slots = busy;
        self.prewarm = None;
        idle.into_iter().map(|s| s.instance).collect()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let alive: Vec<&Slot<I>> = self
            .slots
            .iter()
            .filter(|s| s.instance.is_alive())
            .collect();
        PoolStats {
            alive: alive.len(),
            idle: alive.iter().filter(|s| s.in_flight == 0).count(),
            starting: self.starting,
            queued: self.waiters.iter().filter(|w| !w.is_closed()).count(),
            ..self.stats.clone()
        }
    }

    pub(crate) fn instances(&self) -> Vec<Arc<I>> {
        self.slots.iter().map(|s| s.instance.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::keepalive::{KeepAliveConfig, Windows};

    #[derive(Debug)]
    struct Fake(u64, AtomicBool);

    impl Member for Fake {
        fn id(&self) -> u64 {
            self.0
        }
        fn is_alive(&self) -> bool {
            !self.1.load(Ordering::Relaxed)
        }
    }

    /// A policy that always answers the same windows.
    #[derive(Debug)]
    struct Fixed(Windows);

    impl KeepAlivePolicy for Fixed {
        fn observe_idle(&mut self, _: Duration) {}
        fn windows(&self) -> Windows {
            self.0
        }
    }

    const S: Duration = Duration::from_secs(1);

    fn spec(min: usize, max: usize, queue: usize) -> FunctionSpec {
        FunctionSpec {
            min_instances: min,
            max_instances: max,
            queue_capacity: queue,
            ..FunctionSpec::default()
        }
    }

    fn cold_start(
        pool: &mut PoolState<Fake>,
        spec: &FunctionSpec,
        id: u64,
        now: Duration,
    ) -> Arc<Fake> {
        assert!(matches!(pool.acquire(spec, now), Acquire::Cold));
        let i = Arc::new(Fake(id, AtomicBool::new(false)));
        pool.started(i.clone(), true, now);
        i
    }

    #[test]
    fn fixed_ttl_expires_idle_instances_but_keeps_min() {
        let spec = spec(1, 4, 4);
        let mut pool = PoolState::<Fake>::new(KeepAliveConfig::Fixed { ttl_ms: 10_000 }.build());
        let a = cold_start(&mut pool, &spec, 1, S);
        let b = cold_start(&mut pool, &spec, 2, S);
        pool.release(&a, true, 2 * S);
        pool.release(&b, true, 3 * S);
        assert!(pool.reap(&spec, 11 * S).stop.is_empty(), "within the TTL");
        let plan = pool.reap(&spec, 12 * S);
        assert_eq!(
            plan.stop.iter().map(|i| i.id()).collect::<Vec<_>>(),
            [1],
            "oldest first"
        );
        assert!(
            pool.reap(&spec, 100 * S).stop.is_empty(),
            "min_instances = 1 stays"
        );
        assert_eq!(pool.stats().alive, 1);
    }

    #[test]
    fn prewarm_unloads_after_use_and_loads_at_the_window() {
        let spec = spec(0, 4, 4);
        let windows = Windows {
            prewarm: 60 * S,
            keep_alive: 10 * S,
        };
        let mut pool = PoolState::<Fake>::new(Box::new(Fixed(windows)));
        let a = cold_start(&mut pool, &spec, 1, S);
        pool.release(&a, true, 2 * S);
        let plan = pool.reap(&spec, 2 * S);
        assert_eq!(plan.stop.len(), 1, "unloaded right after the invocation");
        assert!(plan.start.is_empty());
        assert!(pool.reap(&spec, 61 * S).start.is_empty(), "not yet");
        let plan = pool.reap(&spec, 62 * S);
        assert_eq!(
            plan.start,
            [72 * S],
            "pre-warmed at end + prewarm, kept for keep_alive"
        );
        let warm = Arc::new(Fake(2, AtomicBool::new(false)));
        pool.started(warm, false, 72 * S);
        assert!(
            matches!(pool.acquire(&spec, 65 * S), Acquire::Warm(_)),
            "the next call is warm"
        );
    }

    #[test]
    fn queue_is_bounded_and_served_in_order() {
        let spec = spec(0, 1, 1);
        let mut pool = PoolState::<Fake>::new(KeepAliveConfig::default().build());
        let a = cold_start(&mut pool, &spec, 1, S);
        let Acquire::Queued(mut rx) = pool.acquire(&spec, S) else {
            panic!("second call queues")
        };
        assert!(
            matches!(pool.acquire(&spec, S), Acquire::Full),
            "third is refused"
        );
        pool.release(&a, true, 2 * S);
        assert_eq!(
            rx.try_recv().map(|i| i.id()).ok(),
            Some(1),
            "handed over without going idle"
        );
        assert_eq!(pool.stats().idle, 0);
    }

    #[test]
    fn dead_instances_leave_and_queued_callers_get_a_start() {
        let spec = spec(0, 1, 2);
        let mut pool = PoolState::<Fake>::new(KeepAliveConfig::default().build());
        let a = cold_start(&mut pool, &spec, 1, S);
        let _queued = pool.acquire(&spec, S);
        a.1.store(true, Ordering::Relaxed);
        pool.release(&a, false, 2 * S);
        assert_eq!(pool.stats().replaced, 1);
        let plan = pool.reap(&spec, 2 * S);
        assert_eq!(plan.start.len(), 1, "a start for the waiting caller");
    }

    #[test]
    fn a_death_noticed_by_the_reaper_mid_invocation_is_counted_once() {
        let spec = spec(0, 2, 2);
        let mut pool = PoolState::<Fake>::new(KeepAliveConfig::default().build());
        let a = cold_start(&mut pool, &spec, 1, S);
        let b = cold_start(&mut pool, &spec, 2, S);
        pool.release(&b, true, S);
        a.1.store(true, Ordering::Relaxed);
        b.1.store(true, Ordering::Relaxed);
        // The reaper runs first: the idle dead one goes now, the one in flight stays for release.
        pool.reap(&spec, 2 * S);
        assert_eq!(pool.stats().replaced, 1);
        pool.release(&a, false, 3 * S);
        assert_eq!(pool.stats().replaced, 2);
        pool.reap(&spec, 4 * S);
        assert_eq!(pool.stats().replaced, 2, "each death counted once");
    }
}
