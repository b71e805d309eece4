//! The tables printed at the end: medians over the runs, and the losses of every run.

use std::collections::BTreeMap;

use crate::brokers::{BROKERS, BrokerKind, PERIODIC, Persistence};
use crate::persist::{PersistResult, TARGETS, size};
use crate::queued::{PER_SESSION, QueuedResult, SAMPLE};
use crate::relay::{PERSIST_RELAYS, RELAYS, RelayResult};
use crate::{Args, FULL_MESSAGES, IN_TRANSIT, INFLIGHT, PAYLOAD};

/// What one run measured.
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) values: Values,
    pub(crate) relays: RelayRuns,
    pub(crate) queued: QueuedRuns,
    pub(crate) persist: PersistRuns,
}

/// Every measured client and memory value of one run, by (scenario, column).
pub(crate) type Values = BTreeMap<(String, String), f64>;

/// Each relay's outcome on each broker in one run, by (index in `RELAYS`, broker); a failed
/// run keeps its error.
pub(crate) type RelayRuns = BTreeMap<(usize, BrokerKind), Result<RelayResult, String>>;

/// Each `persist` relay's outcome per broker and mode in one run, by (index in
/// `PERSIST_RELAYS`, broker, mode); a failed run keeps its error.
pub(crate) type PersistRuns =
    BTreeMap<(usize, BrokerKind, Persistence), Result<PersistResult, String>>;

/// The `queued` scenario's outcome on each broker in one run; a failed run keeps its error.
pub(crate) type QueuedRuns = BTreeMap<BrokerKind, Result<QueuedResult, String>>;

pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

pub(crate) fn print_table(args: &Args, runs: &[Run]) {
    let value = |scenario: &str, column: &str| {
        median(
            runs.iter()
                .filter_map(|run| {
                    run.values
                        .get(&(scenario.to_owned(), column.to_owned()))
                        .copied()
                })
                .collect(),
        )
    };
    let cell = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    };
    println!();
    println!(
        "Medians of {} run(s), {PAYLOAD} B payloads; ours runs {}.",
        runs.len(),
        args.our_config()
    );
    if args.client {
        println!();
        println!(
            "{} messages, 3.1.1, {INFLIGHT} in flight from the client.",
            args.messages
        );
        println!();
        println!("| client, msg/s | ours | rumqttc | ours / rumqttc |");
        println!("|---|---|---|---|");
        for broker in ["mosquitto", "ours"] {
            for qos in [0, 1] {
                let scenario = format!("client QoS {qos} → {broker}");
                let ours = value(&scenario, "ours msg/s");
                let theirs = value(&scenario, "rumqttc msg/s");
                println!(
                    "| QoS {qos} to {broker} | {} | {} | {} |",
                    cell(ours),
                    cell(theirs),
                    ratio(ours, theirs)
                );
            }
        }
    }
    if args.broker {
        print_relay_table(args, runs);
    }
    if args.queued {
        print_queued_table(args, runs);
    }
    if args.persist {
        print_persist_table(args, runs);
    }
    if args.memory {
        let scenario = "memory B/idle connection";
        let ours = value(scenario, "ours B");
        let mosquitto = value(scenario, "mosquitto B");
        let rumqttd = value(scenario, "rumqttd B");
        println!();
        println!(
            "| memory per idle connection ({}) | ours | mosquitto | rumqttd | ours / mosquitto | ours / rumqttd |",
            args.connections
        );
        println!("|---|---|---|---|---|---|");
        println!(
            "| bytes (VmRSS delta / connections) | {} | {} | {} | {} | {} |",
            cell(ours),
            cell(mosquitto),
            cell(rumqttd),
            ratio(ours, mosquitto),
            ratio(ours, rumqttd)
        );
    }
}

fn print_relay_table(args: &Args, runs: &[Run]) {
    println!();
    println!(
        "Relays: {IN_TRANSIT} messages in transit per publisher, {INFLIGHT} in flight from each \
         load client; `--messages {}` of {FULL_MESSAGES}. mosquitto: max_queued_messages 0, \
         max_inflight_messages {INFLIGHT}; rumqttd: max_inflight_count {INFLIGHT}.",
        args.messages
    );
    println!(
        "lost: PUBACKed (QoS 1) or sent (QoS 0) and never delivered; unacked: neither \
         acknowledged nor delivered when the run ended. One number per run."
    );
    println!();
    println!(
        "| relay | broker | msg/s | ours / broker | p50 µs | p99 µs | CPU ns/msg | lost per run | unacked per run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for (index, relay_case) in RELAYS.iter().enumerate() {
        for kind in BROKERS {
            let outcomes: Vec<Option<&Result<RelayResult, String>>> = runs
                .iter()
                .map(|run| run.relays.get(&(index, kind)))
                .collect();
            if outcomes.iter().all(Option::is_none) {
                continue;
            }
            let ok = |pick: fn(&RelayResult) -> f64| {
                median(
                    outcomes
                        .iter()
                        .filter_map(|o| o.and_then(|r| r.as_ref().ok()))
                        .map(pick)
                        .collect(),
                )
            };
            let cell = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
            // Ours over theirs, run by run, so that both rates saw the same machine.
            let ratio = median(
                runs.iter()
                    .filter_map(|run| {
                        let rate = |b| run.relays.get(&(index, b))?.as_ref().ok().map(|x| x.rate);
                        Some(rate(BrokerKind::Ours)? / rate(kind).filter(|x| *x > 0.0)?)
                    })
                    .collect(),
            )
            .filter(|_| kind != BrokerKind::Ours)
            .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
            let per_run = |pick: fn(&RelayResult) -> u64| {
                outcomes
                    .iter()
                    .map(|o| match o {
                        Some(Ok(r)) => pick(r).to_string(),
                        Some(Err(_)) => "failed".to_owned(),
                        None => "–".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let name = match (kind, args.our_inflight_v311) {
                (BrokerKind::Ours, Some(n)) => format!("ours (NON-DEFAULT v3.1.1 window {n})"),
                _ => kind.name().to_owned(),
            };
            println!(
                "| {} | {name} | {} | {ratio} | {} | {} | {} | {} | {} |",
                relay_case.name,
                cell(ok(|r| r.rate)),
                cell(ok(|r| r.p50_us as f64)),
                cell(ok(|r| r.p99_us as f64)),
                cell(ok(|r| r.cpu_ns)),
                per_run(|r| r.lost),
                per_run(|r| r.unacked),
            );
            for (run, outcome) in outcomes.iter().enumerate() {
                let note = match outcome {
                    Some(Err(e)) => format!("failed: {e}"),
                    Some(Ok(r)) if r.refused + r.unsent + r.duplicates > 0 => format!(
                        "refused {}, unsent {}, duplicates {}",
                        r.refused, r.unsent, r.duplicates
                    ),
                    _ => continue,
                };
                notes.push(format!(
                    "{} on {}, run {}: {note}",
                    relay_case.name,
                    kind.name(),
                    run + 1
                ));
            }
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("- {note}");
        }
    }
}

fn print_queued_table(args: &Args, runs: &[Run]) {
    let sample = SAMPLE.min(args.sessions);
    println!();
    println!(
        "Queued for {} disconnected sessions (3.1.1, Clean Session 0, QoS 1): {PER_SESSION} \
         messages of {PAYLOAD} B each, {} in all, from one 3.1.1 publisher with {INFLIGHT} in \
         flight; then {sample} sessions reconnect for theirs. B per message: \
         VmRSS growth / acknowledged messages; accounted: ours' Stats::queued_bytes growth / \
         acknowledged messages.",
        args.sessions,
        args.sessions as u64 * PER_SESSION
    );
    println!();
    println!(
        "| broker | RSS before MB | RSS after MB | B per queued message | accounted B per message \
         | publish msg/s | sample delivered | lost per run | unacked per run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for kind in BROKERS {
        let outcomes: Vec<Option<&Result<QueuedResult, String>>> =
            runs.iter().map(|run| run.queued.get(&kind)).collect();
        if outcomes.iter().all(Option::is_none) {
            continue;
        }
        let ok = |pick: &dyn Fn(&QueuedResult) -> Option<f64>| {
            median(
                outcomes
                    .iter()
                    .filter_map(|o| o.and_then(|r| r.as_ref().ok()))
                    .filter_map(pick)
                    .collect(),
            )
        };
        let cell = |v: Option<f64>, decimals: usize| {
            v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
        };
        let per_run = |pick: fn(&QueuedResult) -> u64| {
            outcomes
                .iter()
                .map(|o| match o {
                    Some(Ok(r)) => pick(r).to_string(),
                    Some(Err(_)) => "failed".to_owned(),
                    None => "–".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let name = match (kind, args.our_inflight_v311) {
            (BrokerKind::Ours, Some(n)) => format!("ours (NON-DEFAULT v3.1.1 window {n})"),
            _ => kind.name().to_owned(),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(ok(&|r| Some(r.rss_before as f64 / 1e6)), 1),
            cell(ok(&|r| Some(r.rss_after as f64 / 1e6)), 1),
            cell(ok(&|r| Some(r.bytes_per_message())), 0),
            cell(ok(&|r| r.accounted_per_message()), 0),
            cell(ok(&|r| Some(r.publish_rate)), 0),
            cell(ok(&|r| Some(r.delivered as f64)), 0),
            per_run(|r| r.lost),
            per_run(|r| r.unacked),
        );
        for (run, outcome) in outcomes.iter().enumerate() {
            let note = match outcome {
                Some(Err(e)) => format!("failed: {e}"),
                Some(Ok(r))
                    if r.refused
                        + r.unsent
                        + r.duplicates
                        + r.not_resumed as u64
                        + r.dropped.unwrap_or(0)
                        > 0
                        || r.publish_stalled =>
                {
                    format!(
                        "refused {}, unsent {}, duplicates {}, sessions not resumed {}, \
                         dropped by the broker {}, publishing stalled: {}",
                        r.refused,
                        r.unsent,
                        r.duplicates,
                        r.not_resumed,
                        r.dropped.map_or_else(|| "–".to_owned(), |d| d.to_string()),
                        r.publish_stalled
                    )
                }
                _ => continue,
            };
            notes.push(format!(
                "queued on {}, run {}: {note}",
                kind.name(),
                run + 1
            ));
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("- {note}");
        }
    }
}

fn print_persist_table(args: &Args, runs: &[Run]) {
    println!();
    println!(
        "Persistence: 10 publishers → 1 persistent subscriber at QoS 1, {} messages in all, \
         {IN_TRANSIT} in transit per publisher, {INFLIGHT} in flight from each load client; a \
         fresh broker and data directory per run, on the root file system (ext4). Ours \
         `sync always` fsyncs each commit before the acks it holds go out (nothing acknowledged \
         is lost, even on a power cut); `sync periodic 1 s` writes each commit to the OS before \
         its acks and fsyncs every {} s (survives the broker being killed; a power cut can \
         lose the last second). mosquitto `persistence true` (autosave_interval 1800 s, its \
         default) keeps everything in memory and writes its whole state to mosquitto.db only \
         every 30 minutes and at a clean shutdown: killed or after a power cut, it restarts \
         from the last autosave (up to 30 minutes of acknowledged messages lost, all of them \
         before the first autosave).",
        PERSIST_RELAYS[0].total(args.messages),
        PERIODIC.as_secs()
    );
    println!(
        "written: bytes the broker caused to be written to storage during the relay \
         (/proc/PID/io write_bytes); on disk: what the data directory occupies after the relay (du; for mosquitto after \
         forcing a save with SIGUSR1: that it can write). \
         Ours with a store: commits (each a group of the router's batches), deliveries per \
         commit, mean and p99 time in `commit`, and the share of the relay's time its store \
         thread spent committing. One lost/unacked number per run; the rest are medians."
    );
    println!();
    println!(
        "| relay | broker | mode | msg/s | ÷ mosquitto persistence | ÷ ours in memory \
         | p50 µs | p99 µs | CPU ns/msg | written | on disk | commits | msg/commit \
         | commit µs mean / p99 | store busy | lost per run | unacked per run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for (index, case) in PERSIST_RELAYS.iter().enumerate() {
        for (kind, mode) in TARGETS {
            let outcomes: Vec<Option<&Result<PersistResult, String>>> = runs
                .iter()
                .map(|run| run.persist.get(&(index, kind, mode)))
                .collect();
            if outcomes.iter().all(Option::is_none) {
                continue;
            }
            let ok = |pick: &dyn Fn(&PersistResult) -> Option<f64>| {
                median(
                    outcomes
                        .iter()
                        .filter_map(|o| o.and_then(|r| r.as_ref().ok()))
                        .filter_map(pick)
                        .collect(),
                )
            };
            let cell = |v: Option<f64>, decimals: usize| {
                v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
            };
            // This rate over another's, run by run, so that both saw the same machine.
            let ratio = |theirs: (BrokerKind, Persistence)| {
                let ratios = runs
                    .iter()
                    .filter_map(|run| {
                        let rate =
                            |k, m| Some(run.persist.get(&(index, k, m))?.as_ref().ok()?.relay.rate);
                        Some(rate(kind, mode)? / rate(theirs.0, theirs.1).filter(|r| *r > 0.0)?)
                    })
                    .collect();
                cell(median(ratios).filter(|_| (kind, mode) != theirs), 2)
            };
            let per_run = |pick: fn(&RelayResult) -> u64| {
                outcomes
                    .iter()
                    .map(|o| match o {
                        Some(Ok(r)) => pick(&r.relay).to_string(),
                        Some(Err(_)) => "failed".to_owned(),
                        None => "–".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let store = |pick: fn(&crate::persist::StoreCounts) -> f64| {
                move |r: &PersistResult| r.store.as_ref().map(pick)
            };
            let commit_us = match (
                ok(&store(|s| s.commit_mean_us())),
                ok(&store(|s| s.commit_p99_us as f64)),
            ) {
                (Some(mean), Some(p99)) => format!("{mean:.0} / {p99:.0}"),
                _ => "–".to_owned(),
            };
            let name = match (kind, args.our_inflight_v311) {
                (BrokerKind::Ours, Some(n)) => format!("ours (NON-DEFAULT v3.1.1 window {n})"),
                _ => kind.name().to_owned(),
            };
            println!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {commit_us} \
                 | {} | {} | {} |",
                case.name,
                mode.name(),
                cell(ok(&|r| Some(r.relay.rate)), 0),
                ratio((BrokerKind::Mosquitto, Persistence::Autosave)),
                ratio((BrokerKind::Ours, Persistence::Memory)),
                cell(ok(&|r| Some(r.relay.p50_us as f64)), 0),
                cell(ok(&|r| Some(r.relay.p99_us as f64)), 0),
                cell(ok(&|r| Some(r.relay.cpu_ns)), 0),
                size(ok(&|r| r.written.map(|b| b as f64))),
                size(ok(&|r| r.on_disk.map(|b| b as f64))),
                cell(ok(&store(|s| s.commits as f64)), 0),
                cell(ok(&PersistResult::messages_per_commit), 0),
                ok(&PersistResult::store_busy)
                    .map_or_else(|| "–".to_owned(), |b| format!("{:.0} %", b * 100.0)),
                per_run(|r| r.lost),
                per_run(|r| r.unacked),
            );
            for (run, outcome) in outcomes.iter().enumerate() {
                let note = match outcome {
                    Some(Err(e)) => format!("failed: {e}"),
                    Some(Ok(r)) if r.relay.refused + r.relay.unsent + r.relay.duplicates > 0 => {
                        format!(
                            "refused {}, unsent {}, duplicates {}",
                            r.relay.refused, r.relay.unsent, r.relay.duplicates
                        )
                    }
                    _ => continue,
                };
                notes.push(format!(
                    "{} on {} {}, run {}: {note}",
                    case.name,
                    kind.name(),
                    mode.name(),
                    run + 1
                ));
            }
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("- {note}");
        }
    }
}
