//! Elastic Common Schema 8.x field names for events (Filebeat, Vector,
//! Fluent Bit): the agent's outputs with `fields = "ecs"`, and
//! `--format ecs`.

use serde_json::{Map, Value, json};

use super::event::{ECS_VERSION, Event, SYSLOG_FACILITY};

/// Maps a native event to Elastic Common Schema 8.x (nested objects, fields
/// absent from the native body are omitted):
///
/// | ECS field | from |
/// |---|---|
/// | `@timestamp` | `time` (now if missing) |
/// | `message` | [`Event::message`] |
/// | `ecs.version` | [`ECS_VERSION`] |
/// | `event.kind` | `"alert"` for kind `alert`, else `"event"` |
/// | `event.category` | `["malware"]` for alerts, else `["host"]` |
/// | `event.type` | alert, heartbeat, summary: `["info"]`; resolved: `["end"]`; rules_error: `["error"]` |
/// | `event.action` | [`Event::kind`] |
/// | `event.severity` | the RFC 5424 severity number ([`Severity::code`]; 1 = alert, 6 = info) |
/// | `event.risk_score` | `score` |
/// | `event.module` / `event.dataset` / `event.provider` | `"minerwatch"` / `"minerwatch.events"` / `"minerwatch"` |
/// | `log.level`, `log.syslog.severity.{code,name}`, `log.syslog.facility.{code,name}` | the severity; facility daemon (3) |
/// | `host.hostname`, `host.name` | `host` (a string, or an object's `hostname`) |
/// | `process.pid` | `pid` (or `process.pid`) |
/// | `process.name` / `process.executable` | `process.name` / `process.exe` |
/// | `process.args`, `process.args_count` | `process.cmdline` |
/// | `process.command_line` | `process.cmdline` joined with single spaces |
/// | `process.parent.pid`, `process.parent.name` | the first entry of `process.ancestry` |
/// | `user.name` (or `user.id` if numeric) | `process.user` |
/// | `container.id` (and `name`, `runtime`, `image.name` when given as an object) | `process.container` |
/// | `rule.name` (array), `rule.ruleset` | the `id` of each of `signals`; `"minerwatch"` |
/// | `minerwatch.*` | every other top-level native field (`type`, `level`, `score`, `signals` with weight and evidence, ...) |
/// | `minerwatch.process.*` | the other `process` fields (`cpu_percent`, `threads`, `ancestry`, raw `container`, ...) |
pub fn to_ecs(event: &Event) -> Value {
    let body = event.body.as_object().cloned().unwrap_or_default();
    let mut rest = body.clone();
    let is_alert = event.kind == "alert";

    let timestamp = match rest.remove("time") {
        Some(Value::String(s)) => s,
        _ => jiff::Timestamp::now().to_string(),
    };

    let mut ev = Map::new();
    ev.insert(
        "kind".into(),
        json!(if is_alert { "alert" } else { "event" }),
    );
    ev.insert(
        "category".into(),
        json!([if is_alert { "malware" } else { "host" }]),
    );
    let ty = match event.kind.as_str() {
        "resolved" => "end",
        "rules_error" => "error",
        _ => "info",
    };
    ev.insert("type".into(), json!([ty]));
    ev.insert("action".into(), json!(event.kind));
    ev.insert("severity".into(), json!(event.severity.code()));
    if let Some(score) = body.get("score").and_then(Value::as_f64) {
        ev.insert("risk_score".into(), json!(score));
    }
    ev.insert("module".into(), json!("minerwatch"));
    ev.insert("dataset".into(), json!("minerwatch.events"));
    ev.insert("provider".into(), json!("minerwatch"));

    let mut out = Map::new();
    out.insert("@timestamp".into(), json!(timestamp));
    out.insert("message".into(), json!(event.message));
    out.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    out.insert("event".into(), Value::Object(ev));
    out.insert(
        "log".into(),
        json!({
            "level": event.severity.as_str(),
            "syslog": {
                "severity": {"code": event.severity.code(), "name": event.severity.as_str()},
                "facility": {"code": SYSLOG_FACILITY, "name": "daemon"},
            },
        }),
    );

    let hostname = match rest.remove("host") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(h)) => h.get("hostname").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    if let Some(h) = hostname {
        out.insert("host".into(), json!({ "hostname": h, "name": h }));
    }

    let mut process = Map::new();
    let mut process_rest = match rest.remove("process") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let pid = rest
        .remove("pid")
        .filter(|p| !p.is_null())
        .or_else(|| process_rest.remove("pid").filter(|p| !p.is_null()));
    if let Some(pid) = pid {
        process.insert("pid".into(), pid);
    }
    if let Some(name) = process_rest.remove("name").filter(|v| !v.is_null()) {
        process.insert("name".into(), name);
    }
    if let Some(exe) = process_rest.remove("exe").filter(|v| !v.is_null()) {
        process.insert("executable".into(), exe);
    }
    if let Some(Value::Array(args)) = process_rest.remove("cmdline") {
        let line = args
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        process.insert("command_line".into(), json!(line));
        process.insert("args_count".into(), json!(args.len()));
        process.insert("args".into(), Value::Array(args));
    }
    if let Some(Value::Array(ancestry)) = process_rest.get("ancestry")
        && let Some(Value::Object(parent)) = ancestry.first()
    {
        let mut p = Map::new();
        for key in ["pid", "name"] {
            if let Some(v) = parent.get(key).filter(|v| !v.is_null()) {
                p.insert(key.into(), v.clone());
            }
        }
        if !p.is_empty() {
            process.insert("parent".into(), Value::Object(p));
        }
    }
    match process_rest.remove("user") {
        Some(Value::String(u)) => {
            out.insert("user".into(), json!({ "name": u }));
        }
        Some(Value::Number(uid)) => {
            out.insert("user".into(), json!({ "id": uid.to_string() }));
        }
        Some(Value::Object(u)) => {
            out.insert("user".into(), Value::Object(u));
        }
        _ => {}
    }
    match process_rest.get("container") {
        Some(Value::String(id)) => {
            out.insert("container".into(), json!({ "id": id }));
        }
        Some(Value::Object(c)) => {
            let mut m = Map::new();
            for key in ["id", "name", "runtime"] {
                if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                    m.insert(key.into(), v.clone());
                }
            }
            if let Some(image) = c.get("image").filter(|v| !v.is_null()) {
                m.insert("image".into(), json!({ "name": image }));
            }
            if !m.is_empty() {
                out.insert("container".into(), Value::Object(m));
            }
        }
        _ => {}
    }
    if !process.is_empty() {
        out.insert("process".into(), Value::Object(process));
    }

    if let Some(Value::Array(signals)) = body.get("signals") {
        let ids: Vec<Value> = signals
            .iter()
            .filter_map(|s| s.get("id").cloned())
            .collect();
        if !ids.is_empty() {
            out.insert(
                "rule".into(),
                json!({ "name": ids, "ruleset": "minerwatch" }),
            );
        }
    }

    if !process_rest.is_empty() {
        rest.insert("process".into(), Value::Object(process_rest));
    }
    if !rest.is_empty() {
        out.insert("minerwatch".into(), Value::Object(rest));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::Severity;
    use crate::report::event::samples::*;
    use serde_json::json;

    #[test]
    fn ecs_mapping_of_an_alert() {
        let e = to_ecs(&alert());
        assert_eq!(e["@timestamp"], "2024-05-01T12:00:00.123456789Z");
        assert_eq!(e["message"], alert().message);
        assert_eq!(e["ecs"]["version"], ECS_VERSION);
        assert_eq!(e["event"]["kind"], "alert");
        assert_eq!(e["event"]["category"], json!(["malware"]));
        assert_eq!(e["event"]["type"], json!(["info"]));
        assert_eq!(e["event"]["severity"], 1);
        assert_eq!(e["event"]["action"], "alert");
        assert_eq!(e["event"]["module"], "minerwatch");
        assert_eq!(e["event"]["dataset"], "minerwatch.events");
        assert_eq!(e["event"]["risk_score"], 100.0);
        assert_eq!(e["log"]["level"], "alert");
        assert_eq!(e["log"]["syslog"]["facility"]["code"], 3);
        assert_eq!(e["host"]["hostname"], "web-01");
        assert_eq!(e["process"]["pid"], 4242);
        assert_eq!(e["process"]["name"], "kdevtmpfsi");
        assert_eq!(e["process"]["executable"], "/dev/shm/x (deleted)");
        assert_eq!(
            e["process"]["command_line"],
            "kdevtmpfsi -o pool.example:3333 --pass=ü"
        );
        assert_eq!(e["process"]["args"][2], "pool.example:3333");
        assert_eq!(e["process"]["args_count"], 4);
        assert_eq!(e["process"]["parent"]["pid"], 1200);
        assert_eq!(e["process"]["parent"]["name"], "php-fpm");
        assert_eq!(e["user"]["name"], "www-data");
        assert_eq!(e["container"]["id"], "3f2a9c");
        assert_eq!(
            e["rule"]["name"],
            json!(["rx.rounding_modes", "rx.memory_layout"])
        );
        let mw = &e["minerwatch"];
        assert_eq!(mw["level"], "miner");
        assert_eq!(mw["score"], 100);
        assert_eq!(mw["type"], "alert");
        assert_eq!(mw["start_time"], 123456);
        assert_eq!(
            mw["signals"][1]["evidence"],
            alert().body["signals"][1]["evidence"]
        );
        assert_eq!(mw["process"]["cpu_percent"], 196.5);
        assert_eq!(mw["process"]["threads"], 3);
        // Mapped fields are not duplicated under minerwatch.*.
        for k in ["time", "host", "pid"] {
            assert!(mw.get(k).is_none(), "minerwatch.{k} should be mapped away");
        }
        for k in ["name", "exe", "cmdline", "user"] {
            assert!(mw["process"].get(k).is_none(), "minerwatch.process.{k}");
        }
    }

    #[test]
    fn ecs_mapping_of_other_kinds() {
        let e = to_ecs(&heartbeat(7));
        assert_eq!(e["event"]["kind"], "event");
        assert_eq!(e["event"]["category"], json!(["host"]));
        assert_eq!(e["event"]["type"], json!(["info"]));
        assert_eq!(e["event"]["severity"], 6);
        assert_eq!(e["event"]["action"], "heartbeat");
        assert_eq!(e["minerwatch"]["seq"], 7);
        assert!(e.get("process").is_none() && e.get("rule").is_none());

        let resolved = Event {
            kind: "resolved".into(),
            severity: Severity::Info,
            message: "resolved: pid 4242".into(),
            body: json!({"type": "resolved", "time": "2024-05-01T12:00:00Z", "host": {"hostname": "h"},
                         "pid": 4242, "process": {"name": "x", "user": 33, "container": {"id": "c1", "runtime": "docker"}}}),
        };
        let e = to_ecs(&resolved);
        assert_eq!(e["event"]["type"], json!(["end"]));
        assert_eq!(e["host"]["hostname"], "h");
        assert_eq!(e["user"]["id"], "33");
        assert_eq!(e["container"], json!({"id": "c1", "runtime": "docker"}));
        assert_eq!(e["process"]["pid"], 4242);

        let rules = Event {
            kind: "rules_error".into(),
            severity: Severity::Error,
            message: "rules: bad.yar line 3".into(),
            body: json!({"type": "rules_error"}),
        };
        let e = to_ecs(&rules);
        assert_eq!(e["event"]["type"], json!(["error"]));
        assert_eq!(e["event"]["severity"], 3);
        assert!(
            e["@timestamp"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
        );
    }
}
