//! The permit-only data path: what a bank serves, and only to verified access.
//!
//! A bank implements [`DataHolder`]. Its methods take a grant ([`BalanceGrant`],
//! [`AlertsGrant`], [`TransactionsGrant`]) that names exactly one account, and that only a
//! [`VerifiedAccess`] of the matching scope hands out, and defaults to refusing, so a bank
//! implements only the scopes it serves. Each method returns only the data of its scope: a balance
//! carries no transactions. [`serve_balance`], [`serve_alerts`] and [`serve_transactions`] serve
//! one scope (for an endpoint that serves one); [`serve`] dispatches on the verified scope. All
//! refuse (fail closed) data that the holder returned for any other account, without naming it.
//!
//! ```compile_fail,E0451
//! use consent_broker::BalanceGrant;
//! // Grants cannot be built by hand: only a verified access hands them out.
//! let grant = BalanceGrant { account: &"acc-1".parse().unwrap() };
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::holder::VerifiedAccess;
use crate::ids::{AccountId, SubjectId};
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
///
/// Every method has a default that refuses with [`DataError::NotOffered`]: a bank implements
/// the scopes it serves and nothing else.
pub trait DataHolder {
    /// The holder's own failure type.
    type Error;

    /// The customer who owns `account` in the bank's own account system, `None` when the bank
    /// knows no such account. The bank's gate admits an access only to an account of the subject
    /// the bank attested for, whatever the token says.
    ///
    /// # Errors
    /// The holder's failure (the gate then serves nothing).
    fn account_owner(&self, account: &AccountId) -> Result<Option<SubjectId>, Self::Error>;

    /// The balance of the grant's account.
    ///
    /// # Errors
    /// [`DataError::NotOffered`] by default; the holder's failure as [`DataError::Holder`].
    fn balance(&self, grant: BalanceGrant<'_>) -> Result<Balance, DataError<Self::Error>> {
        let _ = grant;
        Err(DataError::NotOffered(Scope::Balance))
    }

    /// The pending fraud alerts of the grant's account.
    ///
    /// # Errors
    /// As [`DataHolder::balance`].
    fn pending_alerts(
        &self,
        grant: AlertsGrant<'_>,
    ) -> Result<Vec<FraudAlert>, DataError<Self::Error>> {
        let _ = grant;
        Err(DataError::NotOffered(Scope::Alerts))
    }

    /// The transactions of the grant's account.
    ///
    /// # Errors
    /// As [`DataHolder::balance`].
    fn transactions(
        &self,
        grant: TransactionsGrant<'_>,
    ) -> Result<Vec<Transaction>, DataError<Self::Error>> {
        let _ = grant;
        Err(DataError::NotOffered(Scope::Transactions))
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

impl AccountData {
    /// Whether this is data of `scope`, about `account` only.
    pub fn is_for(&self, scope: Scope, account: &AccountId) -> bool {
        match self {
            Self::Balance(balance) => scope == Scope::Balance && &balance.account == account,
            Self::Alerts(alerts) => {
                scope == Scope::Alerts && alerts.iter().all(|alert| &alert.account == account)
            }
            Self::Transactions(transactions) => {
                scope == Scope::Transactions && transactions.iter().all(|t| &t.account == account)
            }
        }
    }
}

/// Why data was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError<E> {
    /// The holder does not offer this scope's data.
    #[error("the holder does not offer {0} data")]
    NotOffered(Scope),
    /// The verified access is for another scope than the one asked to serve.
    #[error("the access is for {granted} data, not {asked}")]
    WrongScope {
        /// The scope the access verified.
        granted: Scope,
        /// The scope asked to serve.
        asked: Scope,
    },
    /// The holder returned data of another account: refused, nothing is passed on.
    #[error("the holder returned data of another account than the one granted")]
    OtherAccount,
    /// The holder failed.
    #[error("the holder failed")]
    Holder(E),
}

fn only<E>(account: &AccountId, returned: &AccountId) -> Result<(), DataError<E>> {
    if returned == account {
        Ok(())
    } else {
        Err(DataError::OtherAccount)
    }
}

fn wrong<E>(access: &VerifiedAccess, asked: Scope) -> DataError<E> {
    DataError::WrongScope {
        granted: access.scope(),
        asked,
    }
}

/// Serves the balance under `access`, which must be a `balance` access: for a bank endpoint that
/// serves one scope, with no other scope to handle.
///
/// # Errors
/// [`DataError::WrongScope`] for an access of another scope; [`DataError::OtherAccount`] if the
/// holder returned another account's balance; the holder's refusal or failure.
pub fn serve_balance<H: DataHolder>(
    holder: &H,
    access: &VerifiedAccess,
) -> Result<Balance, DataError<H::Error>> {
    let grant = access
        .balance_grant()
        .ok_or_else(|| wrong(access, Scope::Balance))?;
    let balance = holder.balance(grant)?;
    only(access.account(), &balance.account)?;
    Ok(balance)
}

/// Serves the pending fraud alerts under `access`, which must be an `alerts` access.
///
/// # Errors
/// As [`serve_balance`].
pub fn serve_alerts<H: DataHolder>(
    holder: &H,
    access: &VerifiedAccess,
) -> Result<Vec<FraudAlert>, DataError<H::Error>> {
    let grant = access
        .alerts_grant()
        .ok_or_else(|| wrong(access, Scope::Alerts))?;
    let alerts = holder.pending_alerts(grant)?;
    for alert in &alerts {
        only(access.account(), &alert.account)?;
    }
    Ok(alerts)
}

/// Serves the transactions under `access`, which must be a `transactions` access.
///
/// # Errors
/// As [`serve_balance`].
pub fn serve_transactions<H: DataHolder>(
    holder: &H,
    access: &VerifiedAccess,
) -> Result<Vec<Transaction>, DataError<H::Error>> {
    let grant = access
        .transactions_grant()
        .ok_or_else(|| wrong(access, Scope::Transactions))?;
    let transactions = holder.transactions(grant)?;
    for transaction in &transactions {
        only(access.account(), &transaction.account)?;
    }
    Ok(transactions)
}

/// Serves the data of `access`'s scope and account from `holder`, whatever the scope.
///
/// # Errors
/// [`DataError`].
pub fn serve<H: DataHolder>(
    holder: &H,
    access: &VerifiedAccess,
) -> Result<AccountData, DataError<H::Error>> {
    match access.scope() {
        Scope::Balance => serve_balance(holder, access).map(AccountData::Balance),
        Scope::Alerts => serve_alerts(holder, access).map(AccountData::Alerts),
        Scope::Transactions => serve_transactions(holder, access).map(AccountData::Transactions),
    }
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
