//! tapflow exporter. See README.md.
