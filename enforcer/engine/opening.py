"""Which notices a decided batch opens or sees again, pure: one row per subject (kind, IMEI
key, and IMSI when the notice is pair-scoped), anchored at its first sighting in the batch.
Whether the subject already has a live notice is the database's to say (it keeps the
earlier deadline). The cut subjects a batch saw again, refused (their cut notices' last
sighting, which decides when one is released). And the notices that take over from
superseded ones (`enforcer/engine/resolution.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enforcer.clock import MS_PER_DAY
from enforcer.engine.decide import Decisions
from enforcer.engine.events import AttachBatch
from enforcer.engine.lifecycle import Notice
from rules.policy import Condition, Rule, Scope

IMEI_SUBJECT = 0  # subject_imsi of an IMEI-scoped notice


@dataclass(frozen=True, eq=False)
class NoticeSightings:
    """Subjects of notices seen in a batch, as columns."""

    rule: np.ndarray  # uint8, index into the policy's rules
    imei_key: np.ndarray  # uint64
    subject_imsi: np.ndarray  # uint64, IMEI_SUBJECT when IMEI-scoped
    imsi: np.ndarray  # uint64, the first sighting's
    msisdn: np.ndarray  # uint64, the first sighting's
    first_ms: np.ndarray  # int64
    last_ms: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.imei_key)

    def rows(self, rules: tuple[Rule, ...]) -> list[tuple]:
        """(kind, scope, imei_key, subject_imsi, imsi, msisdn, rule name, first_ms, last_ms,
        deadline_ms, reminder_days, sms) per subject."""
        out = []
        for r, key, subject, imsi, msisdn, first, last in zip(
                self.rule.tolist(), self.imei_key.tolist(), self.subject_imsi.tolist(),
                self.imsi.tolist(), self.msisdn.tolist(), self.first_ms.tolist(),
                self.last_ms.tolist()):
            rule = rules[r]
            out.append((rule.notice_kind, rule.cutoff_scope.value, key, subject, imsi, msisdn,
                        rule.name, first, last, first + rule.grace_days * MS_PER_DAY,
                        list(rule.reminder_days), rule.sms))
        return out


def notice_sightings(batch: AttachBatch, decisions: Decisions,
                     fresh_pairs: set[tuple[int, int]] | None = None) -> NoticeSightings:
    """`fresh_pairs`: the (IMEI key, IMSI) pairs the history writes for this batch. A pair
    it skips was written within `history.resolution_s`, with its notice in the same
    transaction, so seeing its notice again would change nothing worth a write. None: all."""
    rules = decisions.policy.rules
    opens = np.array([r.opens_notice for r in rules], dtype=bool)
    recorded = np.array([r.record for r in rules], dtype=bool)
    pair = np.array([r.cutoff_scope is Scope.PAIR for r in rules], dtype=bool)
    kinds = sorted({r.notice_kind for r in rules if r.opens_notice})
    kind_of = np.array([kinds.index(r.notice_kind) if r.opens_notice else -1 for r in rules])
    at = np.flatnonzero(opens[decisions.rule])
    if fresh_pairs is not None:
        keep = [not recorded[r] or (k, i) in fresh_pairs for r, k, i in zip(
            decisions.rule[at].tolist(), batch.imei_key[at].tolist(), batch.imsi[at].tolist())]
        at = at[np.array(keep, dtype=bool)] if len(at) else at
    rule = decisions.rule[at]
    key, imsi, ts = batch.imei_key[at], batch.imsi[at], batch.ts_ms[at]
    subject = np.where(pair[rule], imsi, np.uint64(IMEI_SUBJECT))
    kind = kind_of[rule]
    # A subject is one kind of notice on one IMEI (and SIM): rules sharing a kind share it.
    order = np.lexsort((ts, subject, key, kind))
    rule, key, subject, ts, at = rule[order], key[order], subject[order], ts[order], at[order]
    kind = kind[order]
    if len(order):
        new = np.r_[True, (kind[1:] != kind[:-1]) | (key[1:] != key[:-1])
                    | (subject[1:] != subject[:-1])]
    else:
        new = np.zeros(0, dtype=bool)
    first = np.flatnonzero(new)
    last = np.r_[first[1:] - 1, len(order) - 1] if len(first) else first
    return NoticeSightings(rule[first], key[first], subject[first], batch.imsi[at[first]],
                           batch.msisdn[at[first]], ts[first], ts[last])


@dataclass(frozen=True, eq=False)
class CutSightings:
    """The (IMEI, SIM) pairs a batch refused as cut off, once each with their last time, as
    columns in (IMEI key, IMSI) order."""

    imei_key: np.ndarray  # uint64
    imsi: np.ndarray  # uint64
    last_ms: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.imei_key)


def cut_sightings(batch: AttachBatch, decisions: Decisions,
                  fresh_pairs: set[tuple[int, int]] | None = None) -> CutSightings:
    """The pairs decided by a `cut_off` rule. `fresh_pairs` as for `notice_sightings`: a
    refused phone retries every few minutes, and a pair the history skips was seen within
    `history.resolution_s`, which changes no release by days."""
    rules = decisions.policy.rules
    cut = np.array([r.when is Condition.CUT_OFF for r in rules], dtype=bool)
    recorded = np.array([r.record for r in rules], dtype=bool)
    at = np.flatnonzero(cut[decisions.rule])
    if fresh_pairs is not None and len(at):
        keep = [not recorded[r] or (k, i) in fresh_pairs for r, k, i in zip(
            decisions.rule[at].tolist(), batch.imei_key[at].tolist(), batch.imsi[at].tolist())]
        at = at[np.array(keep, dtype=bool)]
    key, imsi, ts = batch.imei_key[at], batch.imsi[at], batch.ts_ms[at]
    order = np.lexsort((ts, imsi, key))
    key, imsi, ts = key[order], imsi[order], ts[order]
    last = np.r_[(key[1:] != key[:-1]) | (imsi[1:] != imsi[:-1]), True] if len(key) \
        else np.zeros(0, dtype=bool)
    return CutSightings(key[last], imsi[last], ts[last])


Subject = tuple[str, int, int]  # (kind, IMEI key, subject IMSI): one live notice each


def successor_subject(notice: Notice, rule: Rule) -> Subject:
    """The subject `rule`'s notice has when it takes over from `notice`: the same SIM on the
    same IMEI, or the IMEI alone when the rule cuts whole IMEIs."""
    subject = notice.imsi if rule.cutoff_scope is Scope.PAIR else IMEI_SUBJECT
    return rule.notice_kind, notice.imei_key, subject


def successors(taking_over: list[tuple[Notice, int]], rules: tuple[Rule, ...],
               now_ms: int) -> NoticeSightings:
    """The notices that take over from superseded ones, as sightings: (notice, index of the
    rule that decides its subject now) in. Each is anchored now (its rule's deadline counted
    from the moment it takes over, as a flag's notices are from the flag) and last seen when
    its predecessor's subject was, so that one unseen since lapses rather than being cut.
    Several notices going to one subject (pairs to an IMEI) open one. An IMEI's notice taken
    over by a pair rule goes to its first SIM (where its SMS went, and whom the rule decided),
    last seen when the IMEI was: a later SIM on the IMEI gets its own notice at its next
    attach."""
    first: dict[Subject, tuple[int, Notice]] = {}
    last_seen: dict[Subject, int] = {}
    for notice, index in taking_over:
        subject = successor_subject(notice, rules[index])
        first.setdefault(subject, (index, notice))
        last_seen[subject] = max(last_seen.get(subject, notice.last_seen_ms),
                                 notice.last_seen_ms)
    subjects = list(first)
    return NoticeSightings(
        rule=np.array([first[s][0] for s in subjects], dtype=np.uint8),
        imei_key=np.array([s[1] for s in subjects], dtype=np.uint64),
        subject_imsi=np.array([s[2] for s in subjects], dtype=np.uint64),
        imsi=np.array([first[s][1].imsi for s in subjects], dtype=np.uint64),
        msisdn=np.array([first[s][1].msisdn for s in subjects], dtype=np.uint64),
        first_ms=np.full(len(subjects), now_ms, dtype=np.int64),
        last_ms=np.array([last_seen[s] for s in subjects], dtype=np.int64))
