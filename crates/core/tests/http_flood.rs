//! A flood of idle and slow HTTP connections against one node of a 3-node cluster:
//! raft keeps replicating, and the flooded node itself keeps answering writes (idle
//! connections give way to new ones at the connection limit).

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlraft_harness::processes::cluster::{Cluster, statement};
use sqlraft_harness::processes::serial;

const LIMIT: usize = 32;

#[test]
fn a_flood_of_idle_connections_does_not_stop_writes() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    // Node 0 again with a small connection limit, so that the flood passes it.
    let flooded = 0;
    cluster.nodes[flooded].sigterm();
    cluster.nodes[flooded].add_args(&["--http.max-connections", &LIMIT.to_string()]);
    cluster.nodes[flooded].restart();
    cluster.wait_voters(3);
    cluster.execute(
        flooded,
        &json!(["CREATE TABLE flood (k INTEGER PRIMARY KEY, v TEXT)"]),
    );

    // Four times the limit: idle connections, and slow-loris ones (half a request).
    let addr = cluster.nodes[flooded].http.clone();
    let mut flood = Vec::new();
    for i in 0..LIMIT * 4 {
        let Ok(mut stream) = TcpStream::connect(&addr) else {
            continue;
        };
        if i % 2 == 1 {
            let _ = stream.write_all(b"POST /db/execute HTTP/1.1\r\nHost: x\r\nContent-Le");
        }
        flood.push(stream);
    }
    assert!(flood.len() >= LIMIT, "the flood could not connect");

    // Writes through the flooded node and through the others, each on a new
    // connection, while the flood's connections stay open.
    let started = Instant::now();
    let mut written = 0;
    for k in 0..30u64 {
        let target = (k % 3) as usize;
        cluster.execute(
            target,
            &statement(
                "INSERT INTO flood (k, v) VALUES (?, ?)",
                &[json!(k), json!("v")],
            ),
        );
        written += 1;
        // Refill the flood now and then: it keeps arriving.
        if k % 10 == 0 {
            for _ in 0..LIMIT {
                if let Ok(stream) = TcpStream::connect(&addr) {
                    flood.push(stream);
                }
            }
        }
    }
    assert_eq!(written, 30);
    eprintln!("30 writes during the flood took {:?}", started.elapsed());

    let (index, dumps) = cluster.converged_dumps(0, &json!(["SELECT count(*) FROM flood"]));
    assert!(index > 0);
    for dump in &dumps {
        assert_eq!(dump[0]["values"][0][0], 30, "{dump}");
    }
    drop(flood);
}

#[test]
fn a_request_in_progress_is_not_what_gives_way() {
    let _serial = serial();
    let mut cluster = Cluster::start(1);
    cluster.nodes[0].sigterm();
    cluster.nodes[0].add_args(&["--http.max-connections", "4"]);
    cluster.nodes[0].restart();
    cluster.execute(0, &json!(["CREATE TABLE t (v)"]));
    let addr = cluster.nodes[0].http.clone();
    // A request whose body is on its way (it sent headers and part of the body).
    let body = r#"["INSERT INTO t VALUES (1)"]"#;
    let mut uploading = TcpStream::connect(&addr).expect("connect");
    write!(
        uploading,
        "POST /db/execute HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .expect("headers");
    std::thread::sleep(Duration::from_millis(300));
    // More connections than the limit: idle ones give way, the upload does not.
    let mut others = Vec::new();
    for _ in 0..8 {
        if let Ok(stream) = TcpStream::connect(&addr) {
            others.push(stream);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    uploading
        .write_all(&body.as_bytes()[5..])
        .expect("the upload's connection is open");
    let mut answer = String::new();
    uploading
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    if let Ok(n) = std::io::Read::read(&mut uploading, &mut buf) {
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop(others);
}
