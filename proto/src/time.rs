//! The wall clock as every faultline process reads it.

/// Wall-clock now, Unix milliseconds (0 if the clock reads before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
