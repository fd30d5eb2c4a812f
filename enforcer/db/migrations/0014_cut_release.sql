-- A cut notice is due again when its subject may be released (notices.cut_idle_days after
-- its cut and its last refused attach; engine/lifecycle.release_at). Those cut before this
-- migration had nothing scheduled: the next sweep takes each once and schedules it.
UPDATE notices SET next_due = greatest(deadline, last_seen)
    WHERE state = 'cut' AND next_due IS NULL;
