//! No message that depends on persisted state leaves a node before the write that
//! makes that state durable: an append response only once the entries it
//! acknowledges are fsynced, a granted vote only once the vote is. The log and the
//! transport report every durable write and every message handed over (test hooks of
//! their `testing` features), in one order per node.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use raft::eraftpb::MessageType;
use sqlraft::NodeConfig;
use sqlraft_log::DurableObserver;
use sqlraft_transport::SendObserver;

#[derive(Debug, Clone)]
enum Event {
    /// A write of `service`'s log is durable.
    Durable {
        service: String,
        last_index: u64,
        term: u64,
        vote: u64,
    },
    /// A raft message handed to the transport.
    Sent {
        kind: MessageType,
        from: u64,
        to: u64,
        term: u64,
        index: u64,
        reject: bool,
    },
}

fn events() -> &'static Mutex<Vec<Event>> {
    static EVENTS: OnceLock<Mutex<Vec<Event>>> = OnceLock::new();
    EVENTS.get_or_init(|| Mutex::new(Vec::new()))
}

fn record(event: Event) {
    events().lock().expect("events").push(event);
}

fn observed(config: &mut NodeConfig) {
    let service = config.service_id.clone();
    config.log.on_durable = Some(DurableObserver(Arc::new(move |last_index, hs| {
        record(Event::Durable {
            service: service.clone(),
            last_index,
            term: hs.term,
            vote: hs.vote,
        })
    })));
    config.transport.on_send = Some(SendObserver(Arc::new(|m| {
        record(Event::Sent {
            kind: m.get_msg_type(),
            from: m.from,
            to: m.to,
            term: m.term,
            index: m.index,
            reject: m.reject,
        })
    })));
}

/// What each node has made durable so far, as the events go by.
#[derive(Default, Clone, Copy)]
struct Durable {
    last_index: u64,
    term: u64,
    vote: u64,
}

impl Durable {
    /// Whether a vote for `candidate` in `term` (or a later term) is durable.
    fn voted(&self, term: u64, candidate: u64) -> bool {
        self.term > term || (self.term == term && self.vote == candidate)
    }
}

/// Every message that acknowledges persisted state against what was durable on its
/// sender when it was handed over; the violations found.
fn violations(events: &[Event], service_of: &dyn Fn(u64) -> String) -> Vec<String> {
    let mut durable: std::collections::HashMap<String, Durable> = Default::default();
    let mut found = Vec::new();
    for event in events {
        match event {
            Event::Durable {
                service,
                last_index,
                term,
                vote,
            } => {
                durable.insert(
                    service.clone(),
                    Durable {
                        last_index: *last_index,
                        term: *term,
                        vote: *vote,
                    },
                );
            }
            Event::Sent {
                kind,
                from,
                to,
                term,
                index,
                reject,
            } => {
                let d = durable.get(&service_of(*from)).copied().unwrap_or_default();
                match kind {
                    MessageType::MsgAppendResponse if !reject && d.last_index < *index => {
                        found.push(format!(
                            "node {from} acknowledged index {index} with {} durable",
                            d.last_index
                        ));
                    }
                    MessageType::MsgRequestVoteResponse if !reject && !d.voted(*term, *to) => {
                        found.push(format!(
                            "node {from} granted its term-{term} vote to {to} with term {} vote {} durable",
                            d.term, d.vote
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_leaves_before_the_state_it_acknowledges_is_durable() {
    let mut cluster = Cluster::with_config(3, observed).await;
    write_ok(cluster.node(0), "CREATE TABLE t (v INTEGER)").await;
    for i in 0..50 {
        write_ok(cluster.node(i % 3), &format!("INSERT INTO t VALUES ({i})")).await;
    }
    let ids: Vec<(u64, String)> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.node.as_ref()?.raft_id(), n.service_id.clone())))
        .collect();
    // An election among the other two: granted votes.
    let leader = cluster.leader().await;
    cluster.stop(leader).await;
    let survivor = (0..3).find(|i| *i != leader).expect("a survivor");
    for i in 0..20 {
        write_ok(
            cluster.node(survivor),
            &format!("INSERT INTO t VALUES ({})", 100 + i),
        )
        .await;
    }

    let service_of = |raft_id: u64| {
        ids.iter()
            .find(|(id, _)| *id == raft_id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    let events = events().lock().expect("events").clone();
    let acknowledgements = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Sent {
                    kind: MessageType::MsgAppendResponse | MessageType::MsgRequestVoteResponse,
                    reject: false,
                    ..
                }
            )
        })
        .count();
    assert!(
        acknowledgements > 50,
        "only {acknowledgements} acknowledgements seen"
    );
    let found = violations(&events, &service_of);
    assert!(
        found.is_empty(),
        "{} violations: {:?}",
        found.len(),
        &found[..found.len().min(5)]
    );
    cluster.shutdown().await;
}
