//! Delivery: each output has a queue and a thread of its own, so an output
//! that fails or stalls (a full disk, a syslog collector that restarts, one
//! that accepts and never reads) never holds up a tick, the other outputs,
//! or systemd's watchdog.
//!
//! An event that an output cannot take stays at the head of its queue and
//! is tried again (after 0.25 s, doubling up to [`MAX_BACKOFF`]) until the
//! output takes it: a fault shorter than what the queue holds loses nothing.
//! A queue holds at most [`MAX_QUEUED_EVENTS`] events and
//! [`MAX_QUEUED_BYTES`] of their JSON; past that the oldest heartbeat goes
//! first (a later one says the same), then the oldest event, each counted
//! as lost to that output. Every heartbeat says, per output that has
//! failed or is behind, what it lost, what it holds and its last error.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::output::{Event, Fields, Sink, render_line};
use crate::report::event::OutputLoss;

/// Events a queue holds at most.
pub const MAX_QUEUED_EVENTS: usize = 10_000;
/// JSON bytes (native fields) a queue holds at most.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Longest wait between two tries of a failing output.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// An output that has not taken the event at the head of its queue for
/// longer (since that event came to the head) is named in heartbeats.
const BEHIND: Duration = Duration::from_secs(2);
/// How long an output dropped by a reload may go on delivering what it
/// holds.
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// An event and the size it is counted at.
#[derive(Clone)]
struct Queued {
    event: Arc<Event>,
    bytes: usize,
    heartbeat: bool,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Queued>,
    bytes: usize,
    /// The head is being sent: it is not the overflow's to drop.
    in_flight: bool,
    /// A sink from a reload, taken up before the next send.
    replacement: Option<Box<dyn Sink>>,
    /// Stop once the queue is empty, or at this instant in any case.
    close_by: Option<Instant>,
    /// The worker has exited.
    done: bool,
    loss: OutputLoss,
    /// The output has failed at least once (it is then named in heartbeats).
    has_failed: bool,
    /// Since when the event at the head of the queue has waited.
    head_since: Option<Instant>,
}

/// One output's queue, shared by the agent and the output's thread.
struct Lane {
    name: String,
    state: Mutex<LaneState>,
    wake: Condvar,
}

/// A lock that a thread which panicked while holding it does not make
/// unusable: the state it guards stays consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        lock(&self.state)
    }

    fn push(&self, q: &Queued) {
        let mut s = self.lock();
        if s.close_by.is_some() {
            return;
        }
        s.bytes += q.bytes;
        if s.queue.is_empty() {
            s.head_since = Some(Instant::now());
        }
        s.queue.push_back(q.clone());
        let mut dropped = 0;
        while s.queue.len() > MAX_QUEUED_EVENTS || s.bytes > MAX_QUEUED_BYTES {
            // Never the event being sent, never the one just queued.
            let first = usize::from(s.in_flight);
            let last = s.queue.len() - 1;
            if first >= last {
                break;
            }
            let at = (first..last)
                .find(|&i| s.queue[i].heartbeat)
                .unwrap_or(first);
            if let Some(gone) = s.queue.remove(at) {
                s.bytes -= gone.bytes;
                dropped += 1;
            }
        }
        if dropped > 0 {
            s.loss.lost += dropped;
            s.has_failed = true;
        }
        drop(s);
        self.wake.notify_all();
    }

    /// What the heartbeat says of this output, if it has ever failed or is
    /// behind (a stalled collector: the event at the head of its queue has
    /// waited there over [`BEHIND`]).
    fn loss(&self) -> Option<OutputLoss> {
        let s = self.lock();
        let behind = s.head_since.is_some_and(|t| t.elapsed() > BEHIND);
        (s.has_failed || behind).then(|| OutputLoss {
            output: self.name.clone(),
            queued: s.queue.len() as u64,
            ..s.loss.clone()
        })
    }
}

/// An output's queue and the thread that delivers it.
type Worker = (Arc<Lane>, Option<JoinHandle<()>>);

/// The agent's outputs, each behind its queue and thread.
pub struct Outputs {
    lanes: Mutex<Vec<Worker>>,
    /// Outputs a reload dropped: delivering what they hold, or done with
    /// something lost.
    retired: Mutex<Vec<Worker>>,
}

impl Outputs {
    /// Starts a thread per sink.
    pub fn start(sinks: Vec<Box<dyn Sink>>) -> Outputs {
        let outputs = Outputs {
            lanes: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
        };
        outputs.replace(sinks);
        outputs
    }

    /// Queues `events` for every output, in order; never blocks on an
    /// output.
    pub fn send(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let lanes = lock(&self.lanes);
        for e in events {
            let q = Queued {
                bytes: render_line(e, Fields::Native).len(),
                heartbeat: e.kind == "heartbeat",
                event: Arc::new(e.clone()),
            };
            for (lane, _) in lanes.iter() {
                lane.push(&q);
            }
        }
    }

    /// Takes the outputs of a reloaded config: an output of the same name
    /// keeps its queue and tallies and goes on with the new sink; a new one
    /// gets a thread; one no longer configured delivers what it holds (for
    /// up to 30 s) and stops.
    pub fn replace(&self, sinks: Vec<Box<dyn Sink>>) {
        let mut lanes = lock(&self.lanes);
        let mut retired = lock(&self.retired);
        let mut names = Vec::new();
        for sink in sinks {
            let name = sink.name();
            names.push(name.clone());
            if let Some((lane, _)) = lanes.iter().find(|(l, _)| l.name == name) {
                lane.lock().replacement = Some(sink);
                lane.wake.notify_all();
                continue;
            }
            // Configured again before it stopped: it takes up its queue.
            if let Some(i) = retired
                .iter()
                .position(|(l, _)| l.name == name && !l.lock().done)
            {
                let (lane, handle) = retired.remove(i);
                {
                    let mut s = lane.lock();
                    s.close_by = None;
                    s.replacement = Some(sink);
                }
                lane.wake.notify_all();
                lanes.push((lane, handle));
                continue;
            }
            let lane = Arc::new(Lane {
                name: name.clone(),
                state: Mutex::new(LaneState::default()),
                wake: Condvar::new(),
            });
            let worker = lane.clone();
            let spawned = std::thread::Builder::new()
                .name("output".into())
                .spawn(move || deliver(&worker, sink));
            match spawned {
                Ok(h) => lanes.push((lane, Some(h))),
                Err(e) => tracing::error!(output = %name, "cannot start its thread: {e}"),
            }
        }
        for (lane, handle) in lanes.extract_if(.., |(l, _)| !names.contains(&l.name)) {
            lane.lock().close_by = Some(Instant::now() + RETIRE_GRACE);
            lane.wake.notify_all();
            retired.push((lane, handle));
        }
        // A retired output that is done and lost nothing is forgotten.
        retired.retain(|(l, _)| {
            let s = l.lock();
            !s.done || s.loss.lost > 0
        });
    }

    /// Per output that has failed (also one a reload dropped): what it
    /// lost, what it holds, whether it still fails and why.
    pub fn losses(&self) -> Vec<OutputLoss> {
        let mut out: Vec<OutputLoss> = lock(&self.lanes)
            .iter()
            .filter_map(|(l, _)| l.loss())
            .collect();
        out.extend(lock(&self.retired).iter().filter_map(|(l, _)| l.loss()));
        out
    }

    /// Delivers what the queues hold, waiting at most `grace`; what is
    /// still queued then is logged as lost.
    pub fn close(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut lanes = lock(&self.lanes);
        for (lane, _) in lanes.iter() {
            lane.lock().close_by = Some(deadline);
            lane.wake.notify_all();
        }
        for (lane, handle) in lanes.iter_mut() {
            let mut s = lane.lock();
            while !s.done {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                s = lane
                    .wake
                    .wait_timeout(s, left.min(Duration::from_millis(100)))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let (done, left) = (s.done, s.queue.len());
            drop(s);
            if done {
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
            } else {
                tracing::warn!(
                    output = %lane.name,
                    "not delivered when the agent stopped: {left} events"
                );
            }
        }
    }
}

/// An output's thread: sends the head of its queue until it is taken,
/// backing off while the output fails.
fn deliver(lane: &Lane, mut sink: Box<dyn Sink>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut s = lane.lock();
        loop {
            if let Some(new) = s.replacement.take() {
                sink = new;
            }
            let closed = s.close_by.is_some_and(|t| Instant::now() >= t);
            if closed || (s.queue.is_empty() && s.close_by.is_some()) {
                let left = s.queue.len() as u64;
                if left > 0 {
                    s.loss.lost += left;
                    s.has_failed = true;
                    s.queue.clear();
                    s.bytes = 0;
                    s.head_since = None;
                }
                s.done = true;
                drop(s);
                lane.wake.notify_all();
                return;
            }
            if !s.queue.is_empty() {
                break;
            }
            s = lane.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        let Some(event) = s.queue.front().map(|q| q.event.clone()) else {
            continue;
        };
        s.in_flight = true;
        drop(s);

        let result = sink.send(&event);

        let mut s = lane.lock();
        s.in_flight = false;
        match result {
            Ok(()) => {
                if let Some(q) = s.queue.pop_front() {
                    s.bytes -= q.bytes;
                }
                s.head_since = (!s.queue.is_empty()).then(Instant::now);
                backoff = FIRST_BACKOFF;
                if s.loss.failing {
                    s.loss.failing = false;
                    tracing::warn!(
                        output = %lane.name,
                        lost = s.loss.lost,
                        queued = s.queue.len(),
                        "output recovered"
                    );
                }
            }
            Err(err) => {
                if !s.loss.failing {
                    tracing::warn!(
                        output = %lane.name,
                        "cannot send event: {err}; holding events for it (what overflows its queue is counted as lost)"
                    );
                }
                s.loss.failing = true;
                s.has_failed = true;
                s.loss.last_error = crate::report::escape_text(&err.to_string());
                // Wait before the next try; a reload or the close wakes us.
                let until = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero()
                        || s.replacement.is_some()
                        || s.close_by.is_some_and(|t| Instant::now() >= t)
                    {
                        break;
                    }
                    s = lane
                        .wake
                        .wait_timeout(s, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::Severity;
    use serde_json::json;
    use std::io;

    /// An output the test opens and closes: closed, every send fails, as a
    /// full disk or a collector that is down does; open, it records what
    /// it took.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<Mutex<bool>>,
        took: Arc<Mutex<Vec<Value>>>,
    }

    use serde_json::Value;

    impl Gate {
        fn set(&self, open: bool) {
            *self.open.lock().expect("gate") = open;
        }
        fn took(&self) -> Vec<Value> {
            self.took.lock().expect("took").clone()
        }
        fn sink(&self, name: &str) -> Box<dyn Sink> {
            Box::new(GateSink {
                name: name.into(),
                gate: self.clone(),
            })
        }
    }

    struct GateSink {
        name: String,
        gate: Gate,
    }

    impl Sink for GateSink {
        fn name(&self) -> String {
            self.name.clone()
        }
        fn send(&mut self, event: &Event) -> io::Result<()> {
            if !*self.gate.open.lock().expect("gate") {
                return Err(io::Error::other("closed"));
            }
            self.gate
                .took
                .lock()
                .expect("took")
                .push(event.body.clone());
            Ok(())
        }
    }

    fn event(kind: &str, n: u64) -> Event {
        Event {
            kind: kind.into(),
            severity: Severity::Info,
            message: format!("{kind} {n}"),
            body: json!({"type": kind, "n": n}),
        }
    }

    fn wait(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn numbers(v: &[Value]) -> Vec<u64> {
        v.iter().filter_map(|e| e["n"].as_u64()).collect()
    }

    #[test]
    fn a_failing_output_holds_its_events_and_delivers_them_in_order_when_it_recovers() {
        let (good, bad) = (Gate::default(), Gate::default());
        good.set(true);
        let outputs = Outputs::start(vec![good.sink("good"), bad.sink("bad")]);
        outputs.send(&(0..5).map(|n| event("alert", n)).collect::<Vec<_>>());
        wait("the good output takes all", || good.took().len() == 5);
        wait("the bad output named, holding 5", || {
            outputs.losses().iter().any(|l| {
                l.output == "bad" && l.failing && l.queued == 5 && l.last_error == "closed"
            })
        });
        assert!(outputs.losses().iter().all(|l| l.output != "good"));
        bad.set(true);
        wait("the bad output catches up", || bad.took().len() == 5);
        assert_eq!(numbers(&bad.took()), vec![0, 1, 2, 3, 4]);
        wait("recovered, nothing lost", || {
            outputs.losses()
                == vec![OutputLoss {
                    output: "bad".into(),
                    lost: 0,
                    queued: 0,
                    failing: false,
                    last_error: "closed".into(),
                }]
        });
        outputs.close(Duration::from_secs(5));
    }

    #[test]
    fn a_full_queue_drops_heartbeats_before_alerts_and_counts_them() {
        let gate = Gate::default();
        let outputs = Outputs::start(vec![gate.sink("out")]);
        let mut events = vec![event("alert", 0)];
        events.extend((1..=MAX_QUEUED_EVENTS as u64).map(|n| event("heartbeat", n)));
        events.push(event("alert", 99_999));
        outputs.send(&events);
        let loss = outputs.losses();
        assert_eq!(loss.len(), 1, "{loss:?}");
        assert_eq!(
            (loss[0].lost, loss[0].queued),
            (2, MAX_QUEUED_EVENTS as u64)
        );
        gate.set(true);
        wait("delivered", || gate.took().len() == MAX_QUEUED_EVENTS);
        let took = gate.took();
        let n = numbers(&took);
        assert_eq!((n[0], n[n.len() - 1]), (0, 99_999), "both alerts kept");
        assert_eq!((n[1], n[2]), (3, 4), "the two oldest heartbeats went");
        outputs.close(Duration::from_secs(5));
    }

    #[test]
    fn a_queue_is_bounded_by_the_bytes_it_holds() {
        let gate = Gate::default();
        let outputs = Outputs::start(vec![gate.sink("out")]);
        let big = |n: u64| Event {
            body: json!({"type": "alert", "n": n, "cmdline": "A".repeat(1 << 20)}),
            ..event("alert", n)
        };
        outputs.send(&(0..20).map(big).collect::<Vec<_>>());
        let loss = outputs.losses();
        assert_eq!(loss.len(), 1, "{loss:?}");
        assert!(loss[0].queued <= 8 && loss[0].lost >= 12, "{loss:?}");
        assert_eq!(loss[0].queued + loss[0].lost, 20);
        gate.set(true);
        wait("delivered", || gate.took().len() as u64 == loss[0].queued);
        assert_eq!(numbers(&gate.took()).last(), Some(&19), "the newest kept");
        outputs.close(Duration::from_secs(5));
    }

    #[test]
    fn a_stalled_output_holds_up_neither_the_sender_nor_the_others() {
        struct Stuck(Arc<Mutex<()>>);
        impl Sink for Stuck {
            fn name(&self) -> String {
                "stuck".into()
            }
            fn send(&mut self, _: &Event) -> io::Result<()> {
                drop(self.0.lock());
                Ok(())
            }
        }
        let hold = Arc::new(Mutex::new(()));
        let held = hold.lock().expect("hold");
        let good = Gate::default();
        good.set(true);
        let outputs = Outputs::start(vec![Box::new(Stuck(hold.clone())), good.sink("good")]);
        let sent = Instant::now();
        for n in 0..100 {
            outputs.send(&[event("alert", n)]);
        }
        assert!(sent.elapsed() < Duration::from_secs(2), "send blocked");
        wait("the good output takes all", || good.took().len() == 100);
        wait("the stuck output named as behind", || {
            outputs
                .losses()
                .iter()
                .any(|l| l.output == "stuck" && !l.failing && l.queued >= 99)
        });
        drop(held);
        outputs.close(Duration::from_secs(5));
        assert!(
            outputs
                .losses()
                .iter()
                .all(|l| l.queued == 0 && l.lost == 0)
        );
    }

    #[test]
    fn a_reload_keeps_an_outputs_queue_and_retires_one_no_longer_configured() {
        let (a, b) = (Gate::default(), Gate::default());
        let outputs = Outputs::start(vec![a.sink("a"), b.sink("b")]);
        outputs.send(&[event("alert", 1), event("alert", 2)]);
        // "a" configured again (a new sink, same name), "b" dropped.
        let a2 = Gate::default();
        a2.set(true);
        outputs.replace(vec![a2.sink("a")]);
        wait("a's queue delivered through its new sink", || {
            a2.took().len() == 2
        });
        assert!(a.took().is_empty());
        b.set(true);
        wait("the retired b delivers what it held", || {
            b.took().len() == 2
        });
        outputs.send(&[event("alert", 3)]);
        wait("new events go to a", || a2.took().len() == 3);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.took().len(), 2, "nothing new to the retired output");
        outputs.close(Duration::from_secs(5));
    }

    #[test]
    fn closing_waits_for_the_queues_within_its_grace_and_counts_the_rest() {
        let (good, bad) = (Gate::default(), Gate::default());
        good.set(true);
        let outputs = Outputs::start(vec![good.sink("good"), bad.sink("bad")]);
        outputs.send(&(0..50).map(|n| event("alert", n)).collect::<Vec<_>>());
        let t = Instant::now();
        outputs.close(Duration::from_millis(600));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(good.took().len(), 50);
        wait("the bad output gave up at the deadline", || {
            outputs
                .losses()
                .iter()
                .any(|l| l.output == "bad" && l.lost == 50 && l.queued == 0)
        });
    }
}
