//! The Stellar adapter (being written).
