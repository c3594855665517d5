//! Choosing a built-in picker by name: [`Picker`] names the four strategies and carries
//! their state.

use std::str::FromStr;
use std::time::Duration;

use crate::consistent_hash::{ConsistentHash, RingState};
use crate::error::Error;
use crate::p2c::P2c;
use crate::pick::{scan_after, Candidates, Pick, SetChange};
use crate::random::Random;
use crate::ring::HashFn;
use crate::round_robin::RoundRobin;

/// One of the four built-in pickers, chosen at run time.
///
/// Parse one by name with [`Picker::by_name`] (`random`, `round_robin`, `hash`, `p2c`), as a
/// `--balance` flag does, or build one with its injectable state
/// (`Picker::Random(Random::from_seed(7))`). It implements [`Pick`] by handing each call to
/// the picker it holds; when the picker is known at compile time, pass that picker itself
/// (`.picker(RoundRobin::new())`).
#[derive(Debug)]
#[non_exhaustive]
pub enum Picker {
    /// Uniform at random.
    Random(Random),
    /// An exact cycle.
    RoundRobin(RoundRobin),
    /// Consistent hash of a key taken from the request (set the key function with
    /// [`EndpointBuilder::hash_key`](crate::EndpointBuilder::hash_key)).
    ConsistentHash(ConsistentHash),
    /// Power of two choices over requests in flight.
    P2c(P2c),
}

impl Default for Picker {
    /// Power of two choices.
    fn default() -> Self {
        Self::P2c(P2c::new())
    }
}

impl Picker {
    /// The picker named `name`: `random`, `round_robin` (or `roundrobin`, `rr`), `hash` (or
    /// `consistent_hash`, `ring`) or `p2c`, with default settings.
    pub fn by_name(name: &str) -> Result<Self, Error> {
        Ok(match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "random" => Self::Random(Random::new()),
            "round_robin" | "roundrobin" | "rr" => Self::RoundRobin(RoundRobin::new()),
            "hash" | "consistent_hash" | "ring" => Self::ConsistentHash(ConsistentHash::new()),
            "p2c" => Self::P2c(P2c::new()),
            _ => {
                return Err(Error::Config {
                    reason: format!(
                        "unknown picker `{name}`: expected random, round_robin, hash or p2c"
                    ),
                })
            }
        })
    }

    /// The picker's name as [`by_name`](Self::by_name) accepts it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Random(_) => "random",
            Self::RoundRobin(_) => "round_robin",
            Self::ConsistentHash(_) => "hash",
            Self::P2c(_) => "p2c",
        }
    }
}

impl FromStr for Picker {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::by_name(s)
    }
}

impl Pick for Picker {
    /// The ring of [`Picker::ConsistentHash`]; `None` for the others.
    type State = Option<RingState>;

    fn build(&self, set: &Candidates<'_>) -> Option<RingState> {
        match self {
            Self::ConsistentHash(c) => Some(c.build(set)),
            _ => None,
        }
    }

    fn update(
        &self,
        state: &mut Option<RingState>,
        set: &Candidates<'_>,
        changes: &[SetChange<'_>],
    ) -> Option<Duration> {
        match (self, state) {
            (Self::ConsistentHash(c), Some(ring)) => c.update(ring, set, changes),
            _ => None,
        }
    }

    #[inline]
    fn pick(&self, state: &Option<RingState>, set: &Candidates<'_>) -> Option<usize> {
        match self {
            Self::Random(r) => Pick::pick(r, &(), set),
            Self::RoundRobin(r) => Pick::pick(r, &(), set),
            Self::P2c(p) => Pick::pick(p, &(), set),
            Self::ConsistentHash(c) => c.pick(state.as_ref()?, set),
        }
    }

    fn alternatives<'a>(
        &'a self,
        state: &'a Option<RingState>,
        set: Candidates<'a>,
        first: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        // The ring's walk for the consistent hash, the default scan for the others.
        let (walk, scan) = match (self, state) {
            (Self::ConsistentHash(c), Some(ring)) => (Some(c.alternatives(ring, set, first)), None),
            _ => (None, Some(scan_after(first, set.len()))),
        };
        walk.into_iter().flatten().chain(scan.into_iter().flatten())
    }

    fn key_hash(&self) -> Option<HashFn> {
        match self {
            Self::ConsistentHash(c) => c.key_hash(),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        Picker::name(self)
    }
}
