-- A cut notice is due again when its subject may be released (notices.cut_idle_days after
-- its cut and its last refused attach; engine/lifecycle.release_at). Until this migration a
-- refused attach did not move a cut notice's last_seen, so what it holds says nothing of
-- whether the phone is still tried: each counts as seen now, and is released no sooner than
-- cut_idle_days after the upgrade. The next sweep takes each once and schedules it.
UPDATE notices SET last_seen = greatest(last_seen, now()), next_due = now()
    WHERE state = 'cut' AND next_due IS NULL;
