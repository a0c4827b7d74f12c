//! Cumulus partitioner: turns per-layer profiles into a plan of contiguous layer groups and a
//! memory tier per group by solving the AMPS-Inf MIQP exactly, and exports the same model in LP
//! format for an external solver. Pure library: no async, no candle.
//!
//! Filled by the partitioning issue; nothing is exported yet.
