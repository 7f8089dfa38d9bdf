-- RFC 3339 text → epoch milliseconds, NULL for anything else (never an error, so
-- one customer's malformed attribute cannot fail an audience query). Used by
-- segment conditions `within`/`older_than` on JSON attributes. IMMUTABLE holds
-- because the offset is required: the session time zone never matters.
CREATE FUNCTION herald_rfc3339_millis(t text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF t !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$' THEN
        RETURN NULL;
    END IF;
    RETURN floor(extract(epoch FROM t::timestamptz) * 1000)::bigint;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
