//! A real SMTP server over TCP for tests, in the test process, told per message
//! how to behave: accept, answer a given code at RCPT or after the data, or drop
//! the connection mid-DATA or after the final dot.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server does with one message (numbered from 0 in arrival order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    Accept,
    /// Reply to RCPT TO with this line, e.g. "550 5.1.1 No such user".
    RejectRcpt(String),
    /// Read the whole message, then reply with this line instead of 250.
    ReplyAfterData(String),
    /// Close the connection halfway through the message data.
    DropMidData,
    /// Read the whole message including the final dot, then close without a reply.
    DropAfterDot,
}

#[derive(Debug, Clone)]
pub struct Received {
    /// The name the client gave in EHLO (or HELO).
    pub helo: String,
    pub from: String,
    /// What followed the address in MAIL FROM (e.g. `SMTPUTF8 BODY=8BITMIME`).
    pub mail_params: String,
    pub to: String,
    pub data: Vec<u8>,
    pub at: Instant,
}

type Script = dyn Fn(usize, &str) -> Behavior + Send + Sync;

pub struct SmtpServer {
    pub addr: SocketAddr,
    smtputf8: Arc<AtomicBool>,
    no_8bitmime: Arc<AtomicBool>,
    delay: Arc<Mutex<std::time::Duration>>,
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<usize>>,
}

impl SmtpServer {
    /// Starts a server on 127.0.0.1 (random port) that treats every message by `script`.
    pub async fn start(
        script: impl Fn(usize, &str) -> Behavior + Send + Sync + 'static,
    ) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0usize));
        let delay = Arc::new(Mutex::new(std::time::Duration::ZERO));
        let smtputf8 = Arc::new(AtomicBool::new(false));
        let no_8bitmime = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let session_state = Session {
            received: received.clone(),
            attempts: attempts.clone(),
            script,
            delay: delay.clone(),
            smtputf8: smtputf8.clone(),
            no_8bitmime: no_8bitmime.clone(),
        };
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = session_state.clone();
                tokio::spawn(async move {
                    let _ = session(socket, state).await;
                });
            }
        });
        SmtpServer {
            addr,
            smtputf8,
            no_8bitmime,
            delay,
            received,
            attempts,
        }
    }

    pub async fn accepting() -> SmtpServer {
        SmtpServer::start(|_, _| Behavior::Accept).await
    }

    /// Waits this long before accepting each message (a slow relay).
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Announce SMTPUTF8 (RFC 6531) to connections opened from now on.
    pub fn offer_smtputf8(&self) {
        self.smtputf8.store(true, Ordering::Relaxed);
    }

    /// Stop announcing 8BITMIME (RFC 6152) to connections opened from now on.
    pub fn refuse_8bitmime(&self) {
        self.no_8bitmime.store(true, Ordering::Relaxed);
    }

    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Messages whose data was sent (accepted or not).
    pub fn attempts(&self) -> usize {
        *self.attempts.lock().unwrap()
    }
}

/// What every connection of one server shares.
#[derive(Clone)]
struct Session {
    received: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<usize>>,
    script: Arc<Script>,
    delay: Arc<Mutex<std::time::Duration>>,
    smtputf8: Arc<AtomicBool>,
    no_8bitmime: Arc<AtomicBool>,
}

async fn session(socket: tokio::net::TcpStream, state: Session) -> std::io::Result<()> {
    let Session {
        received,
        attempts,
        script,
        delay,
        smtputf8,
        no_8bitmime,
    } = state;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test.smtp ESMTP ready\r\n").await?;
    let (mut from, mut to, mut mail_params) = (String::new(), String::new(), String::new());
    let mut helo = String::new();
    let mut behavior = Behavior::Accept;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            helo = line.trim_end()[4..].trim().to_string();
        }
        if upper.starts_with("EHLO") {
            let utf8 = if smtputf8.load(Ordering::Relaxed) {
                "250-SMTPUTF8\r\n"
            } else {
                ""
            };
            let eight_bit = if no_8bitmime.load(Ordering::Relaxed) {
                ""
            } else {
                "250-8BITMIME\r\n"
            };
            let ehlo = format!(
                "250-test.smtp\r\n{eight_bit}{utf8}250-PIPELINING\r\n250 SIZE 10000000\r\n"
            );
            write.write_all(ehlo.as_bytes()).await?;
        } else if upper.starts_with("HELO")
            || upper.starts_with("NOOP")
            || upper.starts_with("RSET")
        {
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&line);
            mail_params = line
                .rsplit_once('>')
                .map(|(_, rest)| rest.trim().to_string())
                .unwrap_or_default();
            write.write_all(b"250 2.1.0 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to = address(&line);
            let n = {
                let mut a = attempts.lock().unwrap();
                *a += 1;
                *a - 1
            };
            behavior = script(n, &to);
            match &behavior {
                Behavior::RejectRcpt(reply) => {
                    write.write_all(format!("{reply}\r\n").as_bytes()).await?
                }
                _ => write.write_all(b"250 2.1.5 OK\r\n").await?,
            }
        } else if upper.starts_with("DATA") {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = Vec::new();
            let mut raw = Vec::new();
            let mut lines_read = 0;
            loop {
                raw.clear();
                if lines.read_until(b'\n', &mut raw).await? == 0 {
                    return Ok(());
                }
                lines_read += 1;
                if behavior == Behavior::DropMidData && lines_read == 5 {
                    return Ok(());
                }
                if raw == b".\r\n" {
                    break;
                }
                let content = raw.strip_prefix(b".").unwrap_or(&raw);
                data.extend_from_slice(content);
            }
            match &behavior {
                Behavior::DropAfterDot => return Ok(()),
                Behavior::ReplyAfterData(reply) => {
                    write.write_all(format!("{reply}\r\n").as_bytes()).await?
                }
                _ => {
                    let wait = *delay.lock().unwrap();
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    received.lock().unwrap().push(Received {
                        helo: helo.clone(),
                        from: from.clone(),
                        mail_params: mail_params.clone(),
                        to: to.clone(),
                        data,
                        at: Instant::now(),
                    });
                    write.write_all(b"250 2.0.0 Ok: queued\r\n").await?;
                }
            }
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            write
                .write_all(b"502 5.5.2 Command not recognized\r\n")
                .await?;
        }
    }
}

fn address(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(line.len());
    line[start..end].to_string()
}
