//! Memory accounting: an [`Account`] per tenant (its quota) and one for the device (the global
//! limit), charged per allocation through a [`Ledger`] and released when the [`Charge`] drops.
//!
//! **What is charged to whom.** Every buffer a tenant's work allocates (inputs, activations,
//! outputs, private copies of parameters) is charged to the tenant and to the device. Weights
//! shared by several tenants are charged to the device *once*, when they are uploaded, and *in
//! full* to every tenant that holds the model, for as long as it holds it. So a tenant's admission
//! never depends on which other tenants happen to share its model, or on when they leave: a quota
//! states what the tenant could use on its own. The device account sees the real usage.
//!
//! Accounts are shared by the device thread (loads) and the tenants' launcher threads (work
//! items), so they count with atomics: a charge either fits every account or changes none.
//!
//! ```
//! use cumulus_gpu::executor::quota::{Account, Ledger};
//!
//! let tenant = Account::new("a", 100);
//! let device = Account::new("device", 1000);
//! let ledger = Ledger::new(tenant.clone(), device.clone());
//! let c = ledger.charge(60)?;
//! assert!(ledger.charge(50).is_err()); // the tenant's quota, not the device's
//! drop(c);
//! assert_eq!(tenant.used(), 0);
//! # Ok::<(), cumulus_gpu::GpuError>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{GpuError, Result};

/// Bytes in use against a limit.
#[derive(Debug)]
pub struct Account {
    name: String,
    used: AtomicU64,
    peak: AtomicU64,
    limit: u64,
    /// The device account reports `DeviceMemory`; tenants report `QuotaExceeded`.
    is_device: bool,
}

impl Account {
    /// A tenant's account.
    pub fn new(name: impl Into<String>, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            limit,
            is_device: false,
        })
    }

    /// The device's account.
    pub fn device(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            name: "device".into(),
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            limit,
            is_device: true,
        })
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn refusal(&self, bytes: u64) -> GpuError {
        if self.is_device {
            GpuError::DeviceMemory {
                requested: bytes,
                available: self.limit.saturating_sub(self.used()),
            }
        } else {
            GpuError::QuotaExceeded {
                tenant: self.name.clone(),
                requested: bytes,
                used: self.used(),
                quota: self.limit,
            }
        }
    }

    /// Whether `bytes` more would fit.
    pub fn fits(&self, bytes: u64) -> bool {
        self.used()
            .checked_add(bytes)
            .is_some_and(|t| t <= self.limit)
    }

    /// Adds `bytes` if they fit under the limit, atomically.
    fn try_take(&self, bytes: u64) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&t| t <= self.limit)
            });
        match taken {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

/// Bytes held against some accounts; dropping it gives them back.
#[derive(Debug)]
pub struct Charge {
    accounts: Vec<Arc<Account>>,
    bytes: u64,
}

impl Charge {
    /// Charges `bytes` to every account, or to none (the first refusal is returned).
    pub fn new(accounts: &[&Arc<Account>], bytes: u64) -> Result<Self> {
        // A look first, so a refusal names the first account without room and touches none;
        // `try_take` below settles races with other threads.
        if let Some(full) = accounts.iter().find(|a| !a.fits(bytes)) {
            return Err(full.refusal(bytes));
        }
        let mut taken: Vec<Arc<Account>> = Vec::with_capacity(accounts.len());
        for a in accounts {
            if !a.try_take(bytes) {
                for t in &taken {
                    t.give_back(bytes);
                }
                return Err(a.refusal(bytes));
            }
            taken.push(Arc::clone(a));
        }
        Ok(Self {
            accounts: taken,
            bytes,
        })
    }

    /// A charge against nothing (unmetered work: tests, the operation checks).
    pub fn none() -> Self {
        Self {
            accounts: Vec::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        for a in &self.accounts {
            a.give_back(self.bytes);
        }
    }
}

/// Where a work item's allocations are charged: its tenant and the device.
#[derive(Debug, Clone)]
pub struct Ledger {
    tenant: Option<Arc<Account>>,
    device: Option<Arc<Account>>,
}

impl Ledger {
    pub fn new(tenant: Arc<Account>, device: Arc<Account>) -> Self {
        Self {
            tenant: Some(tenant),
            device: Some(device),
        }
    }

    /// Charges only the device (weights shared by tenants).
    pub fn device_only(device: Arc<Account>) -> Self {
        Self {
            tenant: None,
            device: Some(device),
        }
    }

    /// Charges nothing.
    pub fn unlimited() -> Self {
        Self {
            tenant: None,
            device: None,
        }
    }

    /// Charges `bytes` to the tenant (first, so a tenant over its quota hears about its quota)
    /// and then to the device.
    pub fn charge(&self, bytes: u64) -> Result<Charge> {
        let accounts: Vec<&Arc<Account>> = self.tenant.iter().chain(self.device.iter()).collect();
        Charge::new(&accounts, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_charge_leaves_every_account_unchanged() {
        let tenant = Account::new("t", 100);
        let device = Account::device(50);
        let ledger = Ledger::new(tenant.clone(), device.clone());
        let err = ledger.charge(80).expect_err("device too small");
        assert!(matches!(err, GpuError::DeviceMemory { .. }), "{err}");
        assert_eq!((tenant.used(), device.used()), (0, 0));
        let held = ledger.charge(40).expect("fits both");
        assert!(matches!(
            ledger.charge(70),
            Err(GpuError::QuotaExceeded { .. })
        ));
        assert_eq!(held.bytes(), 40);
        drop(held);
        assert_eq!((tenant.used(), device.used()), (0, 0));
        assert_eq!(tenant.peak(), 40);
    }

    #[test]
    fn overflowing_charges_are_refused() {
        let a = Account::new("t", u64::MAX);
        let _c = Charge::new(&[&a], u64::MAX - 1).expect("fits");
        assert!(Charge::new(&[&a], 10).is_err());
    }
}
