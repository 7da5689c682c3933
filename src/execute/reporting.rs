//! Reporting a run that happened: one batch statistic to Triton, one record to onnxrs's metrics,
//! the backend's own steps in the trace of each traced request, and the run's size on each of
//! its records (for the request log). Each request's own statistics are reported when it is
//! answered (`RequestRecord::answer`).

use super::{Reporter, RequestRecord};
use crate::metrics::RunRecord;
use crate::request_log::RunSize;
use crate::triton::instance::Timestamps;

/// What one run did.
#[derive(Clone, Copy)]
pub(super) struct RunFigures {
    /// Rows along the batch dimension, all requests together.
    pub(super) rows: u64,
    /// Rows of null requests Triton formed into the batch and we did not run: in the batch
    /// statistic, not in onnxrs's run metrics (which count what ONNX Runtime ran).
    pub(super) null_rows: u64,
    /// exec_start: the run began gathering; compute_start/end: around ONNX Runtime's call;
    /// exec_end: the last output was written.
    pub(super) times: Timestamps,
    pub(super) input_bytes: u64,
    pub(super) output_bytes: u64,
    /// Of `output_bytes`, those ONNX Runtime wrote straight into the responses.
    pub(super) direct_output_bytes: u64,
}

pub(super) fn report_run(reporter: Reporter<'_>, records: &mut [&mut RequestRecord<'_>], figures: &RunFigures) {
    let RunFigures { rows, null_rows, times, input_bytes, output_bytes, direct_output_bytes } = *figures;
    if let Err(e) = reporter.instance.report_batch_statistics(rows + null_rows, times) {
        log::error!("onnxrs: cannot report batch statistics: {e}");
    }
    if let Some(m) = reporter.metrics {
        m.record_run(&RunRecord {
            rows,
            gather_ns: times.compute_start.saturating_sub(times.exec_start),
            run_ns: times.compute_end.saturating_sub(times.compute_start),
            scatter_ns: times.exec_end.saturating_sub(times.compute_end),
            input_bytes,
            output_bytes,
            direct_output_bytes,
        });
    }
    // The backend's own steps, in the trace of each traced request (Triton's trace file or
    // OpenTelemetry export shows them next to its own activities). Each step is a `_START` /
    // `_END` pair: Triton's OpenTelemetry mode turns such a pair into a span of its own, so a
    // trace viewer shows gather, ONNX Runtime and scatter as three spans of the request. At
    // equal timestamps a step ends before the next starts.
    let activities = [
        (times.exec_start, c"ONNXRS_GATHER_START"),
        (times.compute_start, c"ONNXRS_GATHER_END"),
        (times.compute_start, c"ONNXRS_ORT_RUN_START"),
        (times.compute_end, c"ONNXRS_ORT_RUN_END"),
        (times.compute_end, c"ONNXRS_SCATTER_START"),
        (times.exec_end, c"ONNXRS_SCATTER_END"),
    ];
    let run = RunSize { requests: records.len(), rows };
    for record in records {
        record.request.report_trace_activities(&activities);
        record.run = Some(run);
    }
}
