-- pizza-api schema, version 1, SQLite dialect.
--
-- Applied once by the service at start-up and recorded in schema_migrations
-- with its checksum. Never edit this file after it has shipped: add
-- 0002_<what>.sql instead (the service refuses to start when an applied file
-- has changed).
--
-- Timestamps are TEXT in one fixed form, RFC 3339 UTC with microseconds
-- ('2025-11-10T12:34:56.123456Z'), written by the service: the text sorts in
-- time order and is exactly what the API returns.

-- The people who own pizzas and OAuth clients.
CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,                -- AUTOINCREMENT: an ID is never reused
    email      TEXT    NOT NULL UNIQUE,                           -- sign-in identity, unique
    name       TEXT    NOT NULL,                                  -- display name
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'user')), -- what the user may do
    created_at TEXT    NOT NULL,                                  -- when the row was written
    updated_at TEXT    NOT NULL                                   -- when it last changed
);

-- The pizzas: the API's main resource. Rows are never removed: deleting sets deleted_at.
CREATE TABLE pizzas (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,                -- never reused, even after a delete
    name        TEXT    NOT NULL,                                  -- 1 to 100 characters, trimmed
    name_folded TEXT    NOT NULL,                                  -- name lower-cased by the service (Unicode rules),
                                                                   -- so the name filter matches the same rows on
                                                                   -- SQLite and PostgreSQL, whose lower() differ
    description TEXT    NOT NULL DEFAULT '',                       -- at most 2000 characters
    ingredients TEXT    NOT NULL DEFAULT '[]'                      -- JSON array of strings, in order
                        CHECK (json_valid(ingredients) AND json_type(ingredients) = 'array'),
    price       REAL    NOT NULL CHECK (price >= 0),               -- IEEE-754 binary64, the type a JSON number
                                                                   -- becomes in the service: the value sent comes
                                                                   -- back bit for bit (19.99 stays 19.99)
    created_by  INTEGER NOT NULL REFERENCES users (id),            -- owner: only they or an admin may change it
    created_at  TEXT    NOT NULL,                                  -- set once
    updated_at  TEXT    NOT NULL,                                  -- moves forward on every update
    deleted_at  TEXT                                               -- set by delete; such a row is never shown
);
CREATE INDEX idx_pizza_created_by ON pizzas (created_by);
CREATE INDEX idx_pizza_deleted_at ON pizzas (deleted_at);

-- OAuth2 clients that obtain tokens with the client-credentials grant.
CREATE TABLE oauth_clients (
    id           TEXT    PRIMARY KEY,                              -- client_id: a UUID, or a fixed name
                                                                   -- (admin-client, dev-client)
    secret_hash  TEXT    NOT NULL,                                 -- bcrypt hash; the secret itself is never stored
    name         TEXT    NOT NULL,                                 -- human-readable label
    domain       TEXT    NOT NULL DEFAULT '',                      -- informational
    scopes       TEXT    NOT NULL DEFAULT 'read write',            -- space-separated scopes a token may carry
    grant_types  TEXT    NOT NULL DEFAULT 'client_credentials',    -- space-separated grants allowed
    redirect_uri TEXT    NOT NULL DEFAULT '',                      -- informational (no redirect flows)
    user_id      INTEGER NOT NULL REFERENCES users (id),           -- owner: tokens act as this user
    created_at   TEXT    NOT NULL,                                 -- set once
    updated_at   TEXT    NOT NULL,                                 -- when it last changed
    deleted_at   TEXT                                              -- set by delete; such a client gets no tokens
);
CREATE INDEX idx_oauth_client_user_id ON oauth_clients (user_id);
