//! A `redis-server` of our own, for the tests, benches and examples that need one: started from
//! PATH on a free loopback port, no persistence, killed on drop (resumed first if stopped).
//! [`RedisCluster`]: three of them joined into a Redis Cluster by `redis-cli` (also from PATH).
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

/// A Redis Cluster of our own: three primaries (no replicas) on free loopback ports, each a
/// `redis-server` from PATH, joined by `redis-cli --cluster create`; killed on drop, their
/// `nodes-<port>.conf` files removed.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Start three nodes, form the cluster, and wait (at most 20 s) until every node says
    /// `cluster_state:ok`.
    pub fn start() -> Result<RedisCluster, String> {
        Self::start_with(3)
    }

    /// The same with `n` primaries (3 at least: `redis-cli --cluster create` wants them).
    pub fn start_with(n: usize) -> Result<RedisCluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "reqwest-polite-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        // the guard from here on, so a failure below still kills what started
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        // A node also listens on its cluster bus, its port + 10000: a port above 55535 makes
        // redis-server exit, and the bus port must be free too. Hold every port (and its bus
        // port) until all are chosen, so no two nodes, nor a parallel test, get the same one.
        let mut held: Vec<TcpListener> = Vec::new();
        let mut ports: Vec<u16> = Vec::new();
        for _ in 0..1000 {
            if ports.len() == n {
                break;
            }
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|err| format!("no free loopback port: {err}"))?;
            let port = listener
                .local_addr()
                .map_err(|err| format!("no free loopback port: {err}"))?
                .port();
            let bus = port
                .checked_add(10_000)
                .and_then(|bus| TcpListener::bind(("127.0.0.1", bus)).ok());
            held.push(listener);
            if let Some(bus) = bus {
                held.push(bus);
                ports.push(port);
            }
        }
        if ports.len() < n {
            return Err(format!(
                "found {} of {n} loopback ports with a free bus port",
                ports.len()
            ));
        }
        drop(held);
        for &port in &ports {
            let conf = cluster.dir.join(format!("nodes-{port}.conf"));
            let dir = cluster.dir.to_string_lossy().into_owned();
            let node = RedisServer::spawn(
                port,
                &[
                    "--port",
                    &port.to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf.to_string_lossy(),
                    "--dir",
                    &dir,
                ],
                true,
            )?;
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => "redis-cli is not on PATH: install it \
                     (apt-get install redis-tools, brew install redis)"
                    .to_string(),
                _ => format!("could not run redis-cli: {err}"),
            })?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|err| format!("could not run redis-cli: {err}"))?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the cluster on ports {ports:?} did not reach cluster_state:ok within \
                         20 s (node {port}: {})",
                        String::from_utf8_lossy(&info.stdout)
                            .lines()
                            .next()
                            .unwrap_or("")
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// A `redis://` URL for each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Kill every node now.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear(); // each node kills its process
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
