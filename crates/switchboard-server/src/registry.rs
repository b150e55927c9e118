//! Every connection's link to the server: shutdown, heartbeat ticks and connection limits,
//! without a future or a timer per connection.
//!
//! Each connection has a slot in a slab (its task's waker and its per-IP key), so the
//! connection itself keeps only the slot's index and its heartbeat clock. Shutdown wakes them
//! all for good; a ticker task advances a coarse clock and wakes them all every tick, and
//! each connection then checks its own heartbeat deadlines against that clock. The clock is
//! in centiseconds since the server started, in a `u32` compared with wrapping arithmetic.
//!
//! The registry also holds the rate limits' clock and the per-address limit on new
//! connections a second ([`ratelimit`](crate::ratelimit)), checked before the counts.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::config::{HeartbeatConfig, Limits};
use crate::metrics::Metrics;
use crate::ratelimit::{ConnectionRate, Limit, MessageRates};

#[derive(Debug)]
pub(crate) struct Registry {
    triggered: AtomicBool,
    slots: Mutex<slab::Slab<Slot>>,
    start: Instant,
    now: AtomicU32,
    open: AtomicUsize,
    /// Open connections per client address, keyed by a keyed 64-bit hash of the address
    /// (8 bytes in every connection instead of 17; a collision, astronomically rare and not
    /// steerable without the key, would only make two addresses share one limit).
    per_ip: Mutex<HashMap<u64, u32>>,
    ip_hasher: std::collections::hash_map::RandomState,
    /// New connections a second per address (`None`: no limit).
    connection_rate: Option<ConnectionRate>,
    /// The per-connection rates of messages and bytes.
    message_rates: MessageRates,
    limits: Limits,
    heartbeat: HeartbeatConfig,
    /// The heartbeat deadlines in clock units (centiseconds), worked out once.
    deadlines: Deadlines,
    metrics: Arc<Metrics>,
}

/// [`HeartbeatConfig`] in centiseconds, so a connection's check is three comparisons.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    idle: Option<u32>,
    pong: Option<u32>,
    ping: Option<u32>,
}

/// Why a connection may not be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full(usize),
    PerIp(u32),
    /// Past the new connections a second from one address.
    Rate(u32),
}

impl Refusal {
    /// The metrics reason and the limit reached.
    pub(crate) fn reason_and_limit(&self) -> (crate::metrics::Reject, u64) {
        match *self {
            Self::Full(n) => (crate::metrics::Reject::ConnectionLimit, n as u64),
            Self::PerIp(n) => (crate::metrics::Reject::PerIpLimit, u64::from(n)),
            Self::Rate(n) => (crate::metrics::Reject::RateLimit, u64::from(n)),
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Self::Full(n) => format!(
                "server is at its connection limit ({n}); try again later (operators: raise --max-connections)"
            ),
            Self::PerIp(n) => format!(
                "too many connections from your address (limit {n}); operators: raise --max-connections-per-ip"
            ),
            Self::Rate(n) => format!(
                "too many new connections from your address (limit {n} a second); try again in a second (operators: raise --max-new-connections-per-second-per-ip)"
            ),
        }
    }

    /// Whether this is the new-connections rate (which plain HTTP requests get too, as 429).
    pub(crate) fn is_rate(&self) -> bool {
        matches!(self, Self::Rate(_))
    }
}

fn cs(d: Duration) -> u32 {
    (d.as_millis() / 10).min(u128::from(u32::MAX / 2)) as u32
}

impl Registry {
    pub(crate) fn new(limits: Limits, heartbeat: HeartbeatConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            triggered: AtomicBool::new(false),
            slots: Mutex::new(slab::Slab::new()),
            start: Instant::now(),
            now: AtomicU32::new(0),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            ip_hasher: std::collections::hash_map::RandomState::new(),
            connection_rate: ConnectionRate::new(limits.max_new_connections_per_second_per_ip),
            message_rates: MessageRates::new(&limits),
            limits,
            deadlines: Deadlines {
                idle: heartbeat.idle_timeout.map(cs),
                pong: heartbeat.pong_timeout.map(cs),
                ping: heartbeat.ping_interval.map(cs),
            },
            heartbeat,
            metrics,
        }
    }

    fn slots(&self) -> MutexGuard<'_, slab::Slab<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Marks shutdown and wakes every registered connection.
    pub(crate) fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .slots()
            .iter_mut()
            .filter_map(|(_, s)| s.waker.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// How often the ticker should run: often enough to keep heartbeat deadlines to about a
    /// quarter of their length.
    pub(crate) fn tick_interval(&self) -> Option<Duration> {
        let h = &self.heartbeat;
        let shortest = [h.ping_interval, h.pong_timeout, h.idle_timeout]
            .into_iter()
            .flatten()
            .min()?;
        Some((shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(5)))
    }

    /// Advances the clock and wakes every connection to check its deadlines.
    pub(crate) fn tick(&self) {
        self.now.store(cs(self.start.elapsed()), Ordering::Relaxed);
        for (_, s) in self.slots().iter() {
            if let Some(w) = &s.waker {
                w.wake_by_ref();
            }
        }
    }

    pub(crate) fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The rate limits' clock: nanoseconds since the server started.
    pub(crate) fn clock(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a new connection from `ip` against the per-address rate.
    fn admit_rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        match &self.connection_rate {
            Some(rate) if !rate.admit(ip, self.clock()) => {
                self.metrics.rate_limited(Limit::Connections);
                Err(Refusal::Rate(
                    self.limits.max_new_connections_per_second_per_ip,
                ))
            }
            _ => Ok(()),
        }
    }

    fn ip_key(&self, ip: IpAddr) -> u64 {
        self.ip_hasher.hash_one(ip)
    }

    fn admit(&self, ip: u64) -> Result<(), Refusal> {
        let max = self.limits.max_connections;
        if self.open.fetch_add(1, Ordering::AcqRel) >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full(max));
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_default();
        if *n >= self.limits.max_connections_per_ip {
            let limit = self.limits.max_connections_per_ip;
            if *n == 0 {
                per_ip.remove(&ip);
            }
            drop(per_ip);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp(limit));
        }
        *n += 1;
        Ok(())
    }

    fn release(&self, ip: u64) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
        drop(per_ip);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection's heartbeat check asks it to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    Nothing,
    /// Send a ping now.
    Ping,
    /// The last ping went unanswered: close (1011) and drop.
    Dead,
    /// No message either way for the idle timeout: close (1001).
    Idle,
}

/// The top bit of [`Registration::slot`].
const REGISTERED: u32 = 1 << 31;

/// What the registry keeps for each connection.
#[derive(Debug)]
struct Slot {
    waker: Option<Waker>,
    /// The per-IP key, when the connection counts against the limits.
    admitted_ip: Option<u64>,
}

/// One connection's registration: its slot in the registry, and its heartbeat state. Kept
/// small: it lives in every connection's task.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    /// The slot's index; the top bit says whether the slot holds this task's waker (a task's
    /// waker never changes: a registration is only ever polled by the one task that owns
    /// its connection).
    slot: u32,
    /// Last time anything arrived.
    last_rx: u32,
    /// Last time a message went either way.
    last_msg: u32,
    /// When the outstanding ping was sent (0: none).
    ping_at: u32,
}

impl Registration {
    /// Registers a connection from `ip`; `Err` carries the registration (not counted) and
    /// why it may not be admitted, so the caller can still answer 503.
    pub(crate) fn new(registry: Arc<Registry>, ip: IpAddr) -> Result<Self, (Self, Refusal)> {
        let admitted = registry.admit_rate(ip);
        let ip = registry.ip_key(ip);
        let admitted = admitted.and_then(|()| registry.admit(ip));
        let now = registry.now();
        let slot = registry.slots().insert(Slot {
            waker: None,
            admitted_ip: admitted.is_ok().then_some(ip),
        });
        let reg = Self {
            registry,
            // More than 2^31 open connections would not fit in memory first.
            slot: (slot as u32) & !REGISTERED,
            last_rx: now,
            last_msg: now,
            ping_at: 0,
        };
        match admitted {
            Ok(()) => Ok(reg),
            Err(why) => Err((reg, why)),
        }
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.registry.is_triggered()
    }

    /// The server's counters.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.registry.metrics
    }

    /// The rates of messages and bytes a connection may send.
    pub(crate) fn message_rates(&self) -> MessageRates {
        self.registry.message_rates
    }

    /// The rate limits' clock (see [`Registry::clock`]).
    pub(crate) fn clock(&self) -> u64 {
        self.registry.clock()
    }

    /// Makes sure `waker` is woken on shutdown and on every tick; returns whether shutdown
    /// already began. Takes the lock once per connection.
    pub(crate) fn register(&mut self, waker: &Waker) -> bool {
        if self.slot & REGISTERED == 0 {
            if let Some(s) = self.registry.slots().get_mut(self.slot as usize) {
                s.waker = Some(waker.clone());
            }
            self.slot |= REGISTERED;
        }
        // Checked after registering, so a trigger in between is not missed.
        self.is_triggered()
    }

    /// Something arrived from the peer (any frame proves it alive).
    pub(crate) fn received(&mut self, message: bool) {
        let now = self.registry.now();
        self.last_rx = now;
        self.ping_at = 0;
        if message {
            self.last_msg = now;
        }
    }

    /// A message was sent.
    pub(crate) fn sent(&mut self) {
        self.last_msg = self.registry.now();
    }

    /// Checks the heartbeat deadlines against the coarse clock.
    pub(crate) fn beat(&mut self) -> Beat {
        let d = self.registry.deadlines;
        let now = self.registry.now();
        if let Some(idle) = d.idle {
            if now.wrapping_sub(self.last_msg) >= idle {
                return Beat::Idle;
            }
        }
        if self.ping_at != 0 {
            if let Some(t) = d.pong {
                if now.wrapping_sub(self.ping_at) >= t {
                    return Beat::Dead;
                }
            }
            return Beat::Nothing;
        }
        match d.ping {
            Some(every) if now.wrapping_sub(self.last_rx) >= every => {
                self.ping_at = now.max(1);
                Beat::Ping
            }
            _ => Beat::Nothing,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = self
            .registry
            .slots()
            .try_remove((self.slot & !REGISTERED) as usize);
        if let Some(ip) = slot.and_then(|s| s.admitted_ip) {
            self.registry.release(ip);
        }
    }
}
