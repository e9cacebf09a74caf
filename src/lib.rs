//! iom: scan plates from a VFX delivery, publish them as a graph of typed tasks,
//! run the steps on farm workers, register them in the tracker, mirror them into
//! Tractor.
//!
//! # Layout
//! - [`config`]: layered settings (defaults → file → `IOM__*` env) and secrets.
//! - [`error`]: the transient/permanent classification every error type implements.
//! - [`timecode`]: SMPTE timecode and frame-rate arithmetic (pure).
//! - [`seq`]: finding image sequences and movies in a delivery; gaps; bad frames.
//! - [`media`]: EXR/DPX/JPEG headers, MOV/MXF through FFmpeg, pixel decoding.
//! - [`colour`]: colour-space transforms to the display, `.cube` LUTs.
//! - [`thumbnail`]: colour-managed, aspect-kept JPEG thumbnails.
//! - [`edl`]: CMX3600 EDL parsing (and writing, for fixtures).
//! - [`scanlist`]: the 26-column scanlist workbook: rows, writing, reading.
//! - [`scan`]: the scan of a delivery, end to end, in a bounded parallel pool.
//! - [`sample`]: generates sample deliveries (demo, tests, benchmarks).
//! - [`task`]: the task model: typed task messages and publish graphs (pure).
//! - [`queue`]: RabbitMQ: topology, confirmed publishing, consuming, the DLQ.
//! - [`plan`]: the publish planner: checked scanlist rows → validated task graphs.
//! - [`store`]: the publish work folder: manifest, completion records, claims, fencing.
//! - [`steps`]: the step implementations (probe, copy, thumbnail, register, cleanup).
//! - [`tracker`]: the tracker trait, registrations, and the local file tracker.
//! - [`runtime`]: handling one delivered task (fence, run, record, dispatch children).
//! - [`worker`]: the RabbitMQ consumer loop of `iom-worker`.
//! - [`embedded`]: the same graphs in-process when no broker is configured.
//! - [`events`]: task state-change events for watchers.
//! - [`logging`]: tracing subscriber set-up.
//! - [`tractor`]: Tractor job scripts (Tcl), the engine client, graph → jid records.
//! - [`bridge`]: the Tractor bridge daemon and the proxy command of mirrored tasks.
//! - [`metrics`]: Prometheus series and the `/metrics` server.
//! - [`telemetry`]: OpenTelemetry trace export and W3C trace context over AMQP.

pub mod bridge;
pub mod colour;
pub mod config;
pub mod edl;
pub mod embedded;
pub mod error;
pub mod events;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod plan;
pub mod queue;
pub mod runtime;
pub mod sample;
pub mod scan;
pub mod scanlist;
pub mod seq;
pub mod shotgrid;
pub mod steps;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod thumbnail;
pub mod timecode;
pub mod tracker;
pub mod tractor;
pub mod worker;
