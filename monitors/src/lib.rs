//! tapflow's monitoring extensions: each module implements [`probe::ext::Extension`] and
//! is attached to the workers when its configuration section enables it. They know
//! nothing of DPDK, sockets or wire formats: packets come in as parsed views, fields go
//! out in [`flowcache::RecordExtras`], events as [`probe::ext::Event`].
//!
//! No module here is compiled into the worker's loop unless attached: with nothing
//! enabled, the workers run the loop without any hook (see `probe::ext`).

mod conn_table;
pub mod kpi;
