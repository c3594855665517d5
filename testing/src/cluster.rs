//! [`EtcdCluster`]: several etcd members on loopback forming one cluster, each of which can be
//! killed and restarted on its own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::member::{Member, START_TIMEOUT};

/// A real etcd cluster on loopback: members `m0`, `m1`, … with their own ports and data
/// directories, started together with `--initial-cluster`. Every member is killed when the
/// cluster is dropped. Made by [`EtcdCluster::start`] or
/// [`EtcdBuilder::start_cluster`](crate::EtcdBuilder::start_cluster).
///
/// ```no_run
/// use std::time::Duration;
///
/// let mut cluster = svckit_testing::EtcdCluster::start(3);
/// let endpoints = cluster.endpoints(); // every member's client address
/// let leader = cluster.wait_leader(Duration::from_secs(10));
/// cluster.stop(leader); // SIGKILL
/// let next = cluster.wait_leader(Duration::from_secs(10));
/// assert_ne!(next, leader);
/// cluster.restart(leader); // same ports and data, rejoins
/// # drop(endpoints);
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    // Removed after the members were killed (fields drop in order).
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    pub(crate) fn new(members: Vec<Member>, dir: tempfile::TempDir) -> Self {
        Self { members, dir }
    }

    /// Starts `members` plain-HTTP etcd members on free loopback ports and waits (up to 20 s)
    /// until every one is healthy.
    ///
    /// # Panics
    /// When the `etcd` binary is missing or a member does not become healthy.
    pub fn start(members: usize) -> Self {
        crate::Etcd::builder().start_cluster(members)
    }

    /// How many members the cluster was started with (running or not).
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Every member's client endpoint, in member order, running or not: what a client that
    /// knows the whole cluster is given.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Member `i`'s client endpoint (`127.0.0.1:<port>`, or `https://…` with TLS).
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Member `i`'s plain-HTTP metrics URL (`/health`, `/metrics`).
    pub fn metrics_url(&self, i: usize) -> String {
        self.members[i].metrics_url()
    }

    /// Member `i`'s data directory, kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].data_dir()
    }

    /// The directory holding every member's directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].pid()
    }

    /// True while member `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit. Its data directory stays and its
    /// ports stay reserved for it: a client given its endpoint gets "connection refused".
    pub fn stop(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts member `i` again on the same ports and data directory and waits (up to 20 s)
    /// until it is healthy, which needs a quorum of the other members.
    pub fn restart(&mut self, i: usize) {
        self.members[i].spawn();
        self.members[i].wait_started(START_TIMEOUT);
    }

    /// True when member `i` answers `/health` (it sees a leader and serves a linearizable
    /// read).
    pub fn is_healthy(&self, i: usize) -> bool {
        self.members[i].is_healthy()
    }

    /// The member that currently leads, by each started member's own `/metrics`
    /// (`etcd_server_is_leader 1`); `None` while none or more than one says so.
    pub fn leader(&self) -> Option<usize> {
        let mut leaders = (0..self.members.len()).filter(|&i| self.members[i].is_leader());
        match (leaders.next(), leaders.next()) {
            (Some(i), None) => Some(i),
            _ => None,
        }
    }

    /// Waits until exactly one member leads and returns it.
    ///
    /// # Panics
    /// When none does within `timeout`; the message includes every member's log tail.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no etcd leader within {timeout:?}; logs:\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every started member answers `/health`.
    ///
    /// # Panics
    /// When one does not within `timeout`; the message includes its log tail.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for member in self.members.iter().filter(|m| m.pid().is_some()) {
            member.wait_healthy(deadline.saturating_duration_since(Instant::now()));
        }
    }

    fn log_tails(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("--- m{i} ---\n{}", m.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_members_elect_a_leader_and_elect_another_when_it_is_killed() {
        let mut cluster = EtcdCluster::start(3);
        assert_eq!(cluster.size(), 3);
        let endpoints = cluster.endpoints();
        assert_eq!(endpoints.len(), 3);
        assert!(
            endpoints[0] != endpoints[1] && endpoints[1] != endpoints[2],
            "{endpoints:?}"
        );
        for i in 0..3 {
            assert!(cluster.data_dir(i).join("member").is_dir(), "m{i} has data");
        }
        cluster.wait_healthy(Duration::from_secs(20));
        let first = cluster.wait_leader(Duration::from_secs(10));

        cluster.stop(first);
        assert!(!cluster.is_running(first));
        assert!(!cluster.is_healthy(first));
        // Generous: two members on two busy cores may need several elections.
        let second = cluster.wait_leader(Duration::from_secs(40));
        assert_ne!(second, first, "a new leader among the two left");
        cluster.wait_healthy(Duration::from_secs(40));

        // The old leader rejoins on its data; all three are healthy again under one leader.
        cluster.restart(first);
        assert!(cluster.is_running(first));
        cluster.wait_healthy(Duration::from_secs(40));
        cluster.wait_leader(Duration::from_secs(40));
    }

    #[test]
    fn two_of_three_keep_quorum_and_one_alone_has_none() {
        let mut cluster = EtcdCluster::start(3);
        cluster.stop(0);
        // Generous: on 2 busy cores (the test suite runs clusters side by side) the two left
        // have been seen to need more than 15 s of elections to agree on a leader.
        cluster.wait_healthy(Duration::from_secs(40));
        assert!(cluster.is_healthy(1) && cluster.is_healthy(2));
        cluster.stop(1);
        // m2 alone cannot serve a quorum read, says so on /health, and a leader without a
        // quorum steps down (etcd's check-quorum) within an election timeout or so.
        let deadline = Instant::now() + Duration::from_secs(15);
        while cluster.is_healthy(2) || cluster.leader().is_some() {
            assert!(
                Instant::now() < deadline,
                "m2 alone still claims health or leadership"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
