//! The pieces of SQL that differ between SQLite and PostgreSQL, side by side.

/// Which database a [`Store`](super::Store) talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
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
    pub fn in_json_ids(self, column: &str, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
            Backend::Postgres => {
                format!("{column} IN (SELECT jsonb_array_elements_text(${param}::jsonb)::bigint)")
            }
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
