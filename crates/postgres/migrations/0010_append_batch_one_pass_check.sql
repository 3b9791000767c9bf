-- append_batch, as in 0007, with its two existence checks read by key. The command-id check
-- is now part of the same pass over the stream as its version, and the outbox check looks each
-- message up by its id. As subqueries of their own, the planner could hash them over
-- sequential scans of all events and of the whole outbox (the array arguments are estimated at
-- 1,000 rows, so one scan looked cheaper than a probe each): a cached generic plan then read
-- the whole log and the whole backlog on every batch, and appends slowed as either grew. Same
-- signature, so servers of the previous version call this body too.

CREATE OR REPLACE FUNCTION append_batch(
    lock_class int, lock_key int,
    a_instance text[], a_type text[], a_id text[], a_expected bigint[],
    e_append int[], e_offset int[], e_type text[], e_revision int2[], e_payload text[],
    e_creator text[], e_owner text[],
    o_append int[], o_id uuid[], o_payload text[],
    a_command uuid[]
) RETURNS TABLE (kind text, idx int, seq bigint, pos bigint, at timestamptz)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- Its statements take microseconds; the planner's estimates for array arguments (1,000 rows a
-- function scan) can pass the JIT threshold, and compiling costs more than 100 ms a call.
SET jit = off
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, lock_key);
    RETURN QUERY
    WITH checked AS (
        SELECT a.i,
               v.actual,
               (a_expected[a.i] < 0 OR a_expected[a.i] = v.actual)
                 AND NOT v.done AS version_ok,
               d.duplicate
          FROM generate_subscripts(a_id, 1) AS a(i)
          CROSS JOIN LATERAL (
              SELECT coalesce(max(e.sequence), 0) AS actual,
                     coalesce(bool_or(e.command_id = a_command[a.i]), false) AS done
                FROM events e
               WHERE e.instance_id = a_instance[a.i]
                 AND e.aggregate_type = a_type[a.i]
                 AND e.aggregate_id = a_id[a.i]
          ) AS v
          -- Each outbox message of the append looked up by its id (a probe each; never a
          -- scan of a backlog).
          CROSS JOIN LATERAL (
              SELECT count(*) > 0 AS duplicate
                FROM generate_subscripts(o_append, 1) AS k
                CROSS JOIN LATERAL (
                    SELECT 1 FROM outbox WHERE outbox.id = o_id[k] LIMIT 1
                ) AS found
               WHERE o_append[k] = a.i
          ) AS d
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
