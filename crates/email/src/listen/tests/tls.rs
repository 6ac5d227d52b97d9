//! STARTTLS with a self-signed certificate from rcgen.

use super::{Client, TestSink, settings, start};
use crate::listen::{ListenError, Protocol, load_tls};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A server configuration loaded from PEM files, and a client trusting it.
fn tls_pair() -> (Arc<ServerConfig>, TlsConnector) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = load_tls(&cert, &key).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, TlsConnector::from(Arc::new(client)))
}

async fn handshake(c: Client<TcpStream>, connector: &TlsConnector) -> Client<TlsStream<TcpStream>> {
    assert!(c.io.buffer().is_empty());
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, c.io.into_inner()).await.unwrap();
    Client {
        io: tokio::io::BufReader::new(tls),
    }
}

#[tokio::test]
async fn starttls_discards_pipelined_commands_and_resets() {
    let (config, connector) = tls_pair();
    let sink = Arc::new(TestSink::default());
    let mut s = settings(Protocol::Lmtp);
    s.tls = Some(config);
    s.require_tls = true;
    let server = start(s, sink.clone()).await;
    let mut c = Client::connect(&server).await;
    assert!(
        c.lhlo()
            .await
            .iter()
            .any(|l| l == "250-STARTTLS" || l == "250 STARTTLS")
    );
    c.expect("MAIL FROM:<a@b.test>", "530 5.7.0").await;
    // The injection: a command after STARTTLS in the same write.
    c.send("STARTTLS\r\nLHLO evil.test\r\nMAIL FROM:<injected@b.test>\r\n")
        .await;
    assert_eq!(c.reply().await, ["220 2.0.0 Ready to start TLS"]);
    let mut c = handshake(c, &connector).await;

    // Reset: greet again; the injected LHLO and MAIL were not executed (their
    // 250s would come first).
    c.expect("RCPT TO:<help@support.test>", "503 5.5.1").await;
    c.expect("MAIL FROM:<a@b.test>", "503 5.5.1").await;
    let lhlo = c.lhlo().await;
    assert!(!lhlo.iter().any(|l| l.contains("STARTTLS")), "{lhlo:?}");
    c.expect("RCPT TO:<help@support.test>", "503 5.5.1").await;
    c.expect("STARTTLS", "503 5.5.1").await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<help@support.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send("Subject: secret\r\n\r\nover TLS\r\n.\r\n").await;
    assert_eq!(c.reply().await, ["250 2.0.0 stored"]);
    c.expect("QUIT", "221").await;

    let got = sink.got();
    assert_eq!(got.len(), 1);
    assert!(got[0].0.tls);
    assert_eq!(got[0].0.mail_from, "a@b.test");
    assert_eq!(got[0].1, b"Subject: secret\r\n\r\nover TLS\r\n");
}

#[tokio::test]
async fn load_tls_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        load_tls(&missing, &missing),
        Err(ListenError::Pem { .. })
    ));
    assert!(matches!(
        load_tls(&empty, &missing),
        Err(ListenError::NoCertificate(_))
    ));

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, other.serialize_pem()).unwrap();
    assert!(matches!(load_tls(&cert, &key), Err(ListenError::Tls(_))));
    assert!(matches!(
        load_tls(&cert, &empty),
        Err(ListenError::Pem { .. })
    ));
}
