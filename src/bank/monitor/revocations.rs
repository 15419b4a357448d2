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
//! What is held between passes is small: the stops at or past the position the feeds cover
//! (the feed has not come to them yet), the consents the feeds carried whose stop the monitor
//! has not read in the log yet (its checkpoint lags the feed), the feeds past the witnessed
//! log (for at most the merge delay), and what the last pass reported.

use std::collections::{HashMap, HashSet};

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

/// The watch as saved (whole, in the state and in each record of changes: it is small).
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
}

/// What one judgement found.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub(super) undelivered: Vec<UndeliveredRevocation>,
    pub(super) mismatches: Vec<FeedMismatch>,
}

/// What a pass knows of the witnessed log when it judges.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verified {
    /// The size of the log as last verified.
    pub(super) size: u64,
    /// When a quorum had cosigned the checkpoint of that size, if this pass read and trusted
    /// it.
    pub(super) cosigned_at: Option<OffsetDateTime>,
    /// The pass's time and the merge delay, when the log was read as far as it could be (not
    /// after a fault of the bank's own journal, which stopped the pass before the log).
    pub(super) due: Option<(OffsetDateTime, Duration)>,
}

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

    /// The log shows `consent` stopped at `position`.
    pub(super) fn logged(&mut self, consent: ConsentId, position: u64) {
        self.logged.push((consent, position));
    }

    /// Matches each stop read with a consent a feed carried: one no feed carried though the
    /// feeds cover its position is reported (with what a restored monitor repeats), one the
    /// feeds have not come to is kept. Then holds the feeds against the witnessed log's size
    /// ([`FeedMismatch`]), and drops what the feeds carried up to it (its stop would have been
    /// read by now) or past it beyond the merge delay (reported ahead).
    pub(super) fn judge(&mut self, log: Verified) -> Judged {
        let mut undelivered = std::mem::take(&mut self.repeat);
        let mut mismatches = std::mem::take(&mut self.repeat_ahead);
        let (fed, delivered) = (self.fed, &mut self.delivered);
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
        // Feeds the witnessed log reached are no longer ahead; those it has not reached within
        // the merge delay are reported, and what they carried is let go.
        self.ahead.retain(|feed| feed.position > log.size);
        if let Some((now, delay)) = log.due {
            let (late, within): (Vec<FeedMark>, Vec<FeedMark>) = self
                .ahead
                .iter()
                .partition(|feed| feed.at.checked_add(delay).is_some_and(|due| due < now));
            if let (Some(furthest), Some(first)) = (
                late.iter().map(|feed| feed.position).max(),
                late.iter().map(|feed| feed.at).min(),
            ) {
                let gone: HashSet<u64> = late.iter().map(|feed| feed.position).collect();
                self.delivered.retain(|_, positions| {
                    positions.retain(|position| !gone.contains(position));
                    !positions.is_empty()
                });
                let ahead = FeedMismatch::Ahead {
                    fed_to: furthest,
                    applied_at: first,
                    log_size: log.size,
                };
                self.reported_ahead = vec![ahead.clone()];
                mismatches.push(ahead);
            } else {
                self.reported_ahead.clear();
            }
            self.ahead = within;
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
        Judged {
            undelivered,
            mismatches,
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
        Ok(watch)
    }
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
            due: Some((at(now), Duration::hours(1))),
        }
    }

    #[test]
    fn a_stop_is_matched_once_whichever_comes_first() {
        let mut watch = Watch::default();
        // The feed carries the stop before the monitor's checkpoint shows it.
        watch.fed(10, at(0), at(0), vec![consent(1)]);
        assert!(watch.judge(log(5, None, 0)).undelivered.is_empty());
        watch.logged(consent(1), 7);
        assert!(watch.judge(log(12, None, 1)).undelivered.is_empty());
        assert!(watch.delivered.is_empty());
        // The log shows it before the feed comes to it.
        watch.logged(consent(2), 11);
        assert!(watch.judge(log(12, None, 2)).undelivered.is_empty());
        assert_eq!(watch.pending(), 1);
        watch.fed(12, at(3), at(3), vec![consent(2)]);
        assert!(watch.judge(log(12, None, 3)).undelivered.is_empty());
        assert_eq!(watch.pending(), 0);
        // Stopped twice, carried once: the second stop is reported.
        watch.logged(consent(3), 13);
        watch.logged(consent(3), 14);
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
}
