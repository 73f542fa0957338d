//! Several at once keep one quota: `cargo run --features redis --example shared_quota`

use reqwest_polite::{Limit, Polite, RedisStore};

const API: &str = "http://127.0.0.1:8000/";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = RedisStore::connect("redis://127.0.0.1/").await?;
    let polite = Polite::builder()
        .limit(Limit::per_second(5)) // 5 a second to each host, for every process of the prefix
        .store(store.prefix("my-workers"))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite)
        .build();
    for _ in 0..10 {
        println!("{}", client.get(API).send().await?.status()); // 5 lines a second, fleet-wide
    }
    Ok(())
}
