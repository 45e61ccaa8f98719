//! How a run is shown: a table for people, one JSON line for scripts, and micro-mq's
//! "Total sent N messages dropped D in T ms, X ms/msg, Y msgs/sec" line.
//!
//! Every format prints the JSON line, alone on its line and last, so a script can always take
//! the last line that starts with `{`. Its keys:
//!
//! | key | meaning |
//! |-----|---------|
//! | `scenario`, `preset`, `version`, `transport` | what ran |
//! | `qos`, `sub_qos`, `size`, `publishers`, `subscribers`, `messages` (per publisher), `group`, `shared_topic`, `persistent` (subscribers keep their sessions), `inflight`, `rate_limit` (msg/s or null) | its shape |
//! | `sent`, `acked` | publications written, and confirmed (PUBACK/PUBCOMP; QoS 0: the final PINGRESP) |
//! | `expected`, `received`, `unique`, `lost`, `dup`, `ooo`, `foreign` | deliveries: wanted, arrived (duplicates included), distinct, missing, duplicated, out of order, not from this run |
//! | `pub_secs`, `pub_rate` | from the start to the last publisher's final confirmation; sent / pub_secs |
//! | `recv_secs`, `recv_rate` | from the start to the last delivery; received / recv_secs |
//! | `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`, `mean_us` | latency from send to receipt, microseconds (`p999_us`: the 99.9th percentile) |
//! | `drained` | everything expected arrived before the drain timeout |
//! | `client_cpu`, `broker_cpu` | average CPU cores used by the bench and by `--broker-pid` |
//!
//! An `--isolation` run prints the table of each of its two runs, their comparison, and one
//! JSON line: the keys above for the run beside the slow subscriber, and
//!
//! | key | meaning |
//! |-----|---------|
//! | `slow_ack_ms` | the slow subscriber acknowledged one message per this period |
//! | `slow_received` | messages the broker sent the slow subscriber |
//! | `slow_closed` | why its connection ended before the run did (null: it did not) |
//! | `alone_recv_rate`, `alone_p50_us`, `alone_p90_us`, `alone_p99_us`, `alone_max_us`, `alone_lost` | the same run without the slow subscriber |
//! | `rate_ratio`, `p50_ratio`, `p99_ratio` | beside / alone: delivery rate, p50 and p99 latency |

use std::fmt::Write as _;

use super::json::JsonLine;
use super::run::Outcome;
use super::scenario::Scenario;

/// The JSON line of a run.
pub fn json(scenario: &Scenario, outcome: &Outcome) -> String {
    fields(scenario, outcome).finish()
}

/// The keys of a run's JSON line, for [`json`] and [`isolation_json`] to finish.
fn fields(scenario: &Scenario, outcome: &Outcome) -> JsonLine {
    let latency = &outcome.latency;
    let mut line = JsonLine::new();
    line.string("scenario", &scenario.name)
        .optional_string("preset", scenario.preset.map(|preset| preset.name()))
        .string("version", scenario.version_name())
        .string("transport", scenario.transport)
        .integer("qos", scenario.qos as u64)
        .integer("sub_qos", scenario.sub_qos as u64)
        .integer("size", scenario.size as u64)
        .integer("publishers", scenario.publishers as u64)
        .integer("subscribers", scenario.subscribers as u64)
        .integer("messages", u64::from(scenario.messages))
        .optional_string(
            "group",
            scenario.group.as_ref().map(|(_, name)| name.as_str()),
        )
        .boolean("shared_topic", scenario.shared_topic)
        .boolean("persistent", scenario.persistent)
        .integer("inflight", scenario.inflight as u64)
        .optional_number("rate_limit", scenario.rate, 1)
        .integer("sent", outcome.sent)
        .integer("acked", outcome.acked)
        .integer("expected", outcome.expected)
        .integer("received", outcome.received)
        .integer("unique", outcome.unique)
        .integer("lost", outcome.lost)
        .integer("dup", outcome.duplicates)
        .integer("ooo", outcome.out_of_order)
        .integer("foreign", outcome.foreign)
        .number("pub_secs", outcome.publish_time.as_secs_f64(), 6)
        .number("pub_rate", publish_rate(outcome), 1)
        .optional_number(
            "recv_secs",
            outcome.delivery_time.map(|t| t.as_secs_f64()),
            6,
        )
        .optional_number("recv_rate", delivery_rate(outcome), 1)
        .optional_number("p50_us", micros(latency.quantile(0.50)), 1)
        .optional_number("p90_us", micros(latency.quantile(0.90)), 1)
        .optional_number("p99_us", micros(latency.quantile(0.99)), 1)
        .optional_number("p999_us", micros(latency.quantile(0.999)), 1)
        .optional_number("max_us", micros(latency.max()), 1)
        .optional_number("mean_us", latency.mean().map(|nanos| nanos / 1000.0), 1)
        .boolean("drained", outcome.drained)
        .optional_number("client_cpu", outcome.client_cpu, 2)
        .optional_number("broker_cpu", outcome.broker_cpu, 2);
    line
}

/// The JSON line of an isolation run: the run beside the slow subscriber, what the slow one
/// saw, the run alone, and the ratios.
pub fn isolation_json(scenario: &Scenario, alone: &Outcome, beside: &Outcome) -> String {
    let slow = beside.slow.as_ref();
    let (solo, with) = (&alone.latency, &beside.latency);
    let mut line = fields(scenario, beside);
    line.optional_number(
        "slow_ack_ms",
        scenario.slow_ack.map(|every| every.as_secs_f64() * 1000.0),
        0,
    )
    .optional_number("slow_received", slow.map(|slow| slow.received as f64), 0)
    .optional_string("slow_closed", slow.and_then(|slow| slow.closed.as_deref()))
    .optional_number("alone_recv_rate", delivery_rate(alone), 1)
    .optional_number("alone_p50_us", micros(solo.quantile(0.50)), 1)
    .optional_number("alone_p90_us", micros(solo.quantile(0.90)), 1)
    .optional_number("alone_p99_us", micros(solo.quantile(0.99)), 1)
    .optional_number("alone_max_us", micros(solo.max()), 1)
    .integer("alone_lost", alone.lost)
    .optional_number(
        "rate_ratio",
        ratio(delivery_rate(beside), delivery_rate(alone)),
        3,
    )
    .optional_number(
        "p50_ratio",
        ratio(micros(with.quantile(0.50)), micros(solo.quantile(0.50))),
        3,
    )
    .optional_number(
        "p99_ratio",
        ratio(micros(with.quantile(0.99)), micros(solo.quantile(0.99))),
        3,
    );
    line.finish()
}

/// The comparison that closes an isolation run's report.
pub fn isolation(scenario: &Scenario, alone: &Outcome, beside: &Outcome) -> String {
    let mut out = String::new();
    let every = scenario
        .slow_ack
        .map_or(0.0, |every| every.as_secs_f64() * 1000.0);
    let slow = match &beside.slow {
        Some(slow) => match &slow.closed {
            Some(why) => format!(
                "sent {} messages, then its connection ended: {why}",
                slow.received
            ),
            None => format!("sent {} messages", slow.received),
        },
        None => "did not run".to_string(),
    };
    let figures = |outcome: &Outcome| {
        let latency = &outcome.latency;
        let rate = delivery_rate(outcome).map_or("-".to_string(), |rate| format!("{rate:.0}"));
        let us =
            |nanos: Option<u64>| micros(nanos).map_or("-".to_string(), |us| format!("{us:.0}"));
        format!(
            "{rate} msg/s, latency us p50 {}, p90 {}, p99 {}, lost {}",
            us(latency.quantile(0.50)),
            us(latency.quantile(0.90)),
            us(latency.quantile(0.99)),
            outcome.lost
        )
    };
    let times = |value: Option<f64>| value.map_or("-".to_string(), |value| format!("{value:.2}"));
    let (solo, with) = (&alone.latency, &beside.latency);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "\nisolation    slow subscriber (MQTT 5, Receive Maximum 1, one acknowledgement every \
         {every:.0} ms, on {}/#): {slow}",
        scenario.topic
    );
    let _ = writeln!(out, "alone        {}", figures(alone));
    let _ = writeln!(out, "beside slow  {}", figures(beside));
    let _ = writeln!(
        out,
        "beside/alone rate {}, p50 {}, p99 {}",
        times(ratio(delivery_rate(beside), delivery_rate(alone))),
        times(ratio(
            micros(with.quantile(0.50)),
            micros(solo.quantile(0.50))
        )),
        times(ratio(
            micros(with.quantile(0.99)),
            micros(solo.quantile(0.99))
        ))
    );
    out
}

/// Nanoseconds as microseconds.
fn micros(nanos: Option<u64>) -> Option<f64> {
    nanos.map(|nanos| nanos as f64 / 1000.0)
}

/// `a / b`, when both are known and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The table of a run, for people.
pub fn table(scenario: &Scenario, outcome: &Outcome) -> String {
    let mut out = String::new();
    let kept = if scenario.persistent {
        ", persistent sessions"
    } else {
        ""
    };
    let subscribers = match &scenario.group {
        Some((_, name)) => format!(
            "{} subscriber(s) in group \"{name}\", QoS {}{kept}",
            scenario.subscribers, scenario.sub_qos as u8
        ),
        None => format!(
            "{} subscriber(s), QoS {}{kept}",
            scenario.subscribers, scenario.sub_qos as u8
        ),
    };
    let rate = scenario
        .rate
        .map_or("unlimited".to_string(), |rate| format!("{rate:.0} msg/s"));
    let topic = if scenario.shared_topic {
        "one shared topic"
    } else {
        "a topic per publisher"
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "scenario     {} (MQTT {}, {})",
        scenario.name,
        scenario.version_name(),
        scenario.transport
    );
    let _ = writeln!(
        out,
        "publishers   {} x {} messages of {} B, QoS {}, in-flight {}, rate {rate}, {topic}",
        scenario.publishers,
        scenario.messages,
        scenario.size,
        scenario.qos as u8,
        scenario.inflight
    );
    let _ = writeln!(out, "subscribers  {subscribers}");
    let _ = writeln!(
        out,
        "published    {} sent, {} acked in {:.3} s: {:.0} msg/s",
        outcome.sent,
        outcome.acked,
        outcome.publish_time.as_secs_f64(),
        publish_rate(outcome)
    );
    if scenario.subscribers > 0 {
        let delivered = match (outcome.delivery_time, delivery_rate(outcome)) {
            (Some(time), Some(rate)) => format!(" in {:.3} s: {rate:.0} msg/s", time.as_secs_f64()),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "delivered    {} of {} expected{delivered}{}",
            outcome.received,
            outcome.expected,
            if outcome.drained {
                ""
            } else {
                " (drain timed out)"
            }
        );
        let _ = writeln!(
            out,
            "loss         lost {}, duplicated {}, out of order {}{}",
            outcome.lost,
            outcome.duplicates,
            outcome.out_of_order,
            if outcome.foreign > 0 {
                format!(", {} not from this run", outcome.foreign)
            } else {
                String::new()
            }
        );
        let latency = &outcome.latency;
        let micros = |nanos: Option<u64>| {
            nanos.map_or("-".to_string(), |nanos| {
                format!("{:.0}", nanos as f64 / 1000.0)
            })
        };
        let _ = writeln!(
            out,
            "latency us   p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            micros(latency.quantile(0.50)),
            micros(latency.quantile(0.90)),
            micros(latency.quantile(0.99)),
            micros(latency.quantile(0.999)),
            micros(latency.max())
        );
    }
    let cores = |cpu: Option<f64>| cpu.map_or("-".to_string(), |cpu| format!("{cpu:.2}"));
    let _ = writeln!(
        out,
        "cpu cores    bench {}, broker {}",
        cores(outcome.client_cpu),
        cores(outcome.broker_cpu)
    );
    out
}

/// micro-mq's line. "Dropped" is what did not make it: deliveries lost when there are
/// subscribers, else publications the broker did not confirm. The time is until the last
/// delivery, or the last confirmation without subscribers.
pub fn legacy(scenario: &Scenario, outcome: &Outcome) -> String {
    let (dropped, time) = if scenario.subscribers > 0 {
        (
            outcome.lost,
            outcome.delivery_time.unwrap_or(outcome.publish_time),
        )
    } else {
        (outcome.sent - outcome.acked, outcome.publish_time)
    };
    let millis = time.as_secs_f64() * 1000.0;
    let sent = outcome.sent.max(1) as f64;
    format!(
        "Total sent {} messages dropped {dropped} in {millis:.0} ms, {:.6} ms/msg, {:.0} msgs/sec",
        outcome.sent,
        millis / sent,
        outcome.sent as f64 / time.as_secs_f64().max(f64::EPSILON)
    )
}

fn publish_rate(outcome: &Outcome) -> f64 {
    outcome.sent as f64 / outcome.publish_time.as_secs_f64().max(f64::EPSILON)
}

fn delivery_rate(outcome: &Outcome) -> Option<f64> {
    let time = outcome.delivery_time?;
    Some(outcome.received as f64 / time.as_secs_f64().max(f64::EPSILON))
}
