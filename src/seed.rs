//! Deterministic synthetic customers and interactions for demos, tests and benchmarks.
//!
//! Customer `i` of seed `S` depends only on `(S, i)` and the anchor time, never on
//! `N` or the backend: seeding 1,000 customers gives the first 1,000 of seeding
//! 2,000, and the same arguments give the same rows on SQLite and PostgreSQL.

use serde_json::{Map, Value, json};

use crate::clock::Millis;
use crate::customer::CustomerStatus;
use crate::store::seed::{SeedCustomer, SeedInteraction};
use crate::store::{Backend, Store, StoreError};

const DAY: i64 = 86_400_000;

/// SplitMix64: tiny, fast, and fixed forever, so seeded data never changes with a
/// dependency upgrade.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// An item chosen by integer weights.
    fn weighted<'a, T>(&mut self, items: &'a [(T, u64)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let mut roll = self.below(total);
        for (item, w) in items {
            if roll < *w {
                return item;
            }
            roll -= w;
        }
        &items[items.len() - 1].0
    }
}

const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Karla",
    "Lukas", "Mia", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
    "Wim", "Xenia", "Yusuf", "Zoe", "Léa", "Søren", "José", "Chloé",
];
const LAST: &[&str] = &[
    "Adams",
    "Becker",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ivanova",
    "Jansen",
    "Keller",
    "Larsen",
    "Müller",
    "Novak",
    "Olsen",
    "Peters",
    "Quint",
    "Rossi",
    "Schmidt",
    "Taylor",
    "Urban",
    "Vogel",
    "Weber",
    "Xu",
    "Young",
    "Zimmermann",
];
/// (country, time zone, city, weight)
const PLACES: &[((&str, &str, &str), u64)] = &[
    (("US", "America/New_York", "New York"), 20),
    (("US", "America/Los_Angeles", "San Francisco"), 10),
    (("DE", "Europe/Berlin", "Berlin"), 15),
    (("AT", "Europe/Vienna", "Vienna"), 5),
    (("CH", "Europe/Zurich", "Zurich"), 5),
    (("GB", "Europe/London", "London"), 10),
    (("FR", "Europe/Paris", "Paris"), 8),
    (("NL", "Europe/Amsterdam", "Amsterdam"), 5),
    (("ES", "Europe/Madrid", "Madrid"), 5),
    (("IT", "Europe/Rome", "Rome"), 5),
    (("SE", "Europe/Stockholm", "Stockholm"), 3),
    (("CA", "America/Toronto", "Toronto"), 4),
    (("AU", "Australia/Sydney", "Sydney"), 3),
    (("JP", "Asia/Tokyo", "Tokyo"), 2),
];
const PLANS: &[(&str, u64)] = &[("free", 55), ("basic", 25), ("pro", 15), ("enterprise", 5)];
const STATUSES: &[(CustomerStatus, u64)] = &[
    (CustomerStatus::Subscribed, 94),
    (CustomerStatus::Unsubscribed, 4),
    (CustomerStatus::Bounced, 1),
    (CustomerStatus::Complained, 1),
];
/// (product, category, price in cents)
const PRODUCTS: &[(&str, &str, i64)] = &[
    ("Trail Running Shoes", "shoes", 12_900),
    ("City Sneakers", "shoes", 8_900),
    ("Rain Jacket", "outerwear", 15_900),
    ("Down Vest", "outerwear", 11_900),
    ("Merino T-Shirt", "apparel", 4_900),
    ("Hiking Socks", "apparel", 1_490),
    ("Daypack 20L", "bags", 7_900),
    ("Travel Duffel", "bags", 9_900),
    ("Water Bottle", "accessories", 1_990),
    ("Headlamp", "accessories", 3_490),
    ("Gift Card", "gift", 5_000),
];
const PAGES: &[&str] = &[
    "/",
    "/shoes",
    "/outerwear",
    "/apparel",
    "/bags",
    "/accessories",
    "/sale",
    "/blog",
    "/account",
    "/cart",
    "/help",
];
const TOPICS: &[&str] = &[
    "shipping", "returns", "sizing", "payment", "account", "product",
];

/// Generates customer `index` (0-based) of `seed`, relative to `anchor` (the
/// seeded "now": every timestamp lies within the two years before it).
pub fn customer(seed: u64, index: u64, anchor: Millis) -> SeedCustomer {
    let mut rng = Rng::new(seed, index);
    let first = *rng.pick(FIRST);
    let last = *rng.pick(LAST);
    let (country, timezone, city) = *rng.weighted(PLACES);
    let plan = *rng.weighted(PLANS);
    let status = *rng.weighted(STATUSES);
    let created_at = anchor - rng.range(DAY, 730 * DAY);
    let tld = *rng.pick(&["com", "org", "net"]);
    let email = format!(
        "{}.{}.{index}@example.{tld}",
        ascii_lower(first),
        ascii_lower(last)
    );

    let mut interactions = Vec::new();
    let mut lifetime_cents = 0i64;
    let purchases = rng.below(5);
    for _ in 0..purchases {
        let (product, category, price) = *rng.pick(PRODUCTS);
        let quantity = 1 + rng.below(3) as i64;
        let cents = price * quantity;
        lifetime_cents += cents;
        interactions.push(SeedInteraction {
            kind: "purchase",
            occurred_at: rng.range(created_at, anchor),
            data: object(json!({
                "amount": cents as f64 / 100.0,
                "currency": if country == "US" || country == "CA" { "USD" } else { "EUR" },
                "product": product,
                "category": category,
                "quantity": quantity,
            })),
        });
    }
    for _ in 0..rng.below(16) {
        interactions.push(SeedInteraction {
            kind: "page_view",
            occurred_at: rng.range(created_at, anchor),
            data: object(json!({ "path": rng.pick(PAGES) })),
        });
    }
    if rng.chance(30) {
        interactions.push(SeedInteraction {
            kind: "support_ticket",
            occurred_at: rng.range(created_at, anchor),
            data: object(json!({
                "topic": rng.pick(TOPICS),
                "priority": rng.pick(&["low", "normal", "high"]),
                "resolved": rng.chance(80),
            })),
        });
    }
    interactions.sort_by_key(|i| i.occurred_at);

    let attributes = object(json!({
        "country": country,
        "city": city,
        "plan": plan,
        "lifetime_value": lifetime_cents as f64 / 100.0,
        "orders": purchases,
        "vip": lifetime_cents >= 40_000,
        "newsletter": rng.chance(70),
        "language": match country { "DE" | "AT" | "CH" => "de", "FR" => "fr", "ES" => "es", "IT" => "it", _ => "en" },
        "address": { "city": city, "country": country },
    }));
    SeedCustomer {
        email,
        external_id: format!("S{seed}-{index}"),
        first_name: first.to_string(),
        last_name: last.to_string(),
        status,
        timezone,
        created_at,
        attributes,
        interactions,
    }
}

fn ascii_lower(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'é' => 'e',
            'ø' => 'o',
            'ü' => 'u',
            c => c.to_ascii_lowercase(),
        })
        .filter(char::is_ascii_alphabetic)
        .collect()
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Today at 00:00 UTC: the default anchor, so demo data always looks recent.
pub fn default_anchor() -> Millis {
    let now = crate::clock::now_millis();
    now - now.rem_euclid(DAY)
}

/// Customers per generated batch (and per write transaction).
const BATCH: u64 = 2000;
/// From this many customers on, the interaction indexes are dropped for the
/// load and built again after it.
const BULK: u64 = 100_000;

/// What a seed run added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedTotals {
    pub customers: u64,
    pub interactions: u64,
}

/// Seeds customers `0..count` of `seed`. Generation runs on a blocking thread one
/// batch ahead of the database writes; at most two batches are in memory at once.
pub async fn run(
    store: &Store,
    seed: u64,
    count: u64,
    anchor: Millis,
    mut progress: impl FnMut(u64),
) -> Result<SeedTotals, StoreError> {
    let bulk = count >= BULK;
    if bulk {
        store.drop_interaction_indexes().await?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Vec<SeedCustomer>)>(2);
    let generator = tokio::task::spawn_blocking(move || {
        let mut start = 0;
        while start < count {
            let end = (start + BATCH).min(count);
            let batch = (start..end).map(|i| customer(seed, i, anchor)).collect();
            if tx.blocking_send((end, batch)).is_err() {
                return;
            }
            start = end;
        }
    });
    // PostgreSQL takes two batches at once (one backend inserts customers while
    // another copies interactions); SQLite has one writer.
    let writers = match store.backend() {
        Backend::Postgres => 4,
        Backend::Sqlite => 1,
    };
    let batches = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut written = std::pin::pin!({
        use futures_util::StreamExt;
        batches
            .map(|(done, batch)| async move { store.write_seed(&batch).await.map(|r| (done, r)) })
            .buffer_unordered(writers)
    });
    let mut totals = SeedTotals::default();
    let mut furthest = 0;
    while let Some(result) = futures_util::StreamExt::next(&mut written.as_mut()).await {
        let (done, (c, i)) = result?;
        totals.customers += c;
        totals.interactions += i;
        furthest = furthest.max(done);
        progress(furthest);
    }
    // The generator only ends by finishing or by the receiver going away.
    let _ = generator.await;
    if bulk {
        store.ensure_indexes().await?;
        store.analyze_after_bulk_load().await?;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_independent_of_count() {
        let a = customer(7, 123, 1_800_000_000_000);
        let b = customer(7, 123, 1_800_000_000_000);
        assert_eq!(a, b);
        assert_ne!(a, customer(8, 123, 1_800_000_000_000));
        assert!(crate::customer::Email::parse(&a.email).is_ok());
    }

    #[test]
    fn about_ten_interactions_each_within_lifetime() {
        let anchor = 1_800_000_000_000;
        let n = 5_000;
        let mut total = 0;
        for i in 0..n {
            let c = customer(1, i, anchor);
            for x in &c.interactions {
                assert!(x.occurred_at >= c.created_at && x.occurred_at <= anchor);
            }
            total += c.interactions.len();
        }
        let mean = total as f64 / n as f64;
        assert!((9.0..11.0).contains(&mean), "mean {mean}");
    }
}
