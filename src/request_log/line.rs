//! One request's line of the request log: a JSON object written by hand, keys in a fixed order,
//! time first.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Entry, LoggedOutcome, RunSize};

impl Entry {
    /// Appends the line (one JSON object and a newline) to `out`, keys in a fixed order, time
    /// first. Stage times are whole microseconds (truncated) of the same nanosecond figures
    /// Triton sums into the statistics. Written by hand rather than through a `Value`: no map,
    /// no allocation per field, so the writer keeps up with far more requests than a server
    /// answers.
    pub fn write_line(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let names = &self.names;
        write!(out, "{{\"time\":\"{}\",\"model\":", rfc3339_micros(self.time))?;
        serde_json::to_writer(&mut *out, &names.model)?;
        write!(out, ",\"version\":{},\"instance\":", names.version)?;
        serde_json::to_writer(&mut *out, &names.instance)?;
        out.extend_from_slice(b",\"request_id\":");
        serde_json::to_writer(&mut *out, &self.request_id)?;
        let outcome = match self.outcome {
            LoggedOutcome::Success { .. } => "success",
            LoggedOutcome::Failure { .. } => "error",
        };
        write!(out, ",\"outcome\":\"{outcome}\",")?;
        match self.run {
            Some(RunSize { requests, rows }) => write!(out, "\"run_requests\":{requests},\"run_rows\":{rows}")?,
            None => out.extend_from_slice(b"\"run_requests\":null,\"run_rows\":null"),
        }
        match &self.outcome {
            &LoggedOutcome::Success { input_ns, infer_ns, output_ns } => {
                let execute_ns = input_ns.saturating_add(infer_ns).saturating_add(output_ns);
                write!(
                    out,
                    ",\"input_us\":{},\"infer_us\":{},\"output_us\":{},\"execute_us\":{}",
                    input_ns / 1000,
                    infer_ns / 1000,
                    output_ns / 1000,
                    execute_ns / 1000
                )?;
            }
            LoggedOutcome::Failure { kind, message } => {
                out.extend_from_slice(b",\"error_kind\":");
                serde_json::to_writer(&mut *out, kind)?;
                out.extend_from_slice(b",\"error\":");
                serde_json::to_writer(&mut *out, message)?;
            }
        }
        if let Some(g) = &self.generation {
            write!(
                out,
                ",\"prompt_tokens\":{},\"generated_tokens\":{},\"ttft_us\":",
                g.prompt_tokens, g.generated_tokens
            )?;
            for (i, figure) in [g.ttft_ns, g.tpot_ns].into_iter().enumerate() {
                if i == 1 {
                    out.extend_from_slice(b",\"tpot_us\":");
                }
                match figure {
                    Some(ns) => write!(out, "{}", ns / 1000)?,
                    None => out.extend_from_slice(b"null"),
                }
            }
            write!(out, ",\"finish_reason\":\"{}\"", g.finish_reason)?;
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// `2026-12-01T17:20:00.123456Z`.
fn rfc3339_micros(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::request_log::{Generation, InstanceNames};
    use serde_json::{Value, json};

    fn names() -> Arc<InstanceNames> {
        Arc::new(InstanceNames { model: "m".into(), version: 3, instance: "m_0".into() })
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        let t = UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 4_005_000);
        assert_eq!(rfc3339_micros(t), "2000-02-29T01:02:03.004005Z");
    }

    #[test]
    fn lines_hold_the_statistics_figures() {
        let line = |e: &Entry| {
            let mut out = Vec::new();
            e.write_line(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let e = Entry {
            time: UNIX_EPOCH,
            names: names(),
            request_id: "r1".into(),
            run: Some(RunSize { requests: 2, rows: 5 }),
            outcome: LoggedOutcome::Success { input_ns: 2_999, infer_ns: 6_001, output_ns: 2_500 },
            generation: None,
        };
        assert_eq!(
            line(&e),
            concat!(
                r#"{"time":"1970-01-01T00:00:00.000000Z","model":"m","version":3,"instance":"m_0","#,
                r#""request_id":"r1","outcome":"success","run_requests":2,"run_rows":5,"#,
                r#""input_us":2,"infer_us":6,"output_us":2,"execute_us":11}"#,
                "\n"
            )
        );
        // Strings escaped as JSON; no run: nulls; a failure: its kind and message, no times.
        let e = Entry {
            time: UNIX_EPOCH,
            names: Arc::new(InstanceNames { model: "a\"b".into(), version: 1, instance: "\u{1}".into() }),
            request_id: "é\\".into(),
            run: None,
            outcome: LoggedOutcome::Failure { kind: "bad_input", message: "no \"X\"\nhere".into() },
            generation: None,
        };
        let text = line(&e);
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"time": "1970-01-01T00:00:00.000000Z", "model": "a\"b", "version": 1, "instance": "\u{1}",
                   "request_id": "é\\", "outcome": "error", "run_requests": null, "run_rows": null,
                   "error_kind": "bad_input", "error": "no \"X\"\nhere"})
        );
    }

    #[test]
    fn generation_lines_carry_tokens_and_latencies() {
        let mut e = Entry {
            time: UNIX_EPOCH,
            names: names(),
            request_id: "g".into(),
            run: None,
            outcome: LoggedOutcome::Success { input_ns: 1_000, infer_ns: 9_000, output_ns: 1_000 },
            generation: Some(Box::new(Generation {
                prompt_tokens: 3,
                generated_tokens: 5,
                ttft_ns: Some(2_500),
                tpot_ns: Some(1_999),
                finish_reason: "stop",
            })),
        };
        let mut out = Vec::new();
        e.write_line(&mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["prompt_tokens"], 3);
        assert_eq!(v["generated_tokens"], 5);
        assert_eq!((v["ttft_us"].clone(), v["tpot_us"].clone()), (json!(2), json!(1)));
        assert_eq!(v["finish_reason"], "stop");
        e.generation = Some(Box::new(Generation {
            prompt_tokens: 1,
            generated_tokens: 0,
            ttft_ns: None,
            tpot_ns: None,
            finish_reason: "error",
        }));
        out.clear();
        e.write_line(&mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["ttft_us"].clone(), v["tpot_us"].clone()), (Value::Null, Value::Null));
    }
}
