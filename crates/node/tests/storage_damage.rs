//! A node whose files are damaged refuses to start with a clear error; it never panics.

mod common;

use common::*;
use sqlraft::{Node, NodeError};

async fn node_with_data() -> (tempfile::TempDir, std::path::PathBuf) {
    init_logging();
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("node");
    let node = Node::start(fast_config(
        sqlraft::naming::FIRST_SERVICE_ID,
        dir.clone(),
        "127.0.0.1:0",
    ))
    .await
    .expect("start");
    write_ok(&node, "CREATE TABLE t (v)").await;
    for i in 0..20 {
        write_ok(&node, &format!("INSERT INTO t VALUES ({i})")).await;
    }
    node.shutdown().await;
    (root, dir)
}

async fn start_error(dir: &std::path::Path) -> NodeError {
    match Node::start(fast_config(
        sqlraft::naming::FIRST_SERVICE_ID,
        dir.to_path_buf(),
        "127.0.0.1:0",
    ))
    .await
    {
        Ok(node) => {
            node.shutdown().await;
            panic!("a node with damaged files started");
        }
        Err(e) => e,
    }
}

/// The segment of the raft log that is written to.
fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    sqlraft_log::segment_files(&dir.join("raft"))
        .expect("list segments")
        .pop()
        .expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_log_is_a_clear_error() {
    let (_root, dir) = node_with_data().await;
    let wal = last_segment(&dir);
    let mut bytes = std::fs::read(&wal).expect("read wal");
    // In the middle of the records, not of the zeros allocated after them.
    let written = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    let middle = written / 2;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, &bytes).expect("damage wal");
    let err = start_error(&dir).await;
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(err.is_fatal());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_log_is_a_clear_error() {
    let (_root, dir) = node_with_data().await;
    let wal = last_segment(&dir);
    let bytes = std::fs::read(&wal).expect("read wal");
    // Cut at a record boundary far behind what the state database has applied.
    std::fs::write(&wal, &bytes[..16]).expect("truncate wal");
    let err = start_error(&dir).await;
    assert!(err.to_string().contains("truncated or replaced"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_that_is_not_a_log_is_a_clear_error() {
    let (_root, dir) = node_with_data().await;
    let wal = last_segment(&dir);
    std::fs::write(&wal, b"this is not a raft log at all, just some text").expect("overwrite");
    let err = start_error(&dir).await;
    assert!(err.to_string().contains("not a sqlraft log"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_of_another_service_is_refused() {
    let (_root, dir) = node_with_data().await;
    let err = match Node::start(fast_config(
        "11111111-1111-1111-1111-111111111111",
        dir.clone(),
        "127.0.0.1:0",
    ))
    .await
    {
        Ok(node) => {
            node.shutdown().await;
            panic!("started on another service's directory");
        }
        Err(e) => e,
    };
    assert!(err.to_string().contains("belongs to service"), "{err}");
}
