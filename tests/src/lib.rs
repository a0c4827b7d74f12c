//! End-to-end scenarios of Cumulus across roles, run against real processes on 127.0.0.1:0.
//!
//! Scenarios arrive with the issues that make more than one role work together.
