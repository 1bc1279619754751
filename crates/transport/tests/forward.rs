//! What a caller can tell from a failed request.

use sqlraft_proto::v1 as pb;
use sqlraft_transport::{Transport, TransportError, TransportOptions};

#[tokio::test]
async fn a_refused_connection_is_known_never_sent() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let (transport, _events) = Transport::new(TransportOptions::default());
    let request = pb::ForwardRequest {
        request: Some(pb::WriteRequest::default()),
        admin: None,
    };
    let err = transport
        .forward(&format!("127.0.0.1:{port}"), 2, request)
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            err,
            TransportError::Unreachable {
                never_sent: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_addresses_are_refused_before_sending() {
    let (transport, _events) = Transport::new(TransportOptions::default());
    for addr in ["no-port", "http://host:1"] {
        let err = transport
            .join(addr, pb::JoinRequest::default())
            .await
            .expect_err("invalid address");
        assert!(
            matches!(err, TransportError::InvalidAddress { .. }),
            "{addr}: {err:?}"
        );
    }
}
