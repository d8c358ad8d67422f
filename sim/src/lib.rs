//! faultline simulator.
