-- pizza-api schema, version 5, SQLite dialect: new names reach the trigram
-- index in batches.
--
-- Writing one name into the FTS5 index of 0004 writes a new index segment:
-- it made each create cost twice the CPU. Now a create (or a rename) only
-- puts the pizza's ID on a small backlog, and the service moves the backlog
-- into the index in one transaction every 100 ms (src/db/name_backlog.rs).
-- The list's name filter reads the index and the backlog together, so a
-- name is found from the moment its pizza is written. Never edit this file
-- after it has shipped: add 0006_<what>.sql instead.

-- The pizzas whose current name_folded is not in pizza_name_trigrams yet.
CREATE TABLE pizza_name_backlog (
    id INTEGER PRIMARY KEY                                        -- pizzas.id (no foreign key: a hard delete removes
                                                                  -- the row through the trigger below)
);

-- A new pizza waits on the backlog.
DROP TRIGGER pizza_name_trigrams_after_insert;
CREATE TRIGGER pizza_name_backlog_after_insert AFTER INSERT ON pizzas BEGIN
    INSERT INTO pizza_name_backlog (id) VALUES (new.id);
END;

-- A pizza that goes: its name leaves the index if it is there (an FTS5
-- 'delete' must name exactly what was indexed), or the backlog if not.
DROP TRIGGER pizza_name_trigrams_after_delete;
CREATE TRIGGER pizza_name_backlog_after_delete AFTER DELETE ON pizzas BEGIN
    INSERT INTO pizza_name_trigrams (pizza_name_trigrams, rowid, name_folded)
        SELECT 'delete', old.id, old.name_folded
        WHERE NOT EXISTS (SELECT 1 FROM pizza_name_backlog WHERE id = old.id);
    DELETE FROM pizza_name_backlog WHERE id = old.id;
END;

-- A renamed pizza: its old name leaves the index at once (the filter must
-- not find it by that name any more), its new one waits on the backlog.
DROP TRIGGER pizza_name_trigrams_after_rename;
CREATE TRIGGER pizza_name_backlog_after_rename AFTER UPDATE OF name_folded ON pizzas
    WHEN old.name_folded IS NOT new.name_folded BEGIN
    INSERT INTO pizza_name_trigrams (pizza_name_trigrams, rowid, name_folded)
        SELECT 'delete', old.id, old.name_folded
        WHERE NOT EXISTS (SELECT 1 FROM pizza_name_backlog WHERE id = old.id);
    INSERT OR IGNORE INTO pizza_name_backlog (id) VALUES (new.id);
END;
