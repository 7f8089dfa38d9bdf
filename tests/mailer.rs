//! The mailer against a real SMTP server over TCP, and the file outbox.

mod common;

use std::time::Duration;

use common::smtp::{Behavior, SmtpServer};
use herald::config::Settings;
use herald::mailer::{Mailer, Outgoing, SendError};

fn settings(smtp_url: Option<String>, rate: Option<&str>, outbox: &std::path::Path) -> Settings {
    let mut s = Settings::for_database("sqlite://unused.db");
    s.smtp_url = smtp_url;
    s.smtp_rate = rate.map(|r| r.parse().unwrap());
    s.outbox_dir = outbox.to_path_buf();
    s.smtp_concurrency = 2;
    s
}

fn addr(s: &str) -> lettre::Address {
    s.parse().unwrap()
}

const MESSAGE: &[u8] = b"From: a@acme.example\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n.leading dot\r\n";

async fn send(m: &Mailer, to: &str, id: &str) -> Result<String, SendError> {
    let from = addr("bounce@acme.example");
    let to = addr(to);
    m.send(Outgoing {
        from: &from,
        to: &to,
        id,
        message: MESSAGE,
    })
    .await
}

#[tokio::test]
async fn delivers_over_smtp_with_dot_stuffing_and_8bit() {
    let server = SmtpServer::accepting().await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailer::new(&settings(Some(server.url()), None, dir.path())).unwrap();
    for i in 0..5 {
        let reply = send(&m, &format!("c{i}@example.com"), "x").await.unwrap();
        assert!(reply.contains("queued"), "{reply}");
    }
    let got = server.received();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].from, "bounce@acme.example");
    assert_eq!(got[3].to, "c3@example.com");
    // lettre ends DATA with CRLF . CRLF after the message's own final CRLF, which
    // adds one empty line at the end.
    assert_eq!(
        got[0].data.strip_suffix(b"\r\n"),
        Some(MESSAGE),
        "the server saw the bytes sent"
    );
}

#[tokio::test]
async fn classifies_failures() {
    let server = SmtpServer::start(|n, _| match n {
        0 => Behavior::ReplyAfterData("421 4.7.0 Try again later, closing connection".into()),
        1 => Behavior::ReplyAfterData("451 4.3.0 Temporary local problem".into()),
        2 => {
            Behavior::RejectRcpt("550 5.1.1 <gone@example.com>: Recipient address rejected".into())
        }
        3 => Behavior::ReplyAfterData("550 5.7.1 Message rejected as spam".into()),
        4 => Behavior::DropMidData,
        5 => Behavior::DropAfterDot,
        6 => Behavior::RejectRcpt("550 Mailbox unavailable".into()),
        _ => Behavior::Accept,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailer::new(&settings(Some(server.url()), None, dir.path())).unwrap();
    let r0 = send(&m, "a@example.com", "x").await.unwrap_err();
    assert!(
        matches!(&r0, SendError::Transient(t) if t.starts_with("421")),
        "{r0:?}"
    );
    let r1 = send(&m, "a@example.com", "x").await.unwrap_err();
    assert!(
        matches!(&r1, SendError::Transient(t) if t.starts_with("451")),
        "{r1:?}"
    );
    match send(&m, "gone@example.com", "x").await.unwrap_err() {
        SendError::Permanent(reply) => {
            assert_eq!(reply.code, 550);
            assert!(reply.is_hard_bounce() && !reply.blames_sender());
            assert!(reply.text.contains("Recipient address rejected"));
        }
        other => panic!("{other:?}"),
    }
    match send(&m, "a@example.com", "x").await.unwrap_err() {
        SendError::Permanent(reply) => assert!(reply.blames_sender() && !reply.is_hard_bounce()),
        other => panic!("{other:?}"),
    }
    let mid = send(&m, "a@example.com", "x").await.unwrap_err();
    assert!(mid.is_retryable(), "{mid:?}");
    let after = send(&m, "a@example.com", "x").await.unwrap_err();
    assert!(matches!(after, SendError::Unknown(_)), "{after:?}");
    match send(&m, "b@example.com", "x").await.unwrap_err() {
        SendError::Permanent(reply) => assert!(reply.is_hard_bounce(), "bare 550 is a hard bounce"),
        other => panic!("{other:?}"),
    }
    // Broken connections were dropped: the next message goes through.
    assert!(send(&m, "ok@example.com", "x").await.is_ok());
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn unreachable_relay_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let m = Mailer::new(&settings(
        Some(format!("smtp://127.0.0.1:{port}?tls=none")),
        None,
        dir.path(),
    ))
    .unwrap();
    let e = send(&m, "a@example.com", "x").await.unwrap_err();
    assert!(
        matches!(&e, SendError::Transient(t) if t.contains("cannot connect")),
        "{e:?}"
    );
}

#[tokio::test]
async fn rate_limit_spaces_arrivals() {
    let server = SmtpServer::accepting().await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailer::new(&settings(Some(server.url()), Some("20/s"), dir.path())).unwrap();
    // The first second's burst is allowed; after it, arrivals are 50 ms apart.
    for i in 0..40 {
        send(&m, &format!("c{i}@example.com"), "x").await.unwrap();
    }
    let got = server.received();
    let span = got[39].at.duration_since(got[20].at);
    assert!(
        span >= Duration::from_millis(19 * 50 - 60),
        "19 gaps at 20/s took {span:?}"
    );
    let gaps: Vec<Duration> = got[21..]
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= Duration::from_millis(45) && mean <= Duration::from_millis(80),
        "mean gap {mean:?}"
    );
}

#[tokio::test]
async fn outbox_writes_one_file_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let m = Mailer::new(&settings(None, None, &outbox)).unwrap();
    assert!(m.describe().starts_with("outbox "));
    send(&m, "a@example.com", "winback-offer-17").await.unwrap();
    send(&m, "a@example.com", "winback-offer-17").await.unwrap();
    assert_eq!(
        std::fs::read(outbox.join("winback-offer-17.eml")).unwrap(),
        MESSAGE
    );
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        1,
        "a re-send replaces the file"
    );
    assert!(matches!(
        send(&m, "a@example.com", "../escape").await,
        Err(SendError::Local(_))
    ));
}

/// Internationalised addresses: a domain goes into the envelope as A-labels; a
/// non-ASCII local part only to a relay that offers SMTPUTF8 (and with it), and
/// to any other relay it fails at once, for good, leaving the connection usable.
#[tokio::test]
async fn internationalised_addresses_in_the_envelope() {
    let plain = SmtpServer::accepting().await;
    let dir = tempfile::tempdir().unwrap();
    let m = Mailer::new(&settings(Some(plain.url()), None, dir.path())).unwrap();
    send(&m, "anna@bücher.example", "x").await.unwrap();
    let refused = send(&m, "jörg@bücher.example", "x").await.unwrap_err();
    assert!(
        matches!(&refused, SendError::Local(t) if t.contains("does not offer SMTPUTF8")),
        "{refused:?}"
    );
    send(&m, "after@example.com", "x").await.unwrap();
    let got = plain.received();
    let to: Vec<&str> = got.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(to, ["anna@xn--bcher-kva.example", "after@example.com"]);
    assert!(got.iter().all(|r| !r.mail_params.contains("SMTPUTF8")));

    let utf8 = SmtpServer::accepting().await;
    utf8.offer_smtputf8();
    let m = Mailer::new(&settings(Some(utf8.url()), None, dir.path())).unwrap();
    send(&m, "jörg@bücher.example", "x").await.unwrap();
    send(&m, "plain@example.com", "x").await.unwrap();
    let got = utf8.received();
    assert_eq!(got[0].to, "jörg@xn--bcher-kva.example");
    assert!(got[0].mail_params.contains("SMTPUTF8"), "{:?}", got[0]);
    assert!(!got[1].mail_params.contains("SMTPUTF8"), "{:?}", got[1]);
}
