-- append_one: a batch of one append without outbox messages (every verify when writers do not
-- overlap), in plain procedural steps: a quarter less work per call than the set-based
-- append_batch, whose joins pay off only for several appends. Same lock, same version rule,
-- same result rows (idx 1).

CREATE FUNCTION append_one(
    lock_class int, lock_key int,
    p_instance text, p_type text, p_id text, p_expected bigint,
    e_type text[], e_revision int2[], e_payload text[], e_creator text[], e_owner text[]
) RETURNS TABLE (kind text, idx int, seq bigint, pos bigint, at timestamptz)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    actual bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, lock_key);
    SELECT coalesce(max(e.sequence), 0) INTO actual
      FROM events e
     WHERE e.instance_id = p_instance AND e.aggregate_type = p_type AND e.aggregate_id = p_id;
    IF p_expected >= 0 AND p_expected <> actual THEN
        RETURN QUERY SELECT 'conflict'::text, 1, actual, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'ok'::text, 1, actual, NULL::bigint, NULL::timestamptz;
    RETURN QUERY
    INSERT INTO events (instance_id, aggregate_type, aggregate_id, sequence,
                        event_type, revision, payload, creator, owner)
    SELECT p_instance, p_type, p_id, actual + n,
           e_type[n], e_revision[n], e_payload[n]::jsonb, e_creator[n], e_owner[n]
      FROM generate_subscripts(e_type, 1) AS n
     ORDER BY n
    RETURNING 'event'::text, 1, events.sequence, events.position, events.created_at;
END;
$$;
