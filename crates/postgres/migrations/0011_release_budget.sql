-- release_budget: ends one member's entry under a key, as BudgetStore::release says, so that
-- it stops counting in every rule of the key. A window's check reads the row `max` places
-- back from the newest by its sequence number (0005), which holds only while a key's numbers
-- have no gaps; a plain DELETE of an entry in the middle left one, and the key went on
-- counting the released entry. Here the newer rows move down by one in the same transaction,
-- under the key's advisory lock, which takes hold too, so a take never sees the key half
-- renumbered. Two passes through negative numbers keep (key, seq) unique at every row.
-- A server of the previous version still deletes without renumbering: its gaps only make a
-- window err toward refusing, as before.

CREATE FUNCTION release_budget(p_key text, p_member text) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    gone bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || p_key, 0));
    DELETE FROM budget_entries e WHERE e.key = p_key AND e.member = p_member
    RETURNING e.seq INTO gone;
    IF gone IS NULL THEN
        RETURN false;
    END IF;
    UPDATE budget_entries e SET seq = -(e.seq - 1) WHERE e.key = p_key AND e.seq > gone;
    UPDATE budget_entries e SET seq = -e.seq WHERE e.key = p_key AND e.seq < 0;
    RETURN true;
END
$$;
