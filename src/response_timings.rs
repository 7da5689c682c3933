//! A request's own timings in its response's parameters: asked for with the request parameter
//! `onnxrs_timings` (or for every request of a model with its parameter `response_timings:
//! "always"`), answered with integer nanoseconds `onnxrs_compute_input_ns`,
//! `onnxrs_compute_infer_ns`, `onnxrs_compute_output_ns`, the run's size `onnxrs_run_size` and
//! the instance `onnxrs_instance`: the same figures the request's statistics and its request-log
//! line get. A generator's responses carry each its own compute figures, and the last one also
//! `onnxrs_time_to_first_response_ns` and `onnxrs_total_ns`.
//!
//! Nothing here runs for a request that did not ask: without the model parameter, the one cost
//! is looking for the request parameter (none, for most requests).

use crate::error::{Error, Result};
use crate::triton::Request;
use crate::triton::instance::Timestamps;
use crate::triton::request::ParameterValue;
use crate::triton::response::Response;

/// The request parameter that asks for them.
pub const REQUEST_PARAMETER: &str = "onnxrs_timings";

/// Whether the request gets its timings: `always` (the model's `response_timings: "always"`), or
/// its parameter `onnxrs_timings` says so. Clients send it as a bool, an int or a string, all
/// three accepted; anything else fails the request (only it) naming the parameter. Never
/// inlined, so a profile of the server attributes its cost (bench/timings.py).
#[inline(never)]
pub(crate) fn wanted(always: bool, request: Request<'_>) -> Result<bool> {
    if always {
        return Ok(true);
    }
    let Some(value) = request.parameter(REQUEST_PARAMETER)? else { return Ok(false) };
    parse(value)
}

fn parse(value: ParameterValue<'_>) -> Result<bool> {
    match value {
        ParameterValue::Bool(b) => Ok(b),
        ParameterValue::Int(1) => Ok(true),
        ParameterValue::Int(0) => Ok(false),
        ParameterValue::Str(s) if s.trim().eq_ignore_ascii_case("true") || s.trim() == "1" => Ok(true),
        ParameterValue::Str(s) if s.trim().eq_ignore_ascii_case("false") || s.trim() == "0" => Ok(false),
        other => Err(Error::invalid_arg(format!(
            "request parameter '{REQUEST_PARAMETER}' must be true or false (a bool, the int 1 or 0, or the string \
             \"true\" or \"false\"), got {}",
            match other {
                ParameterValue::Int(n) => format!("the int {n}"),
                ParameterValue::Str(s) => format!("the string {s:?}"),
                _ => "a value of another type".to_string(),
            }
        ))),
    }
}

/// The model parameter `response_timings`: `"always"` gives every request its timings;
/// `"request"` (the default) only those that ask.
pub fn always(parameters: &std::collections::BTreeMap<String, String>) -> Result<bool> {
    match parameters.get(MODEL_PARAMETER).map(|v| v.trim()) {
        None | Some("request") => Ok(false),
        Some("always") => Ok(true),
        Some(v) => Err(Error::invalid_arg(format!(
            "parameter '{MODEL_PARAMETER}' must be \"always\" or \"request\", got \"{v}\""
        ))),
    }
}

/// The model parameter's key.
pub const MODEL_PARAMETER: &str = "response_timings";

/// One request's figures, from the timestamps its statistics were reported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub input_ns: u64,
    pub infer_ns: u64,
    pub output_ns: u64,
}

impl Figures {
    /// The stages as Triton's statistics count them: input from the execution's start to the
    /// run's, infer the run, output from the run's end to the execution's.
    pub fn of(t: Timestamps) -> Self {
        Figures {
            input_ns: t.compute_start.saturating_sub(t.exec_start),
            infer_ns: t.compute_end.saturating_sub(t.compute_start),
            output_ns: t.exec_end.saturating_sub(t.compute_end),
        }
    }
}

/// Sets the figures on `response`. A parameter the server refuses is logged, not fatal: the
/// response still carries the outputs it was asked for. Never inlined (as `wanted`).
#[inline(never)]
pub(crate) fn attach(response: &Response, figures: Figures, run_size: Option<usize>, instance: &str) {
    let ints = [
        (c"onnxrs_compute_input_ns", Some(figures.input_ns)),
        (c"onnxrs_compute_infer_ns", Some(figures.infer_ns)),
        (c"onnxrs_compute_output_ns", Some(figures.output_ns)),
        (c"onnxrs_run_size", run_size.map(|n| n as u64)),
    ];
    for (name, value) in ints {
        if let Some(v) = value
            && let Err(e) = response.set_int_parameter(name, i64::try_from(v).unwrap_or(i64::MAX))
        {
            log::warn!("onnxrs: cannot set the response parameter {name:?}: {e}");
        }
    }
    if let Err(e) = response.set_string_parameter(c"onnxrs_instance", instance) {
        log::warn!("onnxrs: cannot set the response parameter onnxrs_instance: {e}");
    }
}

/// A stream's last response: the request's time to its first response and in all.
pub(crate) fn attach_final(response: &Response, first_response_ns: u64, total_ns: u64) {
    for (name, v) in [(c"onnxrs_time_to_first_response_ns", first_response_ns), (c"onnxrs_total_ns", total_ns)] {
        if let Err(e) = response.set_int_parameter(name, i64::try_from(v).unwrap_or(i64::MAX)) {
            log::warn!("onnxrs: cannot set the response parameter {name:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_clients_send() {
        for (v, want) in [
            (ParameterValue::Bool(true), true),
            (ParameterValue::Bool(false), false),
            (ParameterValue::Int(1), true),
            (ParameterValue::Int(0), false),
            (ParameterValue::Str("true"), true),
            (ParameterValue::Str(" TRUE "), true),
            (ParameterValue::Str("1"), true),
            (ParameterValue::Str("false"), false),
            (ParameterValue::Str("0"), false),
        ] {
            assert_eq!(parse(v).unwrap(), want, "{v:?}");
        }
        for (v, said) in [
            (ParameterValue::Int(2), "got the int 2"),
            (ParameterValue::Str("yes"), "got the string \"yes\""),
            (ParameterValue::Other, "got a value of another type"),
        ] {
            let e = parse(v).unwrap_err();
            assert!(
                e.message().contains("'onnxrs_timings' must be true or false") && e.message().contains(said),
                "{e}"
            );
        }
    }

    #[test]
    fn the_model_parameter() {
        let p =
            |v: Option<&str>| always(&v.map(|v| (MODEL_PARAMETER.to_string(), v.to_string())).into_iter().collect());
        assert!(!p(None).unwrap());
        assert!(!p(Some("request")).unwrap());
        assert!(p(Some(" always")).unwrap());
        assert!(p(Some("sometimes")).unwrap_err().message().contains("must be \"always\" or \"request\""));
    }

    #[test]
    fn figures_are_the_statistics_stages() {
        let t = Timestamps { exec_start: 10, compute_start: 15, compute_end: 40, exec_end: 42 };
        assert_eq!(Figures::of(t), Figures { input_ns: 5, infer_ns: 25, output_ns: 2 });
    }
}
