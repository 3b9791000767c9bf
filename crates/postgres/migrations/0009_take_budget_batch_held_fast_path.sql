-- take_budget_batch, as in 0006, with one change: a held rule (a user's registration slots, a
-- lock) whose key's highest sequence number is below its cap admits without counting the key's
-- rows. Counting cost a pass over every slot of a user with many registrations under a large
-- cap, on each add. Same signature, so a server of the previous version calls this body too.

CREATE OR REPLACE FUNCTION take_budget_batch(
    q_first int[], q_last int[],
    p_keys text[], p_members text[], k_kind int2[], k_keep float8[], k_deep int[],
    k_rfirst int[], k_rlast int[],
    r_kind int2[], r_max int[], r_secs float8[]
) RETURNS TABLE (take int, refused int, retry_secs float8)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    n int := coalesce(array_length(q_first, 1), 0);
    k text;
    q int;
    i int;
    r int;
    lasts bigint[] := array_fill(0::bigint, ARRAY[greatest(coalesce(array_length(p_keys, 1), 0), 1)]);
    last bigint;
    probe timestamptz;
    counted int;
    soonest timestamptz;
    cap int;
    retry float8;
    refusing int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || x, 0))
       FROM (SELECT DISTINCT x FROM unnest(p_keys) AS x ORDER BY x) AS ordered;
    FOR q IN 1 .. n LOOP
        refusing := -1;
        retry := NULL;
        <<budgets>>
        FOR i IN q_first[q] .. q_last[q] LOOP
            k := p_keys[i];
            IF k_kind[i] = 0 THEN
                SELECT max(e.seq) INTO last FROM budget_entries e WHERE e.key = k;
                lasts[i] := coalesce(last, 0);
                -- Rows deeper than the deepest window looks can never be probed again.
                IF last % 16 = 0 THEN
                    DELETE FROM budget_entries e WHERE e.key = k AND e.seq <= last - k_deep[i];
                END IF;
            END IF;
            FOR r IN k_rfirst[i] .. k_rlast[i] LOOP
                IF r_kind[r] = 0 THEN
                    probe := NULL;
                    IF lasts[i] > 0 AND r_max[r] > 0 THEN
                        SELECT e.at INTO probe FROM budget_entries e
                         WHERE e.key = k AND e.seq = lasts[i] - r_max[r] + 1;
                    END IF;
                    IF r_max[r] <= 0 OR probe > now_ts - make_interval(secs => r_secs[r]) THEN
                        CONTINUE budgets WHEN counted_already(k, p_members[i], now_ts);
                        refusing := i - q_first[q];
                        retry := CASE WHEN probe IS NULL THEN NULL ELSE
                            greatest(extract(epoch FROM probe + make_interval(secs => r_secs[r]) - now_ts), 0) END;
                        EXIT budgets;
                    END IF;
                ELSE
                    -- A key's rows have distinct sequence numbers up to its highest, so a key
                    -- whose highest is below the cap cannot hold it full: one index probe
                    -- instead of counting (a user with many registrations under a large cap).
                    SELECT max(e.seq) INTO last FROM budget_entries e WHERE e.key = k;
                    CONTINUE WHEN coalesce(last, 0) < CASE WHEN r_kind[r] = 2 THEN 1 ELSE r_max[r] END;
                    SELECT count(*), min(e.until) INTO counted, soonest
                      FROM budget_entries e
                     WHERE e.key = k AND (e.until IS NULL OR e.until > now_ts);
                    cap := r_max[r];
                    IF r_kind[r] = 2 THEN
                        cap := 1;
                    END IF;
                    IF counted >= cap THEN
                        CONTINUE budgets WHEN r_kind[r] <> 2 AND counted_already(k, p_members[i], now_ts);
                        refusing := i - q_first[q];
                        retry := CASE WHEN soonest IS NULL THEN NULL
                                      ELSE greatest(extract(epoch FROM soonest - now_ts), 0) END;
                        EXIT budgets;
                    END IF;
                END IF;
            END LOOP;
        END LOOP;
        IF refusing >= 0 THEN
            take := q - 1; refused := refusing; retry_secs := retry;
            RETURN NEXT;
            CONTINUE;
        END IF;
        FOR i IN q_first[q] .. q_last[q] LOOP
            CONTINUE WHEN k_kind[i] <> 1;
            -- A lapsed row of the same member makes way.
            DELETE FROM budget_entries e
             WHERE e.key = p_keys[i] AND e.member = p_members[i]
               AND e.until IS NOT NULL AND e.until <= now_ts;
            SELECT max(e.seq) INTO last FROM budget_entries e WHERE e.key = p_keys[i];
            lasts[i] := coalesce(last, 0);
        END LOOP;
        -- The take's rows in one statement (gates add none).
        INSERT INTO budget_entries (key, member, seq, at, until)
        SELECT t.key, t.member, t.last + 1, now_ts, now_ts + make_interval(secs => t.keep)
          FROM unnest(p_keys[q_first[q]:q_last[q]], p_members[q_first[q]:q_last[q]],
                      lasts[q_first[q]:q_last[q]], k_keep[q_first[q]:q_last[q]],
                      k_kind[q_first[q]:q_last[q]]) AS t(key, member, last, keep, kind)
         WHERE t.kind <> 2
        ON CONFLICT (key, member) DO NOTHING;
        take := q - 1; refused := -1; retry_secs := NULL;
        RETURN NEXT;
    END LOOP;
    -- Lapsed rows of keys no take visits again, as take_budgets sweeps them: 16 per take.
    DELETE FROM budget_entries e
     WHERE e.ctid IN (SELECT g.ctid FROM budget_entries g
                       WHERE g.until IS NOT NULL AND g.until <= now_ts
                       ORDER BY g.until LIMIT 16 * n);
END
$$;
