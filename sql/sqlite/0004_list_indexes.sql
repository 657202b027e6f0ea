-- pizza-api schema, version 4, SQLite dialect: the list's name filter served by an index.
--
-- GET /api/v1/public/pizzas?name=... matches a substring of name_folded. An
-- FTS5 index of its trigrams finds the candidate rows without reading the
-- table; the list statement then checks the substring itself on each
-- candidate (instr), so the answer is exactly what a scan would give. Paging
-- needs no new index: the list walks the primary key from its cursor, and
-- idx_pizza_created_by (created_by, then rowid) serves created_by filters in
-- ID order. Never edit this file after it has shipped: add 0005_<what>.sql
-- instead.

-- The trigrams of every pizza's name_folded, deleted pizzas included (the
-- list drops those by deleted_at). An external-content table: it stores the
-- index only, and reads the text from pizzas when asked. The triggers below
-- keep it in step with pizzas, whoever writes (the service, a restore);
-- backups leave it out and a restore rebuilds it through those triggers.
CREATE VIRTUAL TABLE pizza_name_trigrams USING fts5(
    name_folded,                                                  -- pizzas.name_folded, split into trigrams; case is
                                                                  -- kept as stored (it is folded already), and the
                                                                  -- list checks every candidate with instr anyway
    content = 'pizzas',
    content_rowid = 'id',
    tokenize = 'trigram case_sensitive 1'
);
INSERT INTO pizza_name_trigrams (pizza_name_trigrams) VALUES ('rebuild');

CREATE TRIGGER pizza_name_trigrams_after_insert AFTER INSERT ON pizzas BEGIN
    INSERT INTO pizza_name_trigrams (rowid, name_folded) VALUES (new.id, new.name_folded);
END;
CREATE TRIGGER pizza_name_trigrams_after_delete AFTER DELETE ON pizzas BEGIN
    INSERT INTO pizza_name_trigrams (pizza_name_trigrams, rowid, name_folded)
        VALUES ('delete', old.id, old.name_folded);
END;
CREATE TRIGGER pizza_name_trigrams_after_rename AFTER UPDATE OF name_folded ON pizzas
    WHEN old.name_folded IS NOT new.name_folded BEGIN
    INSERT INTO pizza_name_trigrams (pizza_name_trigrams, rowid, name_folded)
        VALUES ('delete', old.id, old.name_folded);
    INSERT INTO pizza_name_trigrams (rowid, name_folded) VALUES (new.id, new.name_folded);
END;
