//! A `redis-server` of our own, for the tests, benches and examples that need one: started from
//! PATH on a free loopback port, no persistence, killed on drop (resumed first if stopped).
//!
//! One file, included with `#[path]` by `tests/shared.rs`, `src/store/redis/tests.rs`,
//! `benches/redis.rs` and `examples/fleet.rs`; each uses part of it.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Start one on a free port and wait (at most 10 s) until it answers `PING`.
    pub fn start() -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|err| format!("no free loopback port: {err}"))?
            .port();
        Self::on_port(port)
    }

    /// Start one on `port`.
    pub fn on_port(port: u16) -> Result<RedisServer, String> {
        Self::spawn(port, &["--port", &port.to_string()], true)
    }

    /// Start one with `args` choosing its port(s) (`port` is the one to talk to); `ping`: wait
    /// for a plain-text `PING` to be answered, else only for the port to accept.
    pub fn spawn(port: u16, args: &[&str], ping: bool) -> Result<RedisServer, String> {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => "redis-server is not on PATH: install it \
                     (apt-get install redis-server, brew install redis)"
                    .to_string(),
                _ => format!("could not start redis-server: {err}"),
            })?;
        let server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(if ping {
            server.pings()
        } else {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not answer within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// True when it answers a plain-text `PING`.
    pub fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Send the process a signal (`-STOP`, `-CONT`).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Kill it now.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // a stopped (SIGSTOP) server must be resumed to die cleanly
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.stop();
    }
}
