-- Send budgets (otp_sms_core::BudgetStore): one row per take under a key, kept until it no
-- longer counts. A window counts the rows of its key taken in the last `window`; held rows
-- count until `until` (NULL: for good). All times are the database's clock, so every server
-- on this database measures windows alike.

CREATE TABLE budget_entries (
    key    text        NOT NULL,
    member text        NOT NULL,
    at     timestamptz NOT NULL,
    until  timestamptz,
    PRIMARY KEY (key, member)
);

-- Windows count the newest rows of a key; pruning drops its oldest.
CREATE INDEX budget_entries_key_at ON budget_entries (key, at);

-- take_budgets: all or none. Each budget is one key with its member and rules (rule arrays
-- index their budget through r_take, 1-based; r_kind 0 = window, 1 = held, 2 = absent: admits
-- only while nothing counts under the key, and adds no row). Answers one row: refused = -1 when taken; the
-- 0-based index of the refusing budget and the seconds until it admits again (NULL: not by
-- time alone); -2 when a member is already taken under its key (nothing taken).
CREATE FUNCTION take_budgets(
    p_keys text[], p_members text[],
    r_take int[], r_kind int2[], r_max int[], r_secs float8[]
) RETURNS TABLE (refused int, retry_secs float8)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    k text;
    i int;
    r int;
    keep float8;
    counted int;
    leaving timestamptz;
    soonest timestamptz;
    adds boolean;
    cap int;
BEGIN
    -- One lock per key, taken in key order so that two takes can never wait on each other.
    FOR k IN SELECT DISTINCT x FROM unnest(p_keys) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || k, 0));
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        k := p_keys[i];
        SELECT coalesce(max(r_secs[j]), 0), coalesce(bool_or(r_kind[j] <> 2), false) INTO keep, adds
          FROM generate_subscripts(r_take, 1) j WHERE r_take[j] = i;
        -- Rows that no longer count, found through the time index.
        DELETE FROM budget_entries e
         WHERE e.key = k AND e.at <= now_ts - make_interval(secs => keep)
           AND e.until IS NOT NULL AND e.until <= now_ts;
        IF adds AND EXISTS (SELECT 1 FROM budget_entries e WHERE e.key = k AND e.member = p_members[i]) THEN
            RETURN QUERY SELECT -2, NULL::float8;
            RETURN;
        END IF;
        FOR r IN 1 .. coalesce(array_length(r_take, 1), 0) LOOP
            CONTINUE WHEN r_take[r] <> i;
            IF r_kind[r] = 0 THEN
                -- The newest r_max rows inside the window; full when there are r_max, and
                -- the oldest of them must leave before another is admitted.
                SELECT count(*), min(w.at) INTO counted, leaving
                  FROM (SELECT e.at FROM budget_entries e
                         WHERE e.key = k AND e.at > now_ts - make_interval(secs => r_secs[r])
                         ORDER BY e.at DESC LIMIT r_max[r]) w;
                IF counted >= r_max[r] THEN
                    RETURN QUERY SELECT i - 1,
                        greatest(extract(epoch FROM leaving + make_interval(secs => r_secs[r]) - now_ts), 0)::float8;
                    RETURN;
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
                    -- No retry time when every counted row is held for good.
                    RETURN QUERY SELECT i - 1,
                        CASE WHEN soonest IS NULL THEN NULL
                             ELSE greatest(extract(epoch FROM soonest - now_ts), 0)::float8 END;
                    RETURN;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    INSERT INTO budget_entries (key, member, at, until)
    SELECT p_keys[n], p_members[n], now_ts,
           now_ts + make_interval(secs => (SELECT max(r_secs[j]) FROM generate_subscripts(r_take, 1) j
                                            WHERE r_take[j] = n))
      FROM generate_subscripts(p_keys, 1) n
     WHERE EXISTS (SELECT 1 FROM generate_subscripts(r_take, 1) j WHERE r_take[j] = n AND r_kind[j] <> 2);
    RETURN QUERY SELECT -1, NULL::float8;
END
$$;
