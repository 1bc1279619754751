//! The campaign's network: each node in its own network namespace, joined to a bridge
//! in a hub namespace where the campaign's clients run. Faults are nftables rules in a
//! node's namespace (`table inet sqlraft_nemesis`): dropping what arrives from chosen
//! peers (a cut link), all or a random share of it (loss).
//!
//! Everything lives inside the namespaces this module makes (addresses in
//! `10.151.0.0/24`, which exist nowhere else), and the namespaces are named after the
//! process that made them, so a run that was killed before it could clean up is cleaned
//! up by the next one ([`remove_stale`]).

use std::process::{Command, Stdio};

/// Name prefix of every namespace a campaign makes.
const PREFIX: &str = "sqlraftc";

/// The subnet's first three octets.
const SUBNET: &str = "10.151.0";

/// Why a network step failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
}

/// The namespaces of one campaign.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Made by this process.
    owner: u32,
    /// Number of node namespaces.
    pub nodes: usize,
}

impl Topology {
    /// Makes the hub (bridge `br0`, address `.254`) and `nodes` node namespaces (node
    /// `i` at `.{i+1}` on `eth0`), each with loopback up and an empty nemesis table.
    pub fn create(nodes: usize) -> Result<Topology, NetError> {
        remove_stale();
        let topology = Topology {
            owner: std::process::id(),
            nodes,
        };
        let hub = topology.hub();
        run("ip", &["netns", "add", &hub])?;
        let result = (|| {
            ip(&hub, &["link", "set", "lo", "up"])?;
            ip(&hub, &["link", "add", "br0", "type", "bridge"])?;
            ip(
                &hub,
                &["addr", "add", &format!("{SUBNET}.254/24"), "dev", "br0"],
            )?;
            ip(&hub, &["link", "set", "br0", "up"])?;
            for i in 0..nodes {
                let ns = topology.node(i);
                run("ip", &["netns", "add", &ns])?;
                let veth = format!("v{i}");
                ip(
                    &hub,
                    &[
                        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                    ],
                )?;
                ip(&hub, &["link", "set", &veth, "master", "br0", "up"])?;
                ip(&ns, &["link", "set", "lo", "up"])?;
                ip(
                    &ns,
                    &[
                        "addr",
                        "add",
                        &format!("{}/24", Topology::address(i)),
                        "dev",
                        "eth0",
                    ],
                )?;
                ip(&ns, &["link", "set", "eth0", "up"])?;
                nft(
                    &ns,
                    "table inet sqlraft_nemesis {\n\
                       chain input { type filter hook input priority 0; policy accept; }\n\
                     }\n",
                )?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            topology.remove();
            return Err(e);
        }
        Ok(topology)
    }

    /// The namespaces made by process `owner` for `nodes` nodes.
    pub fn existing(owner: u32, nodes: usize) -> Topology {
        Topology { owner, nodes }
    }

    /// The hub namespace's name.
    pub fn hub(&self) -> String {
        format!("{PREFIX}{}h", self.owner)
    }

    /// Node `i`'s namespace.
    pub fn node(&self, i: usize) -> String {
        format!("{PREFIX}{}n{i}", self.owner)
    }

    /// Node `i`'s address.
    pub fn address(i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Node `to` drops everything from node `from` (one direction of a link).
    pub fn drop_from(&self, to: usize, from: usize) -> Result<(), NetError> {
        self.rule(to, &format!("ip saddr {} drop", Topology::address(from)))
    }

    /// Node `to` drops `percent`% of the packets from node `from`, at random.
    pub fn lose_from(&self, to: usize, from: usize, percent: u8) -> Result<(), NetError> {
        self.rule(
            to,
            &format!(
                "ip saddr {} numgen random mod 100 < {percent} drop",
                Topology::address(from)
            ),
        )
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&self, a: usize, b: usize) -> Result<(), NetError> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// Removes every rule: all links whole again.
    pub fn heal(&self) -> Result<(), NetError> {
        for i in 0..self.nodes {
            nft(&self.node(i), "flush chain inet sqlraft_nemesis input\n")?;
        }
        Ok(())
    }

    /// The rules in force, one line per node (for the run's log).
    pub fn describe(&self) -> String {
        (0..self.nodes)
            .map(|i| {
                let rules = output(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &self.node(i),
                        "nft",
                        "list",
                        "chain",
                        "inet",
                        "sqlraft_nemesis",
                        "input",
                    ],
                )
                .unwrap_or_default();
                let drops: Vec<&str> = rules
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.contains("drop"))
                    .collect();
                format!(
                    "node {i}: {}",
                    if drops.is_empty() {
                        "-".to_string()
                    } else {
                        drops.join("; ")
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn rule(&self, node: usize, rule: &str) -> Result<(), NetError> {
        nft(
            &self.node(node),
            &format!("add rule inet sqlraft_nemesis input {rule}\n"),
        )
    }

    /// Kills whatever still runs in the namespaces (a node left stopped by a pause
    /// when the campaign was killed, which no parent-death signal can end) and deletes
    /// them (their links and rules go with them).
    pub fn remove(&self) {
        let mut names: Vec<String> = (0..self.nodes).map(|i| self.node(i)).collect();
        names.push(self.hub());
        for name in &names {
            kill_all_in(name);
            let _ = run("ip", &["netns", "delete", name]);
        }
    }
}

/// Whether this process may make namespaces and rules (root with `ip` and `nft`).
pub fn available() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("network namespaces need root".into());
    }
    for tool in ["ip", "nft"] {
        if output("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Err(format!(
                "`{tool}` is not installed (Debian: iproute2, nftables)"
            ));
        }
    }
    Ok(())
}

/// Deletes the namespaces of campaigns whose process is gone.
pub fn remove_stale() {
    let Ok(list) = output("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<i32>() else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            kill_all_in(name);
            let _ = run("ip", &["netns", "delete", name]);
        }
    }
}

/// SIGCONT, then SIGKILL, to every process in namespace `ns`.
fn kill_all_in(ns: &str) {
    use nix::sys::signal::{Signal, kill};
    let Ok(pids) = output("ip", &["netns", "pids", ns]) else {
        return;
    };
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGKILL);
    }
}

fn ip(ns: &str, args: &[&str]) -> Result<(), NetError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn nft(ns: &str, script: &str) -> Result<(), NetError> {
    use std::io::Write as _;
    let command = format!("ip netns exec {ns} nft -f - <<< {script:?}");
    let fail = |detail: String| NetError::Command {
        command: command.clone(),
        detail,
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    output(program, args).map(drop)
}

fn output(program: &str, args: &[&str]) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
