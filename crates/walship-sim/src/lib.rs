//! walship-sim: a deterministic simulation of one walship sender and one to
//! three receivers, built from the sans-IO cores of `walship-core` (habit 2
//! of `STYLE.md`: the two-endpoint harness).
//!
//! # The model
//!
//! Everything runs on a virtual clock advanced in 1 ms ticks; every random
//! choice comes from one seed ([`rng::Rng`]), so a seed replays exactly.
//!
//! * **Source** ([`source`]): segments in memory. During the active phase a
//!   writer appends random-size chunks and now and then rolls to a new
//!   segment (which seals the previous one).
//! * **Sender**: one `SenderSession` per receiver, driven as the agent
//!   drives it (`cursor` → segment view → `poll_transmit`, the resume check
//!   of the agent's `resolve_resume`), and one `SyncTracker` whose quorum
//!   (0..=N), level (flush or apply) and timeout come from the seed. Waiters
//!   are registered at random times for the source's current end; after
//!   every ack the tracker gets `quorum_of` the flushed (or applied)
//!   positions of the sessions that stream.
//! * **Link** ([`link`]): per receiver, a connection of three ordered
//!   streams (sender control, data, receiver control) carrying encoded bytes
//!   (`Frame::to_bytes` / `frame::decode`, `Control::to_vec` /
//!   `Control::from_slice`) with seeded latency.
//! * **Receiver disk** ([`disk`]): a mirror with a written and a durable
//!   mark. Store ops write; an fdatasync at random times (always at a
//!   segment end) makes written durable, and only then is `handle_flushed`
//!   called. A new session first discards what is not durable and answers
//!   Hello with a Welcome built from the durable state (resume segment,
//!   CRC-32 of up to 64 KiB before the durable position), as `walship-store`
//!   and the agent do.
//!
//! # Faults
//!
//! The real transport is QUIC, reliable and ordered per stream, so a fault
//! is modelled as what QUIC turns it into:
//!
//! * **retransmit** — a lost, duplicated or reordered packet: QUIC repairs
//!   it, the stream sees only delay.
//! * **break** — loss QUIC cannot repair: the connection ends on both sides,
//!   everything in flight is lost, and the sender reconnects after a backoff
//!   with a new handshake (and the receiver a new epoch).
//! * **partition** — the connection breaks and reconnects fail until it heals.
//! * **crash** — the receiver loses everything not durable (bytes and
//!   unrecorded segment-table changes) and restarts after a while.
//! * **corrupt** — one byte of a frame flipped (never the length field): the
//!   decoder must reject it and the connection closes. A corrupted frame
//!   that decodes is a failure.
//! * **violate** — a transport that broke its promise: a frame arrives twice
//!   or after the next one. The receiver session must reject it.
//! * **late ack** — an ack (and, the stream being ordered, those after it)
//!   delayed by 5–60 ms.
//! * **stale ack** — the last ack of a closed connection replayed on the new
//!   one; its epoch is older and the sender must ignore it.
//!
//! Any other error from either core (a stream error on a clean link, a
//! refused resume, a protocol error) is a failure.
//!
//! # Invariants
//!
//! Checked after every step (see [`check`](crate::check)): (1) no flush or
//! apply ack the sender accepted covers a byte that is not durable on that
//! receiver; (2) every waiter released as durable is durable on
//! `max(quorum, 1)` receivers; (3) after the quiet phase (writer stopped,
//! faults off, run until every mirror is durable to the end) every mirror
//! equals the source byte for byte and no waiter is left; (4) sender
//! positions never go backwards within a session, nor a receiver's durable
//! position ever.
//!
//! A failure names its seed and how to replay it; `WALSHIP_SIM_TRACE=1`
//! prints the run's events.
use std::fmt;

pub mod config;
pub mod disk;
pub mod link;
pub mod rng;
pub mod source;
pub mod world;

mod check;
mod receiver;
mod sender;

pub use config::{Config, Faults};
pub use world::{Stats, World};

/// How the configuration of a seed is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Mostly light faults, a quarter without, a quarter heavy.
    Mixed,
    /// Every fault ten times as likely as light.
    Heavy,
    /// Light faults, and receivers with a separate apply step
    /// (`ReceiverConfig::separate_apply`) that lags behind the flushes.
    Apply,
}

impl Profile {
    /// The name `WALSHIP_SIM_PROFILE` takes.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Mixed => "mixed",
            Profile::Heavy => "heavy",
            Profile::Apply => "apply",
        }
    }

    /// The profile named `s` (see [`name`](Self::name)).
    pub fn from_name(s: &str) -> Option<Self> {
        [Profile::Mixed, Profile::Heavy, Profile::Apply].into_iter().find(|p| p.name() == s)
    }
}

/// A seed that broke an invariant.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub profile: Profile,
    /// Virtual time of the failure, microseconds.
    pub t_us: u64,
    pub what: String,
    pub config: Box<Config>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let profile = match self.profile {
            Profile::Mixed => String::new(),
            p => format!("WALSHIP_SIM_PROFILE={} ", p.name()),
        };
        write!(
            f,
            "simulation seed {} failed at t={:.3} ms: {}\n  replay: {profile}WALSHIP_SIM_SEED={} cargo test -p \
             walship-sim replay -- --nocapture   (add WALSHIP_SIM_TRACE=1 for the event log)\n  config: {:?}",
            self.seed,
            self.t_us as f64 / 1000.0,
            self.what,
            self.seed,
            self.config
        )
    }
}

impl std::error::Error for SimFailure {}

/// Runs one seed to the end.
pub fn run_seed(seed: u64, profile: Profile) -> Result<Stats, SimFailure> {
    let mut rng = rng::Rng::new(seed);
    let cfg = match profile {
        Profile::Mixed => Config::from_rng(&mut rng),
        Profile::Heavy => Config::with_intensity(&mut rng, 10.0, false),
        Profile::Apply => Config::with_intensity(&mut rng, 1.0, true),
    };
    let mut w = World::new(seed, cfg, rng.fork());
    w.run().map_err(|what| SimFailure { seed, profile, t_us: w.t, what, config: Box::new(w.cfg.clone()) })
}
