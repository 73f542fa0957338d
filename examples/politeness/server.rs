//! Loopback HTTP servers that log every request reaching them, stopped when dropped.
//!
//! All the servers of one run share one thread and one single-threaded runtime of their own, so
//! the server's clock and scheduling do not depend on the client under test, and a scenario with
//! fifty hosts costs one thread, not fifty.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What a server answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
        }
    }

    pub fn ok() -> Self {
        Self::status(200)
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// How a server decides its answer: the quota it enforces, or the outage it suffers.
pub trait Rule: Send + Sync {
    /// The answer to a request that arrived at `now`.
    fn reply(&self, now: Instant) -> Reply;

    /// The answer to a request for `path` with `headers` that arrived at `now`; rules that
    /// meter per route or per credential read them.
    fn reply_to(&self, now: Instant, _path: &str, _headers: &http::HeaderMap) -> Reply {
        self.reply(now)
    }
}

/// One request that reached a server: when (after its body arrived) and what it was answered.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    pub status: u16,
}

/// Every request that reached one server.
#[derive(Debug, Default)]
struct Log {
    arrivals: Mutex<Vec<Arrival>>,
}

impl Log {
    fn push(&self, arrival: Arrival) {
        // a poisoned lock only means another handler panicked; the log itself is still sound
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.push(arrival);
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Running servers, one per rule, each on its own 127.0.0.1 port.
pub struct Servers {
    addrs: Vec<SocketAddr>,
    logs: Vec<Arc<Log>>,
    /// Dropping it ends the servers' runtime, and with it every listener and connection.
    _stop: oneshot::Sender<()>,
}

impl Servers {
    /// Start one server per rule.
    pub fn start(rules: Vec<Arc<dyn Rule>>) -> std::io::Result<Servers> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut listeners = Vec::with_capacity(rules.len());
        let mut addrs = Vec::with_capacity(rules.len());
        {
            let _context = runtime.enter();
            for _ in &rules {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                listener.set_nonblocking(true)?;
                addrs.push(listener.local_addr()?);
                listeners.push(TcpListener::from_std(listener)?);
            }
        }
        let logs: Vec<Arc<Log>> = rules.iter().map(|_| Arc::default()).collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = listeners.into_iter().zip(rules).zip(logs.clone());
        std::thread::spawn(move || {
            runtime.block_on(async move {
                for ((listener, rule), log) in served {
                    tokio::spawn(accept(listener, rule, log));
                }
                // resolves when `Servers` is dropped
                let _ = stopped.await;
            });
        });
        Ok(Servers {
            addrs,
            logs,
            _stop: stop,
        })
    }

    /// The URL of server `i`.
    pub fn url(&self, i: usize) -> Url {
        let text = format!("http://{}/", self.addrs[i]);
        Url::parse(&text).expect("a socket address makes a valid URL")
    }

    /// The URLs of all servers, in the order of their rules.
    pub fn urls(&self) -> Vec<Url> {
        (0..self.addrs.len()).map(|i| self.url(i)).collect()
    }

    /// `host:port` of every server, in the order of their rules.
    pub fn authorities(&self) -> Vec<String> {
        self.addrs.iter().map(ToString::to_string).collect()
    }

    /// Every request that reached any of the servers, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        let mut all: Vec<Arrival> = self.logs.iter().flat_map(|log| log.arrivals()).collect();
        all.sort_by_key(|a| a.at);
        all
    }
}

async fn accept(listener: TcpListener, rule: Arc<dyn Rule>, log: Arc<Log>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // out of file descriptors, or a connection reset before accept: try again soon
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let (rule, log) = (Arc::clone(&rule), Arc::clone(&log));
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let (rule, log) = (Arc::clone(&rule), Arc::clone(&log));
                async move { Ok::<_, Infallible>(answer(req, &*rule, &log).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
    rule: &dyn Rule,
    log: &Log,
) -> hyper::Response<Full<Bytes>> {
    // a request counts once its body has fully arrived
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let at = Instant::now();
    let reply = rule.reply_to(at, parts.uri.path(), &parts.headers);
    log.push(Arrival {
        at,
        status: reply.status,
    });
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value.as_str());
    }
    response
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("rules build valid responses")
}
