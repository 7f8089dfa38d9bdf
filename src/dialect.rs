//! The pieces of SQL that differ between SQLite and PostgreSQL, side by side.
//!
//! Pure text: [`Backend`] says which database a statement is written for, and
//! its methods return the fragments that differ (JSON access, text comparison,
//! array parameters, placeholders). The segment compiler writes predicates with
//! them and `store` writes and runs its statements with them; nothing here
//! touches a database.

/// Which database a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The statement that begins a transaction which reads before it writes.
    /// SQLite must take the write lock at the start (`IMMEDIATE`): a
    /// transaction that read first and then meets another process's commit
    /// cannot upgrade its snapshot and fails at once with `SQLITE_BUSY`,
    /// without waiting. PostgreSQL's row locks need nothing of the kind.
    pub fn begin_read_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// `postgres://` and `postgresql://` select PostgreSQL; anything else is an SQLite file.
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// 32 random hex digits (128 bits; 122 on PostgreSQL, from a v4 UUID),
    /// drawn anew for each row a statement touches.
    pub fn random_hex(self) -> &'static str {
        match self {
            Backend::Sqlite => "lower(hex(randomblob(16)))",
            Backend::Postgres => "replace(CAST(gen_random_uuid() AS TEXT), '-', '')",
        }
    }

    /// A predicate "`column` is one of the strings in the JSON array bound at `param`".
    ///
    /// One bound parameter whatever the list's length keeps the statement text
    /// fixed, so the driver's prepared-statement cache hits every batch.
    pub fn in_json_array(self, column: &str, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
            Backend::Postgres => {
                format!("{column} IN (SELECT jsonb_array_elements_text(${param}::jsonb))")
            }
        }
    }

    /// A predicate "`column` (an integer) is one of the numbers in the JSON array
    /// bound at `param`".
    ///
    /// PostgreSQL turns the array into an array value once (an init plan) and
    /// looks the ids up with `= ANY`, an index condition on the key. As an
    /// `IN (SELECT …)` semi join, a planner that expects few matching rows on
    /// the other side (no `sending` rows when the statistics were taken)
    /// re-parsed the JSON for every row it joined: 35 ms to mark 70 deliveries
    /// sent among 1,000 claimed.
    pub fn in_json_ids(self, column: &str, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
            Backend::Postgres => format!(
                "{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)::bigint))"
            ),
        }
    }

    /// True unless the JSON column's top-level `key` is `true` (absent, null or
    /// false all count as unset).
    pub fn json_flag_unset(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => format!("coalesce(json_extract({column}, '$.{key}'), 0) <> 1"),
            Backend::Postgres => format!("coalesce({column} -> '{key}' <> 'true'::jsonb, true)"),
        }
    }

    /// A one-key JSON object built from a column, for INSERT … SELECT into a JSON column.
    pub fn json_object_of(self, key: &str, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_object('{key}', {column})"),
            Backend::Postgres => format!("jsonb_build_object('{key}', {column})"),
        }
    }

    /// A JSON value to bind into a JSON column: `jsonb` on PostgreSQL, text on SQLite.
    pub fn json_param(self, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("${param}"),
            Backend::Postgres => format!("${param}::jsonb"),
        }
    }
}

/// JSON value kinds that segment conditions test for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Text,
    Number,
    True,
    False,
    Array,
}

/// JSON access for the segment compiler, SQLite (`json_extract`/`json_type`, TEXT
/// columns) beside PostgreSQL (`#>`/`#>>`/`jsonb_typeof`, JSONB columns).
///
/// `doc` is a column (`c.attributes`, `i.data`); `path` is the placeholder of a
/// bound path made by [`Backend::json_path`]. Every predicate returned here is
/// TRUE or FALSE, never NULL, so that `NOT` of it means what a marketer expects.
impl Backend {
    /// The value to bind as a path: `$."a"."b"` on SQLite, `{a,b}` (a text[]
    /// literal) on PostgreSQL. Names are restricted to `[A-Za-z0-9_-]` by the parser.
    pub fn json_path(self, names: &[String]) -> String {
        match self {
            Backend::Sqlite => {
                let mut p = String::from("$");
                for n in names {
                    p.push_str(&format!(".\"{n}\""));
                }
                p
            }
            Backend::Postgres => format!("{{{}}}", names.join(",")),
        }
    }

    /// The JSON type name at `path`, `'null'` when missing.
    fn json_type(self, doc: &str, path: &str) -> String {
        match self {
            Backend::Sqlite => format!("coalesce(json_type({doc}, {path}), 'null')"),
            Backend::Postgres => format!("coalesce(jsonb_typeof({doc} #> {path}::text[]), 'null')"),
        }
    }

    /// TRUE when the value at `path` is of this kind.
    pub fn json_is(self, doc: &str, path: &str, kind: JsonKind) -> String {
        let t = self.json_type(doc, path);
        match (self, kind) {
            (Backend::Sqlite, JsonKind::Text) => format!("{t} = 'text'"),
            (Backend::Sqlite, JsonKind::Number) => format!("{t} IN ('integer', 'real')"),
            (Backend::Postgres, JsonKind::Text) => format!("{t} = 'string'"),
            (Backend::Postgres, JsonKind::Number) => format!("{t} = 'number'"),
            (_, JsonKind::True) => match self {
                Backend::Sqlite => format!("{t} = 'true'"),
                Backend::Postgres => {
                    format!("coalesce(({doc} #> {path}::text[]) = 'true'::jsonb, 1 = 0)")
                }
            },
            (_, JsonKind::False) => match self {
                Backend::Sqlite => format!("{t} = 'false'"),
                Backend::Postgres => {
                    format!("coalesce(({doc} #> {path}::text[]) = 'false'::jsonb, 1 = 0)")
                }
            },
            (_, JsonKind::Array) => format!("{t} = 'array'"),
        }
    }

    /// TRUE when the path holds a value other than JSON null.
    pub fn json_present(self, doc: &str, path: &str) -> String {
        format!("{} <> 'null'", self.json_type(doc, path))
    }

    /// The string at `path` as SQL text; only meaningful under `json_is(Text)`.
    pub fn json_text(self, doc: &str, path: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({doc}, {path})"),
            Backend::Postgres => format!("({doc} #>> {path}::text[])"),
        }
    }

    /// The number at `path` as an SQL number, NULL for anything else (PostgreSQL
    /// would raise an error casting a string, and does not promise to evaluate
    /// an `AND` guard first: hence the CASE).
    pub fn json_number(self, doc: &str, path: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({doc}, {path})"),
            Backend::Postgres => format!(
                "(CASE WHEN jsonb_typeof({doc} #> {path}::text[]) = 'number' \
                 THEN ({doc} #> {path}::text[])::numeric END)"
            ),
        }
    }

    /// A bound number ready to compare with [`Backend::json_number`].
    pub fn number_param(self, param: &str) -> String {
        match self {
            Backend::Sqlite => param.to_string(),
            Backend::Postgres => format!("{param}::numeric"),
        }
    }

    /// Text comparison in byte order on both (PostgreSQL would use the database's
    /// collation otherwise).
    pub fn text_cmp(self, left: &str, op: &str, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("{left} {op} {param}"),
            Backend::Postgres => format!("{left} COLLATE \"C\" {op} {param}::text COLLATE \"C\""),
        }
    }

    /// TRUE when `text` contains the bound string.
    pub fn text_contains(self, text: &str, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("instr({text}, {param}) > 0"),
            Backend::Postgres => format!("strpos({text}, {param}::text) > 0"),
        }
    }

    /// TRUE when `text` starts with the bound string.
    pub fn text_starts_with(self, text: &str, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("substr({text}, 1, length({param})) = {param}"),
            Backend::Postgres => format!("starts_with({text}, {param}::text)"),
        }
    }

    /// TRUE when the array at `path` has the bound string as an element.
    pub fn json_array_has_text(self, doc: &str, path: &str, param: &str) -> String {
        match self {
            Backend::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each({doc}, {path}) e WHERE e.type = 'text' AND e.value = {param})"
            ),
            Backend::Postgres => {
                format!("({doc} #> {path}::text[]) @> jsonb_build_array({param}::text)")
            }
        }
    }

    /// An RFC 3339 string as epoch milliseconds, NULL when it is not one. SQLite's
    /// date functions accept more than RFC 3339, hence the shape check; PostgreSQL
    /// uses `herald_rfc3339_millis` (see migrations), which never raises.
    pub fn rfc3339_millis(self, text: &str) -> String {
        const SHAPE: &str =
            "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]";
        match self {
            Backend::Sqlite => format!(
                "(CASE WHEN ({text} GLOB '{SHAPE}*Z' OR {text} GLOB '{SHAPE}*[+-][0-9][0-9]:[0-9][0-9]') \
                 THEN CAST(round(unixepoch({text}, 'subsec') * 1000) AS INTEGER) END)"
            ),
            Backend::Postgres => format!("herald_rfc3339_millis({text})"),
        }
    }
}

/// JSON access with a key fixed in Herald's own code (never from data), for
/// the reports' aggregates over `interactions.data`.
impl Backend {
    /// TRUE when `doc`.`key` is JSON `true`; FALSE (never NULL) otherwise.
    pub fn json_key_true(self, doc: &str, key: &'static str) -> String {
        match self {
            Backend::Sqlite => format!("coalesce(json_type({doc}, '$.{key}') = 'true', 1 = 0)"),
            Backend::Postgres => format!("coalesce(({doc} -> '{key}') = 'true'::jsonb, 1 = 0)"),
        }
    }

    /// The string at `doc`.`key`, NULL when it is missing or not a string.
    pub fn json_key_text(self, doc: &str, key: &'static str) -> String {
        match self {
            Backend::Sqlite => format!(
                "(CASE WHEN json_type({doc}, '$.{key}') = 'text' THEN json_extract({doc}, '$.{key}') END)"
            ),
            Backend::Postgres => format!(
                "(CASE WHEN jsonb_typeof({doc} -> '{key}') = 'string' THEN {doc} ->> '{key}' END)"
            ),
        }
    }
}

/// Placeholders of multi-row statements.
impl Backend {
    /// `($1, $2, $3), ($4, $5, $6), …` for a multi-row VALUES list; `(?, ?, ?), …`
    /// on SQLite, where numbered parameters make binding quadratic in their
    /// count (`sqlite3_bind_parameter_name` walks a list per call).
    pub fn values_list(self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 6);
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match self {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => {
                        sql.push('$');
                        sql.push_str(&n.to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_list_numbers_placeholders_in_order() {
        assert_eq!(
            Backend::Postgres.values_list(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Backend::Sqlite.values_list(2, 2), "(?, ?), (?, ?)");
    }
}
