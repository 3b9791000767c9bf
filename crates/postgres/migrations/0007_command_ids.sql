-- Command ids (otp_sms_core::CommandId): each event records the command whose append wrote
-- it, so a writer that lost the answer to an append (the connection cut after the call was
-- sent) reads its stream and finds out whether the command committed. A stream takes one
-- append per command: a second is answered as a conflict and writes nothing. The check scans
-- the stream's own rows by the primary key (a registration's stream holds a handful of
-- events), so no index is added. Adding a nullable column without a default rewrites nothing.
-- The functions of 0003 and 0004 stay for servers of the previous version during a rolling
-- upgrade; these take one more argument.

ALTER TABLE events ADD COLUMN command_id uuid;

CREATE FUNCTION append_batch(
    lock_class int, lock_key int,
    a_instance text[], a_type text[], a_id text[], a_expected bigint[],
    e_append int[], e_offset int[], e_type text[], e_revision int2[], e_payload text[],
    e_creator text[], e_owner text[],
    o_append int[], o_id uuid[], o_payload text[],
    a_command uuid[]
) RETURNS TABLE (kind text, idx int, seq bigint, pos bigint, at timestamptz)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, lock_key);
    RETURN QUERY
    WITH checked AS (
        SELECT a.i,
               v.actual,
               (a_expected[a.i] < 0 OR a_expected[a.i] = v.actual)
                 AND NOT EXISTS (
                     SELECT 1 FROM events e
                      WHERE e.instance_id = a_instance[a.i]
                        AND e.aggregate_type = a_type[a.i]
                        AND e.aggregate_id = a_id[a.i]
                        AND e.command_id = a_command[a.i]
                 ) AS version_ok,
               EXISTS (
                   SELECT 1
                     FROM generate_subscripts(o_append, 1) AS k
                     JOIN outbox ON outbox.id = o_id[k]
                    WHERE o_append[k] = a.i
               ) AS duplicate
          FROM generate_subscripts(a_id, 1) AS a(i)
          CROSS JOIN LATERAL (
              SELECT coalesce(max(e.sequence), 0) AS actual
                FROM events e
               WHERE e.instance_id = a_instance[a.i]
                 AND e.aggregate_type = a_type[a.i]
                 AND e.aggregate_id = a_id[a.i]
          ) AS v
    ),
    accepted AS (
        SELECT c.i, c.actual FROM checked c WHERE c.version_ok AND NOT c.duplicate
    ),
    inserted AS (
        INSERT INTO events (instance_id, aggregate_type, aggregate_id, sequence,
                            event_type, revision, payload, creator, owner, command_id)
        SELECT a_instance[ac.i], a_type[ac.i], a_id[ac.i], ac.actual + e_offset[n],
               e_type[n], e_revision[n], e_payload[n]::jsonb, e_creator[n], e_owner[n],
               a_command[ac.i]
          FROM generate_subscripts(e_append, 1) AS n
          JOIN accepted ac ON ac.i = e_append[n]
         ORDER BY n
        RETURNING events.aggregate_id, events.instance_id, events.aggregate_type,
                  events.sequence, events.position, events.created_at
    ),
    queued AS (
        INSERT INTO outbox (id, instance_id, aggregate_type, aggregate_id, payload)
        SELECT o_id[k], a_instance[ac.i], a_type[ac.i], a_id[ac.i], o_payload[k]::jsonb
          FROM generate_subscripts(o_append, 1) AS k
          JOIN accepted ac ON ac.i = o_append[k]
         ORDER BY k
    )
    SELECT CASE WHEN NOT c.version_ok THEN 'conflict'
                WHEN c.duplicate THEN 'duplicate'
                ELSE 'ok' END,
           c.i, c.actual, NULL::bigint, NULL::timestamptz
      FROM checked c
    UNION ALL
    SELECT 'event', ac.i, ins.sequence, ins.position, ins.created_at
      FROM inserted ins
      JOIN accepted ac
        ON ins.instance_id = a_instance[ac.i]
       AND ins.aggregate_type = a_type[ac.i]
       AND ins.aggregate_id = a_id[ac.i];
END;
$$;

CREATE FUNCTION append_one(
    lock_class int, lock_key int,
    p_instance text, p_type text, p_id text, p_expected bigint,
    e_type text[], e_revision int2[], e_payload text[], e_creator text[], e_owner text[],
    p_command uuid
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
    IF (p_expected >= 0 AND p_expected <> actual)
       OR (p_command IS NOT NULL AND EXISTS (
           SELECT 1 FROM events e
            WHERE e.instance_id = p_instance AND e.aggregate_type = p_type
              AND e.aggregate_id = p_id AND e.command_id = p_command)) THEN
        RETURN QUERY SELECT 'conflict'::text, 1, actual, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'ok'::text, 1, actual, NULL::bigint, NULL::timestamptz;
    RETURN QUERY
    INSERT INTO events (instance_id, aggregate_type, aggregate_id, sequence,
                        event_type, revision, payload, creator, owner, command_id)
    SELECT p_instance, p_type, p_id, actual + n,
           e_type[n], e_revision[n], e_payload[n]::jsonb, e_creator[n], e_owner[n], p_command
      FROM generate_subscripts(e_type, 1) AS n
     ORDER BY n
    RETURNING 'event'::text, 1, events.sequence, events.position, events.created_at;
END;
$$;
