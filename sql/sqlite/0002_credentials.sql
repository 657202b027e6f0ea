-- pizza-api schema, version 2, SQLite dialect: the credential lifecycle.
--
-- Revocation that every replica learns within a second, secret rotation
-- with an optional grace period. Never edit this file after it has shipped:
-- add 0003_<what>.sql instead.

-- Bumped by every rotation. A token carries the generation it was issued
-- under (claim "gen"); one older than the client's is revoked.
ALTER TABLE oauth_clients ADD COLUMN secret_generation INTEGER NOT NULL DEFAULT 0;
-- During a rotation's grace period: the bcrypt hash of the secret it replaced.
ALTER TABLE oauth_clients ADD COLUMN previous_secret_hash TEXT;
-- When that grace period ends; after it the previous secret is refused.
ALTER TABLE oauth_clients ADD COLUMN previous_secret_expires_at TEXT;

-- Single tokens revoked through POST /api/v1/oauth/revoke, until they expire.
CREATE TABLE revoked_tokens (
    jti        TEXT    PRIMARY KEY,                               -- the token's "jti" claim
    client_id  TEXT    NOT NULL,                                  -- the client it was issued to
    expires_at INTEGER NOT NULL,                                  -- its "exp" (Unix seconds): the row is
                                                                  -- purged after that
    revoked_at TEXT    NOT NULL                                   -- when it was revoked
);
CREATE INDEX idx_revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- One row: a number every revocation (client deleted, secret rotated, token
-- revoked) increases in the same transaction. Replicas read it every second
-- and reload what is revoked only when it moved.
CREATE TABLE revocation_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),                  -- always 1
    revision INTEGER NOT NULL                                     -- increases by one per revocation
);
INSERT INTO revocation_revision (id, revision) VALUES (1, 0);
