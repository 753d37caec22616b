//! (report: to come)
