//! Prints the open-pixel path (`/o/TOKEN.gif`) of up to N sent deliveries, one
//! per line, signed as Herald signs them: the inputs of `bench/tracking.sh`.
//!
//!     HERALD_DATABASE_URL=… HERALD_SECRET=… cargo run --release --example tokens -- 20000
//!
//! The keys are those of the database (`HERALD_SECRET`, else the key generated
//! for it), exactly as `herald run` and `herald serve` use them.

use herald::clock::now_millis;
use herald::config::DEFAULT_DATABASE_URL;
use herald::store::Store;
use herald::token::{Purpose, Signer, Token};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: i64 = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("N: {e}"))?,
        None => 10_000,
    };
    let url =
        std::env::var("HERALD_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let secrets: Vec<String> = std::env::var("HERALD_SECRET")
        .map(|s| {
            s.split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let store = Store::open(&url).await?;
    let signer = Signer::new(&store.tracking_keys(&secrets, now_millis()).await?)?;
    let mut out = String::new();
    for (delivery_id, customer_id) in store.sent_deliveries(limit).await? {
        let token = signer.sign(&Token {
            purpose: Purpose::Open,
            delivery_id: u64::try_from(delivery_id)?,
            customer_id: u64::try_from(customer_id)?,
            link: None,
        });
        out.push_str(&format!("/o/{token}.gif\n"));
    }
    store.close().await;
    print!("{out}");
    Ok(())
}
