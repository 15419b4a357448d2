//! The permit-only data path: what a bank serves, and only to verified access.
//!
//! A bank implements [`DataHolder`]. Its methods take a grant ([`BalanceGrant`],
//! [`AlertsGrant`], [`TransactionsGrant`]) that names exactly one account, and that only a
//! [`VerifiedAccess`] of the matching scope hands out. Each method returns only the data of its
//! scope: a balance carries no transactions. [`serve`] dispatches on the verified scope and
//! refuses (fails closed) data that the holder returned for any other account.
//!
//! ```compile_fail,E0451
//! use consent_broker::data::BalanceGrant;
//! // Grants cannot be built by hand: only a verified access hands them out.
//! let grant = BalanceGrant { account: &"acc-1".parse().unwrap() };
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::holder::VerifiedAccess;
use crate::ids::AccountId;
use crate::vocab::Scope;

/// Leave to read one account's balance.
#[derive(Debug, Clone, Copy)]
pub struct BalanceGrant<'a> {
    account: &'a AccountId,
}

/// Leave to read one account's pending fraud alerts.
#[derive(Debug, Clone, Copy)]
pub struct AlertsGrant<'a> {
    account: &'a AccountId,
}

/// Leave to read one account's transactions (only where the holder's policy enables them).
#[derive(Debug, Clone, Copy)]
pub struct TransactionsGrant<'a> {
    account: &'a AccountId,
}

macro_rules! grant_account {
    ($($grant:ident),+) => {$(
        impl $grant<'_> {
            /// The one account this grant covers.
            pub fn account(&self) -> &AccountId {
                self.account
            }
        }
    )+};
}
grant_account!(BalanceGrant, AlertsGrant, TransactionsGrant);

impl VerifiedAccess {
    /// The balance grant, if the verified scope is `balance`.
    pub fn balance_grant(&self) -> Option<BalanceGrant<'_>> {
        (self.scope() == Scope::Balance).then_some(BalanceGrant {
            account: self.account(),
        })
    }

    /// The alerts grant, if the verified scope is `alerts`.
    pub fn alerts_grant(&self) -> Option<AlertsGrant<'_>> {
        (self.scope() == Scope::Alerts).then_some(AlertsGrant {
            account: self.account(),
        })
    }

    /// The transactions grant, if the verified scope is `transactions`.
    pub fn transactions_grant(&self) -> Option<TransactionsGrant<'_>> {
        (self.scope() == Scope::Transactions).then_some(TransactionsGrant {
            account: self.account(),
        })
    }
}

/// An amount in minor units (cents) of a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units; negative for an overdraft.
    pub minor_units: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// One account's balance, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account.
    pub account: AccountId,
    /// Available balance.
    pub available: Money,
    /// As of when.
    #[serde(with = "time::serde::timestamp")]
    pub as_of: OffsetDateTime,
}

/// A pending fraud alert on one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudAlert {
    /// The account.
    pub account: AccountId,
    /// The holder's reference for the alert.
    pub reference: String,
    /// What the subject should know.
    pub message: String,
    /// When it was raised.
    #[serde(with = "time::serde::timestamp")]
    pub raised_at: OffsetDateTime,
}

/// One transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The account.
    pub account: AccountId,
    /// Signed amount.
    pub amount: Money,
    /// Booking description.
    pub description: String,
    /// When it was booked.
    #[serde(with = "time::serde::timestamp")]
    pub booked_at: OffsetDateTime,
}

/// The bank's data, reachable only through grants.
pub trait DataHolder {
    /// The holder's own failure type.
    type Error;

    /// The balance of the grant's account.
    ///
    /// # Errors
    /// The holder's failure.
    fn balance(&self, grant: BalanceGrant<'_>) -> Result<Balance, Self::Error>;

    /// The pending fraud alerts of the grant's account.
    ///
    /// # Errors
    /// The holder's failure.
    fn pending_alerts(&self, grant: AlertsGrant<'_>) -> Result<Vec<FraudAlert>, Self::Error>;

    /// The transactions of the grant's account. Holders that never share transactions keep the
    /// default, which refuses.
    ///
    /// # Errors
    /// The holder's failure; by default `None` is returned through [`serve`] as
    /// [`DataError::NotOffered`].
    fn transactions(
        &self,
        grant: TransactionsGrant<'_>,
    ) -> Option<Result<Vec<Transaction>, Self::Error>> {
        let _ = grant;
        None
    }
}

/// Data served under one verified access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "data", rename_all = "snake_case")]
pub enum AccountData {
    /// Under `balance`.
    Balance(Balance),
    /// Under `alerts`.
    Alerts(Vec<FraudAlert>),
    /// Under `transactions`.
    Transactions(Vec<Transaction>),
}

/// Why data was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError<E> {
    /// The holder does not offer this scope's data.
    #[error("the holder does not offer {0} data")]
    NotOffered(Scope),
    /// The holder returned data of another account: refused, nothing is passed on.
    #[error("the holder returned data of account {returned} under a grant for another account")]
    OtherAccount {
        /// The account the data belonged to.
        returned: AccountId,
    },
    /// The holder failed.
    #[error("the holder failed")]
    Holder(E),
}

/// Serves the data of `access`'s scope and account from `holder`.
///
/// # Errors
/// [`DataError`].
pub fn serve<H: DataHolder>(
    holder: &H,
    access: &VerifiedAccess,
) -> Result<AccountData, DataError<H::Error>> {
    let account = access.account();
    let only_this_account = |returned: &AccountId| {
        if returned == account {
            Ok(())
        } else {
            Err(DataError::OtherAccount {
                returned: returned.clone(),
            })
        }
    };
    if let Some(grant) = access.balance_grant() {
        let balance = holder.balance(grant).map_err(DataError::Holder)?;
        only_this_account(&balance.account)?;
        return Ok(AccountData::Balance(balance));
    }
    if let Some(grant) = access.alerts_grant() {
        let alerts = holder.pending_alerts(grant).map_err(DataError::Holder)?;
        for alert in &alerts {
            only_this_account(&alert.account)?;
        }
        return Ok(AccountData::Alerts(alerts));
    }
    let Some(grant) = access.transactions_grant() else {
        return Err(DataError::NotOffered(access.scope()));
    };
    let transactions = holder
        .transactions(grant)
        .ok_or(DataError::NotOffered(Scope::Transactions))?
        .map_err(DataError::Holder)?;
    for transaction in &transactions {
        only_this_account(&transaction.account)?;
    }
    Ok(AccountData::Transactions(transactions))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module's `compile_fail` example is this literal, which compiles where the field is
    /// visible.
    #[test]
    fn the_forging_literal_is_otherwise_well_formed() {
        let account: AccountId = "acc-1".parse().unwrap();
        let grant = BalanceGrant { account: &account };
        assert_eq!(grant.account(), &account);
    }
}
