-- A live notice whose subject another kind's rule now decides (an IMEI flagged misused over
-- an ownership_transfer notice, a device activated into another cartable over an
-- activation_required one) is superseded, not cancelled: the subject still owes something,
-- under the notice this column names (enforcer/engine/resolution.py).
ALTER TABLE notices ADD COLUMN superseded_by bigint REFERENCES notices (id);
