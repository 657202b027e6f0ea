-- pizza-api schema, version 4, PostgreSQL dialect: every list query served by an index.
--
-- GET /api/v1/public/pizzas pages by ID from a cursor, optionally filtered
-- by created_by and by a substring of name_folded. These partial indexes
-- hold live pizzas only (deleted_at IS NULL, which every list query says),
-- so a page costs the same at any depth and however many pizzas were
-- deleted. Never edit this file after it has shipped: add 0005_<what>.sql
-- instead.
--
-- pg_trgm ships with PostgreSQL (Debian: in the postgresql-15 package) and
-- is a trusted extension: the database's owner may create it, no superuser
-- needed. Where it is not installed, start-up stops with the server's error.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Live pizzas in ID order: the list without filters, from any cursor.
CREATE INDEX idx_pizza_live_id ON pizzas (id) WHERE deleted_at IS NULL;

-- Live pizzas of one owner in ID order: the created_by filter, from any cursor.
CREATE INDEX idx_pizza_live_created_by_id ON pizzas (created_by, id) WHERE deleted_at IS NULL;

-- Trigrams of live pizzas' folded names: the name filter as name_folded
-- LIKE '%<filter>%' (wildcards in the filter escaped), whose trigrams this
-- index looks up; PostgreSQL rechecks the LIKE on every candidate row.
CREATE INDEX idx_pizza_live_name_trgm ON pizzas USING gin (name_folded gin_trgm_ops) WHERE deleted_at IS NULL;
