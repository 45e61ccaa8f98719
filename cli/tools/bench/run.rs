//! One bench run, start to finish:
//!
//! 1. connect and subscribe every subscriber, and the slow subscriber of an isolation run,
//!    then connect every publisher (a bounded number of handshakes at a time, so a thousand
//!    clients do not overflow the broker's accept queue);
//! 2. warm up, if asked: each publisher sends its warm-up messages, and the run waits until
//!    they are delivered, so connections, buffers and caches are hot before measuring;
//! 3. start every publisher at one instant and wait until each has its last message
//!    confirmed, showing progress every second on stderr;
//! 4. drain: wait until every expected delivery arrived, or none arrived for the drain
//!    timeout (a broker still delivering its backlog is not cut off);
//! 5. stop the subscribers (and the slow one), collect their trackers and add them up.
//!
//! Rates are measured from the common start: publishing until the last publisher's final
//! confirmation, delivery until the last message arrived at any subscriber.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinError, JoinSet};

use supermq::protocol::SubscriptionOptions;

use super::counters::Counters;
use super::histogram::Histogram;
use super::payload::Clock;
use super::procfs;
use super::publisher::{Phase, PhaseResult, Publisher};
use super::scenario::Scenario;
use super::slow::{SlowOutcome, SlowSubscriber};
use super::subscriber::Subscriber;
use super::tracker::{self, Tracker};
use crate::client::{Client, ClientError, Parts};
use crate::tools::ToolError;

/// Connections being set up at once.
const CONNECT_CONCURRENCY: usize = 64;

/// How long the warm-up's deliveries may take.
const WARMUP_DRAIN: Duration = Duration::from_secs(5);

/// How often the drain checks whether everything arrived.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// What a run measured.
pub struct Outcome {
    pub sent: u64,
    pub acked: u64,
    pub expected: u64,
    /// Deliveries, duplicates included.
    pub received: u64,
    pub unique: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Messages that were not this run's (see `Recorded::Foreign`).
    pub foreign: u64,
    pub publish_time: Duration,
    /// From the start to the last delivery; `None` without deliveries.
    pub delivery_time: Option<Duration>,
    pub latency: Histogram,
    /// Everything expected arrived before the drain timeout.
    pub drained: bool,
    /// CPU cores used on average while publishing and delivering.
    pub client_cpu: Option<f64>,
    pub broker_cpu: Option<f64>,
    /// What the slow subscriber saw, if one ran beside the others.
    pub slow: Option<SlowOutcome>,
}

/// Runs `scenario`; `progress` prints a line per second on stderr.
pub async fn run(
    scenario: &Scenario,
    progress: bool,
    broker_pid: Option<u32>,
) -> Result<Outcome, ToolError> {
    let clock = Clock::new();
    let counters = Arc::new(Counters::default());

    let subscribers = connect_subscribers(scenario).await?;
    let slow = match scenario.slow_ack {
        Some(every) => Some(SlowSubscriber::connect(scenario, every).await?),
        None => None,
    };
    let mut publishers = connect_publishers(scenario, clock, &counters).await?;
    let (stop, stopped) = watch::channel(false);
    let slow = slow.map(|slow| tokio::spawn(slow.run(stopped.clone())));
    let mut receiving = Vec::with_capacity(scenario.subscribers);
    for parts in subscribers {
        let tracker = Tracker::new(scenario.publishers, scenario.messages);
        let subscriber = Subscriber::new(
            parts,
            scenario.version,
            tracker,
            clock,
            Arc::clone(&counters),
        );
        receiving.push(tokio::spawn(subscriber.run(stopped.clone())));
    }

    let per_publisher_rate = scenario.rate.map(|rate| rate / scenario.publishers as f64);
    if scenario.warmup > 0 {
        let phase = Phase {
            messages: scenario.warmup,
            warmup: true,
            start: Instant::now(),
            rate: per_publisher_rate,
        };
        publishers = run_phase(publishers, phase, None).await?.0;
        let expected = u64::from(scenario.warmup)
            * scenario.publishers as u64
            * scenario.deliveries_per_message();
        let deadline = Instant::now() + WARMUP_DRAIN;
        while Counters::get(&counters.warmup) < expected && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    let cpu_before = cpu_snapshot(broker_pid);
    let start = Instant::now();
    let phase = Phase {
        messages: scenario.messages,
        warmup: false,
        start,
        rate: per_publisher_rate,
    };
    let mut meter = Meter::new(progress, start, &counters);
    let (publishers, results) = run_phase(publishers, phase, Some(&mut meter)).await?;
    let published = results
        .iter()
        .map(|result| result.finished)
        .max()
        .unwrap_or(start);

    // Deliveries may still be queued in the broker: wait for them while they keep coming.
    let expected = scenario.expected();
    let mut unique = Counters::get(&counters.unique);
    let mut quiet_since = published;
    while unique < expected
        && quiet_since.elapsed() < scenario.drain_timeout
        && !receiving.iter().any(|task| task.is_finished())
    {
        tokio::time::sleep(DRAIN_POLL).await;
        meter.tick();
        let now = Counters::get(&counters.unique);
        if now > unique {
            unique = now;
            quiet_since = Instant::now();
        }
    }
    let drained = unique >= expected;
    let _ = stop.send(true);
    let mut trackers = Vec::with_capacity(scenario.subscribers);
    for task in receiving {
        trackers.push(task.await.map_err(task_failed)??);
    }
    let slow = match slow {
        Some(task) => Some(task.await.map_err(task_failed)?),
        None => None,
    };
    let cpu_after = cpu_snapshot(broker_pid);
    meter.finish();

    let mut closing = JoinSet::new();
    for publisher in publishers {
        closing.spawn(publisher.close());
    }
    while closing.join_next().await.is_some() {}

    let mut outcome = outcome(scenario, &results, &trackers, start, published, drained);
    outcome.slow = slow;
    // The CPU the drain's idle wait took is negligible; the busy time is what it is spread over.
    let busy = outcome
        .delivery_time
        .unwrap_or_default()
        .max(outcome.publish_time);
    (outcome.client_cpu, outcome.broker_cpu) = cpu_usage(cpu_before, cpu_after, busy);
    Ok(outcome)
}

/// Adds up what the publishers and subscribers counted.
fn outcome(
    scenario: &Scenario,
    results: &[PhaseResult],
    trackers: &[Tracker],
    start: Instant,
    published: Instant,
    drained: bool,
) -> Outcome {
    let received = trackers.iter().map(|t| t.received).sum();
    let unique = if scenario.group.is_some() {
        tracker::union_unique(trackers)
    } else {
        trackers.iter().map(|t| t.unique).sum()
    };
    let expected = scenario.expected();
    let mut latency = Histogram::default();
    for tracker in trackers {
        latency.merge(&tracker.latency);
    }
    Outcome {
        sent: results.iter().map(|r| r.sent).sum(),
        acked: results.iter().map(|r| r.acked).sum(),
        expected,
        received,
        unique,
        lost: expected.saturating_sub(unique),
        duplicates: received - unique,
        out_of_order: trackers.iter().map(|t| t.out_of_order).sum(),
        foreign: trackers.iter().map(|t| t.foreign).sum(),
        publish_time: published - start,
        delivery_time: trackers
            .iter()
            .filter_map(|t| t.last_received)
            .max()
            .map(|last| last.saturating_duration_since(start)),
        latency,
        drained,
        client_cpu: None,
        broker_cpu: None,
        slow: None,
    }
}

async fn connect_subscribers(scenario: &Scenario) -> Result<Vec<Parts>, ToolError> {
    let filter = scenario.filter();
    let options = SubscriptionOptions {
        qos: scenario.sub_qos,
        ..SubscriptionOptions::default()
    };
    let connected = connect_all(scenario.subscribers, |index| {
        let endpoint = scenario.sub_endpoints[index % scenario.sub_endpoints.len()].clone();
        let connect = scenario.connect_options('s', index);
        let filters = vec![(filter.clone(), options)];
        async move {
            let (mut client, _) = Client::connect(&endpoint, &connect).await?;
            client.subscribe(filters).await?;
            Ok(client.into_parts())
        }
    })
    .await;
    connected.map_err(|failure| failure.error.into())
}

async fn connect_publishers(
    scenario: &Scenario,
    clock: Clock,
    counters: &Arc<Counters>,
) -> Result<Vec<Publisher>, ToolError> {
    let connected = connect_all(scenario.publishers, |index| {
        let endpoint = scenario.pub_endpoints[index % scenario.pub_endpoints.len()].clone();
        let connect = scenario.connect_options('p', index);
        let inflight = scenario.inflight;
        async move {
            let (mut client, _) = Client::connect(&endpoint, &connect).await?;
            client.limit_window(inflight);
            Ok(client.into_parts())
        }
    })
    .await
    .map_err(|failure| ToolError::from(failure.error))?;
    let mut publishers = Vec::with_capacity(scenario.publishers);
    for (index, parts) in connected.into_iter().enumerate() {
        publishers.push(Publisher::new(
            parts,
            scenario.template(index)?,
            // Scenario::build checked that every index fits.
            index as u32,
            scenario.version,
            scenario.qos,
            clock,
            Arc::clone(counters),
        ));
    }
    Ok(publishers)
}

/// Connecting a set of clients failed after `opened` of them succeeded.
pub struct ConnectFailure {
    pub opened: usize,
    pub error: ClientError,
}

/// Runs `connect(i)` for every `i` below `count`, a bounded number at a time, and returns the
/// results in order. The first failure fails the whole set (the rest are dropped).
pub async fn connect_all<T, F, Fut>(count: usize, connect: F) -> Result<Vec<T>, ConnectFailure>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut connecting = JoinSet::new();
    for index in 0..count {
        let limit = Arc::clone(&limit);
        let connection = connect(index);
        connecting.spawn(async move {
            // The semaphore is never closed, so this always yields a permit.
            let _permit = limit.acquire_owned().await;
            (index, connection.await)
        });
    }
    let mut slots: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut opened = 0;
    while let Some(joined) = connecting.join_next().await {
        let failed = |error| ConnectFailure { opened, error };
        match joined {
            Ok((index, Ok(connection))) => {
                slots[index] = Some(connection);
                opened += 1;
            }
            Ok((_, Err(error))) => return Err(failed(error)),
            // A connect task only fails by panicking, which `connect` does not do.
            Err(error) => {
                return Err(failed(ClientError::Io(std::io::Error::other(
                    error.to_string(),
                ))));
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Runs one phase on every publisher at once; returns them with their results.
async fn run_phase(
    publishers: Vec<Publisher>,
    phase: Phase,
    mut meter: Option<&mut Meter<'_>>,
) -> Result<(Vec<Publisher>, Vec<PhaseResult>), ToolError> {
    let count = publishers.len();
    let mut sending = JoinSet::new();
    for mut publisher in publishers {
        sending.spawn(async move {
            let result = publisher.run(phase).await;
            (publisher, result)
        });
    }
    let mut done = Vec::with_capacity(count);
    let mut results = Vec::with_capacity(count);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            joined = sending.join_next() => match joined {
                None => break,
                Some(joined) => {
                    let (publisher, result) = joined.map_err(task_failed)?;
                    results.push(result?);
                    done.push(publisher);
                }
            },
            _ = ticks.tick() => {
                if let Some(meter) = meter.as_deref_mut() {
                    meter.tick();
                }
            }
        }
    }
    Ok((done, results))
}

/// CPU seconds of this process and of the broker, when readable.
fn cpu_snapshot(broker_pid: Option<u32>) -> (Option<f64>, Option<f64>) {
    (
        procfs::cpu_seconds(None).ok(),
        broker_pid.and_then(|pid| procfs::cpu_seconds(Some(pid)).ok()),
    )
}

/// Average cores used between two snapshots `wall` apart.
fn cpu_usage(
    before: (Option<f64>, Option<f64>),
    after: (Option<f64>, Option<f64>),
    wall: Duration,
) -> (Option<f64>, Option<f64>) {
    let cores = |before: Option<f64>, after: Option<f64>| {
        Some((after? - before?) / wall.as_secs_f64().max(f64::EPSILON))
    };
    (cores(before.0, after.0), cores(before.1, after.1))
}

fn task_failed(error: JoinError) -> ToolError {
    ToolError::Local(format!("a bench task failed: {error}"))
}

/// The progress line: once a second, the counts so far and the rates of the last second.
struct Meter<'a> {
    enabled: bool,
    start: Instant,
    counters: &'a Counters,
    last_print: Instant,
    last_sent: u64,
    last_received: u64,
    printed: bool,
}

impl<'a> Meter<'a> {
    fn new(enabled: bool, start: Instant, counters: &'a Counters) -> Meter<'a> {
        Meter {
            enabled,
            start,
            counters,
            last_print: start,
            last_sent: 0,
            last_received: 0,
            printed: false,
        }
    }

    /// Prints a line if a second has passed since the last one.
    fn tick(&mut self) {
        let now = Instant::now();
        let since = now - self.last_print;
        // A little under a second: the ticks of a 1-second interval may come a hair early.
        if !self.enabled || since < Duration::from_millis(950) {
            return;
        }
        let sent = Counters::get(&self.counters.sent);
        let received = Counters::get(&self.counters.received);
        let per_second = |now: u64, before: u64| (now - before) as f64 / since.as_secs_f64();
        eprintln!(
            "bench: {:>4.0} s  sent {sent} ({:.0}/s)  received {received} ({:.0}/s)",
            (now - self.start).as_secs_f64(),
            per_second(sent, self.last_sent),
            per_second(received, self.last_received),
        );
        let _ = std::io::stderr().flush();
        self.last_print = now;
        self.last_sent = sent;
        self.last_received = received;
        self.printed = true;
    }

    fn finish(&mut self) {
        if self.printed {
            eprintln!("bench: done");
        }
    }
}
