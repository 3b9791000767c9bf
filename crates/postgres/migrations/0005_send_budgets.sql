-- Send budgets (otp_sms_core::BudgetStore). Every take under a key is a row numbered by the
-- key's running sequence. A window admits a take unless the row `max` places back from the
-- newest is inside it: one index probe, however busy the key (the instance's sees every send).
-- That holds because window rows leave only from the oldest end (a window key keeps its newest
-- `max` rows; the sequence continues from the newest row); takes are never taken back.
-- Held rows (registration slots, locks) count until `until` and may be released one by
-- one; those keys stay small and are counted directly.
-- All times are the database's clock, so every server on this database measures windows
-- alike. Budget transactions commit without waiting for the flush (synchronous_commit off):
-- a crash of the database may forget the last moments of takes, never add one.

CREATE TABLE budget_entries (
    key    text        NOT NULL,
    member text        NOT NULL,
    seq    bigint      NOT NULL,
    at     timestamptz NOT NULL,
    until  timestamptz,
    PRIMARY KEY (key, member)
);

-- The window probe, the key's newest row, and pruning from the oldest end.
CREATE UNIQUE INDEX budget_entries_key_seq ON budget_entries (key, seq);

-- Rows of keys no take touches any more are swept by later takes, a few at a time.
CREATE INDEX budget_entries_until ON budget_entries (until) WHERE until IS NOT NULL;

-- Whether `member` counts under `key` at `now_ts`.
CREATE FUNCTION counted_already(p_key text, p_member text, now_ts timestamptz) RETURNS boolean
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT EXISTS (SELECT 1 FROM budget_entries e
                    WHERE e.key = p_key AND e.member = p_member
                      AND (e.until IS NULL OR e.until > now_ts))
$$;

-- take_budgets: all or none. Budget i is key p_keys[i] with member p_members[i]; k_kind[i]
-- is 0 for a window key, 1 for a held key, 2 for a gate (absent: adds no row); k_keep[i] is
-- how long its row counts (seconds), k_deep[i] how far back its deepest window looks. Rule r
-- belongs to budget r_take[r] (1-based): r_kind 0 = window of r_max rows in r_secs, 1 = held
-- (at most r_max rows), 2 = absent. A member already recorded under its key is admitted
-- without being counted again. Answers one row: refused = -1 when taken, else the 0-based
-- index of the refusing budget and the seconds until it admits again (NULL: not by time
-- alone).
CREATE FUNCTION take_budgets(
    p_keys text[], p_members text[], k_kind int2[], k_keep float8[], k_deep int[],
    r_take int[], r_kind int2[], r_max int[], r_secs float8[]
) RETURNS TABLE (refused int, retry_secs float8)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    n int := coalesce(array_length(p_keys, 1), 0);
    k text;
    i int;
    r int;
    lasts bigint[] := array_fill(0::bigint, ARRAY[greatest(n, 1)]);
    last bigint;
    probe timestamptz;
    counted int;
    soonest timestamptz;
    cap int;
    retry float8;
    refusing int := -1;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- One lock per key, taken in key order so that two takes can never wait on each other.
    FOR k IN SELECT DISTINCT x FROM unnest(p_keys) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || k, 0));
    END LOOP;
    <<budgets>>
    FOR i IN 1 .. n LOOP
        k := p_keys[i];
        IF k_kind[i] = 0 THEN
            SELECT max(e.seq) INTO last FROM budget_entries e WHERE e.key = k;
            lasts[i] := coalesce(last, 0);
            -- Rows deeper than the deepest window looks can never be probed again; swept
            -- every 16th take of the key.
            IF last % 16 = 0 THEN
                DELETE FROM budget_entries e WHERE e.key = k AND e.seq <= last - k_deep[i];
            END IF;
        END IF;
        FOR r IN 1 .. coalesce(array_length(r_take, 1), 0) LOOP
            CONTINUE WHEN r_take[r] <> i;
            IF r_kind[r] = 0 THEN
                -- Full when the row r_max places back from the newest is inside the window;
                -- a take is admitted again once that row has left it.
                probe := NULL;
                IF lasts[i] > 0 AND r_max[r] > 0 THEN
                    SELECT e.at INTO probe FROM budget_entries e
                     WHERE e.key = k AND e.seq = lasts[i] - r_max[r] + 1;
                END IF;
                IF r_max[r] <= 0 OR probe > now_ts - make_interval(secs => r_secs[r]) THEN
                    -- Counted already (a retry): admitted whatever the rules say now.
                    CONTINUE budgets WHEN counted_already(k, p_members[i], now_ts);
                    refusing := i;
                    retry := CASE WHEN probe IS NULL THEN NULL ELSE
                        greatest(extract(epoch FROM probe + make_interval(secs => r_secs[r]) - now_ts), 0) END;
                    EXIT budgets;
                END IF;
            ELSE
                SELECT count(*), min(e.until) INTO counted, soonest
                  FROM budget_entries e
                 WHERE e.key = k AND (e.until IS NULL OR e.until > now_ts);
                -- Absent refuses from the first row on.
                cap := r_max[r];
                IF r_kind[r] = 2 THEN
                    cap := 1;
                END IF;
                IF counted >= cap THEN
                    CONTINUE budgets WHEN r_kind[r] <> 2 AND counted_already(k, p_members[i], now_ts);
                    refusing := i;
                    -- No retry time when every counted row is held for good.
                    retry := CASE WHEN soonest IS NULL THEN NULL
                                  ELSE greatest(extract(epoch FROM soonest - now_ts), 0) END;
                    EXIT budgets;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    IF refusing > 0 THEN
        RETURN QUERY SELECT refusing - 1, retry;
        RETURN;
    END IF;
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN k_kind[i] = 2;
        IF k_kind[i] = 1 THEN
            -- A lapsed row of the same member makes way.
            DELETE FROM budget_entries e
             WHERE e.key = p_keys[i] AND e.member = p_members[i]
               AND e.until IS NOT NULL AND e.until <= now_ts;
            SELECT max(e.seq) INTO last FROM budget_entries e WHERE e.key = p_keys[i];
            lasts[i] := coalesce(last, 0);
        END IF;
        INSERT INTO budget_entries (key, member, seq, at, until)
        VALUES (p_keys[i], p_members[i], lasts[i] + 1, now_ts,
                now_ts + make_interval(secs => k_keep[i]))
        ON CONFLICT (key, member) DO NOTHING;
    END LOOP;
    -- A few rows that count for nothing any more, wherever they are: keys no take visits
    -- again (a number sent to once) drain this way. In `until` order, so the index on it is
    -- walked from the oldest and the look-up stops at once when nothing has lapsed. Their
    -- keys are not locked; a row that lapsed cannot be probed or counted, so removing it
    -- changes no answer.
    DELETE FROM budget_entries e
     WHERE e.ctid IN (SELECT g.ctid FROM budget_entries g
                       WHERE g.until IS NOT NULL AND g.until <= now_ts
                       ORDER BY g.until LIMIT 16);
    RETURN QUERY SELECT -1, NULL::float8;
END
$$;
