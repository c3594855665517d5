//! Choosing a picker: [`Picker`] names the four strategies and carries their state.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::p2c::P2c;
use crate::random::Random;
use crate::ring::{xxh3, HashFn, DEFAULT_VNODES};
use crate::round_robin::RoundRobin;

/// How an HTTP endpoint picks an instance for each call.
///
/// Parse one by name with [`Picker::by_name`] (`random`, `round_robin`, `hash`, `p2c`) or build
/// one with its injectable state (`Picker::Random(Random::from_seed(7))`).
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

/// Settings of the consistent-hash picker.
#[derive(Clone, Copy)]
#[must_use]
pub struct ConsistentHash {
    pub(crate) vnodes: usize,
    pub(crate) hash: HashFn,
    pub(crate) epsilon: Option<f64>,
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("vnodes", &self.vnodes)
            .field("bounded_load_epsilon", &self.epsilon)
            .finish_non_exhaustive()
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsistentHash {
    /// 160 virtual nodes, XXH3-64 ([`xxh3`]), no load bound.
    pub fn new() -> Self {
        Self {
            vnodes: DEFAULT_VNODES,
            hash: xxh3,
            epsilon: None,
        }
    }

    /// Virtual nodes per instance. Default 160.
    pub fn vnodes(mut self, vnodes: usize) -> Self {
        self.vnodes = vnodes.max(1);
        self
    }

    /// The hash for ring points and keys. Default [`xxh3`].
    pub fn hash(mut self, hash: HashFn) -> Self {
        self.hash = hash;
        self
    }

    /// Bounded-load mode (Mirrokni et al. 2016): no instance takes more than
    /// `⌈(1 + epsilon) · average⌉` requests in flight; a key whose owner is full goes to the
    /// next instance clockwise. Default off. Negative values count as 0.
    pub fn bounded_load(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(if epsilon.is_finite() {
            epsilon.max(0.0)
        } else {
            0.0
        });
        self
    }
}
