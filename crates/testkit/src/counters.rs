//! A metrics recorder that keeps counters (and gauges, as their last whole
//! value), for tests that check a refusal or an error is counted. Keys are
//! `name{k=v,k=v}` with the labels sorted.
//!
//! Two ways to install it:
//! - [`Counters::default`] with `metrics::set_default_local_recorder`: for
//!   a test on a current-thread runtime (what it and its tasks count);
//! - [`Counters::global`]: the process-wide recorder of a test binary whose
//!   tests run on several threads. Tests run at once, so a test looks at how
//!   much a counter grew.
#![allow(clippy::unwrap_used)]

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

type Values = Arc<Mutex<HashMap<String, u64>>>;

/// Counters as the code increments them.
#[derive(Debug, Clone, Default)]
pub struct Counters(Values);

impl Counters {
    /// The process-wide recorder, installed on the first call. Panics if
    /// the test binary installed another.
    pub fn global() -> &'static Counters {
        static GLOBAL: OnceLock<Counters> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let counters = Counters::default();
            if metrics::set_global_recorder(counters.clone()).is_err() {
                panic!("another metrics recorder is installed in this test binary");
            }
            counters
        })
    }

    /// The counter `key` (`name{k=v,k=v}`, labels sorted); 0 when never
    /// incremented.
    pub fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Every counter, for an assertion's message.
    pub fn dump(&self) -> String {
        format!("{:?}", self.0.lock().unwrap())
    }
}

struct One {
    key: String,
    values: Values,
}

impl CounterFn for One {
    fn increment(&self, value: u64) {
        *self
            .values
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.values.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl GaugeFn for One {
    fn increment(&self, value: f64) {
        let mut values = self.values.lock().unwrap();
        let v = values.entry(self.key.clone()).or_default();
        *v = (*v as f64 + value).max(0.0) as u64;
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.values
            .lock()
            .unwrap()
            .insert(self.key.clone(), value.max(0.0) as u64);
    }
}

/// `name{k=v,k=v}`, labels sorted.
fn key_of(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(One {
            key: key_of(key),
            values: self.0.clone(),
        }))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(One {
            key: key_of(key),
            values: self.0.clone(),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_sorted_labels() {
        let counters = Counters::default();
        metrics::with_local_recorder(&counters, || {
            metrics::counter!("x_total", "z" => "1", "a" => "2").increment(2);
            metrics::counter!("x_total", "z" => "1", "a" => "2").increment(1);
        });
        assert_eq!(counters.get("x_total{a=2,z=1}"), 3);
        assert_eq!(counters.get("x_total{}"), 0);
    }
}
