//! The nemesis: faults injected one at a time at random moments, each held for a few
//! seconds and then healed, drawn from the chosen kinds with the run's seed.

use std::time::Duration;

use serde::Serialize;
use sqlraft_harness::processes::process::Paused;

use crate::cluster::{ClusterError, Nodes};
use crate::history::Recorder;
use crate::net::{NetError, Topology};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL a random node, restart it later.
    Kill,
    /// SIGKILL the leader, restart it later.
    KillLeader,
    /// SIGSTOP a random node for longer than an election timeout, then SIGCONT.
    Pause,
    /// SIGSTOP the leader.
    PauseLeader,
    /// Cut a random minority off from the majority.
    Partition,
    /// Two groups that cannot see each other, and one node that sees both.
    Bridge,
    /// One node stops hearing another (the other still hears it).
    OneWay,
    /// A random 30% of the packets on one node's links are lost, both ways.
    Loss,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::Partition,
        Fault::Bridge,
        Fault::OneWay,
        Fault::Loss,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::Partition => "partition",
            Fault::Bridge => "bridge",
            Fault::OneWay => "one-way",
            Fault::Loss => "loss",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether it needs network namespaces.
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::Partition | Fault::Bridge | Fault::OneWay | Fault::Loss
        )
    }
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub fault: Fault,
    /// Who it hit.
    pub detail: String,
    /// Nanoseconds since the run began.
    pub start: u64,
    pub end: u64,
}

/// Why the nemesis could not do or undo something.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A fault in force, and how to undo it.
enum Active {
    Killed(usize),
    Paused(Paused),
    Network,
}

/// Injects and heals faults on a run's nodes.
pub struct Nemesis<'a> {
    pub nodes: &'a mut Nodes,
    pub topology: Option<&'a Topology>,
    pub rng: fastrand::Rng,
    pub recorder: Recorder,
    pub events: Vec<FaultEvent>,
}

impl<'a> Nemesis<'a> {
    /// Injects `fault`, holds it for `hold`, heals it, and records it.
    pub fn strike(&mut self, fault: Fault, hold: Duration) -> Result<(), NemesisError> {
        let start = self.recorder.now();
        let (active, detail) = self.inject(fault)?;
        std::thread::sleep(hold);
        let end = self.recorder.now();
        self.events.push(FaultEvent {
            fault,
            detail,
            start,
            end,
        });
        self.undo(active)
    }

    fn inject(&mut self, fault: Fault) -> Result<(Active, String), NemesisError> {
        let n = self.nodes.procs.len();
        let leader_or_random = |nemesis: &mut Self| {
            let random = nemesis.rng.usize(..n);
            nemesis.nodes.leader().unwrap_or(random)
        };
        Ok(match fault {
            Fault::Kill | Fault::KillLeader => {
                let i = if fault == Fault::Kill {
                    self.rng.usize(..n)
                } else {
                    leader_or_random(self)
                };
                self.nodes.procs[i].kill9();
                (Active::Killed(i), format!("node-{i}"))
            }
            Fault::Pause | Fault::PauseLeader => {
                let i = if fault == Fault::Pause {
                    self.rng.usize(..n)
                } else {
                    leader_or_random(self)
                };
                (
                    Active::Paused(self.nodes.procs[i].pause()),
                    format!("node-{i}"),
                )
            }
            Fault::Partition => {
                let net = self.network()?;
                let mut order: Vec<usize> = (0..n).collect();
                self.rng.shuffle(&mut order);
                let (minority, majority) = order.split_at(n / 2);
                for &a in minority {
                    for &b in majority {
                        net.cut(a, b)?;
                    }
                }
                (Active::Network, format!("{minority:?} | {majority:?}"))
            }
            Fault::Bridge => {
                let net = self.network()?;
                let mut order: Vec<usize> = (0..n).collect();
                self.rng.shuffle(&mut order);
                let bridge = order[0];
                let (left, right) = order[1..].split_at((n - 1) / 2);
                for &a in left {
                    for &b in right {
                        net.cut(a, b)?;
                    }
                }
                (
                    Active::Network,
                    format!("{left:?} | {right:?}, node-{bridge} sees both"),
                )
            }
            Fault::OneWay => {
                let net = self.network()?;
                let from = if self.rng.bool() {
                    leader_or_random(self)
                } else {
                    self.rng.usize(..n)
                };
                let to = (from + 1 + self.rng.usize(..n - 1)) % n;
                net.drop_from(to, from)?;
                (
                    Active::Network,
                    format!("node-{to} hears nothing from node-{from}"),
                )
            }
            Fault::Loss => {
                let net = self.network()?;
                let i = self.rng.usize(..n);
                for other in (0..n).filter(|&o| o != i) {
                    net.lose_from(i, other, 30)?;
                    net.lose_from(other, i, 30)?;
                }
                (Active::Network, format!("30% loss on node-{i}'s links"))
            }
        })
    }

    fn undo(&mut self, active: Active) -> Result<(), NemesisError> {
        match active {
            Active::Killed(i) => self.nodes.restart(i)?,
            Active::Paused(paused) => paused.resume(),
            Active::Network => self.network()?.heal()?,
        }
        Ok(())
    }

    fn network(&self) -> Result<&'a Topology, NetError> {
        self.topology.ok_or_else(|| NetError::Command {
            command: "a network fault".into(),
            detail: "needs network namespaces (run as root with --net netns)".into(),
        })
    }

    /// Heals whatever may still be broken: all links whole, every node running.
    pub fn heal_all(&mut self) -> Result<(), NemesisError> {
        if let Some(net) = self.topology {
            net.heal()?;
        }
        for i in 0..self.nodes.procs.len() {
            if !self.nodes.procs[i].is_running() {
                self.nodes.restart(i)?;
            }
        }
        Ok(())
    }
}
