//! What the `/v1` calls need of the database: what a group of calls names
//! ([`Store::load_known`]), a lock on those names across processes
//! ([`Store::lock_identities`], PostgreSQL), and a resolved
//! [`Plan`] written in one transaction ([`Store::apply_plan`]).
//!
//! Every statement is set-based (one multi-row statement per table and
//! chunk) except the moves of stored visitors, three statements each, which
//! happen once per person when they are first linked.
//!
//! | | SQLite | PostgreSQL |
//! |---|---|---|
//! | calls of other groups (other writers, other processes) about the same people | one writer | session advisory locks on the names the racing calls carry and on the visitors and customers those reach (hashed into [`LOCK_BUCKETS`], taken in order) |
//! | a visitor moved by another group anyway | one writer | the visitors a plan moves or changes are locked `FOR UPDATE`; one that is gone fails the group, which is resolved again |

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use sqlx::pool::PoolConnection;
use sqlx::types::Json;

use super::customers::{COLUMNS, CustomerRow, from_row, json_list};
use super::customers::{CustomerWrite, StoredCustomer};
use super::interactions::InteractionWrite;
use super::triggers::{Entered, Fresh, TriggerRule, enter_triggered};
use super::{Backend, Context, Pool, Store, StoreError, with_pool};
use crate::clock::Millis;
use crate::customer::Email;

/// The two kinds of id a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    Anonymous,
    User,
}

impl IdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Anonymous => "anonymous",
            IdKind::User => "user",
        }
    }

    /// The stored text, read back.
    pub fn from_stored(text: &str) -> Option<IdKind> {
        match text {
            "anonymous" => Some(IdKind::Anonymous),
            "user" => Some(IdKind::User),
            _ => None,
        }
    }
}

/// An id linked to a customer, as the export shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LinkedId {
    /// `anonymous` (a Segment anonymousId) or `user` (an earlier userId).
    #[schema(value_type = String, example = "anonymous")]
    pub kind: IdKind,
    pub value: String,
    #[serde(serialize_with = "crate::clock::rfc3339::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub linked_at: Millis,
}

impl serde::Serialize for IdKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whose an id is, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredOwner {
    Customer(i64),
    Visitor(String),
}

/// Whose an id is, in a plan: customers by email (a new one has no id yet).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Customer(Email),
    Visitor(String),
}

/// What a group of calls names: what the store loads, and on PostgreSQL
/// locks, before resolving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub anonymous: BTreeSet<String>,
    pub users: BTreeSet<String>,
    pub emails: BTreeSet<String>,
    /// Visitors by key: only locked (what the ids reached), never loaded by.
    pub visitors: BTreeSet<String>,
}

impl Keys {
    pub fn is_empty(&self) -> bool {
        self.anonymous.is_empty()
            && self.users.is_empty()
            && self.emails.is_empty()
            && self.visitors.is_empty()
    }

    /// Whether every key of `other` is one of these.
    pub fn covers(&self, other: &Keys) -> bool {
        other.anonymous.is_subset(&self.anonymous)
            && other.users.is_subset(&self.users)
            && other.emails.is_subset(&self.emails)
            && other.visitors.is_subset(&self.visitors)
    }

    /// These keys and `other`'s.
    pub fn extend(&mut self, other: Keys) {
        self.anonymous.extend(other.anonymous);
        self.users.extend(other.users);
        self.emails.extend(other.emails);
        self.visitors.extend(other.visitors);
    }

    /// Every key as one text per key, for the PostgreSQL advisory locks.
    pub fn lock_names(&self) -> impl Iterator<Item = String> + '_ {
        let a = self.anonymous.iter().map(|k| format!("a:{k}"));
        let u = self.users.iter().map(|k| format!("u:{k}"));
        let e = self.emails.iter().map(|k| format!("e:{k}"));
        let v = self.visitors.iter().map(|k| format!("v:{k}"));
        a.chain(u).chain(e).chain(v)
    }
}

/// What is stored about the keys: the customers they reach, the ids among
/// them that are known, and the visitors those ids belong to.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub customers: Vec<StoredCustomer>,
    pub identities: Vec<(IdKind, String, StoredOwner)>,
    pub visitors: Vec<(String, Map<String, Value>)>,
}

/// One event to store, for a customer or a visitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: String,
    pub occurred_at: Millis,
    /// The call's messageId.
    pub external_id: Option<String>,
    pub data: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisitorWrite {
    pub key: String,
    /// Whether the plan read it from the database (else it makes it).
    pub stored: bool,
    pub traits: Map<String, Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityWrite {
    pub kind: IdKind,
    pub value: String,
    pub owner: Owner,
}

/// What storing a group of calls writes, in this order: customers, then in
/// one transaction visitors, identities, visitors' events, the moves of
/// stored visitors, and customers' interactions.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// New customers, and stored ones that changed.
    pub customers: Vec<CustomerWrite>,
    /// The ids of the customers that were stored already.
    pub customer_ids: HashMap<Email, i64>,
    pub visitors: Vec<VisitorWrite>,
    pub identities: Vec<IdentityWrite>,
    pub visitor_events: Vec<(String, Row)>,
    /// A stored visitor, and whose everything of it becomes.
    pub moves: Vec<(String, Owner)>,
    pub interactions: Vec<(Email, Row)>,
    /// When the group was resolved: the time of the rows it makes.
    pub now: Millis,
}

/// Rows per multi-row statement: at most 8 parameters each, far below both
/// backends' limits.
const CHUNK: usize = 1000;

/// Names locked by one process until [`IdentityLock::release`]; a lock
/// dropped without it closes its connection, which releases them too.
pub struct IdentityLock {
    conn: Option<PoolConnection<sqlx::Postgres>>,
}

impl IdentityLock {
    /// Whether names are held (PostgreSQL, and some names).
    pub fn is_held(&self) -> bool {
        self.conn.is_some()
    }

    /// Releases the names.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take()
            && sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *conn)
                .await
                .is_err()
        {
            // Not known to be released: the connection must not go back.
            drop(conn.detach());
        }
    }
}

impl Drop for IdentityLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// How many advisory locks the names share. A name's lock is one of these
/// buckets, so a group takes at most this many, whatever its size: session
/// locks live in PostgreSQL's shared lock table (`max_locks_per_transaction`
/// × `max_connections` entries, 6,400 by default) beside every other lock,
/// and a group of 5,000 identifies would otherwise ask for 15,000.
const LOCK_BUCKETS: i64 = 256;
/// Where Herald's buckets start among the advisory-lock numbers ("HERALD").
const LOCK_BASE: i64 = 0x4845_5241_4c44_0000;

/// A name's advisory lock: its bucket by the first 8 bytes of its SHA-256.
fn lock_number(name: &str) -> i64 {
    let digest = Sha256::digest(format!("herald-identity:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    LOCK_BASE + i64::from_be_bytes(bytes).rem_euclid(LOCK_BUCKETS)
}

impl Store {
    /// On PostgreSQL, waits until no other process holds any of `keys`, and
    /// holds them (by their [`LOCK_BUCKETS`]); in ascending order, so two
    /// groups never wait on each other. On SQLite, where one process writes,
    /// and for no keys, nothing.
    pub async fn lock_identities(&self, keys: &Keys) -> Result<IdentityLock, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(IdentityLock { conn: None });
        };
        if keys.is_empty() {
            return Ok(IdentityLock { conn: None });
        }
        let mut numbers: Vec<i64> = keys.lock_names().map(|n| lock_number(&n)).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let conn = pool.acquire().await.context("locking identities")?;
        // Held before the statement runs: if it fails part way, the locks it
        // took go with the connection, which dropping the lock closes.
        let mut lock = IdentityLock { conn: Some(conn) };
        if let Some(conn) = lock.conn.as_mut() {
            // A function scan of the sorted array takes the locks in its order.
            sqlx::query("SELECT pg_advisory_lock(n) FROM unnest($1::bigint[]) AS t(n)")
                .bind(&numbers)
                .execute(&mut **conn)
                .await
                .context("locking identities")?;
        }
        Ok(lock)
    }

    /// The customers, ids and visitors `keys` reach.
    pub async fn load_known(&self, keys: &Keys) -> Result<Known, StoreError> {
        let b = self.backend();
        let list =
            |set: &BTreeSet<String>| json_list(&set.iter().map(String::as_str).collect::<Vec<_>>());
        let sql = format!(
            "SELECT kind, value, visitor, customer_id FROM identities \
             WHERE (kind = 'anonymous' AND {}) OR (kind = 'user' AND {})",
            b.in_json_array("value", 1),
            b.in_json_array("value", 2)
        );
        let (anonymous, users, emails) =
            (list(&keys.anonymous), list(&keys.users), list(&keys.emails));
        let rows: Vec<(String, String, Option<String>, Option<i64>)> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(&anonymous)
                .bind(&users)
                .fetch_all(pool)
                .await
        })
        .context("reading identities")?;
        let mut identities = Vec::with_capacity(rows.len());
        let mut customer_ids = Vec::new();
        let mut visitor_keys = Vec::new();
        for (kind, value, visitor, customer) in rows {
            let Some(kind) = IdKind::from_stored(&kind) else {
                continue;
            };
            let owner = match (visitor, customer) {
                (Some(v), _) => {
                    visitor_keys.push(v.clone());
                    StoredOwner::Visitor(v)
                }
                (None, Some(c)) => {
                    customer_ids.push(c);
                    StoredOwner::Customer(c)
                }
                (None, None) => continue,
            };
            identities.push((kind, value, owner));
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM customers WHERE {} UNION SELECT {COLUMNS} FROM customers WHERE {} \
             UNION SELECT {COLUMNS} FROM customers WHERE {}",
            b.in_json_array("email", 1),
            b.in_json_array("external_id", 2),
            b.in_json_ids("id", 3)
        );
        let ids = serde_json::to_string(&customer_ids).unwrap_or_else(|_| "[]".into());
        let rows: Vec<CustomerRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(&emails)
                .bind(&users)
                .bind(&ids)
                .fetch_all(pool)
                .await
        })
        .context("reading the customers of API calls")?;
        let customers = rows
            .into_iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()
            .context("reading the customers of API calls")?;
        let visitors = if visitor_keys.is_empty() {
            Vec::new()
        } else {
            let sql = format!(
                "SELECT key, traits FROM visitors WHERE {}",
                b.in_json_array("key", 1)
            );
            let keys = json_list(&visitor_keys.iter().map(String::as_str).collect::<Vec<_>>());
            let rows: Vec<(String, Json<Map<String, Value>>)> = with_pool!(self, |pool| {
                sqlx::query_as(AssertSqlSafe(&*sql))
                    .bind(&keys)
                    .fetch_all(pool)
                    .await
            })
            .context("reading visitors")?;
            rows.into_iter().map(|(k, t)| (k, t.0)).collect()
        };
        Ok(Known {
            customers,
            identities,
            visitors,
        })
    }

    /// Writes `plan` after its customers ([`Store::write_customers`]):
    /// visitors, ids, visitors' events, moves and interactions, in one
    /// transaction. `ids` has every customer the plan names. The interactions
    /// new to the customers (their own events and those moved from visitors)
    /// enter them into the campaigns whose `rules` they match, in the same
    /// transaction ([`super::triggers`]). Returns how many events were new (a
    /// retried call's are not) and what the triggers did.
    pub async fn apply_plan(
        &self,
        plan: &Plan,
        ids: &HashMap<Email, i64>,
        rules: &[TriggerRule],
    ) -> Result<(u64, Entered), StoreError> {
        let id_of = |e: &Email| {
            ids.get(e).copied().ok_or_else(|| {
                StoreError::internal(
                    "storing API calls",
                    format!("the customer {e} was written but not found"),
                )
            })
        };
        let interactions = plan
            .interactions
            .iter()
            .map(|(e, row)| {
                Ok(InteractionWrite {
                    customer_id: id_of(e)?,
                    kind: row.kind.clone(),
                    occurred_at: row.occurred_at,
                    campaign: None,
                    step: None,
                    delivery_id: None,
                    external_id: row.external_id.clone(),
                    data: row.data.clone(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let identities = plan
            .identities
            .iter()
            .map(|w| {
                let (visitor, customer) = match &w.owner {
                    Owner::Visitor(v) => (Some(v.as_str()), None),
                    Owner::Customer(e) => (None, Some(id_of(e)?)),
                };
                Ok((w.kind.as_str(), w.value.as_str(), visitor, customer))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let moves = plan
            .moves
            .iter()
            .map(|(v, owner)| {
                Ok(match owner {
                    Owner::Customer(e) => (v.as_str(), Err(id_of(e)?)),
                    Owner::Visitor(w) => (v.as_str(), Ok(w.as_str())),
                })
            })
            .collect::<Result<Vec<(&str, Result<&str, i64>)>, StoreError>>()?;
        let b = self.backend();
        let now = plan.now;
        let _gate = self.write_gate().await;
        let mut new_events = 0;
        // The interactions new to customers, when a trigger may look at them.
        let mut fresh: Vec<Fresh> = Vec::new();
        let collect = !rules.is_empty();
        let entered = with_pool!(self, |pool| {
            let mut tx = pool.begin().await.context("starting to store API calls")?;
            if b == Backend::Postgres {
                // The stored visitors the plan moves or changes must still be
                // there: one moved by a concurrent group is a plan of the past,
                // and the group is resolved again.
                let mut expected: Vec<&str> = plan.moves.iter().map(|(v, _)| v.as_str()).collect();
                expected.extend(
                    plan.visitors
                        .iter()
                        .filter(|v| v.stored)
                        .map(|v| v.key.as_str()),
                );
                expected.sort_unstable();
                expected.dedup();
                if !expected.is_empty() {
                    let found: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT key FROM visitors WHERE {} ORDER BY key FOR UPDATE",
                        b.in_json_array("key", 1)
                    )))
                    .bind(json_list(&expected))
                    .fetch_all(&mut *tx)
                    .await
                    .context("locking visitors")?;
                    if found.len() != expected.len() {
                        return Err(StoreError::internal(
                            "storing API calls",
                            "a visitor was merged by another group meanwhile; resolving again",
                        ));
                    }
                }
            }
            for chunk in plan.visitors.chunks(CHUNK) {
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO visitors (key, traits, created_at, updated_at) VALUES {} \
                     ON CONFLICT (key) DO UPDATE SET traits = excluded.traits, \
                     updated_at = excluded.updated_at",
                    b.values_list(chunk.len(), 4)
                )));
                for v in chunk {
                    q = q
                        .bind(&v.key)
                        .bind(Json(&v.traits))
                        .bind(v.created_at)
                        .bind(v.updated_at);
                }
                q.execute(&mut *tx).await.context("writing visitors")?;
            }
            for chunk in identities.chunks(CHUNK) {
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO identities (kind, value, visitor, customer_id, created_at) \
                     VALUES {} ON CONFLICT (kind, value) DO UPDATE SET \
                     visitor = excluded.visitor, customer_id = excluded.customer_id",
                    b.values_list(chunk.len(), 5)
                )));
                for (kind, value, visitor, customer) in chunk {
                    q = q
                        .bind(*kind)
                        .bind(*value)
                        .bind(*visitor)
                        .bind(*customer)
                        .bind(now);
                }
                q.execute(&mut *tx).await.context("writing identities")?;
            }
            for chunk in plan.visitor_events.chunks(CHUNK) {
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO visitor_events (visitor, kind, occurred_at, external_id, data) \
                     VALUES {} ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING",
                    b.values_list(chunk.len(), 5)
                )));
                for (v, row) in chunk {
                    q = q
                        .bind(v)
                        .bind(&row.kind)
                        .bind(row.occurred_at)
                        .bind(&row.external_id)
                        .bind(Json(&row.data));
                }
                new_events += q
                    .execute(&mut *tx)
                    .await
                    .context("writing visitors' events")?
                    .rows_affected();
            }
            for (visitor, into) in &moves {
                match into {
                    Err(customer) => {
                        let moved = sqlx::query(
                            "INSERT INTO interactions (customer_id, kind, occurred_at, external_id, data) \
                             SELECT CAST($1 AS BIGINT), kind, occurred_at, external_id, data \
                             FROM visitor_events WHERE visitor = $2 \
                             ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING \
                             RETURNING id, kind",
                        )
                        .bind(*customer)
                        .bind(*visitor)
                        .fetch_all(&mut *tx)
                        .await
                        .context("moving a visitor's events to its customer")?;
                        if collect {
                            for row in &moved {
                                fresh.push(
                                    Fresh::from_row(row)
                                        .context("moving a visitor's events to its customer")?,
                                );
                            }
                        }
                        sqlx::query(
                            "UPDATE identities SET visitor = NULL, customer_id = $1 WHERE visitor = $2",
                        )
                        .bind(*customer)
                        .bind(*visitor)
                        .execute(&mut *tx)
                        .await
                        .context("linking a visitor's ids to its customer")?;
                    }
                    Ok(other) => {
                        sqlx::query("UPDATE visitor_events SET visitor = $1 WHERE visitor = $2")
                            .bind(*other)
                            .bind(*visitor)
                            .execute(&mut *tx)
                            .await
                            .context("moving a visitor's events")?;
                        sqlx::query("UPDATE identities SET visitor = $1 WHERE visitor = $2")
                            .bind(*other)
                            .bind(*visitor)
                            .execute(&mut *tx)
                            .await
                            .context("moving a visitor's ids")?;
                    }
                }
                sqlx::query("DELETE FROM visitors WHERE key = $1")
                    .bind(*visitor)
                    .execute(&mut *tx)
                    .await
                    .context("removing a merged visitor")?;
            }
            new_events += super::interactions::insert_interactions!(
                b,
                tx,
                &interactions,
                collect.then_some(&mut fresh)
            );
            let entered = enter_triggered!(b, tx, rules, &fresh, now);
            tx.commit().await.context("committing API calls")?;
            Ok::<_, StoreError>(entered)
        })?;
        Ok((new_events, entered))
    }

    /// The ids the API linked to a customer (anonymous ids, earlier user
    /// ids), oldest first: part of what is held on the person.
    pub async fn identities_of(&self, customer_id: i64) -> Result<Vec<LinkedId>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT kind, value, created_at FROM identities WHERE customer_id = $1 \
                 ORDER BY created_at, kind, value",
            )
            .bind(customer_id)
            .fetch_all(pool)
            .await
        })
        .context("reading a customer's linked ids")?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, value, at)| {
                IdKind::from_stored(&kind).map(|kind| LinkedId {
                    kind,
                    value,
                    linked_at: at,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_numbers_are_stable_and_bounded() {
        assert_eq!(lock_number("a:x"), lock_number("a:x"));
        assert_ne!(lock_number("a:x"), lock_number("u:x"));
        let buckets: std::collections::HashSet<i64> = (0..10_000)
            .map(|i| lock_number(&format!("u:{i}")))
            .collect();
        assert_eq!(buckets.len(), LOCK_BUCKETS as usize);
        assert!(
            buckets
                .iter()
                .all(|b| (LOCK_BASE..LOCK_BASE + LOCK_BUCKETS).contains(b))
        );
    }
}
