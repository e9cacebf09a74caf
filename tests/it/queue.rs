//! The broker layer against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).
//!
//! Every test makes its own vhost `iom-test-<random>` with `rabbitmqctl` and deletes
//! it when it ends, pass or fail (a drop guard), so tests run in parallel and leave
//! nothing behind. An unreachable broker or a missing `rabbitmqctl` fails the tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iom::config::Secret;
use iom::error::{Classify, ErrorClass};
use iom::queue::{Broker, BrokerConfig, Incoming, QueueError, TaskConsumer};
use iom::task::{
    graph_id, task_id, GapPolicy, Source, Step, StepKind, TaskMessage, SCHEMA_VERSION,
};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::support::{output, Vhost};

fn task(kind: StepKind, discriminator: &str, attempt: u32) -> TaskMessage {
    let g = graph_id("p", "A_0010", "plate.", "org", 1);
    let source = Source::Sequence {
        dir: "/deliveries/d1/plate".into(),
        head: "plate.".into(),
        pad: 4,
        ext: "exr".into(),
        first: 1,
        last: 3,
    };
    let step = match kind {
        StepKind::Probe => Step::Probe {
            source,
            gap_policy: GapPolicy::Fail,
        },
        StepKind::Copy => Step::Copy {
            source,
            output: output(),
            frames: None,
        },
        StepKind::Cleanup => Step::Cleanup { output: output() },
        other => panic!("test helper has no step for {other}"),
    };
    TaskMessage {
        schema: SCHEMA_VERSION,
        task_id: task_id(&g, kind, discriminator),
        graph_id: g,
        attempt,
        retries_from: 1,
        work_dir: "/show/p/.iom/publishes/x".into(),
        step,
    }
}

/// The next delivery within `within`, `None` when nothing came. A consumer that
/// ends or fails is a test failure here.
async fn recv(c: &mut TaskConsumer, within: Duration) -> Option<Incoming> {
    match tokio::time::timeout(within, c.next()).await {
        Err(_) => None,
        Ok(Some(Ok(i))) => Some(i),
        Ok(Some(Err(e))) => panic!("consumer failed: {e}"),
        Ok(None) => panic!("consumer ended unexpectedly"),
    }
}

async fn setup(vh: &Vhost) -> Broker {
    let b = Broker::connect(&vh.config())
        .await
        .expect("RabbitMQ must be reachable on 127.0.0.1:5672");
    b.declare_topology().await.expect("declare topology");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_idempotent_and_a_mismatched_queue_is_a_clear_permanent_error() {
    let vh = Vhost::new();
    let b = setup(&vh).await;
    b.declare_topology()
        .await
        .expect("declaring twice is a no-op");
    let depths = b.queue_depths().await.unwrap();
    let names: Vec<&str> = depths.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(depths.len(), 7 + 2 + 2, "{names:?}");
    for q in [
        "t.tasks.probe",
        "t.tasks.cleanup",
        "t.retry.1s",
        "t.retry.3s",
        "t.dead",
        "t.dead.notices",
    ] {
        assert!(names.contains(&q), "{q} missing from {names:?}");
    }
    assert!(
        depths.iter().all(|(_, m, c)| *m == 0 && *c == 0),
        "{depths:?}"
    );

    // A queue that exists as a classic queue under the names of another prefix.
    let raw = vh.raw().await;
    let ch = raw.create_channel().await.unwrap();
    ch.queue_declare(
        "m.tasks.probe".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut other = vh.config();
    other.prefix = "m".into();
    let b2 = Broker::connect(&other).await.unwrap();
    let e = b2.declare_topology().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let msg = e.to_string();
    assert!(matches!(e, QueueError::Declare { .. }), "{msg}");
    assert!(msg.contains("m.tasks.probe"), "{msg}");
    assert!(
        msg.contains(&format!(
            "rabbitmqctl delete_queue -p {} m.tasks.probe",
            vh.name
        )),
        "{msg}"
    );

    // Changed settings against the existing topology: the same kind of error.
    let mut changed = vh.config();
    changed.delivery_limit = 9;
    let b3 = Broker::connect(&changed).await.unwrap();
    let e = b3.declare_topology().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("t.tasks.probe") && msg.contains("x-delivery-limit"),
        "{msg}"
    );
    // The broker that declared it is unaffected.
    assert!(b.is_connected());
    b.declare_topology().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_unknown_vhosts_are_permanent_and_unreachable_is_transient() {
    let mut cfg = BrokerConfig::new("amqp://guest@127.0.0.1:5672/%2f", "t");
    cfg.password = Some(Secret::new("not-the-password".into()));
    let start = Instant::now();
    let e = Broker::connect_with_retry(&cfg, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "permanent errors are not retried"
    );
    let msg = e.to_string();
    assert!(!msg.contains("not-the-password"), "{msg}");
    assert!(msg.contains("password"), "{msg}");

    let mut cfg = BrokerConfig::new("amqp://guest@127.0.0.1:5672/iom-test-no-such-vhost", "t");
    cfg.password = Some(Secret::new("guest".into()));
    let e = Broker::connect(&cfg).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("virtual host"), "{e}");

    // Nothing listens on port 1: transient, retried until max_wait, then returned.
    let cfg = BrokerConfig::new("amqp://127.0.0.1:1/%2f", "t");
    let start = Instant::now();
    let e = Broker::connect_with_retry(&cfg, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_task_is_confirmed_and_consumed_with_its_headers() {
    let vh = Vhost::new();
    let b = setup(&vh).await;
    let p = b.publisher().await.unwrap();
    let msg = task(StepKind::Probe, "", 1);
    let before = iom::queue::unix_ms_now();
    p.publish_task(&msg, &[("traceparent".into(), "00-abc-def-01".into())])
        .await
        .unwrap();
    // Confirmed means stored: the queue holds it before anyone consumes.
    let depths = b.queue_depths().await.unwrap();
    let probe = depths
        .iter()
        .find(|(n, _, _)| n == "t.tasks.probe")
        .unwrap();
    assert_eq!(probe.1, 1, "{depths:?}");

    let mut c = b
        .consumer(&[StepKind::Probe, StepKind::Copy], 2, "w1")
        .await
        .unwrap();
    let inc = recv(&mut c, Duration::from_secs(5))
        .await
        .expect("delivery");
    assert_eq!(TaskMessage::decode(&inc.body).unwrap(), msg);
    assert_eq!(inc.routing_key, "probe");
    assert!(!inc.redelivered);
    assert_eq!(inc.delivery_count, None);
    assert_eq!(
        inc.message_id.as_deref(),
        Some(format!("{}#1", msg.task_id).as_str())
    );
    assert_eq!(
        inc.header_str("task_id").as_deref(),
        Some(msg.task_id.0.as_str())
    );
    assert_eq!(
        inc.header_str("graph_id").as_deref(),
        Some(msg.graph_id.0.as_str())
    );
    assert_eq!(inc.header_str("attempt").as_deref(), Some("1"));
    assert_eq!(
        inc.header_str("traceparent").as_deref(),
        Some("00-abc-def-01")
    );
    let at = inc.enqueued_at_ms().expect("enqueued_at");
    assert!(at >= before && at <= iom::queue::unix_ms_now(), "{at}");
    inc.ack().await.unwrap();
    // Acked means gone: nothing else arrives, and acking twice is refused.
    assert!(recv(&mut c, Duration::from_millis(300)).await.is_none());
    assert!(inc.ack().await.is_err());

    // Events need no subscriber but are still confirmed.
    p.publish_event("task.x.queued", b"{}").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_task_is_returned_and_a_closed_channel_is_reopened() {
    let vh = Vhost::new();
    let b = setup(&vh).await;
    let p = b.publisher().await.unwrap();
    let raw = vh.raw().await;
    let ch = raw.create_channel().await.unwrap();
    ch.queue_unbind(
        "t.tasks.copy".into(),
        "t.tasks".into(),
        "copy".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let e = p
        .publish_task(&task(StepKind::Copy, "", 1), &[])
        .await
        .unwrap_err();
    match &e {
        QueueError::Returned {
            exchange,
            routing_key,
            reply,
        } => {
            assert_eq!(exchange, "t.tasks");
            assert_eq!(routing_key, "copy");
            assert!(reply.contains("NO_ROUTE"), "{reply}");
        }
        other => panic!("expected Returned, got {other:?}"),
    }
    assert!(e.to_string().contains("unroutable"), "{e}");
    // The channel survives a return.
    p.publish_task(&task(StepKind::Probe, "", 1), &[])
        .await
        .unwrap();

    // An unknown exchange closes the channel (404); the next publish reopens it.
    ch.exchange_delete("t.events".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let e = p.publish_event("x", b"{}").await.unwrap_err();
    assert!(matches!(e, QueueError::Publish { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    p.publish_task(&task(StepKind::Probe, "again", 1), &[])
        .await
        .expect("publisher reopens its channel");
    let depths = b.queue_depths().await.unwrap();
    let probe = depths
        .iter()
        .find(|(n, _, _)| n == "t.tasks.probe")
        .unwrap();
    assert_eq!(probe.1, 2, "{depths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_tier_returns_the_message_to_its_kinds_queue_after_the_delay() {
    let vh = Vhost::new();
    let b = setup(&vh).await;
    let p = b.publisher().await.unwrap();
    let mut c = b
        .consumer(&[StepKind::Copy, StepKind::Probe], 1, "w")
        .await
        .unwrap();

    let msg = task(StepKind::Copy, "", 2);
    let sent = Instant::now();
    let tier = p
        .publish_retry(&msg, Duration::from_millis(1500), "storage hiccup")
        .await
        .unwrap();
    assert_eq!(tier, Duration::from_secs(1));
    assert!(
        recv(&mut c, Duration::from_millis(700)).await.is_none(),
        "came back before its tier's TTL"
    );
    let inc = recv(&mut c, Duration::from_secs(4))
        .await
        .expect("retried message");
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(inc.routing_key, "copy", "back on the copy queue");
    assert_eq!(TaskMessage::decode(&inc.body).unwrap(), msg);
    assert_eq!(
        inc.header_str("x-iom-reason").as_deref(),
        Some("storage hiccup")
    );
    assert_eq!(inc.header_str("attempt").as_deref(), Some("2"));
    inc.ack().await.unwrap();

    // Tier choice: below the smallest → the smallest; above all → the largest.
    assert_eq!(
        p.publish_retry(&task(StepKind::Probe, "a", 2), Duration::ZERO, "r")
            .await
            .unwrap(),
        Duration::from_secs(1)
    );
    assert_eq!(
        p.publish_retry(
            &task(StepKind::Probe, "b", 2),
            Duration::from_secs(3600),
            "r"
        )
        .await
        .unwrap(),
        Duration::from_secs(3)
    );
    let depths = b.queue_depths().await.unwrap();
    let count = |q: &str| depths.iter().find(|(n, _, _)| n == q).unwrap().1;
    assert_eq!(count("t.retry.3s"), 1, "{depths:?}");
    let first = recv(&mut c, Duration::from_secs(3))
        .await
        .expect("1 s tier");
    assert_eq!(first.routing_key, "probe");
    assert_eq!(
        TaskMessage::decode(&first.body).unwrap().task_id,
        task(StepKind::Probe, "a", 2).task_id
    );
    first.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_body_and_reasons_and_listing_loses_nothing() {
    let vh = Vhost::new();
    let b = setup(&vh).await;
    let p = b.publisher().await.unwrap();
    let poison: &[u8] = b"\x00not json at all\xff";
    p.publish_dead(
        poison,
        None,
        "malformed task message",
        "poison",
        "node7",
        None,
    )
    .await
    .unwrap();
    let valid = task(StepKind::Copy, "", 4);
    let mut orig = FieldTable::default();
    orig.insert(
        "traceparent".into(),
        AMQPValue::LongString("00-t-s-01".into()),
    );
    p.publish_dead(
        &valid.encode(),
        Some(StepKind::Copy),
        "checksum mismatch after copy",
        "permanent",
        "node8",
        Some(&orig),
    )
    .await
    .unwrap();

    let first = b.dlq_list(10).await.unwrap();
    let second = b.dlq_list(10).await.unwrap();
    assert_eq!(first.len(), 2, "{first:#?}");
    assert_eq!(
        first
            .iter()
            .map(|d| (&d.body, &d.reason))
            .collect::<Vec<_>>(),
        second
            .iter()
            .map(|d| (&d.body, &d.reason))
            .collect::<Vec<_>>(),
        "listing twice shows the same messages in the same order"
    );
    let d0 = &first[0];
    assert_eq!(d0.index, 0);
    assert_eq!(d0.body, poison);
    assert_eq!(d0.kind, None);
    assert_eq!(d0.reason, "malformed task message");
    assert_eq!(d0.class, "poison");
    assert_eq!(d0.worker, "node7");
    assert!(
        d0.failed_at.ends_with('Z') && d0.failed_at.len() == 24,
        "{}",
        d0.failed_at
    );
    assert_eq!(d0.task_id, None);
    let d1 = &first[1];
    assert_eq!(d1.kind.as_deref(), Some("copy"));
    assert_eq!(d1.class, "permanent");
    assert_eq!(d1.task_id.as_deref(), Some(valid.task_id.0.as_str()));
    assert_eq!(d1.graph_id.as_deref(), Some(valid.graph_id.0.as_str()));
    assert!(
        d1.headers
            .iter()
            .any(|(k, v)| k == "traceparent" && v == "00-t-s-01"),
        "original headers kept: {:?}",
        d1.headers
    );
    assert_eq!(b.dlq_list(1).await.unwrap().len(), 1, "limit honoured");

    // Requeue by another id moves nothing; requeue all moves the valid task only.
    assert!(b
        .dlq_requeue(Some("no-such-task"), false)
        .await
        .unwrap()
        .is_empty());
    let moved = b.dlq_requeue(None, true).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (moved[0].task_id.clone(), moved[0].attempt),
        (valid.task_id.clone(), 5)
    );
    let left = b.dlq_list(10).await.unwrap();
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0].body, poison, "the poison body stays");

    let mut c = b.consumer(&[StepKind::Copy], 1, "w").await.unwrap();
    let inc = recv(&mut c, Duration::from_secs(5))
        .await
        .expect("requeued task");
    let back = TaskMessage::decode(&inc.body).unwrap();
    assert_eq!(back.task_id, valid.task_id);
    // The next attempt (so it supersedes the dead one), opening a fresh round.
    assert_eq!(back.attempt, valid.attempt + 1);
    assert_eq!(back.retries_from, back.attempt, "a fresh round of retries");
    assert_eq!(back.schema, 3);
    assert!(inc.header_str("x-iom-requeued").is_some());
    inc.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_message_is_dead_lettered_at_the_delivery_limit() {
    let vh = Vhost::new();
    let b = setup(&vh).await; // delivery_limit 3
    let p = b.publisher().await.unwrap();
    let msg = task(StepKind::Probe, "", 1);
    p.publish_task(&msg, &[]).await.unwrap();
    let mut c = b.consumer(&[StepKind::Probe], 1, "w").await.unwrap();
    let mut counts = Vec::new();
    while let Some(inc) = recv(&mut c, Duration::from_millis(1500)).await {
        counts.push(inc.delivery_count);
        assert_eq!(inc.redelivered, counts.len() > 1);
        inc.nack_requeue().await.unwrap();
        assert!(counts.len() <= 10, "never dead-lettered: {counts:?}");
    }
    // Delivered once plus `delivery_limit` redeliveries, then dead-lettered.
    assert_eq!(counts, vec![None, Some(1), Some(2), Some(3)]);
    let dead = b.dlq_list(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].x_death_reason.as_deref(), Some("delivery_limit"));
    assert_eq!(dead[0].kind.as_deref(), Some("probe"));
    assert_eq!(dead[0].task_id.as_deref(), Some(msg.task_id.0.as_str()));
    assert!(
        dead[0].reason.contains("delivery_limit"),
        "{}",
        dead[0].reason
    );
    assert!(!dead[0].failed_at.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_bounds_unacked_deliveries_and_cancel_keeps_them_ackable() {
    let vh = Vhost::new();
    let b = setup(&vh).await;
    let p = b.publisher().await.unwrap();
    for i in 0..5 {
        p.publish_task(&task(StepKind::Probe, &i.to_string(), 1), &[])
            .await
            .unwrap();
    }
    let mut c = b.consumer(&[StepKind::Probe], 2, "w").await.unwrap();
    let mut held = Vec::new();
    while let Some(i) = recv(&mut c, Duration::from_millis(700)).await {
        held.push(i);
    }
    assert_eq!(held.len(), 2, "only prefetch-many unacked at once");
    held.remove(0).ack().await.unwrap();
    held.push(
        recv(&mut c, Duration::from_secs(2))
            .await
            .expect("a slot freed"),
    );
    assert!(recv(&mut c, Duration::from_millis(500)).await.is_none());
    assert_eq!(held.len(), 2);

    c.cancel().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(2), c.next())
        .await
        .expect("next() returns after cancel");
    assert!(end.is_none(), "cancelled consumer ends");
    for i in &held {
        i.ack()
            .await
            .expect("unacked deliveries stay ackable after cancel");
    }
    // A quorum queue applies the cancel asynchronously: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let depths = b.queue_depths().await.unwrap();
        let probe = depths
            .iter()
            .find(|(n, _, _)| n == "t.tasks.probe")
            .unwrap();
        assert_eq!(probe.1, 2, "two left: {depths:?}");
        if probe.2 == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer still registered: {depths:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_side_close_ends_the_consumer_and_unacked_work_comes_back() {
    let vh = Vhost::new();
    let cfg = vh.config();
    let b = setup(&vh).await;
    let p = b.publisher().await.unwrap();
    let msg = task(StepKind::Copy, "", 1);
    p.publish_task(&msg, &[]).await.unwrap();
    let mut c = b.consumer(&[StepKind::Copy], 1, "w").await.unwrap();
    let inc = recv(&mut c, Duration::from_secs(5))
        .await
        .expect("delivery");
    assert!(!inc.redelivered);

    assert_eq!(vh.close_connections().await, 1);
    // The consumer reports the end (an error first is allowed), never hangs.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut errors = 0;
        loop {
            match c.next().await {
                None => return errors,
                Some(Err(_)) => errors += 1,
                Some(Ok(i)) => panic!("unexpected delivery {:?}", i.message_id),
            }
        }
    })
    .await
    .expect("next() returns None after a broker-side close");
    assert!(ended <= 1);
    assert!(!b.is_connected());
    assert!(inc.ack().await.is_err(), "the old delivery cannot be acked");
    let start = Instant::now();
    let e = p.publish_task(&msg, &[]).await.unwrap_err();
    assert!(start.elapsed() < cfg.confirm_timeout, "fails fast: {e}");
    assert!(e.is_retryable(), "{e}");

    let b2 = Broker::connect_with_retry(&cfg, Duration::from_secs(5))
        .await
        .unwrap();
    b2.declare_topology().await.unwrap();
    let mut c2 = b2.consumer(&[StepKind::Copy], 1, "w").await.unwrap();
    let again = recv(&mut c2, Duration::from_secs(5))
        .await
        .expect("redelivery");
    assert!(again.redelivered);
    assert_eq!(TaskMessage::decode(&again.body).unwrap(), msg);
    again.ack().await.unwrap();
    b2.close().await;
    assert!(!b2.is_connected());
}

/// A TCP proxy that can be frozen: while frozen it swallows bytes in both
/// directions without closing anything, like a dead network path.
async fn freezable_proxy(frozen: Arc<AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let f1 = frozen.clone();
            let f2 = frozen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !f1.load(Ordering::SeqCst) && uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                while let Ok(n) = ur.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !f2.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_never_hangs_when_the_broker_stops_answering() {
    let vh = Vhost::new();
    let frozen = Arc::new(AtomicBool::new(false));
    let port = freezable_proxy(frozen.clone()).await;
    let mut cfg = vh.config();
    cfg.url = format!("amqp://guest@127.0.0.1:{port}/{}", vh.name);
    cfg.confirm_timeout = Duration::from_secs(1);
    let b = Broker::connect(&cfg).await.unwrap();
    b.declare_topology().await.unwrap();
    let p = b.publisher().await.unwrap();
    p.publish_task(&task(StepKind::Probe, "", 1), &[])
        .await
        .expect("works through the proxy");

    frozen.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let e = p
        .publish_task(&task(StepKind::Probe, "x", 1), &[])
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(
            e,
            QueueError::ConfirmTimeout { .. } | QueueError::Timeout { .. }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The next publish (which needs a new channel) is bounded too.
    let start = Instant::now();
    assert!(p
        .publish_task(&task(StepKind::Probe, "y", 1), &[])
        .await
        .is_err());
    assert!(start.elapsed() < Duration::from_secs(3));
}
