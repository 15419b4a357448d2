//! The stops the platform's log shows for this bank's consents, held against what the broker's
//! feed delivered to the bank.
//!
//! The feed is the broker's word: it could leave a stop out and still be signed, complete and
//! fresh, and the bank's gate would go on serving the stopped consent. The log is witnessed, so
//! the monitor reads every `consent_revoked` entry of this bank's consents there (by position),
//! and every feed the bank applied in the bank's journal (`revocation_feed_applied`: the
//! position it covered, when it was made, and the consents it carried). A stop at position `p`
//! must have been carried by a feed once the bank's feeds cover `p`; one that was not is
//! reported ([`UndeliveredRevocation`]). Each stop the log shows is matched with one consent a
//! feed carried, so a consent stopped twice must be carried twice, as an honest feed does.
//!
//! A feed could also stand still short of a stop, so that the stop never falls due. A complete
//! feed says how long the log was when it was made, and the witnesses' cosignatures say how
//! long it was by their time: a feed made after a quorum had cosigned a longer log is reported
//! ([`FeedMismatch::Behind`]). And feeds describing a log the witnessed one does not reach
//! within the merge delay come from a log the witnesses were not shown
//! ([`FeedMismatch::Ahead`]).
//!
//! Nor may the platform go on issuing tokens for a consent it logged stopped, while it keeps the
//! stop from the witnesses and the feed short of it: a `token_issued` entry of one of this
//! bank's consents after the log's `consent_revoked` entry of it is reported
//! ([`TokenAfterRevocation`]), whatever the feed said. An honest broker checks the consent in
//! the same commit as it logs the token, so never writes one.
//!
//! A stop is this bank's when the entry names the bank as holder, when the bank's journal shows
//! it signed an attestation for the consent, or when an approval this bank signed names the
//! consent in the log, before or after the stop (an honest broker approves only a consent
//! awaiting decision, never a stopped one: a stop before the approval is the platform's doing,
//! and is held against the feed all the same). Stops of consents none of these names yet (the
//! bank has not signed) are kept for the merge delay, at most [`MAX_UNCLAIMED`] of them, and
//! claimed before a pass keeps any of its own.
//!
//! What is kept for a time is kept by the watch's own clock: the time a quorum of the witnesses
//! had cosigned the checkpoint read (the pass's time under a policy with no witness), which
//! never goes back, so that a bank whose clock steps forward or back for a pass forgets nothing
//! early.
//!
//! What is held between passes is small: the stops at or past the position the feeds cover
//! (the feed has not come to them yet), the consents the feeds carried whose stop the monitor
//! has not read in the log yet (its checkpoint lags the feed), the feeds past the witnessed
//! log (for at most the merge delay when the log is read, and at most [`MAX_AHEAD`] while it is
//! not), the consents those feeds carried once they are let go past the merge delay (at most
//! [`MAX_RELEASED`], whether the log could be read or not), the stops of this bank's consents read within the merge delay and a
//! token's life, the unclaimed stops, and what the last pass reported.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::CLOCK_SKEW_ALLOWANCE;
use super::saved::SavedStateError;
use crate::ids::ConsentId;

/// A stop of one of this bank's consents that the platform's witnessed log shows and that the
/// broker's revocation feed passed over: the bank applied feeds covering the stop's position,
/// and none of them carried it, so the bank's gate was never told of it. The feed is the
/// platform's; the log is what its witnesses saw. Stop the consent at the bank and take it up
/// with the platform, with the log entry and the journal's `revocation_feed_applied` entries as
/// evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndeliveredRevocation {
    /// The consent the log shows stopped.
    pub consent: ConsentId,
    /// The position of the log's `consent_revoked` entry.
    pub seq: u64,
    /// How far the bank's feeds covered the log when the stop was found left out (past
    /// `seq`).
    pub fed_to: u64,
}

/// The bank's revocation feeds and the platform's witnessed log disagree about how long the
/// log is. Either way the feeds are not the log the witnesses saw: suspend the platform, with
/// the journal's `revocation_feed_applied` entries and the checkpoint as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FeedMismatch {
    /// The last feed the bank applied said the log ended at `fed_to` when it was made
    /// (`generated_at`), but a quorum of the witnesses had cosigned a log of `log_size`
    /// entries before that (`cosigned_at`, more than twice the clock allowance earlier): a
    /// feed that stands still short of a stop, so that the stop never falls due. Reported at
    /// each pass while it holds.
    Behind {
        /// The position the feed covered to.
        fed_to: u64,
        /// When the broker made it, as the bank recorded.
        #[serde(with = "time::serde::timestamp")]
        generated_at: OffsetDateTime,
        /// The witnessed log's size.
        log_size: u64,
        /// When a quorum had cosigned it ([`super::MonitorReport::cosigned_at`]).
        #[serde(with = "time::serde::timestamp")]
        cosigned_at: OffsetDateTime,
    },
    /// Feeds the bank applied (the first at `applied_at`) described the log up to `fed_to`,
    /// and the witnessed log, of `log_size` entries, had not reached it the maximum merge
    /// delay later: the feeds come from a log the witnesses were not shown. What those feeds
    /// carried is no longer held against the log. Reported once, and again by a monitor
    /// restored from the state saved after the pass.
    Ahead {
        /// The furthest position those feeds covered to.
        fed_to: u64,
        /// When the bank applied the first of them.
        #[serde(with = "time::serde::timestamp")]
        applied_at: OffsetDateTime,
        /// The witnessed log's size at the pass.
        log_size: u64,
    },
}

/// A `token_issued` entry of one of this bank's consents after an entry that ended the same
/// consent, in the platform's witnessed log: its `consent_revoked` entry, or a `subject_erased`
/// or `retention_applied` entry naming it (its state deleted). The platform went on issuing
/// tokens for a consent it had logged stopped (and the gate, if its feed had not carried the
/// stop yet, may have served them). An honest broker never logs one. Reported once, and again
/// by a monitor restored from the state saved after the pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAfterRevocation {
    /// The consent.
    pub consent: ConsentId,
    /// The position of the log's first entry that ended it.
    pub stopped_seq: u64,
    /// The token's `jti`, as logged.
    pub token_id: String,
    /// The position of the log's `token_issued` entry.
    pub issued_seq: u64,
}

/// The most stops of consents not known to be this bank's the monitor keeps (the oldest go
/// first): a stop logged before this bank's approval of the consent is held against the feed
/// when the approval is read within the merge delay and before this many other stops.
pub(super) const MAX_UNCLAIMED: usize = 1_024;

/// The most consents, carried by feeds reported [`FeedMismatch::Ahead`], the monitor keeps as
/// delivered to the gate (the oldest go first): a stop of one read later is not reported
/// undelivered, since the bank's gate was told of it.
pub(super) const MAX_RELEASED: usize = 4_096;

/// A consent at a position: a stop at its log entry, or a consent a feed carried, with the
/// position the feed covered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stop {
    consent: ConsentId,
    position: u64,
}

/// A feed the bank applied: the position it covered to, and a time (when it was made, or
/// when the bank applied it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedMark {
    position: u64,
    #[serde(with = "time::serde::timestamp")]
    at: OffsetDateTime,
}

/// A stop read in the log, and when the monitor read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StopRead {
    consent: ConsentId,
    position: u64,
    #[serde(with = "time::serde::timestamp")]
    at: OffsetDateTime,
    /// An erasure's (the consent's state deleted), not a `consent_revoked` entry's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    erased: bool,
}

/// How long the watch holds a consent the log shows erased (or its state deleted by retention)
/// against the tokens issued after it: the longest a grant can last, so that the approval the
/// bank's gate would serve under has ended by then. No feed carries an erasure, so this is the
/// only watch over it; an honest broker never issues a token after one, so it costs no alarm.
const ERASED_KEPT: Duration = crate::consent::ABSOLUTE_MAX_CONSENT_DURATION;

/// The watch as saved (whole, in the state and in each record of changes: it is small).
/// Members added after format 3 was first written default to empty, so a state saved before
/// them restores.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedWatch {
    /// The furthest position a feed the bank applied covered to.
    fed: u64,
    /// The last feed the bank applied, and when it was made.
    latest: Option<FeedMark>,
    /// The consents the feeds carried whose stop was not read in the log yet.
    delivered: Vec<Stop>,
    /// The stops read in the log that no feed has covered yet.
    logged: Vec<Stop>,
    /// The feeds past the witnessed log, and when the bank applied each.
    ahead: Vec<FeedMark>,
    /// What the last pass reported.
    reported: Vec<UndeliveredRevocation>,
    /// The feeds ahead of the log the last pass reported.
    reported_ahead: Vec<FeedMismatch>,
    /// Sizes of the witnessed log past the last feed's position, each with the time a quorum
    /// had cosigned it when the monitor first read it.
    witnessed: Vec<FeedMark>,
    /// The first stop read of each of this bank's consents, while kept.
    #[serde(default)]
    stopped: Vec<StopRead>,
    /// The first erasure (or retention) read of each of this bank's consents, while kept.
    #[serde(default)]
    erased: Vec<StopRead>,
    /// Stops of consents not known to be this bank's yet, in log order.
    #[serde(default)]
    unclaimed: Vec<StopRead>,
    /// Consents carried by feeds reported ahead, oldest first.
    #[serde(default)]
    released: Vec<ConsentId>,
    /// The tokens after a stop the last pass reported.
    #[serde(default)]
    reported_tokens: Vec<TokenAfterRevocation>,
}

/// What one judgement found.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub(super) undelivered: Vec<UndeliveredRevocation>,
    pub(super) mismatches: Vec<FeedMismatch>,
    pub(super) tokens: Vec<TokenAfterRevocation>,
}

/// What a pass knows of the witnessed log when it judges.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verified {
    /// The size of the log as last verified.
    pub(super) size: u64,
    /// When a quorum had cosigned the checkpoint of that size, if this pass read and trusted
    /// it.
    pub(super) cosigned_at: Option<OffsetDateTime>,
    /// Whether this pass read and verified the log (not when it could not, nor after a fault
    /// of the bank's own journal): feeds are reported ahead of the log only by such a pass.
    pub(super) read: bool,
    /// The pass's time; none after a fault of the bank's own journal, when nothing is let go.
    pub(super) now: Option<OffsetDateTime>,
    /// The maximum merge delay.
    pub(super) merge_delay: Duration,
    /// How long after it is read a stop is held against the tokens issued after it (the merge
    /// delay and a token's life: a token served before the feed carried the stop is in the
    /// witnessed log by then).
    pub(super) stops_kept: Duration,
}

/// How many feeds past the witnessed log the watch keeps for a pass that reads the log to
/// report (the oldest go first): a log kept unreadable does not grow the watch.
const MAX_AHEAD: usize = 1_024;

/// How many witnessed sizes the watch keeps (the oldest go first).
const MAX_WITNESSED: usize = 256;

/// The monitor's watch over the platform's stops of this bank's consents.
#[derive(Debug, Default, Clone)]
pub(super) struct Watch {
    fed: u64,
    latest: Option<FeedMark>,
    /// Consent → the positions of the feeds that carried it, oldest first.
    delivered: HashMap<ConsentId, Vec<u64>>,
    /// The stops read in the log (consent, position) that no feed covers yet, in log order.
    logged: Vec<(ConsentId, u64)>,
    /// Feeds past the witnessed log (position, when applied), in the order applied.
    ahead: Vec<FeedMark>,
    reported: Vec<UndeliveredRevocation>,
    reported_ahead: Vec<FeedMismatch>,
    /// Sizes of the witnessed log past the last feed's position, each with the time a quorum
    /// had cosigned it when first read: the log was at least that long by then.
    witnessed: Vec<FeedMark>,
    /// What a restored monitor's next pass reports again.
    repeat: Vec<UndeliveredRevocation>,
    repeat_ahead: Vec<FeedMismatch>,
    /// This bank's consents → their first stop read (position, when read), while kept.
    stopped: HashMap<ConsentId, FeedMark>,
    /// This bank's consents → the first entry read that erased them or deleted their state by
    /// retention (position, when read), for [`ERASED_KEPT`].
    erased: HashMap<ConsentId, FeedMark>,
    /// Stops of consents not known to be this bank's yet (consent, position, when read), in
    /// log order, at most [`MAX_UNCLAIMED`].
    unclaimed: VecDeque<StopRead>,
    /// Consents carried by feeds reported ahead, oldest first, at most [`MAX_RELEASED`].
    released: VecDeque<ConsentId>,
    /// Tokens found issued after a stop since the last judgement.
    tokens: Vec<TokenAfterRevocation>,
    /// The latest time the watch was given ([`Watch::tick`]): stops are stamped and let go by
    /// it, so that a pass whose clock steps back or forward for a while forgets nothing early.
    clock: Option<OffsetDateTime>,
    reported_tokens: Vec<TokenAfterRevocation>,
    repeat_tokens: Vec<TokenAfterRevocation>,
}

impl Watch {
    /// The bank applied, at `applied_at`, a feed the broker made at `generated_at`, covering the
    /// log to `position` and carrying `revoked`.
    pub(super) fn fed(
        &mut self,
        position: u64,
        generated_at: OffsetDateTime,
        applied_at: OffsetDateTime,
        revoked: Vec<ConsentId>,
    ) {
        self.fed = self.fed.max(position);
        self.latest = Some(FeedMark {
            position,
            at: generated_at,
        });
        self.ahead.push(FeedMark {
            position,
            at: applied_at,
        });
        for consent in revoked {
            self.delivered.entry(consent).or_default().push(position);
        }
    }

    /// The log shows `consent`, one of this bank's, stopped at `position` (read at `now`).
    /// Stops are given in log order, except those claimed later, which are put in their place.
    pub(super) fn logged(&mut self, consent: ConsentId, position: u64, now: OffsetDateTime) {
        first_at(&mut self.stopped, consent.clone(), position, now);
        let at = self.logged.partition_point(|(_, seq)| *seq <= position);
        self.logged.insert(at, (consent, position));
    }

    /// The log shows `consent` stopped (or, `erased`, erased) at `position` (read at `now`),
    /// and nothing shows the consent this bank's yet: kept, so that an approval or a signature
    /// of the bank's read later makes it this bank's.
    pub(super) fn unclaimed(
        &mut self,
        consent: ConsentId,
        position: u64,
        now: OffsetDateTime,
        erased: bool,
    ) {
        if self.unclaimed.len() >= MAX_UNCLAIMED {
            self.unclaimed.pop_front();
        }
        self.unclaimed.push_back(StopRead {
            consent,
            position,
            at: now,
            erased,
        });
    }

    /// The watch's clock at a pass that read the log: `witnessed` is when a quorum of the
    /// witnesses had cosigned the checkpoint read (their clocks, not the bank's), or the
    /// pass's own time when no witness counts. It never goes back: a clock behind stamps
    /// nothing early.
    pub(super) fn tick(&mut self, witnessed: OffsetDateTime) -> OffsetDateTime {
        let clock = self.clock.map_or(witnessed, |clock| clock.max(witnessed));
        self.clock = Some(clock);
        clock
    }

    /// The time to stamp what a pass read when it gave the watch no time of the witnesses':
    /// the later of the watch's clock and `now` (a stamp ahead keeps a stop longer, never
    /// shorter: a clock held back for a while, then let go, forgets nothing read meanwhile
    /// early); the clock does not move.
    pub(super) fn held_clock(&self, now: OffsetDateTime) -> OffsetDateTime {
        self.clock.map_or(now, |clock| clock.max(now))
    }

    /// Takes as this bank's the unclaimed stops of consents `ours` now names.
    pub(super) fn claim(&mut self, ours: impl Fn(&ConsentId) -> bool) {
        let (claimed, kept): (VecDeque<StopRead>, VecDeque<StopRead>) =
            std::mem::take(&mut self.unclaimed)
                .into_iter()
                .partition(|stop| ours(&stop.consent));
        self.unclaimed = kept;
        for stop in claimed {
            if stop.erased {
                self.ended(stop.consent, stop.position, stop.at);
            } else {
                self.logged(stop.consent, stop.position, stop.at);
            }
        }
    }

    /// The log shows `consent`, one of this bank's, ended at `position` (read at `now`) by an
    /// entry the feed does not carry (an erasure, or retention deleting its state): held
    /// against the tokens issued after it only.
    pub(super) fn ended(&mut self, consent: ConsentId, position: u64, now: OffsetDateTime) {
        first_at(&mut self.erased, consent, position, now);
    }

    /// Whether the log showed `consent` stopped or erased (as far as the watch keeps).
    pub(super) fn is_stopped(&self, consent: &ConsentId) -> bool {
        self.stopped.contains_key(consent) || self.erased.contains_key(consent)
    }

    /// The log shows a token `token_id` issued for `consent`, one of this bank's, at
    /// `position`: reported at the next judgement when the log showed the consent stopped
    /// before it.
    pub(super) fn issued(&mut self, consent: &ConsentId, token_id: &str, position: u64) {
        let first = [self.stopped.get(consent), self.erased.get(consent)]
            .into_iter()
            .flatten()
            .map(|stop| stop.position)
            .min();
        if let Some(stopped_seq) = first
            && stopped_seq < position
        {
            self.tokens.push(TokenAfterRevocation {
                consent: consent.clone(),
                stopped_seq,
                token_id: token_id.to_owned(),
                issued_seq: position,
            });
        }
    }

    /// Matches each stop read with a consent a feed carried: one no feed carried though the
    /// feeds cover its position is reported (with what a restored monitor repeats), one the
    /// feeds have not come to is kept. Then holds the feeds against the witnessed log's size
    /// ([`FeedMismatch`]), and drops what the feeds carried up to it (its stop would have been
    /// read by now) or past it beyond the merge delay (reported ahead).
    pub(super) fn judge(&mut self, log: Verified) -> Judged {
        let mut undelivered = std::mem::take(&mut self.repeat);
        let mut mismatches = std::mem::take(&mut self.repeat_ahead);
        let mut tokens = std::mem::take(&mut self.repeat_tokens);
        tokens.append(&mut self.tokens);
        let (fed, delivered, released) = (self.fed, &mut self.delivered, &mut self.released);
        self.logged.retain(|(consent, seq)| {
            if let Some(positions) = delivered.get_mut(consent)
                && !positions.is_empty()
            {
                positions.remove(0);
                if positions.is_empty() {
                    delivered.remove(consent);
                }
                return false;
            }
            if fed > *seq {
                // Carried by a feed let go past the merge delay: the gate was told.
                if let Some(at) = released.iter().position(|c| c == consent) {
                    released.remove(at);
                    return false;
                }
                undelivered.push(UndeliveredRevocation {
                    consent: consent.clone(),
                    seq: *seq,
                    fed_to: fed,
                });
                return false;
            }
            true
        });
        undelivered.sort_by_key(|stop| stop.seq);
        // Feeds the witnessed log reached are no longer ahead. What those it has not reached
        // within the merge delay carried is let go (kept only as told to the gate), read or
        // not; they are reported by a pass that read the log, and kept for one until then.
        self.ahead.retain(|feed| feed.position > log.size);
        self.reported_ahead.clear();
        if let Some(now) = log.now {
            let delay = log.merge_delay;
            let (late, within): (Vec<FeedMark>, Vec<FeedMark>) = self
                .ahead
                .iter()
                .partition(|feed| feed.at.checked_add(delay).is_some_and(|due| due < now));
            let gone: HashSet<u64> = late.iter().map(|feed| feed.position).collect();
            let released = &mut self.released;
            self.delivered.retain(|consent, positions| {
                positions.retain(|position| {
                    let kept = !gone.contains(position);
                    if !kept {
                        if released.len() >= MAX_RELEASED {
                            released.pop_front();
                        }
                        released.push_back(consent.clone());
                    }
                    kept
                });
                !positions.is_empty()
            });
            if log.read {
                if let (Some(furthest), Some(first)) = (
                    late.iter().map(|feed| feed.position).max(),
                    late.iter().map(|feed| feed.at).min(),
                ) {
                    let ahead = FeedMismatch::Ahead {
                        fed_to: furthest,
                        applied_at: first,
                        log_size: log.size,
                    };
                    self.reported_ahead = vec![ahead.clone()];
                    mismatches.push(ahead);
                }
                self.ahead = within;
            } else if self.ahead.len() > MAX_AHEAD {
                let over = self.ahead.len() - MAX_AHEAD;
                self.ahead.drain(..over);
            }
        }
        // Stops read longer ago than a token issued after them could still be unlogged, and
        // unclaimed ones past the merge delay, are let go, by the watch's own clock (see
        // `Watch::tick`), and only by a pass that read the log.
        if log.read
            && let Some(watch_now) = self.clock
        {
            let delay = log.merge_delay;
            self.stopped.retain(|_, stop| {
                stop.at
                    .checked_add(log.stops_kept)
                    .is_none_or(|until| until >= watch_now)
            });
            self.erased.retain(|_, stop| {
                stop.at
                    .checked_add(ERASED_KEPT)
                    .is_none_or(|until| until >= watch_now)
            });
            self.unclaimed.retain(|stop| {
                stop.at
                    .checked_add(delay)
                    .is_none_or(|until| until >= watch_now)
            });
        }
        self.delivered.retain(|_, positions| {
            positions.retain(|position| *position > log.size);
            !positions.is_empty()
        });
        // A complete feed made after a quorum had cosigned a longer log said less than the log.
        if let Some(cosigned_at) = log.cosigned_at
            && self
                .witnessed
                .last()
                .is_none_or(|seen| seen.position < log.size)
        {
            self.witnessed.push(FeedMark {
                position: log.size,
                at: cosigned_at,
            });
            if self.witnessed.len() > MAX_WITNESSED {
                self.witnessed.remove(0);
            }
        }
        if let Some(latest) = self.latest {
            self.witnessed
                .retain(|seen| seen.position > latest.position);
            let margin = CLOCK_SKEW_ALLOWANCE.saturating_mul(2);
            let longer = self.witnessed.iter().rev().find(|seen| {
                seen.at
                    .checked_add(margin)
                    .is_some_and(|after| latest.at > after)
            });
            if let Some(seen) = longer {
                mismatches.push(FeedMismatch::Behind {
                    fed_to: latest.position,
                    generated_at: latest.at,
                    log_size: seen.position,
                    cosigned_at: seen.at,
                });
            }
        }
        self.reported.clone_from(&undelivered);
        tokens.sort_by_key(|token| token.issued_seq);
        self.reported_tokens.clone_from(&tokens);
        Judged {
            undelivered,
            mismatches,
            tokens,
        }
    }

    /// How many stops read in the log the feeds have not come to yet.
    pub(super) fn pending(&self) -> usize {
        self.logged.len()
    }

    /// The watch as saved.
    pub(super) fn saved(&self) -> SavedWatch {
        let mut delivered: Vec<Stop> = self
            .delivered
            .iter()
            .flat_map(|(consent, positions)| {
                positions.iter().map(|position| Stop {
                    consent: consent.clone(),
                    position: *position,
                })
            })
            .collect();
        // A stable order (the map's own is random), each consent's positions in their order.
        delivered.sort_by(|a, b| {
            (a.consent.as_str(), a.position).cmp(&(b.consent.as_str(), b.position))
        });
        SavedWatch {
            fed: self.fed,
            latest: self.latest,
            delivered,
            logged: self
                .logged
                .iter()
                .map(|(consent, position)| Stop {
                    consent: consent.clone(),
                    position: *position,
                })
                .collect(),
            ahead: self.ahead.clone(),
            reported: self.reported.clone(),
            reported_ahead: self.reported_ahead.clone(),
            witnessed: self.witnessed.clone(),
            stopped: saved_stops(&self.stopped),
            erased: saved_stops(&self.erased),
            unclaimed: self.unclaimed.iter().cloned().collect(),
            released: self.released.iter().cloned().collect(),
            reported_tokens: self.reported_tokens.clone(),
        }
    }

    /// The watch `saved` holds, checked against itself and against where the monitor stands:
    /// the log verified to `verified`, the journal read through every feed it names.
    pub(super) fn restored(saved: SavedWatch, verified: u64) -> Result<Self, SavedStateError> {
        use SavedStateError::Inconsistent;
        let SavedWatch {
            fed,
            latest,
            delivered,
            logged,
            ahead,
            reported,
            reported_ahead,
            witnessed,
            stopped,
            erased,
            unclaimed,
            released,
            reported_tokens,
        } = saved;
        if latest.is_some_and(|latest| latest.position > fed) {
            return Err(Inconsistent("a feed past the furthest one"));
        }
        let mut watch = Self {
            fed,
            latest,
            ..Self::default()
        };
        for Stop { consent, position } in delivered {
            // A pass keeps only what a feed carried past the log verified, and no feed covers
            // more than the furthest.
            if position <= verified || position > fed {
                return Err(Inconsistent("a stop carried by a feed out of place"));
            }
            watch.delivered.entry(consent).or_default().push(position);
        }
        let mut before = None;
        for Stop { consent, position } in logged {
            // A pass keeps only the stops its feeds have not come to, read in log order below
            // the log verified.
            if position < fed || position >= verified || before.is_some_and(|b| position < b) {
                return Err(Inconsistent("a stop read in the log out of place"));
            }
            before = Some(position);
            watch.logged.push((consent, position));
        }
        if ahead
            .iter()
            .any(|feed| feed.position <= verified || feed.position > fed)
        {
            return Err(Inconsistent("a feed ahead of the log out of place"));
        }
        watch.ahead = ahead;
        let mut before = None;
        for seen in &witnessed {
            if seen.position > verified
                || before.is_some_and(|b: FeedMark| seen.position <= b.position)
            {
                return Err(Inconsistent("a witnessed size out of place"));
            }
            before = Some(*seen);
        }
        if witnessed.len() > MAX_WITNESSED {
            return Err(Inconsistent("more witnessed sizes than are kept"));
        }
        watch.witnessed = witnessed;
        if reported
            .iter()
            .any(|stop| stop.seq >= stop.fed_to || stop.fed_to > fed)
        {
            return Err(Inconsistent("a stop reported the feeds had not passed"));
        }
        if reported_ahead.iter().any(
            |mismatch| !matches!(mismatch, FeedMismatch::Ahead { fed_to, .. } if *fed_to <= fed),
        ) {
            return Err(Inconsistent("a feed reported ahead out of place"));
        }
        watch.repeat.clone_from(&reported);
        watch.reported = reported;
        watch.repeat_ahead.clone_from(&reported_ahead);
        watch.reported_ahead = reported_ahead;
        watch.stopped = restored_stops(stopped, verified)?;
        watch.erased = restored_stops(erased, verified)?;
        let mut before = None;
        for stop in &unclaimed {
            if stop.position >= verified || before.is_some_and(|b| stop.position < b) {
                return Err(Inconsistent("an unclaimed stop out of place"));
            }
            before = Some(stop.position);
        }
        if unclaimed.len() > MAX_UNCLAIMED || released.len() > MAX_RELEASED {
            return Err(Inconsistent("more stops or consents than are kept"));
        }
        watch.clock = watch
            .stopped
            .values()
            .chain(watch.erased.values())
            .map(|stop| stop.at)
            .chain(unclaimed.iter().map(|stop| stop.at))
            .max();
        watch.unclaimed = unclaimed.into();
        watch.released = released.into();
        if reported_tokens
            .iter()
            .any(|token| token.stopped_seq >= token.issued_seq || token.issued_seq >= verified)
        {
            return Err(Inconsistent("a token reported after a stop out of place"));
        }
        watch.repeat_tokens.clone_from(&reported_tokens);
        watch.reported_tokens = reported_tokens;
        Ok(watch)
    }
}

/// Records in `first` that the log shows `consent` stopped (or erased) at `position`, read at
/// `now`: the first position the watch read, and when.
fn first_at(
    first: &mut HashMap<ConsentId, FeedMark>,
    consent: ConsentId,
    position: u64,
    now: OffsetDateTime,
) {
    first
        .entry(consent)
        .and_modify(|mark| mark.position = mark.position.min(position))
        .or_insert(FeedMark { position, at: now });
}

/// The first stops (or erasures) as saved, in log order.
fn saved_stops(first: &HashMap<ConsentId, FeedMark>) -> Vec<StopRead> {
    let mut saved: Vec<StopRead> = first
        .iter()
        .map(|(consent, mark)| StopRead {
            consent: consent.clone(),
            position: mark.position,
            at: mark.at,
            erased: false,
        })
        .collect();
    saved.sort_by_key(|stop| stop.position);
    saved
}

/// The first stops (or erasures) `saved` holds, each read below the log verified (`verified`)
/// and one a consent.
fn restored_stops(
    saved: Vec<StopRead>,
    verified: u64,
) -> Result<HashMap<ConsentId, FeedMark>, SavedStateError> {
    use SavedStateError::Inconsistent;
    let mut first = HashMap::with_capacity(saved.len());
    for StopRead {
        consent,
        position,
        at,
        erased,
    } in saved
    {
        if position >= verified || erased {
            return Err(Inconsistent("a stop read past the log verified"));
        }
        if first.insert(consent, FeedMark { position, at }).is_some() {
            return Err(Inconsistent("a consent's first stop twice"));
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent(n: u8) -> ConsentId {
        format!("cns_{n:0>26}").parse().unwrap()
    }

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::minutes(minutes)
    }

    fn log(size: u64, cosigned: Option<i64>, now: i64) -> Verified {
        Verified {
            size,
            cosigned_at: cosigned.map(at),
            read: true,
            now: Some(at(now)),
            merge_delay: Duration::hours(1),
            stops_kept: Duration::minutes(78),
        }
    }

    #[test]
    fn a_stop_is_matched_once_whichever_comes_first() {
        let mut watch = Watch::default();
        // The feed carries the stop before the monitor's checkpoint shows it.
        watch.fed(10, at(0), at(0), vec![consent(1)]);
        assert!(watch.judge(log(5, None, 0)).undelivered.is_empty());
        watch.logged(consent(1), 7, at(0));
        assert!(watch.judge(log(12, None, 1)).undelivered.is_empty());
        assert!(watch.delivered.is_empty());
        // The log shows it before the feed comes to it.
        watch.logged(consent(2), 11, at(0));
        assert!(watch.judge(log(12, None, 2)).undelivered.is_empty());
        assert_eq!(watch.pending(), 1);
        watch.fed(12, at(3), at(3), vec![consent(2)]);
        assert!(watch.judge(log(12, None, 3)).undelivered.is_empty());
        assert_eq!(watch.pending(), 0);
        // Stopped twice, carried once: the second stop is reported.
        watch.logged(consent(3), 13, at(0));
        watch.logged(consent(3), 14, at(0));
        watch.fed(15, at(4), at(4), vec![consent(3)]);
        let reported = watch.judge(log(15, None, 4)).undelivered;
        assert_eq!(
            reported,
            [UndeliveredRevocation {
                consent: consent(3),
                seq: 14,
                fed_to: 15
            }]
        );
        let restored = Watch::restored(watch.saved(), 15).unwrap();
        assert_eq!(restored.repeat, reported);
    }

    #[test]
    fn feeds_are_held_to_the_length_the_witnesses_saw() {
        let mut watch = Watch::default();
        watch.fed(10, at(0), at(0), Vec::new());
        // Witnessed at 20 entries at minute 1: a feed made at minute 4 that says 10 is within
        // the clocks' allowance, one made at minute 6 is not.
        assert!(watch.judge(log(20, Some(1), 1)).mismatches.is_empty());
        watch.fed(10, at(4), at(4), Vec::new());
        assert!(watch.judge(log(20, Some(4), 4)).mismatches.is_empty());
        watch.fed(10, at(6), at(6), Vec::new());
        let behind = FeedMismatch::Behind {
            fed_to: 10,
            generated_at: at(6),
            log_size: 20,
            cosigned_at: at(1),
        };
        assert_eq!(watch.judge(log(20, Some(6), 6)).mismatches, [behind]);
        // Reaching the log ends it.
        watch.fed(20, at(7), at(7), Vec::new());
        assert!(watch.judge(log(20, Some(7), 7)).mismatches.is_empty());
        // A feed past the log the witnesses never reach, carrying a consent: reported after the
        // merge delay, once, and what it carried is let go.
        watch.fed(1 << 40, at(8), at(8), vec![consent(1)]);
        assert!(watch.judge(log(20, Some(8), 30)).mismatches.is_empty());
        let ahead = watch.judge(log(21, Some(69), 69)).mismatches;
        assert_eq!(
            ahead,
            [FeedMismatch::Ahead {
                fed_to: 1 << 40,
                applied_at: at(8),
                log_size: 21
            }]
        );
        assert!(watch.delivered.is_empty() && watch.ahead.is_empty());
        let mut restored = Watch::restored(watch.saved(), 21).unwrap();
        assert_eq!(restored.judge(log(21, None, 70)).mismatches, ahead);
        assert!(watch.judge(log(21, Some(70), 70)).mismatches.is_empty());
    }

    #[test]
    fn unclaimed_stops_are_claimed_in_log_order_and_tokens_after_them_reported() {
        let mut watch = Watch::default();
        watch.logged(consent(1), 20, at(0));
        watch.unclaimed(consent(2), 10, at(0), false);
        watch.unclaimed(consent(3), 15, at(0), true);
        watch.claim(|c| *c == consent(2));
        assert_eq!(
            watch.logged,
            [(consent(2), 10), (consent(1), 20)],
            "claimed into its place"
        );
        assert_eq!(watch.unclaimed.len(), 1);
        // A token before the stop is not reported; after it, it is, once.
        watch.issued(&consent(2), "tok_before", 9);
        watch.issued(&consent(2), "tok_after", 11);
        watch.issued(&consent(3), "tok_unclaimed", 16);
        let judged = watch.judge(log(25, None, 1));
        assert_eq!(
            judged.tokens,
            [TokenAfterRevocation {
                consent: consent(2),
                stopped_seq: 10,
                token_id: "tok_after".into(),
                issued_seq: 11,
            }]
        );
        // Saved after the pass and restored: what it reported is repeated, the rest kept as it
        // was; a pass of the running watch reports it no more.
        let mut restored = Watch::restored(watch.saved(), 25).unwrap();
        assert_eq!(restored.judge(log(25, None, 3)).tokens, judged.tokens);
        assert_eq!(restored.stopped, watch.stopped);
        assert_eq!(restored.unclaimed, watch.unclaimed);
        assert!(watch.judge(log(25, None, 2)).tokens.is_empty());
        // Unclaimed stops go after the merge delay, stops after the time kept, by the watch's
        // clock, which a pass's clock stepping back does not turn back.
        watch.tick(at(62));
        watch.judge(log(25, None, 62));
        assert!(watch.unclaimed.is_empty() && !watch.stopped.is_empty());
        assert_eq!(watch.tick(at(10)), at(62));
        watch.judge(log(25, None, 10));
        assert!(!watch.stopped.is_empty());
        watch.tick(at(80));
        watch.judge(log(25, None, 80));
        assert!(watch.stopped.is_empty());
        // A saved state that names a stop past the log verified is refused.
        let mut saved = restored.saved();
        saved.stopped[0].position = 25;
        assert!(Watch::restored(saved, 25).is_err());
        let mut saved = restored.saved();
        saved.released = vec![consent(1); MAX_RELEASED + 1];
        assert!(Watch::restored(saved, 25).is_err());
    }

    #[test]
    fn an_erasure_is_held_against_tokens_not_feeds_for_as_long_as_a_grant_lasts() {
        let mut watch = Watch::default();
        watch.tick(at(0));
        watch.unclaimed(consent(1), 10, at(0), true);
        watch.claim(|c| *c == consent(1));
        assert!(watch.logged.is_empty(), "no feed carries an erasure");
        assert_eq!(watch.pending(), 0);
        // A day later (far past a stop's time), a token after it is still reported.
        watch.tick(at(24 * 60));
        assert!(watch.judge(log(30, None, 24 * 60)).undelivered.is_empty());
        watch.issued(&consent(1), "tok_late", 20);
        assert_eq!(watch.judge(log(30, None, 24 * 60)).tokens.len(), 1);
        // Saved and restored as an erasure.
        let restored = Watch::restored(watch.saved(), 30).unwrap();
        assert_eq!(restored.erased, watch.erased);
        assert!(restored.stopped.is_empty());
        // Let go once a grant could no longer last.
        let year = 366 * 24 * 60;
        watch.tick(at(year));
        watch.judge(log(30, None, year));
        assert!(watch.erased.is_empty());
    }
}
