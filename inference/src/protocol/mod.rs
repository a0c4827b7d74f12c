//! Filled by the gateway issue.
