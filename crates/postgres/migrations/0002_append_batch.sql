-- One call appends a batch of appends (group commit): each append is checked against its
-- expected version and written, or reported as a conflict, without failing the others.
-- Called in its own (implicit) transaction, so the advisory lock is held until the commit and
-- positions become visible in increasing order.
--
-- a_expected: -1 = any version, otherwise the exact version (0 = no stream).
-- Result rows: ('ok', append, version before), ('conflict', append, actual version),
-- ('duplicate', append, actual version) for an outbox id already present,
-- ('event', append, sequence, position, created_at) for each event written.

CREATE FUNCTION append_batch(
    lock_class int, lock_key int,
    a_instance text[], a_type text[], a_id text[], a_expected bigint[],
    e_append int[], e_offset int[], e_type text[], e_revision int2[], e_payload text[],
    e_creator text[], e_owner text[],
    o_append int[], o_id uuid[], o_payload text[]
) RETURNS TABLE (kind text, idx int, seq bigint, pos bigint, at timestamptz)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    i int;
    actual bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, lock_key);
    FOR i IN 1 .. coalesce(array_length(a_id, 1), 0) LOOP
        SELECT coalesce(max(e.sequence), 0) INTO actual
          FROM events e
         WHERE e.instance_id = a_instance[i]
           AND e.aggregate_type = a_type[i]
           AND e.aggregate_id = a_id[i];
        IF a_expected[i] >= 0 AND actual <> a_expected[i] THEN
            RETURN QUERY SELECT 'conflict'::text, i, actual, NULL::bigint, NULL::timestamptz;
            CONTINUE;
        END IF;
        IF EXISTS (
            SELECT 1
              FROM generate_subscripts(o_append, 1) AS k
              JOIN outbox ON outbox.id = o_id[k]
             WHERE o_append[k] = i
        ) THEN
            RETURN QUERY SELECT 'duplicate'::text, i, actual, NULL::bigint, NULL::timestamptz;
            CONTINUE;
        END IF;
        RETURN QUERY SELECT 'ok'::text, i, actual, NULL::bigint, NULL::timestamptz;
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO events (instance_id, aggregate_type, aggregate_id, sequence,
                                event_type, revision, payload, creator, owner)
            SELECT a_instance[i], a_type[i], a_id[i], actual + e_offset[n],
                   e_type[n], e_revision[n], e_payload[n]::jsonb, e_creator[n], e_owner[n]
              FROM generate_subscripts(e_append, 1) AS n
             WHERE e_append[n] = i
             ORDER BY n
            RETURNING sequence, position, created_at
        )
        SELECT 'event'::text, i, inserted.sequence, inserted.position, inserted.created_at
          FROM inserted;
        INSERT INTO outbox (id, instance_id, aggregate_type, aggregate_id, payload)
        SELECT o_id[k], a_instance[i], a_type[i], a_id[i], o_payload[k]::jsonb
          FROM generate_subscripts(o_append, 1) AS k
         WHERE o_append[k] = i
         ORDER BY k;
    END LOOP;
END;
$$;
