//! NDJSON on stdout.

use super::*;

/// NDJSON on stdout, flushed after each event. When stdout is closed (the
/// reader went away), `send` returns an error of kind
/// [`io::ErrorKind::BrokenPipe`] that the caller can ignore (Rust programs
/// ignore SIGPIPE, so the process is not killed).
pub struct StdoutSink {
    fields: Fields,
}

impl StdoutSink {
    pub fn new(fields: Fields) -> Self {
        StdoutSink { fields }
    }
}

fn write_ndjson(w: &mut impl Write, event: &Event, fields: Fields) -> io::Result<()> {
    let mut line = super::event_line(event, fields);
    line.push('\n');
    w.write_all(line.as_bytes())?;
    w.flush()
}

impl Sink for StdoutSink {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn send(&mut self, event: &Event) -> io::Result<()> {
        write_ndjson(&mut io::stdout().lock(), event, self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::samples::*;
    use serde_json::json;

    #[test]
    fn ndjson_native_and_ecs_lines() {
        let mut out = Vec::new();
        write_ndjson(&mut out, &alert(), Fields::Native).expect("write");
        write_ndjson(&mut out, &alert(), Fields::Ecs).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        let native: Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(native, alert().body);
        let ecs: Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(ecs, to_ecs(&alert()));
    }

    #[test]
    fn newline_in_a_process_name_stays_on_one_line() {
        let mut e = alert();
        e.body["process"]["name"] = json!("x\n{\"type\":\"fake\"}");
        for f in [Fields::Native, Fields::Ecs] {
            let line = render_line(&e, f);
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn closed_stdout_is_broken_pipe() {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        drop(r);
        let mut w = File::from(w);
        let err = write_ndjson(&mut w, &alert(), Fields::Native).expect_err("EPIPE");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(StdoutSink::new(Fields::Ecs).name(), "stdout");
    }
}
