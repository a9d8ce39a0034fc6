//! Where a build's time went: [`chrome_trace`] turns a build's records into Chrome
//! trace-event JSON (what Bazel's `--profile` writes; it opens in Perfetto and
//! chrome://tracing), one complete event per action on the lane it ran in, and
//! [`slowest`] lists the actions that took longest, for `hb explain --timings`.

use hb_engine::{Record, Status};

/// How a record's status is written in the profile and `hb explain --timings`.
pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Executed => "executed",
        Status::Cached => "cached",
        Status::Remote => "remote",
    }
}

/// Lanes for the records: each record goes on the lowest lane free at its start, so
/// actions that ran at the same time sit on different lanes.
fn lanes(records: &[Record]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| (records[i].timing.start_us, i));
    let mut busy_until: Vec<u64> = Vec::new();
    let mut lane = vec![0; records.len()];
    for i in order {
        let t = records[i].timing;
        let free = busy_until.iter().position(|&end| end <= t.start_us);
        let l = free.unwrap_or(busy_until.len());
        if l == busy_until.len() {
            busy_until.push(0);
        }
        busy_until[l] = t.start_us + t.duration_us.max(1);
        lane[i] = l;
    }
    lane
}

/// The trace of a build.
pub fn chrome_trace(records: &[Record]) -> serde_json::Value {
    let lanes = lanes(records);
    let events: Vec<serde_json::Value> = records
        .iter()
        .zip(lanes)
        .map(|(r, lane)| {
            serde_json::json!({
                "name": r.name,
                "cat": r.kind,
                "ph": "X",
                "ts": r.timing.start_us,
                "dur": r.timing.duration_us,
                "pid": 1,
                "tid": lane,
                "args": {
                    "kind": r.kind,
                    "status": status_name(r.status),
                    "bytes_in": r.timing.bytes_in,
                    "bytes_out": r.timing.bytes_out,
                    "key": r.key.hex(),
                },
            })
        })
        .collect();
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

/// The `n` records that took longest, longest first (ties by name).
pub fn slowest(records: &[Record], n: usize) -> Vec<&Record> {
    let mut v: Vec<&Record> = records.iter().collect();
    v.sort_by(|a, b| b.timing.duration_us.cmp(&a.timing.duration_us).then_with(|| a.name.cmp(&b.name)));
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_engine::{Digest, Timing};

    fn rec(name: &str, start_us: u64, duration_us: u64) -> Record {
        Record {
            name: name.into(),
            kind: "k".into(),
            key: Digest::of(name.as_bytes()),
            result: Digest::of(b"r"),
            status: Status::Executed,
            args: Digest::of(b"a"),
            inputs: Vec::new(),
            timing: Timing { start_us, duration_us, bytes_in: 1, bytes_out: 2 },
        }
    }

    #[test]
    fn overlapping_actions_get_their_own_lanes() {
        let r = [rec("a", 0, 100), rec("b", 10, 50), rec("c", 60, 10), rec("d", 100, 5)];
        assert_eq!(lanes(&r), [0, 1, 1, 0]);
        let t = chrome_trace(&r);
        let events = t["traceEvents"].as_array().unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[1]["name"], "b");
        assert_eq!(events[1]["ph"], "X");
        assert_eq!(events[1]["tid"], 1);
        assert_eq!(events[1]["args"]["bytes_out"], 2);
        let names: Vec<&str> = slowest(&r, 2).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
