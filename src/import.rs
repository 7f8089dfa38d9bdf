//! Getting customers and interactions in: streaming CSV / JSON Lines readers and
//! the batched, idempotent writes behind `herald import`.
//!
//! Files are read one row at a time and written in batches, each batch in its own
//! transaction, so memory stays flat whatever the file size. A bad row is reported
//! with its line number and skipped; it never aborts the import or half-applies.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::clock::{Millis, now_millis, parse_rfc3339};
use crate::customer::{
    CustomerKey, CustomerRecord, CustomerStatus, Email, InteractionRecord, parse_timezone,
};
use crate::store::customers::{CustomerWrite, StoredCustomer};
use crate::store::interactions::InteractionWrite;
use crate::store::triggers::TriggerRule;
use crate::store::{Store, StoreError};

/// Customers per batch: one look-up and one write transaction each.
pub const CUSTOMER_BATCH: usize = 1000;
/// Interactions per batch.
pub const INTERACTION_BATCH: usize = 5000;

/// The file formats `herald import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// `.csv` is CSV; `.jsonl`, `.ndjson` and `.json` are JSON Lines.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

/// Problems that stop an import before any row is read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:1: {message}")]
    Header { path: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hears about rows as they go, so the CLI can show progress and rejections live.
pub trait Observer {
    fn rejected(&mut self, error: &RowError);
    /// `rows` read so far and `bytes` of the file consumed.
    fn progress(&mut self, rows: u64, bytes: u64);
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Customers the new interactions entered into triggered campaigns.
    pub entered: u64,
}

// ---------------------------------------------------------------------------
// Reading rows

/// Counts bytes as they are read, for the progress bar.
struct Counting<R> {
    inner: R,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

type Parsed<T> = Result<T, String>;

/// A stream of (line, parsed row) from a customers file.
pub struct CustomerRows {
    inner: Box<dyn Iterator<Item = (u64, Parsed<CustomerRecord>)>>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CustomerRows {
    pub fn open(path: &Path, format: Format) -> Result<CustomerRows, ImportError> {
        let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
            path: path.display().to_string(),
            source,
        })?;
        CustomerRows::from_reader(file, format, &path.display().to_string())
    }

    /// Rows read from any reader, as [`CustomerRows::open`] reads a file; `name`
    /// is how a header error names the input. Used by the fuzz targets, which
    /// parse in memory.
    pub fn from_reader<R: Read + 'static>(
        reader: R,
        format: Format,
        name: &str,
    ) -> Result<CustomerRows, ImportError> {
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = Counting {
            inner: reader,
            bytes: bytes.clone(),
        };
        let inner: Box<dyn Iterator<Item = _>> = match format {
            Format::Csv => Box::new(csv_customers(reader, name)?),
            Format::JsonLines => Box::new(json_lines(reader).map(|(line, parsed)| {
                (
                    line,
                    parsed
                        .and_then(customer_from_json)
                        .and_then(storable_customer),
                )
            })),
        };
        Ok(CustomerRows { inner, bytes })
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Iterator for CustomerRows {
    type Item = (u64, Parsed<CustomerRecord>);
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

const KNOWN_COLUMNS: &[&str] = &[
    "email",
    "external_id",
    "first_name",
    "last_name",
    "status",
    "timezone",
    "created_at",
];

fn csv_customers<R: Read + 'static>(
    reader: R,
    path: &str,
) -> Result<impl Iterator<Item = (u64, Parsed<CustomerRecord>)> + use<R>, ImportError> {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(reader);
    let header_err = |message: String| ImportError::Header {
        path: path.to_string(),
        message,
    };
    let headers: Vec<String> = csv
        .headers()
        .map_err(|e| header_err(format!("cannot read the header row: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut seen = HashSet::new();
    for h in &headers {
        if h.is_empty() {
            return Err(header_err("the header row has an empty column name".into()));
        }
        if !seen.insert(h.to_ascii_lowercase()) {
            return Err(header_err(format!("column {h:?} appears twice")));
        }
    }
    if !seen.contains("email") {
        return Err(header_err(format!(
            "the header row has no email column (columns: {})",
            headers.join(", ")
        )));
    }
    for h in &headers {
        let mut prefix = String::new();
        for part in h.split('.') {
            if !prefix.is_empty() && seen.contains(&prefix.to_ascii_lowercase()) {
                return Err(header_err(format!(
                    "column {h:?} nests inside column {prefix:?}; use one or the other"
                )));
            }
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
        }
    }
    let expected = headers.len();
    Ok(csv.into_records().map(move |record| match record {
        Err(e) => {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            (line, Err(format!("unreadable row: {}", csv_error_text(&e))))
        }
        Ok(record) => {
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            if record.len() != expected {
                return (
                    line,
                    Err(format!("{} fields, expected {expected}", record.len())),
                );
            }
            (
                line,
                customer_from_csv(&headers, &record).and_then(storable_customer),
            )
        }
    }))
}

fn csv_error_text(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
        _ => e.to_string(),
    }
}

fn customer_from_csv(headers: &[String], record: &csv::StringRecord) -> Parsed<CustomerRecord> {
    let email_idx = headers
        .iter()
        .position(|h| h.eq_ignore_ascii_case("email"))
        .unwrap_or(0);
    let email = Email::parse(record.get(email_idx).unwrap_or("")).map_err(|e| e.to_string())?;
    let mut rec = CustomerRecord::new(email);
    for (name, cell) in headers.iter().zip(record.iter()) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if KNOWN_COLUMNS.contains(&lower.as_str()) {
            set_known(&mut rec, &lower, cell)?;
        } else {
            insert_path(&mut rec.attributes, name, infer(cell));
        }
    }
    Ok(rec)
}

fn set_known(rec: &mut CustomerRecord, field: &str, text: &str) -> Result<(), String> {
    match field {
        "email" => {}
        "external_id" => rec.external_id = Some(text.to_string()),
        "first_name" => rec.first_name = Some(text.to_string()),
        "last_name" => rec.last_name = Some(text.to_string()),
        "status" => rec.status = Some(text.parse::<CustomerStatus>().map_err(|e| e.to_string())?),
        "timezone" => rec.timezone = Some(parse_timezone(text).map_err(|e| e.to_string())?),
        "created_at" => {
            rec.created_at = Some(parse_time(text).ok_or_else(|| {
                format!("bad timestamp {text:?} in created_at: expected RFC 3339 (2026-11-23T09:00:00Z) or a date (2026-11-23)")
            })?)
        }
        _ => {}
    }
    Ok(())
}

/// RFC 3339, or a plain date taken as midnight UTC.
fn parse_time(text: &str) -> Option<Millis> {
    parse_rfc3339(text).or_else(|| {
        chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
    })
}

/// Keeps a CSV cell's type: canonical integers and decimals become numbers,
/// `true`/`false` booleans, everything else (including `007` and `1e5`) text.
pub fn infer(cell: &str) -> Value {
    match cell {
        "true" | "TRUE" | "True" => return Value::Bool(true),
        "false" | "FALSE" | "False" => return Value::Bool(false),
        _ => {}
    }
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let (int_part, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let canonical_int = !int_part.is_empty()
        && int_part.bytes().all(|b| b.is_ascii_digit())
        && (int_part == "0" || !int_part.starts_with('0'));
    match frac {
        None if canonical_int && int_part.len() <= 18 => cell
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(cell.to_string())),
        Some(f) if canonical_int && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            match cell.parse::<f64>() {
                Ok(x) if x.is_finite() => Value::from(x),
                _ => Value::String(cell.to_string()),
            }
        }
        _ => Value::String(cell.to_string()),
    }
}

/// `address.city` → `{"address": {"city": …}}`.
fn insert_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(inner) = child {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Non-blank lines of a JSON Lines file, each parsed as an object.
fn json_lines<R: Read>(
    reader: R,
) -> impl Iterator<Item = (u64, Parsed<Map<String, Value>>)> + use<R> {
    let mut lines = BufReader::with_capacity(1 << 16, reader).split(b'\n');
    let mut number = 0u64;
    std::iter::from_fn(move || {
        loop {
            number += 1;
            let raw = match lines.next()? {
                Ok(raw) => raw,
                Err(e) => return Some((number, Err(format!("unreadable line: {e}")))),
            };
            // A byte order mark may open the file (editors on Windows write one).
            let raw = match number {
                1 => raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&raw),
                _ => &raw[..],
            };
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t.trim(),
                Err(_) => return Some((number, Err("invalid UTF-8".to_string()))),
            };
            if text.is_empty() {
                continue;
            }
            let parsed = match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err("expected a JSON object".to_string()),
                Err(e) => Err(format!("invalid JSON: {e}")),
            };
            return Some((number, parsed));
        }
    })
}

fn text_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) if key.ends_with("id") => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "{key} must be a string, found {}",
            type_name(other)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn customer_from_json(mut obj: Map<String, Value>) -> Parsed<CustomerRecord> {
    let email = text_field(&obj, "email")?.ok_or("missing email")?;
    let mut rec = CustomerRecord::new(Email::parse(&email).map_err(|e| e.to_string())?);
    for field in KNOWN_COLUMNS {
        if let Some(text) = text_field(&obj, field)? {
            set_known(&mut rec, field, &text)?;
        }
        obj.remove(*field);
    }
    match obj.remove("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(attrs)) => rec.attributes.extend(attrs),
        Some(other) => {
            return Err(format!(
                "attributes must be an object, found {}",
                type_name(&other)
            ));
        }
    }
    rec.attributes
        .extend(obj.into_iter().filter(|(_, v)| !v.is_null()));
    Ok(rec)
}

const INTERACTION_KEYS: &[&str] = &["email", "external_id", "kind", "occurred_at", "data", "id"];

fn interaction_from_json(obj: Map<String, Value>) -> Parsed<InteractionRecord> {
    if let Some(key) = obj.keys().find(|k| !INTERACTION_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {key:?}; expected {}",
            INTERACTION_KEYS.join(", ")
        ));
    }
    let customer = match (text_field(&obj, "email")?, text_field(&obj, "external_id")?) {
        (Some(email), _) => CustomerKey::Email(Email::parse(&email).map_err(|e| e.to_string())?),
        (None, Some(id)) => CustomerKey::ExternalId(id),
        (None, None) => return Err("missing email or external_id".into()),
    };
    let kind = text_field(&obj, "kind")?.ok_or("missing kind")?;
    if kind.len() > 100 {
        return Err("kind is longer than 100 characters".into());
    }
    let occurred = text_field(&obj, "occurred_at")?.ok_or("missing occurred_at")?;
    let occurred_at = parse_rfc3339(&occurred).ok_or_else(|| {
        format!("bad timestamp {occurred:?} in occurred_at: expected RFC 3339 such as 2026-11-23T09:00:00Z")
    })?;
    let data = match obj.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(format!(
                "data must be an object, found {}",
                type_name(other)
            ));
        }
    };
    Ok(InteractionRecord {
        customer,
        kind,
        occurred_at,
        external_id: text_field(&obj, "id")?,
        data,
    })
}

/// PostgreSQL's `text` and `jsonb` cannot hold U+0000: a row carrying one is
/// rejected by line, on both backends alike, instead of failing its batch.
pub fn storable_customer(rec: CustomerRecord) -> Result<CustomerRecord, String> {
    let fields = [
        ("external_id", &rec.external_id),
        ("first_name", &rec.first_name),
        ("last_name", &rec.last_name),
    ];
    for (name, value) in fields {
        if value.as_deref().is_some_and(has_nul) {
            return Err(nul_in(name));
        }
    }
    if let Some(path) = nul_path(&rec.attributes) {
        return Err(nul_in(&path));
    }
    Ok(rec)
}

fn storable_interaction(rec: InteractionRecord) -> Parsed<InteractionRecord> {
    if has_nul(&rec.kind) {
        return Err(nul_in("kind"));
    }
    if rec.external_id.as_deref().is_some_and(has_nul) {
        return Err(nul_in("id"));
    }
    if let CustomerKey::ExternalId(x) = &rec.customer
        && has_nul(x)
    {
        return Err(nul_in("external_id"));
    }
    if let Some(path) = nul_path(&rec.data) {
        return Err(nul_in(&format!("data.{path}")));
    }
    Ok(rec)
}

fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

fn nul_in(field: &str) -> String {
    format!("{field} contains a NUL character (U+0000), which the database cannot store")
}

/// The dotted path of the first key or string in `map` holding a NUL.
pub(crate) fn nul_path(map: &Map<String, Value>) -> Option<String> {
    fn in_value(v: &Value) -> Option<String> {
        match v {
            Value::String(s) if has_nul(s) => Some(String::new()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| in_value(item).map(|rest| join(&i.to_string(), &rest))),
            Value::Object(m) => nul_path(m),
            _ => None,
        }
    }
    fn join(head: &str, rest: &str) -> String {
        if rest.is_empty() {
            head.to_string()
        } else {
            format!("{head}.{rest}")
        }
    }
    map.iter().find_map(|(k, v)| {
        if has_nul(k) {
            return Some(k.replace('\0', "\\0"));
        }
        in_value(v).map(|rest| join(k, &rest))
    })
}

// ---------------------------------------------------------------------------
// Writing batches

/// Merges an incoming record over what is stored.
///
/// Given fields replace stored ones; absent fields keep them. Attributes merge key
/// by key. An import may move a customer to unsubscribed, bounced or complained but
/// never back to subscribed: a routine CRM sync must not undo an unsubscribe.
/// The one merge rule: `herald import`, and a customer's patch
/// (`profile::patch`), both write what this returns.
pub fn merge(stored: Option<&StoredCustomer>, rec: CustomerRecord, now: Millis) -> CustomerWrite {
    match stored {
        None => CustomerWrite {
            email: rec.email,
            external_id: rec.external_id,
            first_name: rec.first_name,
            last_name: rec.last_name,
            status: rec.status.unwrap_or(CustomerStatus::Subscribed),
            timezone: rec.timezone,
            attributes: rec.attributes,
            created_at: rec.created_at.unwrap_or(now),
            updated_at: now,
        },
        Some(s) => {
            let mut attributes = s.attributes.clone();
            attributes.extend(rec.attributes);
            let status = match rec.status {
                Some(st) if st != CustomerStatus::Subscribed => st,
                _ => s.status,
            };
            CustomerWrite {
                email: s.email.clone(),
                external_id: rec.external_id.or_else(|| s.external_id.clone()),
                first_name: rec.first_name.or_else(|| s.first_name.clone()),
                last_name: rec.last_name.or_else(|| s.last_name.clone()),
                status,
                timezone: rec.timezone.or_else(|| s.timezone.clone()),
                attributes,
                created_at: s.created_at,
                updated_at: now,
            }
        }
    }
}

/// Whether writing `w` would change nothing but `updated_at`.
pub fn unchanged(stored: &StoredCustomer, w: &CustomerWrite) -> bool {
    stored.external_id == w.external_id
        && stored.first_name == w.first_name
        && stored.last_name == w.last_name
        && stored.status == w.status
        && stored.timezone == w.timezone
        && stored.attributes == w.attributes
}

/// Imports customers, upserting by email. Rejected rows go to the observer.
pub async fn import_customers(
    store: &Store,
    mut rows: CustomerRows,
    observer: &mut dyn Observer,
) -> Result<Summary, ImportError> {
    let mut summary = Summary::default();
    let mut batch: Vec<(u64, CustomerRecord)> = Vec::with_capacity(CUSTOMER_BATCH);
    let mut in_batch: HashSet<String> = HashSet::new();
    while let Some((line, parsed)) = rows.next() {
        summary.rows += 1;
        match parsed {
            Err(reason) => reject(&mut summary, observer, line, reason),
            Ok(rec) => {
                // A repeated email in one batch is applied after the earlier row, as
                // if the rows were imported one at a time.
                if !in_batch.insert(rec.email.as_str().to_string()) {
                    flush_customers(store, &mut batch, &mut summary, observer).await?;
                    in_batch.clear();
                    in_batch.insert(rec.email.as_str().to_string());
                }
                batch.push((line, rec));
                if batch.len() >= CUSTOMER_BATCH {
                    flush_customers(store, &mut batch, &mut summary, observer).await?;
                    in_batch.clear();
                    observer.progress(summary.rows, rows.bytes());
                }
            }
        }
    }
    flush_customers(store, &mut batch, &mut summary, observer).await?;
    observer.progress(summary.rows, rows.bytes());
    Ok(summary)
}

fn reject(summary: &mut Summary, observer: &mut dyn Observer, line: u64, reason: String) {
    summary.rejected += 1;
    observer.rejected(&RowError { line, reason });
}

async fn flush_customers(
    store: &Store,
    batch: &mut Vec<(u64, CustomerRecord)>,
    summary: &mut Summary,
    observer: &mut dyn Observer,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    let emails: Vec<&str> = batch.iter().map(|(_, r)| r.email.as_str()).collect();
    let ext_ids: Vec<&str> = batch
        .iter()
        .filter_map(|(_, r)| r.external_id.as_deref())
        .collect();
    let stored = store.customers_by_keys(&emails, &ext_ids).await?;
    let by_email: HashMap<&str, &StoredCustomer> =
        stored.iter().map(|c| (c.email.as_str(), c)).collect();
    let mut owner_of_ext: HashMap<String, String> = stored
        .iter()
        .filter_map(|c| {
            c.external_id
                .clone()
                .map(|x| (x, c.email.as_str().to_string()))
        })
        .collect();
    let now = now_millis();
    let mut writes = Vec::with_capacity(batch.len());
    let mut inserted = 0;
    for (line, rec) in batch.drain(..) {
        let email = rec.email.as_str().to_string();
        if let Some(ext) = &rec.external_id
            && let Some(owner) = owner_of_ext.get(ext).filter(|o| **o != email)
        {
            let reason = format!("external_id {ext:?} already belongs to {owner}");
            reject(summary, observer, line, reason);
            continue;
        }
        let existing = by_email.get(email.as_str()).copied();
        let write = merge(existing, rec, now);
        if let Some(s) = existing {
            // The external id this customer held is free again if it changed.
            if s.external_id != write.external_id
                && let Some(old) = &s.external_id
            {
                owner_of_ext.remove(old);
            }
        }
        if let Some(ext) = &write.external_id {
            owner_of_ext.insert(ext.clone(), email.clone());
        }
        match existing {
            Some(s) if unchanged(s, &write) => summary.unchanged += 1,
            Some(_) => {
                summary.updated += 1;
                writes.push(write);
            }
            None => {
                inserted += 1;
                writes.push(write);
            }
        }
    }
    summary.inserted += inserted;
    store.write_customers(&writes).await?;
    Ok(())
}

/// A stream of (line, parsed row) from an interactions JSON Lines file.
pub struct InteractionRows {
    inner: Box<dyn Iterator<Item = (u64, Parsed<InteractionRecord>)>>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl InteractionRows {
    pub fn open(path: &Path) -> Result<InteractionRows, ImportError> {
        let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(InteractionRows::from_reader(file))
    }

    /// Rows read from any reader, as [`InteractionRows::open`] reads a file.
    /// Used by the fuzz targets, which parse in memory.
    pub fn from_reader<R: Read + 'static>(reader: R) -> InteractionRows {
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = Counting {
            inner: reader,
            bytes: bytes.clone(),
        };
        let inner = Box::new(json_lines(reader).map(|(line, parsed)| {
            (
                line,
                parsed
                    .and_then(interaction_from_json)
                    .and_then(storable_interaction),
            )
        }));
        InteractionRows { inner, bytes }
    }
}

impl Iterator for InteractionRows {
    type Item = (u64, Parsed<InteractionRecord>);
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

/// Imports interactions. Rows naming an unknown customer are rejected; rows whose
/// `id` was imported before are counted as unchanged. New rows enter their
/// customers into the campaigns whose `rules` they match, in the transaction
/// that stores them ([`crate::store::triggers`]).
pub async fn import_interactions(
    store: &Store,
    rows: InteractionRows,
    rules: &[TriggerRule],
    observer: &mut dyn Observer,
) -> Result<Summary, ImportError> {
    let mut summary = Summary::default();
    let mut batch: Vec<(u64, InteractionRecord)> = Vec::with_capacity(INTERACTION_BATCH);
    let bytes = rows.bytes.clone();
    for (line, parsed) in rows.inner {
        summary.rows += 1;
        match parsed {
            Err(reason) => reject(&mut summary, observer, line, reason),
            Ok(rec) => {
                batch.push((line, rec));
                if batch.len() >= INTERACTION_BATCH {
                    flush_interactions(store, &mut batch, rules, &mut summary, observer).await?;
                    observer.progress(
                        summary.rows,
                        bytes.load(std::sync::atomic::Ordering::Relaxed),
                    );
                }
            }
        }
    }
    flush_interactions(store, &mut batch, rules, &mut summary, observer).await?;
    observer.progress(
        summary.rows,
        bytes.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(summary)
}

async fn flush_interactions(
    store: &Store,
    batch: &mut Vec<(u64, InteractionRecord)>,
    rules: &[TriggerRule],
    summary: &mut Summary,
    observer: &mut dyn Observer,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut emails = Vec::new();
    let mut ext_ids = Vec::new();
    for (_, r) in batch.iter() {
        match &r.customer {
            CustomerKey::Email(e) => emails.push(e.as_str()),
            CustomerKey::ExternalId(x) => ext_ids.push(x.as_str()),
        }
    }
    let keys = store.customer_keys(&emails, &ext_ids).await?;
    let mut ids: HashMap<CustomerKey, i64> = HashMap::with_capacity(keys.len() * 2);
    for k in keys {
        ids.insert(CustomerKey::Email(k.email), k.id);
        if let Some(x) = k.external_id {
            ids.insert(CustomerKey::ExternalId(x), k.id);
        }
    }
    let mut writes = Vec::with_capacity(batch.len());
    for (line, rec) in batch.drain(..) {
        let Some(&customer_id) = ids.get(&rec.customer) else {
            reject(
                summary,
                observer,
                line,
                format!("unknown customer ({})", rec.customer),
            );
            continue;
        };
        writes.push(InteractionWrite {
            customer_id,
            kind: rec.kind,
            occurred_at: rec.occurred_at,
            campaign: None,
            step: None,
            delivery_id: None,
            external_id: rec.external_id,
            data: rec.data,
        });
    }
    let now = now_millis();
    let (inserted, entered) = store
        .write_interactions_triggering(&writes, rules, now)
        .await?;
    summary.entered += entered.entries;
    summary.inserted += inserted;
    summary.unchanged += writes.len() as u64 - inserted;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn infers_types_conservatively() {
        assert_eq!(infer("42"), json!(42));
        assert_eq!(infer("-3.50"), json!(-3.5));
        assert_eq!(infer("0.5"), json!(0.5));
        assert_eq!(infer("true"), json!(true));
        assert_eq!(infer("007"), json!("007"));
        assert_eq!(infer("1e5"), json!("1e5"));
        assert_eq!(infer("12."), json!("12."));
        assert_eq!(infer("DE"), json!("DE"));
        assert_eq!(infer("99999999999999999999"), json!("99999999999999999999"));
    }

    #[test]
    fn nests_dotted_columns() {
        let mut m = Map::new();
        insert_path(&mut m, "address.city", json!("Berlin"));
        insert_path(&mut m, "address.zip", json!("10115"));
        assert_eq!(
            Value::Object(m),
            json!({"address": {"city": "Berlin", "zip": "10115"}})
        );
    }

    #[test]
    fn interaction_rows_are_checked() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let ok = interaction_from_json(obj(json!({
            "email": "A@X.COM", "kind": "purchase", "occurred_at": "2026-01-02T03:04:05Z",
            "data": {"amount": 3}
        })))
        .unwrap();
        assert_eq!(
            ok.customer,
            CustomerKey::Email(Email::parse("A@x.com").unwrap())
        );
        let err = |v| interaction_from_json(obj(v)).unwrap_err();
        assert!(
            err(json!({"kind": "x", "occurred_at": "2026-01-02T03:04:05Z"}))
                .contains("missing email")
        );
        assert!(
            err(json!({"email": "a@x.com", "kind": "x", "occurred_at": "yesterday"}))
                .contains("bad timestamp")
        );
        assert!(err(json!({"email": "a@x.com", "kind": "x", "occurred_at": "2026-01-02T03:04:05Z", "when": 1})).contains("unknown field \"when\""));
    }

    #[test]
    fn merge_never_resubscribes() {
        let stored = StoredCustomer {
            id: 1,
            email: Email::parse("a@x.com").expect("a valid address"),
            external_id: None,
            first_name: Some("Ann".into()),
            last_name: None,
            status: CustomerStatus::Unsubscribed,
            timezone: None,
            attributes: json!({"plan": "pro", "ltv": 3})
                .as_object()
                .unwrap()
                .clone(),
            created_at: 5,
            updated_at: 5,
        };
        let mut rec = CustomerRecord::new(Email::parse("a@x.com").unwrap());
        rec.status = Some(CustomerStatus::Subscribed);
        rec.attributes.insert("ltv".into(), json!(4));
        let w = merge(Some(&stored), rec, 9);
        assert_eq!(w.status, CustomerStatus::Unsubscribed);
        assert_eq!(w.first_name.as_deref(), Some("Ann"));
        assert_eq!(
            Value::Object(w.attributes),
            json!({"plan": "pro", "ltv": 4})
        );
        assert_eq!(w.created_at, 5);
    }
}
