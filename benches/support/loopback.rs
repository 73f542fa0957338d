//! What the overhead benches share: a loopback HTTP/1 server (hyper on its own thread and
//! runtime, answering 200 "ok" at once) and the middleware stacks they compare.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_polite::{Limit, Polite};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;

/// Serve 200 "ok" on 127.0.0.1 (a free port) until the process ends.
pub fn serve_ok() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(|_req: hyper::Request<Incoming>| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// The middleware stacks compared with bare reqwest, each on its own `reqwest::Client`: the
/// empty reqwest-middleware stack, ours with defaults (its `Polite` is returned too, for its
/// snapshot), ours with a limit so high that a slot is always free (the pacing overhead, not
/// waiting), and reqwest-retry with 3 retries.
pub fn stacks() -> (Polite, Vec<(&'static str, ClientWithMiddleware)>) {
    stacks_ending_with(|builder| builder)
}

/// [`stacks`], each ending with what `end` adds (a middleware that answers in the process, to
/// measure the stacks' own CPU without the network).
pub fn stacks_ending_with(
    end: impl Fn(ClientBuilder) -> ClientBuilder,
) -> (Polite, Vec<(&'static str, ClientWithMiddleware)>) {
    let stack = || ClientBuilder::new(reqwest::Client::new());
    let polite = Polite::new();
    let with_limit = Polite::builder()
        .limit(Limit::per_second(1_000_000))
        .build();
    let retry = RetryTransientMiddleware::new_with_policy(
        ExponentialBackoff::builder().build_with_max_retries(3),
    );
    let stacks = vec![
        ("reqwest_middleware_empty", end(stack()).build()),
        ("polite_defaults", end(stack().with(polite.clone())).build()),
        ("polite_with_limit", end(stack().with(with_limit)).build()),
        ("reqwest_retry", end(stack().with(retry)).build()),
    ];
    (polite, stacks)
}
