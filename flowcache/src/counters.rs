//! Counters declared once.
//!
//! A statistics struct (the cache's [`CacheStats`](crate::CacheStats), a worker's, a
//! source's, a collector's, an extension's) is written with [`counters!`](macro@crate::counters):
//! each field names its Prometheus family, its summary row and its help text next to its
//! type. The macro yields the struct, `merge`, and a walk over every series
//! ([`CounterSet::visit`]); the metrics endpoint, the end-of-run summaries, the periodic
//! log line and the test that holds `docs/METRICS.md` to the code all read that, so a new
//! counter is one line in its struct.
//!
//! The module lives in `flowcache` because every crate that keeps counters already depends
//! on it (`exporter` for the record types, `probe`, the appliance); it is plain Rust with
//! no dependency of its own.

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows; the family name ends in `_total`.
    Counter,
    /// A current level.
    Gauge,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// When an end-of-run summary shows a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    Always,
    /// Rare events: a row only when something happened.
    NonZero,
    /// Never a row of its own (another counter says the same to a reader).
    Never,
}

/// What one field of a statistics struct means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The Prometheus family (`tapflow_..._total`); several fields may share one, told
    /// apart by `label`. Empty: not exported. Extension counters give only their own
    /// part; the family is `tapflow_<extension>_<name>_total`.
    pub family: &'static str,
    pub kind: Kind,
    /// The summary row (`"flows ended"`; a labelled series adds `": <value>"`).
    pub row: &'static str,
    pub help: &'static str,
    /// The label telling this field's series apart within the family, or empty.
    pub label: &'static str,
    /// The label's value for each element (an array field) or for the one value (a
    /// scalar); an empty value skips that element (an unused index).
    pub values: &'static [&'static str],
    pub show: Show,
}

impl Spec {
    pub const fn counter(family: &'static str, row: &'static str, help: &'static str) -> Spec {
        Spec {
            family,
            kind: Kind::Counter,
            row,
            help,
            label: "",
            values: &[],
            show: Show::Always,
        }
    }

    pub const fn gauge(family: &'static str, row: &'static str, help: &'static str) -> Spec {
        Spec {
            kind: Kind::Gauge,
            ..Spec::counter(family, row, help)
        }
    }

    /// Series labelled `label`: one per element of an array field, with `values[i]`; or
    /// the one series of a scalar field, with `values[0]`.
    pub const fn by(self, label: &'static str, values: &'static [&'static str]) -> Spec {
        Spec {
            label,
            values,
            ..self
        }
    }

    /// A summary row only when non-zero.
    pub const fn when_nonzero(self) -> Spec {
        Spec {
            show: Show::NonZero,
            ..self
        }
    }

    /// No summary row.
    pub const fn no_row(self) -> Spec {
        Spec {
            show: Show::Never,
            ..self
        }
    }

    /// Whether the endpoint serves it.
    pub const fn exported(&self) -> bool {
        !self.family.is_empty()
    }
}

/// One value of a statistics struct: the field's spec, its label value (empty when the
/// spec has no label) and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub spec: &'static Spec,
    pub label_value: &'static str,
    pub value: u64,
}

impl Series {
    /// The summary row's name: `row`, or `row: label value`.
    pub fn row_name(&self) -> String {
        if self.label_value.is_empty() {
            self.spec.row.to_string()
        } else {
            format!("{}: {}", self.spec.row, self.label_value)
        }
    }

    /// Whether a summary shows it.
    pub fn shown(&self) -> bool {
        match self.spec.show {
            Show::Always => true,
            Show::NonZero => self.value > 0,
            Show::Never => false,
        }
    }
}

/// A statistics struct declared with [`counters!`](macro@crate::counters).
pub trait CounterSet: Default {
    /// Each field's spec, in declaration order.
    const SPECS: &'static [Spec];

    /// Adds `other`'s counts (and gauges) to these.
    fn merge_from(&mut self, other: &Self);

    /// Calls `f` with every series, in declaration order.
    fn visit(&self, f: &mut dyn FnMut(Series));

    /// Every series, in declaration order.
    fn series(&self) -> Vec<Series> {
        let mut all = Vec::with_capacity(Self::SPECS.len());
        self.visit(&mut |s| all.push(s));
        all
    }

    /// The sum of several.
    fn sum<'a>(items: impl IntoIterator<Item = &'a Self>) -> Self
    where
        Self: 'a,
    {
        let mut total = Self::default();
        for item in items {
            total.merge_from(item);
        }
        total
    }
}

/// A field type a statistics struct may hold: a count, or an array of counts by label.
pub trait Value {
    fn merge(&mut self, other: &Self);
    fn visit(&self, spec: &'static Spec, f: &mut dyn FnMut(Series));
}

impl Value for u64 {
    fn merge(&mut self, other: &Self) {
        *self += other;
    }

    fn visit(&self, spec: &'static Spec, f: &mut dyn FnMut(Series)) {
        f(Series {
            spec,
            label_value: spec.values.first().copied().unwrap_or(""),
            value: *self,
        });
    }
}

impl<const N: usize> Value for [u64; N] {
    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.iter_mut().zip(other) {
            *mine += theirs;
        }
    }

    fn visit(&self, spec: &'static Spec, f: &mut dyn FnMut(Series)) {
        debug_assert_eq!(
            spec.values.len(),
            N,
            "{}: one label value per element",
            spec.row
        );
        for (value, label_value) in self.iter().zip(spec.values) {
            if !label_value.is_empty() {
                f(Series {
                    spec,
                    label_value,
                    value: *value,
                });
            }
        }
    }
}

/// Declares a statistics struct: every field is `name: type = spec`, where the type is
/// `u64` or `[u64; N]` and the spec a [`Spec`] expression. Attributes (doc comments,
/// derives) pass through; every field is public. Yields the struct, an inherent `merge`
/// and [`CounterSet`].
///
/// ```
/// flowcache::counters! {
///     #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
///     pub struct Fetches {
///         /// Pages fetched.
///         pages: u64 = flowcache::counters::Spec::counter(
///             "demo_pages_total", "pages fetched", "Pages fetched."),
///     }
/// }
/// let mut a = Fetches { pages: 2 };
/// a.merge(&Fetches { pages: 3 });
/// assert_eq!(a.pages, 5);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident : $ty:ty = $spec:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $crate::counters::CounterSet for $name {
            const SPECS: &'static [$crate::counters::Spec] = &[$($spec),*];

            fn merge_from(&mut self, other: &Self) {
                $( $crate::counters::Value::merge(&mut self.$field, &other.$field); )*
            }

            fn visit(&self, f: &mut dyn FnMut($crate::counters::Series)) {
                let mut specs = <Self as $crate::counters::CounterSet>::SPECS.iter();
                $(
                    $crate::counters::Value::visit(
                        &self.$field,
                        specs.next().expect("one spec per field"),
                        f,
                    );
                )*
            }
        }

        impl $name {
            /// Adds `other`'s counts to these.
            pub fn merge(&mut self, other: &Self) {
                $crate::counters::CounterSet::merge_from(self, other);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::counters! {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        struct Sample {
            hits: u64 = Spec::counter("t_hits_total", "hits", "Hits."),
            by_reason: [u64; 3] = Spec::counter("t_ends_total", "ends", "Ends.")
                .by("reason", &["", "idle", "full"]),
            odd: u64 = Spec::counter("t_fix_total", "fix", "Fixes.")
                .by("kind", &["odd"])
                .when_nonzero(),
        }
    }

    #[test]
    fn merge_adds_every_field_and_visit_names_every_series() {
        let mut a = Sample {
            hits: 1,
            by_reason: [9, 2, 3],
            odd: 0,
        };
        a.merge(&Sample {
            hits: 10,
            by_reason: [1, 20, 30],
            odd: 4,
        });
        assert_eq!(
            a,
            Sample {
                hits: 11,
                by_reason: [10, 22, 33],
                odd: 4
            }
        );
        let rows: Vec<(String, u64)> = a.series().iter().map(|s| (s.row_name(), s.value)).collect();
        // Index 0 of by_reason has no label value: skipped.
        assert_eq!(
            rows,
            [
                ("hits".to_string(), 11),
                ("ends: idle".to_string(), 22),
                ("ends: full".to_string(), 33),
                ("fix: odd".to_string(), 4),
            ]
        );
        assert!(a.series()[3].shown());
        assert!(!Sample::default().series()[3].shown());
        assert_eq!(Sample::sum([&a, &a]).hits, 22);
    }
}
