//! Job and rank metrics (`faultline_job_*`, `faultline_rank_*`) from the jobs collector and progress API.
//! (Owned by the jobs work, issue 4: stub until then.)
