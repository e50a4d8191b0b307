//! What the builtin provider's tests share: a metric plan, the counts an
//! interval should give, and the reason of a NoData.

use coalmine_analysis::eprocess::Interval;
use coalmine_analysis::judge::Observed;
use coalmine_core::plan::{Check, MetricPlan, Provider};
use coalmine_core::spec::BuiltinMetric;

/// A `builtin` metric: compared with stable, or a threshold of 10%.
pub fn plan(metric: BuiltinMetric, slower_than_ms: Option<u64>, threshold: bool) -> MetricPlan {
    MetricPlan {
        name: format!("{metric:?}"),
        provider: Provider::Builtin {
            metric,
            slower_than: slower_than_ms.map(coalmine_core::Duration::from_millis),
        },
        check: if threshold {
            Check::Threshold {
                min: None,
                max: Some(0.1),
                failure_limit: 1,
            }
        } else {
            Check::Compare { max_ratio: 1.0 }
        },
    }
}

/// The counts of an interval: (total, bad) per version.
pub fn counts(canary: (u64, u64), stable: (u64, u64)) -> Observed {
    Observed::Counts(Interval {
        canary_total: canary.0,
        canary_bad: canary.1,
        stable_total: stable.0,
        stable_bad: stable.1,
        canary_share: None,
    })
}

/// Why `o` is NoData; a panic when it is not.
pub fn no_data(o: &Observed) -> &str {
    match o {
        Observed::NoData(why) => why,
        other => panic!("expected NoData, got {other:?}"),
    }
}
