//! The stops the platform's log shows for this bank's consents, held against what the broker's
//! feed delivered to the bank.
//!
//! The feed is the broker's word: it could leave a stop out and still be signed, complete and
//! fresh, and the bank's gate would go on serving the stopped consent. The log is witnessed, so
//! the monitor reads every `consent_revoked` entry of this bank's consents there (by position),
//! and every feed the bank applied in the bank's journal (`revocation_feed_applied`: the
//! position it covered and the consents it carried). A stop at position `p` must have been
//! carried by a feed once the bank's feeds cover `p`; one that was not is reported
//! ([`UndeliveredRevocation`]). Each stop the log shows is matched with one consent a feed
//! carried, so a consent stopped twice must be carried twice, as an honest feed does.
//!
//! What is held between passes is small: the stops at or past the position the feeds cover
//! (the feed has not come to them yet), the consents the feeds carried whose stop the monitor
//! has not read in the log yet (its checkpoint lags the feed), and what the last pass reported.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

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

/// A consent at a position: a stop at its log entry, or a consent a feed carried, with the
/// position the feed covered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stop {
    consent: ConsentId,
    position: u64,
}

/// The watch as saved (whole, in the state and in each record of changes: it is small).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedWatch {
    /// The position the last feed the bank applied covered to.
    fed: u64,
    /// The consents the feeds carried whose stop was not read in the log yet.
    delivered: Vec<Stop>,
    /// The stops read in the log that no feed has covered yet.
    logged: Vec<Stop>,
    /// What the last pass reported.
    reported: Vec<UndeliveredRevocation>,
}

/// The monitor's watch over the platform's stops of this bank's consents.
#[derive(Debug, Default, Clone)]
pub(super) struct Watch {
    fed: u64,
    /// Consent → the positions of the feeds that carried it, oldest first.
    delivered: HashMap<ConsentId, Vec<u64>>,
    /// The stops read in the log (consent, position) that no feed covers yet, in log order.
    logged: Vec<(ConsentId, u64)>,
    reported: Vec<UndeliveredRevocation>,
    /// What a restored monitor's next pass reports again.
    repeat: Vec<UndeliveredRevocation>,
}

impl Watch {
    /// The bank applied a feed covering the log to `position` and carrying `revoked`.
    pub(super) fn fed(&mut self, position: u64, revoked: Vec<ConsentId>) {
        self.fed = self.fed.max(position);
        for consent in revoked {
            self.delivered.entry(consent).or_default().push(position);
        }
    }

    /// The log shows `consent` stopped at `position`.
    pub(super) fn logged(&mut self, consent: ConsentId, position: u64) {
        self.logged.push((consent, position));
    }

    /// Matches each stop read with a consent a feed carried: one no feed carried though the
    /// feeds cover its position is returned (with what a restored monitor repeats), one the
    /// feeds have not come to is kept. Then drops what the feeds carried up to the log's
    /// `verified` size: its stop would have been read by now.
    pub(super) fn judge(&mut self, verified: u64) -> Vec<UndeliveredRevocation> {
        let mut undelivered = std::mem::take(&mut self.repeat);
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
        delivered.retain(|_, positions| {
            positions.retain(|position| *position > verified);
            !positions.is_empty()
        });
        undelivered.sort_by_key(|stop| stop.seq);
        self.reported.clone_from(&undelivered);
        undelivered
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
            delivered,
            logged: self
                .logged
                .iter()
                .map(|(consent, position)| Stop {
                    consent: consent.clone(),
                    position: *position,
                })
                .collect(),
            reported: self.reported.clone(),
        }
    }

    /// The watch `saved` holds, checked against itself and against where the monitor stands:
    /// the log verified to `verified`, the journal read through every feed it names.
    pub(super) fn restored(saved: SavedWatch, verified: u64) -> Result<Self, SavedStateError> {
        use SavedStateError::Inconsistent;
        let SavedWatch {
            fed,
            delivered,
            logged,
            reported,
        } = saved;
        let mut watch = Self {
            fed,
            ..Self::default()
        };
        for Stop { consent, position } in delivered {
            // A pass keeps only what a feed carried past the log verified, and no feed covers
            // more than the last.
            if position <= verified || position > fed {
                return Err(Inconsistent("a stop carried by a feed out of place"));
            }
            watch.delivered.entry(consent).or_default().push(position);
        }
        let mut before = None;
        for Stop { consent, position } in logged {
            // A pass keeps only the stops its feeds have not come to, read in log order.
            if position < fed || position >= verified || before.is_some_and(|b| position < b) {
                return Err(Inconsistent("a stop read in the log out of place"));
            }
            before = Some(position);
            watch.logged.push((consent, position));
        }
        if reported
            .iter()
            .any(|stop| stop.seq >= stop.fed_to || stop.fed_to > fed)
        {
            return Err(Inconsistent("a stop reported the feeds had not passed"));
        }
        watch.repeat.clone_from(&reported);
        watch.reported = reported;
        Ok(watch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent(n: u8) -> ConsentId {
        format!("cns_{:0>26}", n).parse().unwrap()
    }

    #[test]
    fn a_stop_is_matched_once_whichever_comes_first() {
        let mut watch = Watch::default();
        // The feed carries the stop before the monitor's checkpoint shows it.
        watch.fed(10, vec![consent(1)]);
        assert_eq!(watch.judge(5), []);
        watch.logged(consent(1), 7);
        assert_eq!(watch.judge(12), []);
        assert!(watch.delivered.is_empty());
        // The log shows it before the feed comes to it.
        watch.logged(consent(2), 11);
        assert_eq!(watch.judge(12), []);
        assert_eq!(watch.pending(), 1);
        watch.fed(12, vec![consent(2)]);
        assert_eq!(watch.judge(12), []);
        assert_eq!(watch.pending(), 0);
        // Stopped twice, carried once: the second stop is reported.
        watch.logged(consent(3), 13);
        watch.logged(consent(3), 14);
        watch.fed(15, vec![consent(3)]);
        let reported = watch.judge(15);
        assert_eq!(
            reported,
            [UndeliveredRevocation {
                consent: consent(3),
                seq: 14,
                fed_to: 15
            }]
        );
        let saved = watch.saved();
        let restored = Watch::restored(saved, 15).unwrap();
        assert_eq!(restored.repeat, reported);
    }
}
