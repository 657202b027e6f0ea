-- pizza-api schema, version 3, SQLite dialect: safe retries and versioned pizzas.
--
-- Idempotency keys of POST /api/v1/pizzas and POST /api/v1/clients, and a
-- version per pizza for ETag / If-Match. Never edit this file after it has
-- shipped: add 0004_<what>.sql instead.

-- Counts the changes of a pizza: 1 when created, one more on every update.
-- The ETag is "<id>-<version>", and PUT/DELETE with If-Match check it in
-- their WHERE clause.
ALTER TABLE pizzas ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

-- One row per Idempotency-Key a caller sent with a create, kept 24 hours.
-- The row is written in the same transaction as the resource it created, so
-- a crash leaves neither; a row still in flight (status NULL) is only ever
-- seen inside that transaction, and one older than a minute counts as
-- abandoned all the same.
CREATE TABLE idempotency_keys (
    user_id      INTEGER NOT NULL,                                -- the caller's user (token "uid")
    client_id    TEXT    NOT NULL,                                -- the caller's OAuth client (token "client_id")
    route        TEXT    NOT NULL,                                -- the operation: 'POST /api/v1/pizzas' or
                                                                  -- 'POST /api/v1/clients'
    idem_key     TEXT    NOT NULL,                                -- the Idempotency-Key as sent: 1 to 255
                                                                  -- printable ASCII characters
    request_hash TEXT    NOT NULL,                                -- hex SHA-256 of the request body in
                                                                  -- canonical JSON (keys sorted, no spaces)
    created_at   TEXT    NOT NULL,                                -- when the key was first used; the row is
                                                                  -- purged 24 hours later
    status       INTEGER,                                         -- the status answered (201); NULL while
                                                                  -- the first request is in flight
    resource_id  TEXT,                                            -- what it created: the pizza ID or the
                                                                  -- client ID
    body         TEXT,                                            -- the JSON body answered, replayed as is;
                                                                  -- NULL for clients (their secret is never
                                                                  -- stored in clear)
    location     TEXT,                                            -- the Location answered, if any
    etag         TEXT,                                            -- the ETag answered, if any
    PRIMARY KEY (user_id, client_id, route, idem_key)
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys (created_at);
