//! Implicit TLS and STARTTLS against Dovecot with a private certificate.

use std::sync::Arc;
use std::time::Duration;
use switchboard_testkit::dovecot::Dovecot;
use tokio_rustls::rustls::RootCertStore;

use super::support::{Fetcher, RedisState, Sink, mail, settings};
use crate::imap::{AfterIntake, Security};
use crate::test_counters::Counters;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn fetches_over_tls_and_starttls_and_refuses_an_unknown_certificate() {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let dovecot = Dovecot::start_tls(&cert.cert.pem(), &cert.key_pair.serialize_pem());
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    dovecot.append("support", "INBOX", &mail(1));

    let mut tls = settings(&dovecot, "INBOX", AfterIntake::Seen);
    tls.security = Security::Tls;
    tls.port = dovecot.tls_port().unwrap();
    tls.label = format!("imaps://support@127.0.0.1:{}/INBOX", tls.port);
    tls.tls_roots = Some(roots.clone());
    let fetcher = Fetcher::start(tls, &sink, &state);
    sink.wait_for(1, WITHIN).await;
    fetcher.stop().await;

    // Another mailbox label, so a first run: the seen message stays taken
    // in, the new one arrives over STARTTLS.
    dovecot.append("support", "INBOX", &mail(2));
    let mut starttls = settings(&dovecot, "INBOX", AfterIntake::Seen);
    starttls.security = Security::StartTls;
    starttls.tls_roots = Some(roots);
    let fetcher = Fetcher::start(starttls, &sink, &state);
    sink.wait_for(2, WITHIN).await;
    fetcher.stop().await;
    let got: Vec<Vec<u8>> = sink
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(got, vec![mail(1), mail(2)]);
    let log = dovecot.log();
    let tls_logins = log
        .lines()
        .filter(|l| l.contains("Login: user=<support>") && l.contains("TLS"));
    assert_eq!(tls_logins.count(), 2, "{log}");

    // The public roots do not know this certificate: no login, no mail.
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    dovecot.append("support", "INBOX", &mail(3));
    let mut untrusted = settings(&dovecot, "INBOX", AfterIntake::Seen);
    untrusted.security = Security::Tls;
    untrusted.port = dovecot.tls_port().unwrap();
    untrusted.label = "untrusted".into();
    let fetcher = Fetcher::start(untrusted, &sink, &state);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fetcher.stop().await;
    assert_eq!(sink.len(), 2);
    assert!(counters.get("switchboard_email_imap_errors_total{kind=tls,mailbox=untrusted}") >= 1);
}
