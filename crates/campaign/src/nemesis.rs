//! The nemesis: faults injected one at a time at random moments, each held for a few
//! seconds and then healed, drawn from the chosen kinds with the run's seed.

use std::path::PathBuf;
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
    /// A new service is created over REST and joins (or, with no free slot, one is
    /// removed).
    Join,
    /// A voter other than the leader is removed (or, at three members, one joins).
    Remove,
    /// The leader is removed (or, at three members, one joins).
    RemoveLeader,
    /// One node's file system fills up; later the space is freed and the node, if it
    /// stopped, started again.
    Disk,
    /// One node's wall clock (the leader's, half of the time) jumps two hours forward
    /// or back, and later returns.
    Clock,
    /// A random node is killed; meanwhile every other member takes a snapshot and
    /// compacts its whole log behind it, so the node, restarted, catches up from a
    /// snapshot sent by the leader.
    Snapshot,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 14] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::Partition,
        Fault::Bridge,
        Fault::OneWay,
        Fault::Loss,
        Fault::Join,
        Fault::Remove,
        Fault::RemoveLeader,
        Fault::Disk,
        Fault::Clock,
        Fault::Snapshot,
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
            Fault::Join => "join",
            Fault::Remove => "remove",
            Fault::RemoveLeader => "remove-leader",
            Fault::Disk => "disk",
            Fault::Clock => "clock",
            Fault::Snapshot => "snapshot",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether it needs network namespaces (and root): network rules, and the
    /// private mount namespace the file systems of the disk fault live in.
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::Partition | Fault::Bridge | Fault::OneWay | Fault::Loss | Fault::Disk
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

/// A service that exited by itself.
#[derive(Debug, Clone, Serialize)]
pub struct Exit {
    pub slot: usize,
    pub name: String,
    pub status: String,
    /// The fault in force when it was noticed, if any.
    pub during: Option<Fault>,
    /// Whether the fault explains it (a full disk stops the node it belongs to: it
    /// will not write a log or a database it cannot keep).
    pub expected: bool,
    /// Nanoseconds since the run began, when it was noticed.
    pub at: u64,
}

/// Why the nemesis could not do or undo something.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Whether the fault in force explains that the service in `slot` stopped by itself:
/// only a full disk does, and only that service's own.
pub fn explained(during: Option<Fault>, full: Option<usize>, slot: usize) -> bool {
    during == Some(Fault::Disk) && full == Some(slot)
}

/// A fault in force, and how to undo it.
enum Active {
    Killed(usize),
    Paused(Paused),
    Network,
    /// Nothing to undo.
    Done,
    /// A membership change of this kind (it stays).
    Changed(Fault),
    /// A ballast file that fills slot `.0`'s file system.
    Full(usize, PathBuf),
    /// Slot `.0`'s clock file, to be set back to `+0`.
    Clock(PathBuf),
}

/// Injects and heals faults on a run's nodes.
pub struct Nemesis<'a> {
    pub nodes: &'a mut Nodes,
    pub topology: Option<&'a Topology>,
    pub rng: fastrand::Rng,
    pub recorder: Recorder,
    pub events: Vec<FaultEvent>,
    pub exits: Vec<Exit>,
    /// The slot whose file system is full, while it is.
    pub full: Option<usize>,
    /// Set when a fault meant for the leader fell on a random node.
    pub no_leader: bool,
}

impl<'a> Nemesis<'a> {
    /// Injects `fault`, holds it for `hold`, heals it, and records it.
    pub fn strike(&mut self, fault: Fault, hold: Duration) -> Result<(), NemesisError> {
        self.notice_exits(None);
        let start = self.recorder.now();
        self.no_leader = false;
        let (active, mut detail) = self.inject(fault)?;
        if self.no_leader {
            detail.push_str(" (no leader known: a random node)");
        }
        // What was done: a membership change may go the other way to keep between
        // three members and the number of slots.
        let fault = match &active {
            Active::Changed(done) => *done,
            _ => fault,
        };
        std::thread::sleep(hold);
        self.notice_exits(Some(fault));
        let end = self.recorder.now();
        self.events.push(FaultEvent {
            fault,
            detail,
            start,
            end,
        });
        self.undo(active)
    }

    /// Records the services that exited by themselves since the last look.
    pub fn notice_exits(&mut self, during: Option<Fault>) {
        for (slot, name, status) in self.nodes.reap() {
            self.exits.push(Exit {
                slot,
                name,
                status,
                during,
                expected: explained(during, self.full, slot),
                at: self.recorder.now(),
            });
        }
    }

    /// A random running member.
    fn random(&mut self) -> Result<usize, NemesisError> {
        let running = self.nodes.running();
        if running.is_empty() {
            return Err(ClusterError::Membership("no member is running".into()).into());
        }
        Ok(running[self.rng.usize(..running.len())])
    }

    /// The leader, or a random running member when none is known.
    /// When no leader is known, the fault's detail says so.
    fn leader_or_random(&mut self) -> Result<usize, NemesisError> {
        let random = self.random()?;
        Ok(self.nodes.leader().unwrap_or_else(|| {
            self.no_leader = true;
            random
        }))
    }

    fn inject(&mut self, fault: Fault) -> Result<(Active, String), NemesisError> {
        let members = self.nodes.members();
        Ok(match fault {
            Fault::Kill | Fault::KillLeader => {
                let i = if fault == Fault::Kill {
                    self.random()?
                } else {
                    self.leader_or_random()?
                };
                if let Some(p) = self.nodes.process(i) {
                    p.kill9();
                }
                (Active::Killed(i), format!("slot {i}"))
            }
            Fault::Pause | Fault::PauseLeader => {
                let i = if fault == Fault::Pause {
                    self.random()?
                } else {
                    self.leader_or_random()?
                };
                match self.nodes.process(i) {
                    Some(p) => (Active::Paused(p.pause()), format!("slot {i}")),
                    None => (Active::Done, format!("slot {i} is empty")),
                }
            }
            Fault::Partition => {
                let net = self.network()?;
                let mut order = members.clone();
                self.rng.shuffle(&mut order);
                let (minority, majority) = order.split_at(order.len() / 2);
                for &a in minority {
                    for &b in majority {
                        net.cut(a, b)?;
                    }
                }
                (Active::Network, format!("{minority:?} | {majority:?}"))
            }
            Fault::Bridge => {
                let net = self.network()?;
                let mut order = members.clone();
                self.rng.shuffle(&mut order);
                let bridge = order[0];
                let (left, right) = order[1..].split_at((order.len() - 1) / 2);
                for &a in left {
                    for &b in right {
                        net.cut(a, b)?;
                    }
                }
                (
                    Active::Network,
                    format!("{left:?} | {right:?}, slot {bridge} sees both"),
                )
            }
            Fault::OneWay => {
                let net = self.network()?;
                let from = if self.rng.bool() {
                    self.leader_or_random()?
                } else {
                    self.random()?
                };
                let others: Vec<usize> = members.iter().copied().filter(|&m| m != from).collect();
                let to = others[self.rng.usize(..others.len())];
                net.drop_from(to, from)?;
                (
                    Active::Network,
                    format!("slot {to} hears nothing from slot {from}"),
                )
            }
            Fault::Loss => {
                let net = self.network()?;
                let i = self.random()?;
                for &other in members.iter().filter(|&&o| o != i) {
                    net.lose_from(i, other, 30)?;
                    net.lose_from(other, i, 30)?;
                }
                (Active::Network, format!("30% loss on slot {i}'s links"))
            }
            Fault::Join | Fault::Remove | Fault::RemoveLeader => self.change_membership(fault)?,
            Fault::Disk => {
                let i = self.random()?;
                let ballast = self.nodes.fill_disk(i)?;
                self.full = Some(i);
                (
                    Active::Full(i, ballast),
                    format!("slot {i}'s file system full"),
                )
            }
            Fault::Snapshot => {
                let i = self.random()?;
                if let Some(p) = self.nodes.process(i) {
                    p.kill9();
                }
                // Let the others apply a few more writes, then compact everything.
                std::thread::sleep(Duration::from_millis(500));
                let mut done = Vec::new();
                for other in self.nodes.running() {
                    match self.nodes.compact(other) {
                        Ok(index) => done.push(format!("slot {other} at {index}")),
                        Err(e) => done.push(format!("slot {other} failed: {e}")),
                    }
                }
                (
                    Active::Killed(i),
                    format!("slot {i} killed; snapshots: {}", done.join(", ")),
                )
            }
            Fault::Clock => {
                // The leader's clock is the one writes see.
                let i = if self.rng.bool() {
                    self.leader_or_random()?
                } else {
                    self.random()?
                };
                let jump = if self.rng.bool() { "+2h" } else { "-2h" };
                let file = self.nodes.set_clock(i, jump)?;
                (Active::Clock(file), format!("slot {i}'s clock {jump}"))
            }
        })
    }

    fn undo(&mut self, active: Active) -> Result<(), NemesisError> {
        match active {
            Active::Killed(i) => self.nodes.restart(i)?,
            Active::Paused(paused) => paused.resume(),
            Active::Network => self.network()?.heal()?,
            Active::Done | Active::Changed(_) => {}
            Active::Full(i, ballast) => {
                let _ = std::fs::remove_file(&ballast);
                self.full = None;
                if !self.nodes.running().contains(&i) {
                    self.nodes.restart(i)?;
                }
            }
            Active::Clock(file) => {
                std::fs::write(&file, "+0")
                    .map_err(|e| ClusterError::Membership(format!("{}: {e}", file.display())))?;
            }
        }
        Ok(())
    }

    /// A service joins, or one is removed, keeping between three members and the
    /// number of slots.
    fn change_membership(&mut self, fault: Fault) -> Result<(Active, String), NemesisError> {
        let members = self.nodes.members();
        let free = self.nodes.free();
        let join = match fault {
            Fault::Join => !free.is_empty(),
            _ => members.len() <= 3,
        };
        if join {
            let Some(&slot) = free.first() else {
                return Ok((Active::Done, "no free slot".into()));
            };
            let via = self.random()?;
            self.nodes.join(slot, Some(via))?;
            return Ok((
                Active::Changed(Fault::Join),
                format!("slot {slot} joined via slot {via}"),
            ));
        }
        let leader = self.nodes.leader();
        let target = if fault == Fault::RemoveLeader {
            self.leader_or_random()?
        } else {
            let others: Vec<usize> = self
                .nodes
                .running()
                .into_iter()
                .filter(|&i| Some(i) != leader)
                .collect();
            if others.is_empty() {
                return Ok((Active::Done, "no follower to remove".into()));
            }
            others[self.rng.usize(..others.len())]
        };
        let via = self.random()?;
        self.nodes.remove(target, via)?;
        let done = if Some(target) == leader {
            Fault::RemoveLeader
        } else {
            Fault::Remove
        };
        Ok((
            Active::Changed(done),
            format!("slot {target} removed via slot {via}"),
        ))
    }

    fn network(&self) -> Result<&'a Topology, NetError> {
        self.topology.ok_or_else(|| NetError::Command {
            command: "a network fault".into(),
            detail: "needs network namespaces (run as root with --net netns)".into(),
        })
    }

    /// Heals whatever may still be broken: all links whole, every member running,
    /// every clock right.
    pub fn heal_all(&mut self) -> Result<(), NemesisError> {
        self.notice_exits(None);
        if let Some(net) = self.topology {
            net.heal()?;
        }
        for i in self.nodes.members() {
            self.nodes.set_clock(i, "+0")?;
            if !self.nodes.running().contains(&i) {
                self.nodes.restart(i)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_disk_explains_only_its_own_node_stopping() {
        assert!(explained(Some(Fault::Disk), Some(2), 2));
        // Another node stopping while slot 2's disk is full is a finding (a tester
        // killed slot 0 during slot 2's full disk and the run passed).
        assert!(!explained(Some(Fault::Disk), Some(2), 0));
        assert!(!explained(Some(Fault::Kill), Some(2), 2));
        assert!(!explained(None, None, 0));
    }

    #[test]
    fn every_fault_has_a_name_that_parses_back() {
        for fault in Fault::ALL {
            assert_eq!(Fault::parse(fault.name()), Some(fault));
        }
        assert_eq!(Fault::parse("all"), None);
    }
}
