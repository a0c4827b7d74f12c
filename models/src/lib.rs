//! Cumulus model zoo: models as ordered lists of layers that run whole or as any contiguous range,
//! with losses, optimizers, safetensors model folders and readers for real datasets.
//! No async, no network.

pub mod data;
