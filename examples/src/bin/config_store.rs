//! A one-node configuration store embedded in a service: writes go through the node
//! (raft log, fsync, apply), reads use typed sqlx queries on the node's own file.

use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft::{Consistency, Node, NodeConfig, Statement, WriteRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = NodeConfig::new(FIRST_SERVICE_ID, dir.path(), "127.0.0.1:0".parse()?);
    let node = Node::start(config).await?;

    let outcome = node
        .execute(WriteRequest::transaction(vec![
            Statement::new("CREATE TABLE rules (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL)"),
            Statement::with_params(
                "INSERT INTO rules VALUES (?, ?)",
                vec!["ssh-brute-force".into(), 1i64.into()],
            ),
            Statement::with_params(
                "INSERT INTO rules VALUES (?, ?)",
                vec!["port-scan".into(), 0i64.into()],
            ),
        ]))
        .await?;
    println!("configuration written at raft index {}", outcome.raft_index);

    // Through the library, at a chosen consistency...
    let rows = node
        .query(
            &Statement::new("SELECT count(*) FROM rules"),
            Consistency::Local {
                min_index: Some(outcome.raft_index),
            },
        )
        .await?;
    println!("rules: {:?}", rows.values);

    // ...or with the service's own typed queries on the read-only pool.
    let enabled: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM rules WHERE enabled = 1 ORDER BY name")
            .fetch_all(node.read_pool())
            .await?;
    println!("enabled: {enabled:?}");

    node.shutdown().await;
    Ok(())
}
