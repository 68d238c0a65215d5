//! Failed sign-ins, limited per account and per address: a plain state
//! machine over explicit instants (no clock inside), as the registry's
//! catalog is. After [`ACCOUNT_FAILURES`] failures for one account, or
//! [`ADDRESS_FAILURES`] from one address, within [`WINDOW`], further tries
//! are refused until the oldest failure leaves the window, even with the
//! right password. A success clears the account's count.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Failures allowed per account in a window.
pub const ACCOUNT_FAILURES: usize = 5;
/// Failures allowed per address in a window.
pub const ADDRESS_FAILURES: usize = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Accounts and addresses tracked at most (the oldest are forgotten).
pub const MAX_TRACKED: usize = 10_000;

/// Recent failures per key, oldest first.
#[derive(Debug)]
struct Failures<K> {
    by_key: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Failures {
            by_key: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Failures<K> {
    /// When `key` may try again, if it is over `limit` at `now`.
    fn blocked_until(&mut self, key: &K, limit: usize, now: Instant) -> Option<Instant> {
        let failures = self.by_key.get_mut(key)?;
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            failures.pop_front();
        }
        if failures.is_empty() {
            self.by_key.remove(key);
            return None;
        }
        (failures.len() >= limit).then(|| failures[failures.len() - limit] + WINDOW)
    }

    fn record(&mut self, key: K, limit: usize, now: Instant) {
        if self.by_key.len() >= MAX_TRACKED && !self.by_key.contains_key(&key) {
            self.by_key
                .retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if self.by_key.len() >= MAX_TRACKED {
                return;
            }
        }
        let failures = self.by_key.entry(key).or_default();
        failures.push_back(now);
        while failures.len() > limit {
            failures.pop_front();
        }
    }
}

/// The failed-login limits.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    accounts: Failures<String>,
    addresses: Failures<IpAddr>,
}

impl LoginThrottle {
    /// `Err(wait)` when `account` or `address` must wait before trying again.
    pub fn check(
        &mut self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let account = self
            .accounts
            .blocked_until(&account.to_owned(), ACCOUNT_FAILURES, now);
        let address = address.and_then(|a| self.addresses.blocked_until(&a, ADDRESS_FAILURES, now));
        match account.into_iter().chain(address).max() {
            Some(until) => Err(until
                .saturating_duration_since(now)
                .max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// A failed sign-in.
    pub fn failed(&mut self, account: &str, address: Option<IpAddr>, now: Instant) {
        self.accounts
            .record(account.to_owned(), ACCOUNT_FAILURES, now);
        if let Some(address) = address {
            self.addresses.record(address, ADDRESS_FAILURES, now);
        }
    }

    /// A successful sign-in: the account starts over.
    pub fn succeeded(&mut self, account: &str) {
        self.accounts.by_key.remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_held_after_five_failures_until_the_window_passes() {
        let mut throttle = LoginThrottle::default();
        let start = Instant::now();
        let address = Some("10.0.0.1".parse().unwrap());
        for i in 0..ACCOUNT_FAILURES {
            assert_eq!(throttle.check("ada", address, start), Ok(()), "try {i}");
            throttle.failed("ada", address, start + Duration::from_secs(i as u64));
        }
        let wait = throttle
            .check("ada", address, start + Duration::from_secs(10))
            .unwrap_err();
        assert!(wait > Duration::from_secs(14 * 60), "{wait:?}");
        // Other accounts from elsewhere are not held.
        assert_eq!(
            throttle.check("bob", Some("10.0.0.2".parse().unwrap()), start),
            Ok(())
        );
        // Once the first failure leaves the window, one more try.
        assert_eq!(
            throttle.check("ada", address, start + WINDOW + Duration::from_secs(1)),
            Ok(())
        );
    }

    #[test]
    fn an_address_trying_many_accounts_is_held() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        let address = Some("10.0.0.9".parse().unwrap());
        for i in 0..ADDRESS_FAILURES {
            throttle.failed(&format!("user{i}"), address, now);
        }
        assert!(throttle.check("someone-new", address, now).is_err());
        assert!(throttle.check("someone-new", None, now).is_ok());
    }

    #[test]
    fn success_clears_the_account() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..ACCOUNT_FAILURES - 1 {
            throttle.failed("ada", None, now);
        }
        throttle.succeeded("ada");
        throttle.failed("ada", None, now);
        assert!(throttle.check("ada", None, now).is_ok());
    }
}
