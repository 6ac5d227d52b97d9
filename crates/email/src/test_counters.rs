//! The test harness's counter recorder (switchboard-testkit).
pub(crate) use switchboard_testkit::counters::Counters;
